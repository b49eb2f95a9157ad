r"""
LongVU's selection steps, vectorised (ours) against a straightforward per-window / per-frame loop of the same
algorithm, on the same features, in one run; the outputs must be identical.

For an hour of video at 1 fps (3,600 frames) it times:

- temporal reduction: `LongVUSampler.select` on DINOv2 features (both modes) against a loop over windows that
  builds each window's Gram matrix (the release's `select_frame` style) and then loops over its frames;
- mixing + STC: `LongVUCompressor.plan_resolution` and `assemble` on the kept frames' projected tokens, against
  a loop that scores each frame, picks the high-resolution frames, and runs STC window by window and frame by frame,
  with the same budget guarantee. Two budgets: one where the resolutions mix, one where the video overflows and
  STC prunes.

The SVA and the encoders are networks run once per frame in both cases and are left out. Target: >= 10x.

    python benchmarks/longvu.py [--frames 3600] [--dino-dim 64] [--dim 128]
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


def loop_reduction(features: torch.Tensor, window: int, threshold: float, reference: bool) -> list[int]:
    """Temporal reduction, window after window and frame after frame."""
    kept = []
    for start in range(0, len(features), window):
        segment = F.normalize(features[start : start + window].flatten(1).float(), dim=-1)
        gram = segment @ segment.T
        size = len(segment)
        scores = []
        for i in range(size):
            if reference:
                scores.append(0.0 if i == size // 2 else float(gram[i].sum()) / size)
            else:
                scores.append(float("-inf") if size == 1 else float(gram[i].sum() - gram[i, i]) / (size - 1))
        if reference:
            chosen = [i for i in range(size) if scores[i] < threshold]
        else:
            chosen = [i for i in range(size) if scores[i] <= threshold] or [0]
        kept.extend(start + i for i in chosen)
    return kept


def loop_select_tokens(high, low, text, budget, stc_window, stc_threshold) -> tuple[torch.Tensor, list[int]]:
    """Mixing, STC and the budget guarantee for one video, frame by frame (low resolution on overflow)."""
    n, hi, lo = len(high), high.shape[1], low.shape[1]
    if n * hi <= budget:
        frames = [high[f] for f in range(n)]
    elif n * lo <= budget:
        k = (budget - n * lo) // (hi - lo)
        text_mean = text.mean(0)
        scores = [float(low[f].mean(0) @ text_mean) for f in range(n)]
        top = set(sorted(range(n), key=lambda f: (-scores[f], f))[:k])
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
        for f in range(start + 1, min(start + stc_window, n)):
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
    """Our mixing and STC: the plan, then the high-resolution tokens of the chosen frames only, then assembly."""
    is_high, overflow = compressor.plan_resolution(frames, low, instruction, budget)
    chosen = high if bool(is_high.all()) else high.index_select(0, torch.nonzero(is_high).flatten())
    return compressor.assemble(frames, chosen, low, is_high, overflow, budget)


def timed(function, repeats: int):
    """The result and the best of `repeats` wall-clock times (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def report(step: str, loop_seconds: float, our_seconds: float, same: bool) -> None:
    ratio = loop_seconds / our_seconds
    print(f"{step:<46} {loop_seconds:>9.3f} {our_seconds:>9.4f} {ratio:>10.1f}  {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3600)
    parser.add_argument("--dino-dim", type=int, default=64, help="DINOv2 width (1536 for dinov2-giant)")
    parser.add_argument("--dim", type=int, default=128, help="projected token width (the LLM's, 3584 for Qwen2-7B)")
    parser.add_argument("--repeats", type=int, default=3, help="best-of-N timing of each side")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}, {args.frames} frames, DINOv2 features 24x24x{args.dino_dim}, "
          f"tokens {args.dim} wide, best of {args.repeats}")
    print(f"{'step':<46} {'loop (s)':>9} {'ours (s)':>9} {'loop/ours':>10}  identical")
    totals = [0.0, 0.0]

    dino = shot_features(args.frames, (24, 24, args.dino_dim), generator)
    counts = torch.tensor([args.frames])
    frames = PackedFrames(torch.zeros(args.frames, 1, 1, 1), counts, torch.arange(args.frames).float())
    tiny_dino = dict(
        model_type="dinov2", hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    kept_paper = None
    for mode in ("paper", "reference"):
        sampler = LongVUSampler(LongVUSamplerConfig(dino_config=tiny_dino, mode=mode, context_length=1)).eval()
        config = sampler.config
        reference = mode == "reference"
        with torch.no_grad():
            expected, loop_seconds = timed(
                lambda: loop_reduction(dino, config.window_size, config.threshold, reference), args.repeats
            )
            keep, our_seconds = timed(lambda: sampler.select(frames, dino, None), args.repeats)
        ours = torch.nonzero(keep).flatten().tolist()
        if reference and len(expected) > config.max_frames:  # the release's cap, int(kept / 400 * i)
            expected = [expected[int(len(expected) / config.max_frames * i)] for i in range(config.max_frames)]
        kept_paper = kept_paper or ours
        report(f"temporal reduction, {mode} ({len(ours)} kept)", loop_seconds, our_seconds, ours == expected)
        totals[0], totals[1] = totals[0] + loop_seconds, totals[1] + our_seconds
        assert ours == expected, f"{mode}: the kept frames differ"

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
            (loop_tokens, loop_frames), loop_seconds = timed(
                lambda: loop_select_tokens(high, low, text[0], budget, 8, threshold), args.repeats
            )
            out, our_seconds = timed(
                lambda: ours_select_tokens(compressor, kept_frames, high, low, instruction, budget), args.repeats
            )
        same = torch.equal(out.tokens, loop_tokens) and out.token_frame_index.tolist() == loop_frames
        report(f"{label}, budget {budget} ({len(loop_frames)} tokens)", loop_seconds, our_seconds, same)
        print("    " + ", ".join(f"{value} {name}" for name, value in out.statistics.items() if value))
        totals[0], totals[1] = totals[0] + loop_seconds, totals[1] + our_seconds
        assert same, f"{label}: the tokens differ"
    report("all four steps", *totals, True)


if __name__ == "__main__":
    main()
