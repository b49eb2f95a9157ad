r"""Frames prepared exactly as Qwen2.5-VL's and Qwen3-VL's own video processors prepare them, kept whole.

Qwen's processors sample at `fps` (2 on the released checkpoints), resize every frame to a multiple of
`patch_size * merge_size` within their pixel budget, normalise, and then cut the frames into flat temporal patches.
This processor does the same sampling, resizing and normalisation, through Transformers' own Qwen code, but returns
whole frames (`(total_frames, 3, height, width)`), so that the composite's sampler can choose among them before the
model pairs the kept frames into temporal patches (`vision_qwen_vidcomp.py`).
"""

import math

import numpy as np
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from .video_processing_vidcomp import VidCompVideoProcessor, VidCompVideosKwargs


# The Transformers processor whose sampling and resizing each family reproduces.
QWEN_VIDEO_PROCESSORS = {"qwen2_5_vl": Qwen2VLVideoProcessor, "qwen3_vl": Qwen3VLVideoProcessor}
# Qwen's settings a converter copies from the source processor, besides the pixel settings.
QWEN_VIDEO_SETTINGS = (
    "patch_size", "temporal_patch_size", "merge_size", "min_frames", "max_frames", "fps", "max_video_tokens",
    "cap_pixels_per_frame",
)  # fmt: skip


class VidCompQwenVideosKwargs(VidCompVideosKwargs, total=False):
    r"""
    qwen_family (`str`): `"qwen2_5_vl"` or `"qwen3_vl"`, whose sampling and pixel budget to follow.
    patch_size, temporal_patch_size, merge_size (`int`): the vision encoder's patch geometry.
    min_frames, max_frames (`int`): bounds on the frames sampled at `fps`.
    cap_pixels_per_frame (`bool`): Qwen's per-frame pixel cap (the reference behaviour, `True`).
    max_video_tokens (`int`): the token budget behind that cap.
    """

    qwen_family: str
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_frames: int
    max_frames: int
    cap_pixels_per_frame: bool
    max_video_tokens: int


class VidCompQwenVideoProcessor(VidCompVideoProcessor):
    r"""
    Decodes videos with PyAV and prepares frames as Qwen's video processor of `qwen_family` does (its `fps`
    sampling, `smart_resize` to multiples of `patch_size * merge_size` within `size`'s pixel budget, CLIP or ImageNet
    normalisation), returning whole frames: `pixel_values_videos` `(total_frames, 3, height, width)` and
    `video_num_frames` `(num_videos,)`.
    """

    qwen_family = "qwen2_5_vl"
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
    patch_size = 14
    temporal_patch_size = 2
    merge_size = 2
    fps = 2.0
    num_frames = None
    min_frames = 4
    max_frames = 768
    cap_pixels_per_frame = True
    max_video_tokens = 128000
    valid_kwargs = VidCompQwenVideosKwargs

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.qwen_family not in QWEN_VIDEO_PROCESSORS:
            raise ValueError(
                f"qwen_family must be one of {', '.join(QWEN_VIDEO_PROCESSORS)}, got {self.qwen_family!r}."
            )

    def reference(self):
        """Transformers' own video processor of this family with these settings, whose rules this one follows."""
        names = ("size", "resample", "patch_size", "temporal_patch_size", "merge_size", "max_video_tokens")
        return QWEN_VIDEO_PROCESSORS[self.qwen_family](**{name: getattr(self, name) for name in names})

    def largest_token_grid(self) -> tuple[int, int]:
        r"""
        The merged token grid (rows, columns) of the largest square frame the pixel budget allows: `longest_edge`
        pixels per frame for Qwen2.5-VL, `max_video_tokens` patches per frame for Qwen3-VL. Model cards bound a
        video's tokens with it.
        """
        factor = self.patch_size * self.merge_size
        if self.qwen_family == "qwen3_vl":
            side = math.isqrt(self.max_video_tokens) // self.merge_size
        else:
            side = math.isqrt(self.size["longest_edge"]) // factor
        return max(side, 1), max(side, 1)

    def sample_frames(self, metadata, num_frames: int | None = None, fps: float | None = None, **kwargs):
        # Qwen's rule (frames at `fps`, at least `min_frames`, a multiple of the temporal patch for Qwen2.5-VL); an
        # explicit `num_frames` replaces the rate, as Qwen's processors take one or the other.
        fps = None if num_frames is not None else fps
        indices = QWEN_VIDEO_PROCESSORS[self.qwen_family].sample_frames(self, metadata, num_frames=num_frames, fps=fps)
        return np.asarray(indices, dtype=np.int64)

    def resize(self, video, size, resample=None, **kwargs):
        return self.reference().resize(
            video,
            size=size,
            resample=resample,
            factor=self.patch_size * self.merge_size,
            temporal_factor=self.temporal_patch_size,
            cap_pixels_per_frame=self.cap_pixels_per_frame,
        )


__all__ = ["QWEN_VIDEO_SETTINGS", "VidCompQwenVideoProcessor", "VidCompQwenVideosKwargs"]
