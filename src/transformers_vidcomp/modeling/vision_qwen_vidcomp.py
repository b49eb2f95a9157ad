r"""Qwen2.5-VL's and Qwen3-VL's vision encoders inside the composite.

Qwen's encoder reads *temporal patches*: `temporal_patch_size` (2) consecutive frames embedded together, so a video
becomes one grid of tokens per pair of frames. Its merger then joins 2x2 neighbouring patches and projects them to
the LLM's width: the merger is Qwen's projector, and its tokens are the LLM's tokens.

The composite's sampler chooses frames, and the pairs are formed here from the frames it kept, exactly as Qwen's
processor forms them from the frames it sampled: consecutive kept frames pair up, and a video's last frame is repeated
to fill an incomplete last pair. Every sampler thus keeps its frame-level interface, and a model given Qwen's own
frame choice encodes exactly what Qwen encodes. Compressors then see one merged grid per temporal patch, at the LLM
width (`(num_patches, grid_h / 2, grid_w / 2, text_hidden_size)`).

Attention in Qwen's encoders never crosses a temporal patch (its blocks are per frame grid), so patches are encoded
`vision_batch_size` at a time with identical results.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from transformers import PreTrainedConfig

from .components_vidcomp import PackedFrames, batches_with_progress


# Vision configs of the encoders this module drives, and how each places its video tokens in the LLM's positions.
QWEN_VISION_MODEL_TYPES = {"qwen2_5_vl_vision": "qwen2_5_vl", "qwen3_vl_vision": "qwen3_vl"}


def qwen_family(vision_config: PreTrainedConfig) -> str | None:
    """`"qwen2_5_vl"` or `"qwen3_vl"` for a Qwen vision encoder's config, None for any other tower."""
    return QWEN_VISION_MODEL_TYPES.get(getattr(vision_config, "model_type", None))


@dataclass
class TemporalPatches:
    r"""
    The kept frames of a batch grouped into Qwen's temporal patches.

    Args:
        frames (`PackedFrames` with values of shape `(total_patches, temporal_patch_size, 3, height, width)`):
            The patches of all videos, concatenated; `frame_counts` counts patches per video and `timestamps` is the
            time of each patch's first frame.
        first_frame (`torch.LongTensor` of shape `(total_patches,)`):
            For each patch, the row of its first frame among the frames that were paired.
        frame_times (`torch.FloatTensor` of shape `(total_patches, temporal_patch_size)`):
            The time of every frame in each patch (a repeated last frame repeats its time).
    """

    frames: PackedFrames
    first_frame: torch.LongTensor
    frame_times: torch.FloatTensor


def pair_frames(frames: PackedFrames, temporal_patch_size: int) -> TemporalPatches:
    r"""
    Groups each video's frames into temporal patches of `temporal_patch_size` consecutive frames, repeating a video's
    last frame to complete its last patch (Qwen's `patchify` rule), in one gather for the batch.

    Args:
        frames (`PackedFrames` with values of shape `(total_frames, 3, height, width)`)
    """
    counts = frames.frame_counts.to(frames.values.device)
    patches = -(-counts // temporal_patch_size)
    slots = patches * temporal_patch_size
    slot_video = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), slots)
    slot = torch.arange(int(slots.sum()), device=counts.device) - (torch.cumsum(slots, 0) - slots)[slot_video]
    first = torch.cumsum(counts, 0) - counts
    source = first[slot_video] + torch.minimum(slot, counts[slot_video] - 1)
    values = frames.values[source].unflatten(0, (-1, temporal_patch_size))
    frame_times = frames.timestamps[source].view(-1, temporal_patch_size)
    first_frame = source.view(-1, temporal_patch_size)[:, 0]
    grouped = PackedFrames(values, patches.to(frames.frame_counts), frame_times[:, 0], frames.video_sizes)
    return TemporalPatches(grouped, first_frame, frame_times)


@dataclass
class QwenVisionOutput:
    r"""
    Args:
        features (`torch.FloatTensor` of shape `(total_patches, merged_h, merged_w, out_hidden_size)`):
            The merger's tokens of every temporal patch, row by row.
        deepstack_features (`list[torch.FloatTensor]`, *optional*):
            Qwen3-VL: for each DeepStack level, merged features of the same shape as `features`.
    """

    features: torch.FloatTensor
    deepstack_features: list[torch.FloatTensor] | None = None


def patchify(patches: torch.Tensor, patch_size: int, merge_size: int) -> torch.Tensor:
    r"""
    Qwen's flat patch layout: `(num_patches, temporal_patch_size, 3, height, width)` ->
    `(num_patches * grid_h * grid_w, 3 * temporal_patch_size * patch_size**2)`, ordered so that each 2x2 group the
    merger joins is contiguous (temporal patch, merged row, merged column, then the 2x2 group), as
    `Qwen2VLVideoProcessor.patchify` orders it.
    """
    return rearrange(
        patches,
        "p t c (h m1 s1) (w m2 s2) -> (p h w m1 m2) (c t s1 s2)",
        m1=merge_size,
        m2=merge_size,
        s1=patch_size,
        s2=patch_size,
    )


def encode_temporal_patches(
    vision_tower: torch.nn.Module, patches: torch.Tensor, batch_size: int, training: bool
) -> QwenVisionOutput:
    r"""
    Runs a Qwen vision encoder over temporal patches, `batch_size` patches per call.

    Args:
        vision_tower: `Qwen2_5_VisionTransformerPretrainedModel` or `Qwen3VLVisionModel`.
        patches (`torch.FloatTensor` of shape `(num_patches, temporal_patch_size, 3, height, width)`)
    Returns:
        [`QwenVisionOutput`] with merged features of shape `(num_patches, height / (patch * merge), width / (patch *
        merge), out_hidden_size)`.
    """
    config = vision_tower.config
    patch_size, merge_size = config.patch_size, config.spatial_merge_size
    height, width = patches.shape[-2:]
    factor = patch_size * merge_size
    if height % factor or width % factor:
        raise ValueError(
            f"Frames of {height}x{width} pixels do not divide into {factor}x{factor} merged patches. Prepare videos "
            "with the converted model's processor (VidCompQwenVideoProcessor), which resizes to multiples of it."
        )
    grid_h, grid_w = height // patch_size, width // patch_size
    features, deepstack = [], []
    for chunk in batches_with_progress(patches, batch_size, "encoding temporal patches", training):
        grid_thw = torch.tensor([[1, grid_h, grid_w]], device=chunk.device).expand(chunk.shape[0], 3)
        flat = patchify(chunk.to(vision_tower.dtype), patch_size, merge_size)
        output = vision_tower(flat, grid_thw=grid_thw)
        features.append(output.pooler_output)
        if getattr(output, "deepstack_features", None) is not None:
            deepstack.append(output.deepstack_features)

    def as_grids(tokens: torch.Tensor) -> torch.Tensor:
        return rearrange(tokens, "(p h w) d -> p h w d", h=grid_h // merge_size, w=grid_w // merge_size)

    levels = [as_grids(torch.cat(level)) for level in zip(*deepstack)] if deepstack else None
    return QwenVisionOutput(as_grids(torch.cat(features)), levels)


__all__ = [
    "QWEN_VISION_MODEL_TYPES",
    "QwenVisionOutput",
    "TemporalPatches",
    "encode_temporal_patches",
    "pair_frames",
    "patchify",
    "qwen_family",
]
