r"""
LongVU's selection steps, vectorised (ours) against two loop baselines of the same algorithm, on the same features,
in one run; the outputs of all three must be identical.

Baselines:

- (a) the issue's "straightforward per-window and per-frame loop": temporal reduction loops over windows and, in each,
  over frames, computing each frame's similarities to its window's (normalised) frames with one matrix-vector
  product; mixing scores each frame on its own and assembles the output frame by frame; STC compares each frame
  with its window's anchor, frame by frame, with the same budget guarantee as ours. The issue's target
  (>= 10x, identical outputs) is against (a).
- (b) the release's style: one Gram matmul per window then a loop over its frames for the scores (`select_frame`);
  relevance of all frames in one matmul and one sort; STC one chunk of `stc_window` frames at a time against its
  anchor (as `cambrian_arch.py` writes it).

Neither baseline sleeps or recomputes anything a plain loop would not.

The `floor` column is what no implementation can beat: one read of the step's inputs (`sum`), plus one write of its
output into memory the process already holds (`copy_`). `(a)/floor` is therefore more than any implementation could
gain over (a) on this machine. A real output is a fresh tensor, whose first touch costs more: the script measures that
too (best of 3 x repeats; on this VM it varies between about 0.04 and 0.3 s for 225 MB) and gives the bound with it.

For an hour of video at 1 fps (3,600 frames) it times `LongVUSampler.select` (both modes), then
`LongVUCompressor.plan_resolution` + `assemble` on the kept frames' projected tokens at two budgets: one where the
resolutions mix, one where the video overflows and STC prunes. The SVA and the encoders are networks run once per
frame in all cases and are left out.

Widths: DINOv2 features keep the release's 24 x 24 grid at 128 channels (dinov2-giant has 1536; 3,600 frames at full
width would need 12.7 GB), 1.06 GB for the hour; projected tokens are 256 wide (Qwen2-7B's are 3584), about 0.6 GB
for high + low resolution of the kept frames. Every side's cost scales linearly with the width, so the ratios are
representative while the run stays under ~2 GB.

    python benchmarks/longvu.py [--frames 3600] [--dino-grid 24] [--dino-dim 128] [--dim 256]
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F

from transformers_vidcomp import PackedFrames
from transformers_vidcomp.modeling import (
    InstructionCondition,
    LongVUCompressor,
    LongVUCompressorConfig,
    LongVUSampler,
    LongVUSamplerConfig,
)


def shot_features(num_frames: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A video of shots of 3 to 40 frames: a shot vector plus per-frame noise of a random strength."""
    features = torch.empty(num_frames, *shape)
    start = 0
    while start < num_frames:
        length = int(torch.randint(3, 41, (1,), generator=generator))
        shot = torch.randn(*shape, generator=generator)
        noise = torch.randn(min(length, num_frames - start), *shape, generator=generator)
        features[start : start + length] = shot + noise * float(torch.rand(1, generator=generator)) * 1.2
        start += length
    return features


def loop_reduction(features: torch.Tensor, window: int, threshold: float, reference: bool, gram: bool) -> list[int]:
    """
    Temporal reduction, window after window. `gram=False` is the issue's per-frame loop: each frame's similarities
    to its window's frames are one matrix-vector product inside the frame loop. `gram=True` is the release's
    `select_frame` style: one Gram matmul per window, then a loop over its frames for the scores.
    """
    kept = []
    for start in range(0, len(features), window):
        segment = F.normalize(features[start : start + window].flatten(1).float(), dim=-1)
        size = len(segment)
        window_gram = segment @ segment.T if gram else None
        scores = []
        for i in range(size):
            similarities = window_gram[i] if gram else segment @ segment[i]
            if reference:
                scores.append(0.0 if i == size // 2 else float(similarities.sum()) / size)
            else:
                own = float(similarities[i])
                scores.append(float("-inf") if size == 1 else (float(similarities.sum()) - own) / (size - 1))
        if reference:
            chosen = [i for i in range(size) if scores[i] < threshold]
        else:
            chosen = [i for i in range(size) if scores[i] <= threshold] or [0]
        kept.extend(start + i for i in chosen)
    return kept


def loop_select_tokens(
    high, low, text, budget, stc_window, stc_threshold, per_chunk: bool
) -> tuple[torch.Tensor, list[int]]:
    """
    Mixing, STC and the budget guarantee for one video (low resolution on overflow). `per_chunk=False` is the issue's
    per-frame loop: each frame scored on its own, frames assembled one by one, STC frame by frame against its
    anchor. `per_chunk=True` is the release's style: all scores in one matmul and one top-k, STC one chunk of
    `stc_window` frames at a time (one cosine call per chunk against its anchor).
    """
    n, hi, lo = len(high), high.shape[1], low.shape[1]
    if n * hi <= budget:
        frames = [high[f] for f in range(n)]
    elif n * lo <= budget:
        k = (budget - n * lo) // (hi - lo)
        text_mean = text.mean(0)
        if per_chunk:
            order = torch.sort(-(low.mean(1) @ text_mean), stable=True).indices[:k].tolist()
        else:
            scores = [float(low[f].mean(0) @ text_mean) for f in range(n)]
            order = sorted(range(n), key=lambda f: (-scores[f], f))[:k]
        top = set(order)
        frames = [high[f] if f in top else low[f] for f in range(n)]
    else:
        frames = [low[f] for f in range(n)]
    if sum(len(t) for t in frames) <= budget:
        tokens = torch.cat(frames)
        return tokens, [f for f in range(n) for _ in range(len(frames[f]))]
    kept, candidates = [], []  # kept: (frame, slot); candidates: (similarity, frame, slot) of kept non-anchors
    for start in range(0, n, stc_window):
        anchor = frames[start]
        kept.extend((start, slot) for slot in range(len(anchor)))
        end = min(start + stc_window, n)
        if per_chunk and end > start + 1:
            chunk = torch.stack(frames[start + 1 : end]).float()
            chunk_similarity = F.cosine_similarity(chunk, anchor.float()[None], dim=-1)
        for f in range(start + 1, end):
            if per_chunk:
                similarity = chunk_similarity[f - start - 1]
            else:
                similarity = F.cosine_similarity(frames[f].float(), anchor.float(), dim=-1)
            for slot in torch.nonzero(similarity <= stc_threshold).flatten().tolist():
                kept.append((f, slot))
                candidates.append((float(similarity[slot]), f, slot))
    if len(kept) > budget:
        windows = math.ceil(n / stc_window)
        allowance = budget - windows * lo
        if allowance >= 0:
            ordered = sorted(range(len(candidates)), key=lambda i: (candidates[i][0], i))
            dropped = {candidates[i][1:] for i in ordered[allowance:]}
            kept = [token for token in kept if token not in dropped]
        else:
            chosen = budget // lo
            windows_kept = {math.floor(j * windows / chosen) for j in range(chosen)}
            kept = [(f, s) for f, s in kept if f % stc_window == 0 and f // stc_window in windows_kept]
    kept.sort()
    return torch.stack([frames[f][s] for f, s in kept]), [f for f, _ in kept]


def ours_select_tokens(compressor, frames, high, low, instruction, budget):
    """Our mixing and STC: the plan, then assembly from the same high- and low-resolution tokens as the loops."""
    video_budget = compressor.video_budgets(frames.num_videos, instruction, budget)
    is_high, overflow = compressor.plan_resolution(frames, low, instruction, video_budget)
    return compressor.assemble(frames, high, low, is_high, overflow, video_budget)


def timed(function, repeats: int):
    """
    The result and the best of `repeats` wall-clock times (the machine may be shared). Each repeat frees the previous
    result first, so that its output can reuse memory the process just held: on this VM, memory the guest has handed
    back costs about 1.4 ms per MB to touch again (0.3 s for a 225 MB output), which would otherwise decide the
    ranking at random.
    """
    best, result = float("inf"), None
    for _ in range(repeats):
        result = None
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def report(step: str, per_frame: float, release: float, ours: float, floor: float, same: bool) -> None:
    print(
        f"{step:<44} {per_frame:>8.3f} {release:>8.3f} {ours:>8.4f} {floor:>8.4f} {per_frame / ours:>8.1f} "
        f"{release / ours:>8.1f} {per_frame / floor:>8.1f}  {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3600)
    parser.add_argument("--dino-grid", type=int, default=24, help="DINOv2 feature grid side (24 in the release)")
    parser.add_argument("--dino-dim", type=int, default=128, help="DINOv2 width (1536 for dinov2-giant)")
    parser.add_argument("--dim", type=int, default=256, help="projected token width (the LLM's, 3584 for Qwen2-7B)")
    parser.add_argument("--repeats", type=int, default=5, help="best-of-N timing of each side")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    side = args.dino_grid
    print(f"torch threads: {torch.get_num_threads()}, {args.frames} frames, DINOv2 features {side}x{side}x{args.dino_dim}, "
          f"tokens {args.dim} wide, best of {args.repeats}")
    print("(a) the issue's per-window, per-frame loop; (b) the release's style (per-window Gram, per-chunk STC)")
    print(
        f"{'step':<44} {'(a) s':>8} {'(b) s':>8} {'ours s':>8} {'floor s':>8} {'(a)/ours':>8} {'(b)/ours':>8} "
        f"{'(a)/floor':>8}  identical"
    )
    totals = [0.0, 0.0, 0.0, 0.0]
    first_touch = 0.0  # what writing the outputs into fresh tensors costs on top of the floor

    dino = shot_features(args.frames, (side, side, args.dino_dim), generator)
    frames = PackedFrames(torch.zeros(args.frames, 1, 1, 1), torch.tensor([args.frames]), torch.arange(args.frames).float())
    tiny_dino = dict(
        model_type="dinov2", hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    kept_paper = None
    for mode in ("paper", "reference"):
        sampler = LongVUSampler(LongVUSamplerConfig(dino_config=tiny_dino, mode=mode, context_length=1)).eval()
        config = sampler.config
        reference = mode == "reference"
        with torch.no_grad():
            times, results = [], []
            for gram in (False, True):
                result, seconds = timed(
                    lambda: loop_reduction(dino, config.window_size, config.threshold, reference, gram), args.repeats
                )
                times.append(seconds)
                results.append(result)
            keep, our_seconds = timed(lambda: sampler.select(frames, dino, None), args.repeats)
            _, floor = timed(lambda: dino.sum(), args.repeats)
        ours = torch.nonzero(keep).flatten().tolist()
        if reference:  # the release's cap, int(kept / 400 * i)
            results = [
                [r[int(len(r) / config.max_frames * i)] for i in range(config.max_frames)]
                if len(r) > config.max_frames else r
                for r in results
            ]
        same = all(ours == r for r in results)
        kept_paper = kept_paper or ours
        report(f"temporal reduction, {mode} ({len(ours)} kept)", *times, our_seconds, floor, same)
        totals = [t + x for t, x in zip(totals, (*times, our_seconds, floor))]
        assert same, f"{mode}: the kept frames differ"
    del dino

    num_kept = len(kept_paper)
    kept_frames = PackedFrames(torch.zeros(num_kept, 1, 1, 1), torch.tensor([num_kept]), torch.arange(num_kept).float())
    high = shot_features(num_kept, (144, args.dim), generator)
    low = F.interpolate(high.view(num_kept, 12, 12, args.dim).permute(0, 3, 1, 2), size=(8, 8), mode="bilinear")
    low = low.permute(0, 2, 3, 1).reshape(num_kept, 64, args.dim).contiguous()
    text = torch.randn(1, 24, args.dim, generator=generator)
    instruction = InstructionCondition(text, torch.ones(1, 24, dtype=torch.long))
    compressor = LongVUCompressor(
        LongVUCompressorConfig(vision_hidden_size=8, dino_hidden_size=8, sva_hidden_size=16, num_attention_heads=2)
    ).eval()
    threshold = compressor.config.stc_threshold
    for label, budget in (("mixing", num_kept * 64 + (num_kept // 3) * 80), ("overflow + STC", 16384)):
        with torch.no_grad():
            times, results = [], []
            for per_chunk in (False, True):
                result, seconds = timed(
                    lambda: loop_select_tokens(high, low, text[0], budget, 8, threshold, per_chunk), args.repeats
                )
                times.append(seconds)
                results.append(result)
            out, our_seconds = timed(
                lambda: ours_select_tokens(compressor, kept_frames, high, low, instruction, budget), args.repeats
            )
            source, held = out.tokens.clone(), torch.empty_like(out.tokens).zero_()
            _, read = timed(lambda: low.sum(), args.repeats)
            _, write = timed(lambda: held.copy_(source), args.repeats)
            _, fresh = timed(lambda: torch.empty_like(source).copy_(source), 3 * args.repeats)
            floor = read + write
            first_touch += fresh - write
            del source, held
        same = all(
            torch.equal(out.tokens, tokens) and out.token_frame_index.tolist() == frame_index
            for tokens, frame_index in results
        )
        report(f"{label}, budget {budget} ({len(results[0][1])} tokens)", *times, our_seconds, floor, same)
        print("    " + ", ".join(f"{value} {name}" for name, value in out.statistics.items() if value))
        totals = [t + x for t, x in zip(totals, (*times, our_seconds, floor))]
        assert same, f"{label}: the tokens differ"
    report("all four steps", *totals, True)
    print("Target (issue): (a)/ours >= 10 over all four steps, outputs identical.")
    print(f"No implementation can exceed (a)/floor = {totals[0] / totals[3]:.1f} over all four steps on this machine, "
          f"nor {totals[0] / (totals[3] + first_touch):.1f} with its outputs in fresh tensors "
          f"(+{first_touch:.3f} s at their fastest here).")


if __name__ == "__main__":
    main()
