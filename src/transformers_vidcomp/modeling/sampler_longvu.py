r"""
LongVU's temporal reduction (arXiv:2410.17434, §3.1): drop frames whose DINOv2 features repeat their neighbours'.

Frames are cut into non-overlapping windows of `window_size` consecutive frames per video (the last one may be
partial; a video shorter than a window is one window). Each frame's DINOv2 patch features, flattened and
L2-normalised, are compared with every frame of its window, and frames whose mean cosine similarity exceeds
`threshold` are dropped.

Two settings:

- `mode="paper"`: window 8, threshold 0.8, the mean over the *other* frames (`sim^i = 1/(J-1) sum_{j != i}`).
  The paper does not say what happens when every frame of a window is redundant (a static shot); dropping them all
  would lose the shot, so such a window keeps its first frame (the frame STC would anchor on; the least redundant
  frame is ill-defined there, as all scores are ~1 and differ only by rounding).
- `mode="reference"`: the released `select_frame` (Vision-CAIR/LongVU, `cambrian_arch.py`): window 16,
  threshold 0.83, the mean *including* the self-similarity of 1, the window's middle frame (`len // 2`) always kept,
  frames kept where the score is strictly below the threshold; the step only runs for videos of at least
  `max(1, (left - 1) // tokens_per_frame)` frames, where `left` is the video's share of what its prompt leaves,
  `context_length - text_length - reserved_tokens` (`context_left_for_video`), and the 1 is the prompt's `<image>`
  token, which the release counts as text (shorter videos cannot overflow the context); then at most `max_frames` (400) frames are kept, at indices `int(kept / 400 * i)`.

All windows of all videos are scored at once: one batched matmul gives every window's Gram matrix.

DINOv2 is built with `AutoModel.from_config(config.dino_config)` (`LongVUSampler.from_dinov2` loads pretrained
weights) and runs on every frame, in chunks of whole windows: only the kept frames' features are held, not an
hour's worth. The frames arrive
normalised for the main vision tower (SigLIP: mean = std = 0.5, at its image size); they are un-normalised, resized
(bicubic, antialiased) to `dino_image_size` (378 in the release, where each frame is PIL-resized to 378 and
normalised with the ImageNet statistics) and normalised with `dino_image_mean` / `dino_image_std`. The patch tokens
(CLS dropped) of the `dino_image_size / patch_size` grid (27 x 27) are resized bilinearly (fp32,
`align_corners=False`) to `feature_grid` x `feature_grid` (24 x 24), as the release does. Those features of the kept
frames go to the compressor as `SamplerOutput.auxiliary_features`, for LongVU's Spatial Vision Aggregator.
"""

import os
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec

from .components_vidcomp import (
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    SamplerOutput,
    VidCompSampler,
    batches_with_progress,
    context_left_for_video,
    register_sampler,
)


LONGVU_MODE_DEFAULTS = {
    "paper": {"window_size": 8, "threshold": 0.8, "max_frames": None},
    "reference": {"window_size": 16, "threshold": 0.83, "max_frames": 400},
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@strict
class LongVUSamplerConfig(PreTrainedConfig):
    r"""
    dino_config (`dict` or `PreTrainedConfig`, *optional*):
        The DINOv2 encoder, built with `AutoModel.from_config`. LongVU uses `facebook/dinov2-giant`.
    mode (`str`, *optional*, defaults to `"paper"`):
        `"paper"` or `"reference"` (the released code); see the module docstring.
    window_size (`int`, *optional*):
        Frames per window; 8 in `paper` mode, 16 in `reference` mode when not given.
    threshold (`float`, *optional*):
        Frames whose mean similarity exceeds it are dropped; 0.8 (`paper`) or 0.83 (`reference`) when not given.
    max_frames (`int`, *optional*):
        Keep at most this many frames per video after the reduction, at indices `int(kept / max_frames * i)`.
        400 in `reference` mode, no cap in `paper` mode, when not given. In `reference` mode, videos that skip the
        reduction (they fit the context) are not capped either, as in the release.
    context_length (`int`, *optional*, defaults to 8192):
        `reference` mode only: the LLM context the video must fit; the reduction is skipped for videos of fewer than
        `(left - 1) // tokens_per_frame` frames, `left` as in the module docstring.
    reserved_tokens (`int`, *optional*, defaults to 16):
        `reference` mode only: tokens kept free for the answer (the release's `inference_max_length`).
    tokens_per_frame (`int`, *optional*, defaults to 64):
        `reference` mode only: the fewest tokens a frame takes (the release's `lowres_token ** 2`).
    dino_image_size (`int`, *optional*, defaults to 378):
        Side of the square DINOv2 input.
    feature_grid (`int`, *optional*, defaults to 24):
        Side of the grid the DINOv2 patch features are resized to.
    image_mean (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`), image_std (same):
        The normalisation of the incoming frames (the main vision tower's).
    dino_image_mean (`list[float]`, *optional*, defaults to ImageNet's), dino_image_std (same):
        DINOv2's normalisation.
    dino_batch_size (`int`, *optional*, defaults to 64):
        Frames per DINOv2 call (the release encodes in chunks of 64), which bounds peak memory on long videos.
    """

    model_type = "vidcomp_longvu_sampler"
    sub_configs_defaults = {"dino_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2")}

    dino_config: dict | PreTrainedConfig | None = None
    mode: Literal["paper", "reference"] = "paper"
    window_size: int | None = None
    threshold: float | None = None
    max_frames: int | None = None
    context_length: int = 8192
    reserved_tokens: int = 16
    tokens_per_frame: int = 64
    dino_image_size: int = 378
    feature_grid: int = 24
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    dino_image_mean: list[float] | None = None
    dino_image_std: list[float] | None = None
    dino_batch_size: int = 64

    def __post_init__(self, **kwargs):
        if self.mode not in LONGVU_MODE_DEFAULTS:
            raise ValueError(f"mode must be 'paper' or 'reference', got {self.mode!r}.")
        defaults = LONGVU_MODE_DEFAULTS[self.mode]
        self.window_size = defaults["window_size"] if self.window_size is None else self.window_size
        self.threshold = defaults["threshold"] if self.threshold is None else self.threshold
        self.max_frames = defaults["max_frames"] if self.max_frames is None else self.max_frames
        self.image_mean = [0.5, 0.5, 0.5] if self.image_mean is None else list(self.image_mean)
        self.image_std = [0.5, 0.5, 0.5] if self.image_std is None else list(self.image_std)
        self.dino_image_mean = IMAGENET_MEAN if self.dino_image_mean is None else list(self.dino_image_mean)
        self.dino_image_std = IMAGENET_STD if self.dino_image_std is None else list(self.dino_image_std)
        if self.window_size < 1:
            raise ValueError(f"window_size must be at least 1, got {self.window_size}.")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity and must lie in [-1, 1], got {self.threshold}.")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1 or None, got {self.max_frames}.")
        for name in ("context_length", "tokens_per_frame", "dino_image_size", "feature_grid", "dino_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.reserved_tokens < 0:
            raise ValueError(f"reserved_tokens must not be negative, got {self.reserved_tokens}.")
        for name in ("image_mean", "image_std", "dino_image_mean", "dino_image_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs one value per RGB channel, got {getattr(self, name)}.")
        super().__post_init__(**kwargs)
        if self.dino_image_size % self.dino_config.patch_size:
            raise ValueError(
                f"dino_image_size ({self.dino_image_size}) must be a multiple of the DINOv2 patch size "
                f"({self.dino_config.patch_size})."
            )


def window_similarity_scores(
    features: torch.Tensor,
    window_id: torch.LongTensor,
    index_in_window: torch.LongTensor,
    window_size: int,
    include_self: bool,
) -> tuple[torch.Tensor, torch.LongTensor]:
    r"""
    Mean cosine similarity of each frame to the frames of its window, for all windows of all videos at once.

    The frames are laid out as `(num_windows, window_size, dim)` (a view when every window is full, else one copy
    with zero rows for the missing frames of partial windows), and one batched matmul gives every window's Gram
    matrix; cosines divide it by the norms on its diagonal, so the features are read once more, not normalised.

    Args:
        features (`torch.Tensor` of shape `(total_frames, ...)`): per-frame features, flattened to one vector each.
        window_id (`torch.LongTensor` of shape `(total_frames,)`): a window number, unique across videos.
        index_in_window (`torch.LongTensor` of shape `(total_frames,)`): the frame's place in its window.
        window_size (`int`): the most frames in a window.
        include_self (`bool`): average over the whole window (the release) or over the other frames (the paper).
    Returns:
        The scores, shape `(total_frames,)` in fp32, and each frame's window size. A frame alone in its window
        without `include_self` has no other frame to resemble and scores `-inf`.
    """
    flat = features.flatten(1)
    flat = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    num_windows = int(window_id.max()) + 1
    slot = window_id * window_size + index_in_window
    in_place = torch.arange(slot.shape[0], device=slot.device)
    if flat.shape[0] == num_windows * window_size and bool((slot == in_place).all()):
        windows = flat.view(num_windows, window_size, -1)
    else:
        windows = flat.new_zeros(num_windows * window_size, flat.shape[1])
        windows[slot] = flat
        windows = windows.view(num_windows, window_size, -1)
    gram = torch.bmm(windows, windows.transpose(1, 2)).float()
    norm = gram.diagonal(dim1=1, dim2=2).sqrt()
    cosine = gram / (norm[:, :, None] * norm[:, None, :]).clamp(min=1e-12)
    total = cosine.sum(-1).flatten()[slot]
    size = torch.bincount(window_id, minlength=num_windows)[window_id]
    if include_self:
        return total / size, size
    self_similarity = cosine.diagonal(dim1=1, dim2=2).flatten()[slot]
    score = (total - self_similarity) / (size - 1).clamp(min=1)
    return score.masked_fill(size == 1, float("-inf")), size


def uniform_cap_mask(frames: PackedFrames, keep: torch.BoolTensor, max_frames: int) -> torch.BoolTensor:
    r"""
    Of the frames `keep` selects, keeps at most `max_frames` per video, at kept indices `int(kept / max_frames * i)`
    for `i < max_frames` (the release's rule, computed in float64 as Python does).
    """
    kept = frames.count_per_video(keep).to(keep.device)
    over = kept > max_frames
    if not bool(over.any()):
        return keep
    video = frames.video_index()
    rank = frames.rank_within_video(keep)
    # For each over-long video, the kept ranks i_j = floor(kept / max_frames * j), j < max_frames.
    over_videos = torch.nonzero(over).flatten()
    step = torch.arange(max_frames, device=keep.device, dtype=torch.float64)
    chosen_rank = ((kept[over_videos].double() / float(max_frames))[:, None] * step).long()
    chosen = torch.zeros(over_videos.shape[0], int(kept.max()), dtype=torch.bool, device=keep.device)
    chosen.scatter_(1, chosen_rank, True)
    row = torch.full((frames.num_videos,), -1, dtype=torch.long, device=keep.device)
    row[over_videos] = torch.arange(over_videos.shape[0], device=keep.device)
    frame_row = row[video]
    capped = keep & (frame_row >= 0)
    selected = torch.zeros_like(keep)
    selected[capped] = chosen[frame_row[capped], rank[capped]]
    return torch.where(frame_row >= 0, selected, keep)


@register_sampler
class LongVUSampler(VidCompSampler):
    r"""
    LongVU's DINOv2 temporal reduction. It encodes every frame with its own DINOv2 and hands the kept frames'
    features to the compressor (`auxiliary_features`, shape `(kept_frames, feature_grid, feature_grid, dino_dim)`).
    """

    config: LongVUSamplerConfig

    def __init__(self, config: LongVUSamplerConfig):
        super().__init__(config)
        self.dino = AutoModel.from_config(config.dino_config)
        self.post_init()

    @classmethod
    def from_dinov2(cls, dino: str | os.PathLike | PreTrainedModel, **config_kwargs) -> "LongVUSampler":
        r"""
        A sampler around pretrained DINOv2 weights (a Hub id such as `facebook/dinov2-giant`, the release's, a
        folder, or a loaded `Dinov2Model`), for `VidCompForConditionalGeneration.from_pretrained_parts(sampler=...)`.
        `config_kwargs` are the other `LongVUSamplerConfig` fields (`mode`, `threshold`, ...).
        """
        model = dino if isinstance(dino, PreTrainedModel) else AutoModel.from_pretrained(dino)
        sampler = cls(LongVUSamplerConfig(dino_config=model.config.to_dict(), **config_kwargs))
        sampler.dino.load_state_dict(model.state_dict())
        return sampler.eval()

    def max_kept_frames(self, num_frames: int) -> int:
        cap = self.config.max_frames
        return num_frames if cap is None else min(num_frames, cap)

    def dino_pixels(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        r"""Frames normalised for the main tower, shape `(frames, 3, H, W)`, as DINOv2 wants them."""
        config = self.config
        mean_in = pixel_values.new_tensor(config.image_mean)[:, None, None]
        std_in = pixel_values.new_tensor(config.image_std)[:, None, None]
        pixels = pixel_values.float() * std_in + mean_in
        size = config.dino_image_size
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        mean = pixels.new_tensor(config.dino_image_mean)[:, None, None]
        std = pixels.new_tensor(config.dino_image_std)[:, None, None]
        return (pixels - mean) / std

    def encode(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        r"""
        DINOv2 patch features of every frame, resized to the feature grid.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(frames, 3, H, W)`): normalised for the main tower.
        Returns:
            `torch.FloatTensor` of shape `(frames, feature_grid, feature_grid, dino_hidden_size)`.
        """
        side = self.config.dino_image_size // self.config.dino_config.patch_size
        grid = self.config.feature_grid
        dtype = self.dino.embeddings.patch_embeddings.projection.weight.dtype
        features = []
        for chunk in batches_with_progress(pixel_values, self.config.dino_batch_size, "DINOv2 features", self.training):
            patches = self.dino(pixel_values=self.dino_pixels(chunk).to(dtype)).last_hidden_state[:, 1:]
            if patches.shape[1] != side * side:
                raise ValueError(
                    f"DINOv2 returned {patches.shape[1]} patch tokens per frame, expected {side}x{side}. A DINOv2 "
                    "with register tokens is not supported."
                )
            patches = rearrange(patches, "t (h w) d -> t d h w", h=side)
            if side != grid:
                patches = F.interpolate(patches.float(), size=(grid, grid), mode="bilinear", align_corners=False)
            features.append(rearrange(patches, "t d h w -> t h w d").to(dtype))
        return torch.cat(features)

    def fits_context(self, frames: PackedFrames, instruction: InstructionCondition | None) -> torch.BoolTensor:
        r"""`reference` mode: which videos (shape `(num_videos,)`) are short enough to skip the reduction."""
        config = self.config
        left = context_left_for_video(instruction, frames.num_videos, config.context_length, config.reserved_tokens)
        # `select_frame` counts the prompt's one `<image>` token as text too.
        max_num_frames = (left.to(frames.frame_counts) - 1) // config.tokens_per_frame
        return frames.frame_counts < max_num_frames.clamp(min=1)

    def window_layout(self, frames: PackedFrames) -> tuple[torch.LongTensor, torch.LongTensor]:
        r"""Each frame's window (numbered across videos) and its place in it, both of shape `(total_frames,)`."""
        window_size = self.config.window_size
        video = frames.video_index()
        position = frames.position_in_video()
        windows_per_video = -(-frames.frame_counts.to(video.device) // window_size)
        first_window = torch.cumsum(windows_per_video, 0) - windows_per_video
        return first_window[video] + position // window_size, position % window_size

    def keep_in_windows(
        self, features: torch.Tensor, window_id: torch.LongTensor, index_in_window: torch.LongTensor
    ) -> torch.BoolTensor:
        r"""
        The per-window rule on the frames of whole windows (all of them, or a chunk of consecutive windows).

        Args:
            features (`torch.Tensor` of shape `(frames, ...)`): their DINOv2 features.
            window_id, index_in_window (`torch.LongTensor` of shape `(frames,)`): from `window_layout`.
        """
        config = self.config
        reference = config.mode == "reference"
        window_id = window_id - window_id.min()
        score, window_size = window_similarity_scores(
            features, window_id, index_in_window, config.window_size, include_self=reference
        )
        if reference:
            score = score.masked_fill(index_in_window == window_size // 2, 0.0)
            return score < config.threshold
        keep = score <= config.threshold
        # A window of only redundant frames keeps its first frame, as STC keeps its windows' first frames.
        kept_in_window = torch.zeros(int(window_id.max()) + 1, dtype=torch.long, device=keep.device)
        kept_in_window.index_add_(0, window_id, keep.long())
        return keep | ((kept_in_window[window_id] == 0) & (index_in_window == 0))

    def exempt_frames(self, frames: PackedFrames, instruction: InstructionCondition | None) -> torch.BoolTensor:
        r"""Frames kept whatever their windows say: in `reference` mode, those of videos that fit the context."""
        video = frames.video_index()
        if self.config.mode != "reference":
            return torch.zeros_like(video, dtype=torch.bool)
        return self.fits_context(frames, instruction).to(video.device)[video]

    def finish(
        self, frames: PackedFrames, keep: torch.BoolTensor, instruction: InstructionCondition | None
    ) -> torch.BoolTensor:
        r"""The per-video steps after the windows: the `max_frames` cap, then the exempt frames."""
        if self.config.max_frames is not None:
            keep = uniform_cap_mask(frames, keep, self.config.max_frames)
        return keep | self.exempt_frames(frames, instruction)

    def select(
        self, frames: PackedFrames, features: torch.Tensor, instruction: InstructionCondition | None
    ) -> torch.BoolTensor:
        r"""
        The keep mask, shape `(total_frames,)`, of the temporal reduction on DINOv2 `features` (one row per frame).
        """
        window_id, index_in_window = self.window_layout(frames)
        return self.finish(frames, self.keep_in_windows(features, window_id, index_in_window), instruction)

    def forward(
        self,
        frames: PackedFrames,
        frame_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
    ) -> SamplerOutput:
        r"""
        Encodes the frames in chunks of whole windows (about `dino_batch_size` frames) and keeps, of each chunk, only
        the DINOv2 features of the frames its windows keep: an hour of video never holds all its features at once.
        """
        if frames.values.ndim != 4 or frames.values.shape[1] != 3:
            raise InvalidVideoInputError(
                f"LongVUSampler needs pixels of shape (total_frames, 3, height, width), got "
                f"{tuple(frames.values.shape)}."
            )
        window_id, index_in_window = self.window_layout(frames)
        exempt = self.exempt_frames(frames, instruction)
        # Chunks start at the first window starting in each run of dino_batch_size frames.
        window_start = torch.nonzero(index_in_window == 0).flatten()
        batch = window_start // self.config.dino_batch_size
        starts = window_start[torch.cat([batch.new_ones(1, dtype=torch.bool), batch[1:] != batch[:-1]])]
        edges = [*starts.tolist(), int(window_id.shape[0])]
        in_windows, retained = [], []
        for start, end in zip(edges[:-1], edges[1:]):
            features = self.encode(frames.values[start:end])
            keep = self.keep_in_windows(features, window_id[start:end], index_in_window[start:end])
            in_windows.append(keep)
            retained.append(features[keep | exempt[start:end]])
        keep = torch.cat(in_windows)
        final = self.finish(frames, keep, instruction)
        features = torch.cat(retained)[final[keep | exempt]]
        kept = PackedFrames(features, frames.count_per_video(final), frames.timestamps[final])
        return SamplerOutput(keep_mask=final, auxiliary_features=kept)


__all__ = ["LongVUSampler", "LongVUSamplerConfig"]
