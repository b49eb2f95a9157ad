r"""The `uniform` sampler: keep frames evenly spread in time, by count or by rate."""


import torch
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .components_vidcomp import (
    InstructionCondition,
    PackedFrames,
    SamplerOutput,
    VidCompSampler,
    register_sampler,
    uniform_keep_mask,
)


INTERVAL_SLACK = 1e-2


@strict
class UniformSamplerConfig(PreTrainedConfig):
    r"""
    num_frames (`int`, *optional*, defaults to 16):
        The most frames kept per video, spread evenly over its frames (indices `floor(j * T / num_frames)`).
    fps (`float`, *optional*):
        Keep at most this many frames per second of video: the first frame of each `1 / fps` interval of time.
        Applied before `num_frames`, which then caps the result.
    include_last (`bool`, *optional*, defaults to `False`):
        Spread the `num_frames` from the first frame to the last (`floor(j * (T - 1) / (num_frames - 1))`, LLaVA-
        OneVision's `np.linspace(0, T - 1, num_frames)`), so the end of the video is always seen. Transformers' rule,
        the default, stops up to `T / num_frames - 1` frames short of it, which can skip a closing scene.
    """

    model_type = "vidcomp_uniform_sampler"

    num_frames: int | None = 16
    fps: float | None = None
    include_last: bool = False

    def __post_init__(self, **kwargs):
        if self.num_frames is None and self.fps is None:
            raise ValueError("The uniform sampler needs num_frames, fps or both.")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}.")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}.")
        super().__post_init__(**kwargs)


@register_sampler
class UniformSampler(VidCompSampler):
    r"""Keeps frames evenly spaced in time. It has no weights and ignores the instruction."""

    config: UniformSamplerConfig

    def __init__(self, config: UniformSamplerConfig):
        super().__init__(config)
        self.post_init()

    def max_kept_frames(self, num_frames: int) -> int:
        return num_frames if self.config.num_frames is None else min(num_frames, self.config.num_frames)

    def forward(
        self,
        frames: PackedFrames,
        frame_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
    ) -> SamplerOutput:
        video = frames.video_index()
        keep = torch.ones_like(video, dtype=torch.bool)
        if self.config.fps is not None:
            start_time = torch.full((frames.num_videos,), float("inf"), device=video.device)
            start_time = start_time.scatter_reduce(0, video, frames.timestamps, reduce="amin")
            # Timestamps are float32: a frame exactly on an interval boundary (decoded at the sampling rate) can land a
            # hair below it, more so an hour into a video. A slack of 1% of an interval keeps it in its own interval.
            elapsed = (frames.timestamps - start_time[video]) * self.config.fps
            interval = torch.floor(elapsed + INTERVAL_SLACK).long()
            # Frames arrive in time order, so the first frame of an interval is the one whose predecessor lies in
            # another interval or another video.
            first_of_interval = torch.ones_like(keep)
            first_of_interval[1:] = (interval[1:] != interval[:-1]) | (video[1:] != video[:-1])
            keep &= first_of_interval
        if self.config.num_frames is not None:
            kept_length = frames.count_per_video(keep).to(video.device)[video]
            keep &= uniform_keep_mask(
                frames.rank_within_video(keep),
                kept_length,
                torch.full_like(kept_length, self.config.num_frames),
                include_last=self.config.include_last,
            )
        return SamplerOutput(keep_mask=keep)


__all__ = ["UniformSampler", "UniformSamplerConfig"]
