r"""The `stc` compressor: LongVU's spatial token compression on its own, with no weights.

Frames fall into windows of K (`window`) frames; each window's first frame is its anchor and keeps all its tokens.
A token of a later frame whose cosine similarity to the anchor's token at the same place exceeds θ (`threshold`)
repeats what the anchor shows and is pruned (LongVU, Sec. 3.3). Under a token budget the most redundant remaining
tokens go next, then whole windows (LongVU's budget guarantee). It needs no training, so it runs on any encoder's
features, Qwen's merged tokens included; every kept token keeps its frame and its place in the frame's grid.
"""

import torch
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
)
from .compressor_longvu import spatial_token_compression


@strict
class SpatialTokenCompressionConfig(PreTrainedConfig):
    r"""
    window (`int`, *optional*, defaults to 8): K, frames per window; the first is the anchor.
    threshold (`float`, *optional*, defaults to 0.8): θ, the cosine similarity above which a token is pruned.
    """

    model_type = "vidcomp_stc_compressor"

    window: int = 8
    threshold: float = 0.8

    def __post_init__(self, **kwargs):
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}.")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity and must lie in [-1, 1], got {self.threshold}.")
        super().__post_init__(**kwargs)


@register_compressor
class SpatialTokenCompressor(VidCompCompressor):
    r"""Prunes tokens that repeat their window's anchor frame at the same place; the rest keep their layout."""

    config: SpatialTokenCompressionConfig

    def __init__(self, config: SpatialTokenCompressionConfig):
        super().__init__(config)
        self.post_init()

    def max_tokens(
        self,
        num_frames: int,
        grid_h: int,
        grid_w: int,
        token_budget: int | None = None,
        num_scenes: int | None = None,
    ) -> int:
        check_token_budget(token_budget, grid_h * grid_w, "frame (an anchor keeps all its tokens)")
        tokens = num_frames * grid_h * grid_w
        return tokens if token_budget is None else min(tokens, token_budget)

    def forward(
        self,
        features: PackedFrames,
        auxiliary_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
        token_budget: int | None = None,
        scene_ids: torch.LongTensor | None = None,
    ) -> CompressorOutput:
        num_frames, grid_h, grid_w, dim = features.values.shape
        check_token_budget(token_budget, grid_h * grid_w, "frame (an anchor keeps all its tokens)")
        grid = features.values.reshape(num_frames, grid_h * grid_w, dim)
        position = features.position_in_video()
        counts = features.frame_counts.to(grid.device)
        budget = counts * grid_h * grid_w if token_budget is None else torch.full_like(counts, token_budget)
        keep, pruned = spatial_token_compression(
            grid, features.video_index(), position, counts, budget, self.config.window, self.config.threshold
        )
        kept_per_frame = keep.sum(1)
        cells = grid_cells(grid_h, grid_w, device=grid.device)
        return CompressorOutput(
            tokens=grid[keep],
            token_counts=torch.zeros_like(features.frame_counts).index_add_(
                0, features.video_index().to(features.frame_counts.device), kept_per_frame.to(features.frame_counts)
            ),
            token_frame_index=position.repeat_interleave(kept_per_frame),
            token_timestamps=features.timestamps.repeat_interleave(kept_per_frame),
            token_grid_positions=cells.expand(num_frames, -1, -1)[keep],
            statistics={"tokens pruned by STC": int(pruned.sum())},
        )


__all__ = ["SpatialTokenCompressionConfig", "SpatialTokenCompressor"]
