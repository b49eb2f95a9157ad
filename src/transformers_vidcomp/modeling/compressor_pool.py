r"""The `spatial_pool` compressor: LLaVA-OneVision's video path, each frame's patch grid pooled 2x2."""


from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .components_vidcomp import (
    CompressorOutput,
    InstructionCondition,
    PackedFrames,
    VidCompCompressor,
    check_token_budget,
    grid_cells,
    register_compressor,
    uniform_keep_mask,
)


@strict
class SpatialPoolCompressorConfig(PreTrainedConfig):
    r"""
    stride (`int`, *optional*, defaults to 2):
        Each frame's `grid_h x grid_w` patch grid shrinks to `ceil(grid_h / stride) x ceil(grid_w / stride)`; 1 keeps
        every token (the converted Qwen models' "no compression").
    mode (`str`, *optional*, defaults to `"bilinear"`):
        `"bilinear"` interpolation, exactly as LLaVA-OneVision pools video frames, or `"average"` pooling over
        `stride x stride` windows (a partial window at the border averages what it covers).
    """

    model_type = "vidcomp_spatial_pool_compressor"

    stride: int = 2
    mode: Literal["bilinear", "average"] = "bilinear"

    def __post_init__(self, **kwargs):
        if self.stride < 1:
            raise ValueError(f"stride must be at least 1, got {self.stride}.")
        super().__post_init__(**kwargs)


@register_compressor
class SpatialPoolCompressor(VidCompCompressor):
    r"""
    Pools every frame to a smaller grid and emits its tokens row by row, frame after frame. Under a token budget it
    keeps an evenly spread subset of frames, so a video never yields more than the budget.
    """

    config: SpatialPoolCompressorConfig

    def __init__(self, config: SpatialPoolCompressorConfig):
        super().__init__(config)
        self.post_init()

    def pooled_grid(self, grid_h: int, grid_w: int) -> tuple[int, int]:
        stride = self.config.stride
        return -(-grid_h // stride), -(-grid_w // stride)

    def max_tokens(
        self,
        num_frames: int,
        grid_h: int,
        grid_w: int,
        token_budget: int | None = None,
        num_scenes: int | None = None,
    ) -> int:
        tokens_per_frame = self.tokens_per_frame(grid_h, grid_w, token_budget)
        frames = num_frames if token_budget is None else min(num_frames, token_budget // tokens_per_frame)
        return frames * tokens_per_frame

    def tokens_per_frame(self, grid_h: int, grid_w: int, token_budget: int | None = None) -> int:
        """Tokens of one pooled frame; a `TokenBudgetError` if `token_budget` cannot hold even one."""
        pooled_h, pooled_w = self.pooled_grid(grid_h, grid_w)
        tokens_per_frame = pooled_h * pooled_w
        check_token_budget(
            token_budget,
            tokens_per_frame,
            f"frame (pooled to {pooled_h}x{pooled_w})",
            "Raise the budget or the pooling stride.",
        )
        return tokens_per_frame

    def forward(
        self,
        features: PackedFrames,
        auxiliary_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
        token_budget: int | None = None,
        scene_ids: torch.LongTensor | None = None,
    ) -> CompressorOutput:
        _, grid_h, grid_w, _ = features.values.shape
        pooled_h, pooled_w = self.pooled_grid(grid_h, grid_w)
        tokens_per_frame = self.tokens_per_frame(grid_h, grid_w, token_budget)
        frame_position = features.position_in_video()
        if token_budget is not None:
            length = features.frame_counts.to(frame_position.device)[features.video_index()]
            keep = uniform_keep_mask(frame_position, length, torch.full_like(length, token_budget // tokens_per_frame))
            features, frame_position = features.select(keep), frame_position[keep]

        grids = rearrange(features.values, "t h w d -> t d h w")
        if self.config.mode == "bilinear":
            pooled = F.interpolate(grids, size=(pooled_h, pooled_w), mode="bilinear")
        else:
            pooled = F.avg_pool2d(grids, self.config.stride, ceil_mode=True)
        tokens = rearrange(pooled, "t d h w -> (t h w) d")
        return CompressorOutput(
            tokens=tokens,
            token_counts=features.frame_counts * tokens_per_frame,
            token_frame_index=frame_position.repeat_interleave(tokens_per_frame),
            token_timestamps=features.timestamps.repeat_interleave(tokens_per_frame),
            # A pooled token sits at its window's first cell (bilinear pooling: the window it interpolates most).
            token_grid_positions=grid_cells(pooled_h, pooled_w, self.config.stride, tokens.device).repeat(
                features.values.shape[0], 1
            ),
        )


__all__ = ["SpatialPoolCompressor", "SpatialPoolCompressorConfig"]
