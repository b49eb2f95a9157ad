r"""
Needle retention: a quality signal for samplers and compressors that needs no trained LLM.

A "needle" (a short shot of a photograph used nowhere else) hides at a known depth in a long haystack video of other
photographs (`demo_video.plan_haystack`). Then:

- a **sampler** retains the needle when it keeps at least one needle frame (`sampler_recall`; the fraction of needle
  frames kept is reported too), for each frame budget;
- a **compressor** is given a clip in which the needle is present (the uniform frames of the haystack plus the needle
  frames), with a sampler that keeps every frame, and we count its output tokens whose `token_frame_index` is a
  needle frame (`needle_token_count`), against the needle's fair share (needle frames / clip frames).

Components come from the package's presets, built tiny (`tiny.build_tiny`): real architectures with random weights,
except AVS's TransNetV2, which has its real weights. Samplers that compare features (FiLA's K-Means on SigLIP
features, LongVU on DINOv2 features) therefore see random projections of real images: the numbers say how the
selection rule treats a needle, not how a trained model would.

Per-frame encoders see one frame at a time, so each haystack length is rendered and encoded once and the needle's
frames are substituted for every depth. TransNetV2 looks at neighbouring frames, within a temporal receptive field
of about +-98 frames: it runs once over each haystack, and for each depth again only over the frames within
`2 * TRANSNET_REACH` of the needle, whose middle part replaces the haystack's probabilities (the same numbers as a
run over the whole video, which the tests check); all budgets share that result.
"""

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..demo_video import HaystackPlan, plan_haystack, render_haystack, render_plan_scene
from ..modeling import PackedFrames, UniformSampler, UniformSamplerConfig

# The sampler of each preset that the benchmark evaluates, and the compressor of each.
SAMPLER_PRESETS = {"uniform": "baseline", "fila-kmeans": "fila", "longvu": "longvu", "avs": "avs-compact"}
COMPRESSOR_PRESETS = {
    "spatial-pool": "baseline", "fila-fusion": "fila", "longvu": "longvu", "hicom": "hicom", "compact": "avs-compact",
}
THUMBNAIL_SIZE = (27, 48)  # TransNetV2's input, as the AVS processor decodes it
STREAMING_STEP = 1024  # frames per TransNetV2 streaming step
TRANSNET_REACH = 128  # frames; beyond TransNetV2's temporal receptive field (about +-98 frames)


def sampler_recall(keep_mask: np.ndarray | torch.Tensor, needle_frames: np.ndarray) -> tuple[bool, float]:
    r"""
    Whether a sampler retained the needle (kept any of its frames) and the fraction of its frames it kept.

    Args:
        keep_mask (shape `(num_frames,)`, bool): the sampler's choice over one video's frames.
        needle_frames (shape `(needle_length,)`, int): indices of the needle's frames.
    """
    kept = np.asarray(keep_mask, dtype=bool)[np.asarray(needle_frames)]
    return bool(kept.any()), float(kept.mean()) if kept.size else 0.0


def needle_token_count(token_frame_index: np.ndarray | torch.Tensor, needle_frames: np.ndarray) -> int:
    r"""
    How many output tokens derive mostly from a needle frame.

    Args:
        token_frame_index (shape `(num_tokens,)`, int): each token's source frame among the frames given to the model
            (-1 for tokens from no frame, such as a video newline).
        needle_frames (shape `(needle_length,)`, int): the needle's frames, indexed the same way.
    """
    return int(np.isin(np.asarray(token_frame_index), np.asarray(needle_frames)).sum())


def to_pixel_values(frames: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    r"""
    uint8 frames `(T, H, W, 3)` -> normalised `(T, 3, size, size)` float pixels, as the tiny models' video processor
    makes them (bilinear resize with antialiasing, rescale to [0, 1], normalise).
    """
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def to_thumbnails(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames `(T, H, W, 3)` -> TransNetV2's `(T, 27, 48, 3)` uint8 thumbnails (bilinear, antialiased)."""
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    pixels = F.interpolate(pixels, size=THUMBNAIL_SIZE, mode="bilinear", antialias=True, align_corners=False)
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@dataclass
class NeedleCell:
    r"""One haystack length and needle depth: the frames (needle included) and the plan that describes them."""

    minutes: float
    depth: float
    frames: np.ndarray
    plan: HaystackPlan


class PresetSampler:
    r"""
    A preset's sampler, asked for the frames it keeps of a needle cell under a frame budget.

    The budget maps onto each method's own knob: `num_frames` (uniform), `num_scenes = budget // (1 + supplements)`
    (FiLA K-Means, each scene up to 1 + supplements frames), `max_frames` after the window reduction (LongVU, which
    may keep fewer), `max_frames` keyframes (AVS, on 27x48 thumbnails of the cell's frames, as its processor plans
    them at decode time).

    Per-frame features of a haystack are cached by `prepare_haystack`; `keep` substitutes the needle's.
    """

    def __init__(self, name: str, seed: int = 0):
        from ..tiny import build_tiny

        self.name, self.preset = name, SAMPLER_PRESETS[name]
        model, processor = build_tiny(self.preset, seed=seed)
        self.model = model.model
        self.sampler = self.model.sampler
        video_processor = processor.video_processor
        self.pixels = lambda frames: to_pixel_values(
            frames, video_processor.size["height"], video_processor.image_mean, video_processor.image_std
        )
        if name == "avs":
            # Streaming outputs do not depend on the step size; long steps spare the per-step overhead, which at the
            # default 50 frames dominates (measured 5x slower on 700 frames).
            self.sampler.shot_detector.config.window_frames = STREAMING_STEP
        self.haystack_features: torch.Tensor | None = None
        self.haystack_thumbnails: torch.Tensor | None = None
        self.haystack_probabilities: tuple[np.ndarray, np.ndarray] | None = None
        self.cell_probabilities: tuple[tuple, tuple[np.ndarray, np.ndarray]] | None = None

    @torch.no_grad()
    def features(self, frames: np.ndarray) -> torch.Tensor | None:
        r"""The per-frame features the sampler compares, one row per frame (None for samplers that need none)."""
        chunks = np.array_split(frames, -(-len(frames) // 256))  # bounded memory on an hour of frames
        if self.name == "fila-kmeans":
            # K-Means clusters frame means (see frame_means_by_video): keep only those, not every patch.
            return torch.cat([self.model.encode_frames(self.pixels(chunk)).mean((1, 2)) for chunk in chunks])
        if self.name == "longvu":
            return torch.cat([self.sampler.encode(self.pixels(chunk)) for chunk in chunks])
        return None

    def prepare_haystack(self, haystack: np.ndarray) -> None:
        """Caches the features of a haystack's frames (AVS: its shot probabilities), shared by every needle depth."""
        self.haystack_features = self.features(haystack)
        if self.name == "avs":
            self.haystack_thumbnails = to_thumbnails(haystack)
            self.haystack_probabilities = self.sampler.shot_detector.predict_frames(self.haystack_thumbnails)

    @torch.no_grad()
    def shot_probabilities(self, cell: NeedleCell) -> tuple[np.ndarray, np.ndarray]:
        r"""
        TransNetV2's probabilities for the cell: the haystack's, with those within `TRANSNET_REACH` frames of the
        needle recomputed over a window reaching `TRANSNET_REACH` frames further (so every recomputed frame sees its
        whole receptive field, and frames further away cannot see the needle).
        """
        key = (cell.minutes, cell.depth)
        if self.cell_probabilities is None or self.cell_probabilities[0] != key:
            first, end = int(cell.plan.needle_frames[0]), int(cell.plan.needle_frames[-1]) + 1
            num_frames = len(cell.frames)
            lo, hi = max(0, first - 2 * TRANSNET_REACH), min(num_frames, end + 2 * TRANSNET_REACH)
            keep_lo, keep_hi = max(0, first - TRANSNET_REACH), min(num_frames, end + TRANSNET_REACH)
            thumbnails = self.haystack_thumbnails[lo:hi].clone()
            thumbnails[first - lo : end - lo] = to_thumbnails(cell.frames[first:end])
            window = self.sampler.shot_detector.predict_frames(thumbnails)
            spliced = []
            for whole, part in zip(self.haystack_probabilities, window):
                whole = whole.copy()
                whole[keep_lo:keep_hi] = part[keep_lo - lo : keep_hi - lo]
                spliced.append(whole)
            self.cell_probabilities = (key, tuple(spliced))
        return self.cell_probabilities[1]

    @torch.no_grad()
    def keep(self, cell: NeedleCell, budget: int) -> np.ndarray:
        r"""The sampler's keep mask over the cell's frames, shape `(num_frames,)` bool."""
        num_frames = len(cell.frames)
        counts = torch.tensor([num_frames])
        times = torch.from_numpy(cell.plan.timestamps).float()
        needle = torch.from_numpy(cell.plan.needle_frames)
        if self.name == "avs":
            detector = self.sampler.shot_detector
            self.sampler.shot_detector = _Precomputed(detector.config, self.shot_probabilities(cell))
            try:
                return self.sampler.plan(to_thumbnails(cell.frames), times, max_frames=budget).keep.numpy()
            finally:
                self.sampler.shot_detector = detector
        features = self.haystack_features
        if features is not None:
            features = features.clone()
            features[needle] = self.features(cell.frames[cell.plan.needle_frames])
        if self.name == "uniform":
            config = UniformSamplerConfig(**{**self.sampler.config.to_diff_dict(), "num_frames": budget})
            sampler = UniformSampler(config)
            placeholder = torch.zeros(num_frames, 1)
            return sampler(PackedFrames(placeholder, counts, times)).keep_mask.numpy()
        sampler = copy.deepcopy(self.sampler)
        if self.name == "fila-kmeans":
            sampler.config.num_scenes = max(1, budget // sampler.frames_per_scene)
            packed = PackedFrames(features[:, None, None, :], counts, times)
            return sampler(packed, frame_features=packed).keep_mask.numpy()
        if self.name == "longvu":
            sampler.config.max_frames = budget
            return sampler.select(PackedFrames(features, counts, times), features, None).numpy()
        raise ValueError(f"Unknown sampler {self.name!r}; choose from {', '.join(SAMPLER_PRESETS)}.")


class _Precomputed(torch.nn.Module):
    r"""Stands in for TransNetV2 in `AdaptiveVideoSampler.plan` with probabilities computed for the cell already."""

    def __init__(self, config, probabilities: tuple[np.ndarray, np.ndarray]):
        super().__init__()
        self.config, self.probabilities = config, probabilities

    def predict_frames(self, thumbnails: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self.probabilities


@dataclass
class CompressorRetention:
    r"""What one compressor made of one clip that contains the needle."""

    needle_tokens: int
    total_tokens: int
    needle_frames: int
    clip_frames: int

    @property
    def share(self) -> float:
        return self.needle_tokens / max(1, self.total_tokens)

    @property
    def fair_share(self) -> float:
        """The share a compressor that spends tokens evenly over frames would give the needle."""
        return self.needle_frames / self.clip_frames


class PresetCompressor:
    r"""
    A preset's compressor behind a sampler that keeps every frame, so it sees the whole clip: for LongVU, its own
    sampler (which also computes the DINOv2 features its compressor fuses) with windows of one frame; for the
    others, a uniform sampler with no cap.
    """

    def __init__(self, name: str, seed: int = 0):
        from ..tiny import build_tiny

        self.name, self.preset = name, COMPRESSOR_PRESETS[name]
        model, processor = build_tiny(self.preset, seed=seed)
        self.model = model.model
        if name == "longvu":
            self.model.sampler.config.window_size = 1  # a frame alone in its window is never redundant
        else:
            self.model.sampler = UniformSampler(UniformSamplerConfig(num_frames=2**31 - 1))
        video_processor = processor.video_processor
        self.pixels = lambda frames: to_pixel_values(
            frames, video_processor.size["height"], video_processor.image_mean, video_processor.image_std
        )

    @torch.no_grad()
    def retention(self, clip: np.ndarray, clip_times: np.ndarray, needle_positions: np.ndarray) -> CompressorRetention:
        r"""Compresses `clip` (`(T, H, W, 3)` uint8, times in seconds) and counts the tokens of its needle frames."""
        with warnings.catch_warnings():
            # No question is asked: HICom compresses unconditionally, and says so on every call.
            warnings.filterwarnings("ignore", message="HICom got no guide text")
            features = self.model.get_video_features(
                self.pixels(clip), torch.tensor([len(clip)]), torch.from_numpy(clip_times).float()
            )
        if not bool(features.keep_mask.all()):
            raise RuntimeError(f"The {self.name} compressor's sampler dropped frames; it must see the whole clip.")
        return CompressorRetention(
            needle_token_count(features.token_frame_index, needle_positions),
            int(features.token_counts.sum()),
            len(needle_positions),
            len(clip),
        )


def needle_clip(cell: NeedleCell, clip_frames: int) -> tuple[np.ndarray, np.ndarray]:
    r"""
    The frames a compressor is shown: `clip_frames` uniform frames of the cell plus every needle frame, in order.
    Returns the frame indices (shape `(frames,)`) and the needle's positions among them.
    """
    num_frames = len(cell.frames)
    uniform = np.floor(np.arange(min(clip_frames, num_frames)) * num_frames / min(clip_frames, num_frames))
    indices = np.union1d(uniform.astype(np.int64), cell.plan.needle_frames)
    return indices, np.nonzero(np.isin(indices, cell.plan.needle_frames))[0]


def run_needle(
    lengths_minutes: Sequence[float] = (1, 5, 15, 60),
    depths: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    budgets: Sequence[int] = (8, 16, 32, 64),
    samplers: Sequence[str] = tuple(SAMPLER_PRESETS),
    compressors: Sequence[str] = tuple(COMPRESSOR_PRESETS),
    fps: float = 1.0,
    needle_frames: int = 1,
    clip_frames: int = 32,
    width: int = 64,
    height: int = 48,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    r"""
    Needle retention of samplers and compressors over haystacks of `lengths_minutes` at `fps`, with a needle of
    `needle_frames` frames at each of `depths` (fractions of the video).

    Returns:
        A JSON-ready dict: `settings`, `sampler_recall` (one row per sampler, budget, length and depth, with
        `retained`, `fraction` and `kept_frames`), `compressor_tokens` (one row per compressor, length and depth,
        with the needle's tokens, all tokens, share and fair share) and `seconds` spent per component.
    """
    torch.manual_seed(seed)
    report = lambda message: progress(message) if progress else None  # noqa: E731
    sampler_models = {name: PresetSampler(name, seed) for name in samplers}
    compressor_models = {name: PresetCompressor(name, seed) for name in compressors}
    seconds = {name: 0.0 for name in [*samplers, *compressors, "render"]}
    recall_rows, token_rows = [], []
    for minutes in lengths_minutes:
        num_frames = max(needle_frames, round(minutes * 60 * fps))
        start = time.perf_counter()
        options = dict(fps=fps, width=width, height=height, needle_frames=needle_frames, seed=seed)
        haystack = render_haystack(plan_haystack(num_frames, **options))
        seconds["render"] += time.perf_counter() - start
        for name, sampler in sampler_models.items():
            start = time.perf_counter()
            sampler.prepare_haystack(haystack)
            seconds[name] += time.perf_counter() - start
        for depth in depths:
            # Same seed, same scenes: the needle of this depth written over the shared haystack.
            plan = plan_haystack(num_frames, needle_depth=depth, **options)
            frames = haystack.copy()
            frames[plan.needle_frames] = render_plan_scene(plan, plan.needle)
            cell = NeedleCell(minutes, depth, frames, plan)
            for name, sampler in sampler_models.items():
                start = time.perf_counter()
                for budget in budgets:
                    keep = sampler.keep(cell, budget)
                    retained, fraction = sampler_recall(keep, plan.needle_frames)
                    recall_rows.append(dict(
                        sampler=name, budget=budget, minutes=minutes, depth=depth, retained=retained,
                        fraction=fraction, kept_frames=int(keep.sum()),
                    ))
                seconds[name] += time.perf_counter() - start
            indices, needle_positions = needle_clip(cell, clip_frames)
            for name, compressor in compressor_models.items():
                start = time.perf_counter()
                retention = compressor.retention(frames[indices], plan.timestamps[indices], needle_positions)
                token_rows.append(dict(
                    compressor=name, minutes=minutes, depth=depth, **asdict(retention),
                    share=retention.share, fair_share=retention.fair_share,
                ))
                seconds[name] += time.perf_counter() - start
            report(f"{minutes:g} min, depth {depth:.0%}: needle at frames {plan.needle_frames.tolist()}")
    return {
        "settings": dict(
            lengths_minutes=list(lengths_minutes), depths=list(depths), budgets=list(budgets), fps=fps,
            needle_frames=needle_frames, clip_frames=clip_frames, size=[height, width], seed=seed,
            sampler_presets={name: SAMPLER_PRESETS[name] for name in samplers},
            compressor_presets={name: COMPRESSOR_PRESETS[name] for name in compressors},
        ),
        "sampler_recall": recall_rows,
        "compressor_tokens": token_rows,
        "seconds": seconds,
    }


RANDOM_WEIGHTS_NOTE = (
    "The components are the presets' tiny models with random weights (AVS's TransNetV2 has its real weights): "
    "FiLA's K-Means and LongVU's reduction compare random features of real photographs, and the compressors' "
    "learned parts (FiLA's fusion weights, HICom's queries, LongVU's resolution choice, the compact encoder) are "
    "untrained. Uniform sampling, AVS and spatial pooling do not depend on trained weights. A one-frame needle at "
    "depth d starts at frame round(d * (T - 1)); uniform sampling keeps frames floor(j * T / k), so it finds the "
    "needle for certain wherever d * k is an integer (depth 0 always, 50% for even budgets): compare uniform at "
    "depths off its grid. Compressors report one source frame per token: a token that mixes frames (FiLA's fusion "
    "of 3 frames, HICom's local groups, the compact compressor's 4-frame groups) counts for one of them only."
)


def needle_markdown(result: dict) -> str:
    r"""The report of `run_needle` as markdown: sampler recall by budget and length, then compressor token shares."""
    settings = result["settings"]
    lengths, depths = settings["lengths_minutes"], settings["depths"]
    lines = [
        "# Needle retention",
        "",
        f"Haystacks at {settings['fps']:g} fps, {settings['size'][1]}x{settings['size'][0]} pixels, seed "
        f"{settings['seed']}; a needle of {settings['needle_frames']} frame(s) at depths "
        f"{', '.join(f'{d:.0%}' for d in depths)}.",
        "",
        RANDOM_WEIGHTS_NOTE,
        "",
        "## Samplers: recall (needle retained at how many depths), mean fraction of needle frames kept",
        "",
        "| sampler (preset) | budget | " + " | ".join(f"{m:g} min" for m in lengths) + " |",
        "|---|---:|" + "---:|" * len(lengths),
    ]
    rows = result["sampler_recall"]
    for sampler, preset in settings["sampler_presets"].items():
        for budget in settings["budgets"]:
            cells = []
            for minutes in lengths:
                hits = [r for r in rows if (r["sampler"], r["budget"], r["minutes"]) == (sampler, budget, minutes)]
                recall = sum(r["retained"] for r in hits) / len(hits)
                fraction = sum(r["fraction"] for r in hits) / len(hits)
                kept = sum(r["kept_frames"] for r in hits) / len(hits)
                cells.append(f"{recall:.2f} ({fraction:.2f}; {kept:.0f} kept)")
            lines.append(f"| {sampler} ({preset}) | {budget} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Compressors: tokens from the needle, in a clip of {settings['clip_frames']} uniform frames plus the "
        "needle, every frame kept",
        "",
        "Mean over lengths and depths. Fair share: the needle's share of the clip's frames; share / fair > 1 means "
        "the compressor gives the needle more than its frames' worth of tokens.",
        "",
        "| compressor (preset) | needle tokens | all tokens | share | fair share | share / fair | zero-token cells |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for compressor, preset in settings["compressor_presets"].items():
        hits = [r for r in result["compressor_tokens"] if r["compressor"] == compressor]
        mean = lambda key: sum(r[key] for r in hits) / len(hits)  # noqa: E731
        zero = sum(r["needle_tokens"] == 0 for r in hits)
        lines.append(
            f"| {compressor} ({preset}) | {mean('needle_tokens'):.1f} | {mean('total_tokens'):.1f} | "
            f"{mean('share'):.4f} | {mean('fair_share'):.4f} | {mean('share') / mean('fair_share'):.2f} | "
            f"{zero}/{len(hits)} |"
        )
    return "\n".join(lines) + "\n"


def plot_needle_heatmap(result: dict, path) -> None:
    r"""
    LongVU-style needle figure: a grid of panels, one row per sampler and one column per budget, each with needle
    depth (rows) against video length (columns), coloured by the fraction of needle frames kept (0 red, 1 green).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = result["settings"]
    lengths, depths, budgets = settings["lengths_minutes"], settings["depths"], settings["budgets"]
    samplers = list(settings["sampler_presets"])
    figure, axes = plt.subplots(
        len(samplers),
        len(budgets),
        figsize=(1.2 + 0.6 * len(lengths) * len(budgets), 0.9 + 0.35 * len(depths) * len(samplers)),
        squeeze=False,
        constrained_layout=True,
    )
    lookup = {(r["sampler"], r["budget"], r["minutes"], r["depth"]): r["fraction"] for r in result["sampler_recall"]}
    for row, sampler in enumerate(samplers):
        for column, budget in enumerate(budgets):
            grid = np.array([[lookup[(sampler, budget, m, d)] for m in lengths] for d in depths])
            axis = axes[row, column]
            image = axis.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
            axis.set_xticks(range(len(lengths)), [f"{m:g}" for m in lengths], fontsize=7)
            axis.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=7)
            axis.set_title(f"{sampler}, {budget} frames", fontsize=8)
            if column == 0:
                axis.set_ylabel("needle depth", fontsize=7)
            if row == len(samplers) - 1:
                axis.set_xlabel("video length (min)", fontsize=7)
    figure.colorbar(image, ax=axes, shrink=0.6, label="needle frames kept")
    figure.savefig(path, dpi=120)
    plt.close(figure)
