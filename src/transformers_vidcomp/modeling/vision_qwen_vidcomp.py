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


def timestamp_token_ids(seconds: float, segment_tokens: dict[str, list[int]]) -> list[int]:
    r"""
    The token ids of Qwen3-VL's `"<{seconds:.1f} seconds>"`, from the ids of its pieces (`"<"`, each digit, `"."`,
    `" seconds>"`) that the converter read from the tokenizer: Qwen's tokenizers split digits and punctuation into
    pieces of their own, so the text's ids are its pieces' ids in order.
    """
    text = f"{seconds:.1f}"
    return [
        *segment_tokens["<"], *(i for character in text for i in segment_tokens[character]), *segment_tokens[" seconds>"]
    ]


@dataclass
class TimestampedVideoTokens:
    r"""
    A batch's video tokens laid out as Qwen3-VL writes videos: per temporal patch that kept tokens,
    `<t seconds><|vision_start|>` tokens `<|vision_end|>`. The text tokens are carried as their LLM embeddings, so
    the composite splices the whole layout where each video's placeholder was.

    Args:
        tokens (`torch.FloatTensor` of shape `(total_slots, text_hidden_size)`)
        token_counts (`torch.LongTensor` of shape `(num_videos,)`): slots per video, text included.
        source (`torch.LongTensor` of shape `(total_slots,)`): the visual token each slot is, or for a text slot the
            first visual token of its patch (whose frame and time it reports).
        is_visual (`torch.BoolTensor` of shape `(total_slots,)`)
        token_positions (`torch.LongTensor` of shape `(total_slots, 3)`): offsets from the video's start position.
        video_position_spans (`torch.LongTensor` of shape `(num_videos,)`): where the text after each video goes on.
    """

    tokens: torch.FloatTensor
    token_counts: torch.LongTensor
    source: torch.LongTensor
    is_visual: torch.BoolTensor
    token_positions: torch.LongTensor
    video_position_spans: torch.LongTensor


def interleave_timestamps(
    tokens: torch.FloatTensor,
    token_video: torch.LongTensor,
    token_patch: torch.LongTensor,
    token_positions: torch.LongTensor,
    patch_seconds: torch.FloatTensor,
    grid_span: int,
    num_videos: int,
    segment_tokens: dict[str, list[int]],
    embeddings: torch.nn.Module,
) -> TimestampedVideoTokens:
    r"""
    Writes each kept temporal patch as Qwen3-VL's processor writes every patch: its time (the mean of its frames'
    times), then its tokens between `<|vision_start|>` and `<|vision_end|>`. Patches whose every token was dropped
    are left out, time included. Positions follow Qwen3-VL's `get_rope_index`: text one by one, each patch's tokens
    at `(0, row, column)` from where it starts, the text after it `grid_span` further on.

    The loop runs over temporal patches (hundreds for an hour at Qwen's 2 fps), not over tokens: their times must
    be written as text.

    Args:
        tokens (`torch.FloatTensor` of shape `(total_tokens, text_hidden_size)`): visual tokens, patch after patch.
        token_video, token_patch (`torch.LongTensor` of shape `(total_tokens,)`): each token's video and patch row.
        token_positions (`torch.LongTensor` of shape `(total_tokens, 3)`): (0, row, column) within its patch.
        patch_seconds (`torch.FloatTensor` of shape `(total_patches,)`): each patch's time.
    """
    if bool((token_patch[1:] < token_patch[:-1]).any()):
        raise ValueError("Qwen3-VL writes a video patch after patch: the compressor must emit tokens in patch order.")
    patches, counts = torch.unique_consecutive(token_patch, return_counts=True)
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    videos = token_video[torch.cumsum(counts, 0) - 1].tolist()
    start_id, end_id = segment_tokens["vision_start"], segment_tokens["vision_end"]
    device = tokens.device
    slot_ids, sources, positions, slot_counts = [], [], [], [0] * num_videos
    spans = [0] * num_videos  # where each video's text goes on, from its start
    for patch, first, count, video in zip(patches.tolist(), starts, counts.tolist(), videos):
        cursor = spans[video]
        text = timestamp_token_ids(float(patch_seconds[patch]), segment_tokens) + start_id
        slot_ids += [*text, *([-1] * count), *end_id]  # -1: a visual token
        sources += [
            torch.full((len(text),), first, device=device),
            torch.arange(first, first + count, device=device),
            torch.full((len(end_id),), first, device=device),
        ]
        text_positions = torch.arange(cursor, cursor + len(text), device=device)
        cursor += len(text)
        end_positions = torch.arange(len(end_id), device=device) + cursor + grid_span
        positions += [
            text_positions[:, None].expand(-1, 3),
            token_positions[first : first + count] + cursor,
            end_positions[:, None].expand(-1, 3),
        ]
        spans[video] = cursor + grid_span + len(end_id)
        slot_counts[video] += len(text) + count + len(end_id)
    slot_ids = torch.tensor(slot_ids, device=device)
    is_visual = slot_ids < 0
    out = tokens.new_empty(slot_ids.shape[0], tokens.shape[-1])
    out[is_visual] = tokens
    out[~is_visual] = embeddings(slot_ids[~is_visual]).to(tokens.dtype)
    return TimestampedVideoTokens(
        tokens=out,
        token_counts=torch.tensor(slot_counts, device=device),
        source=torch.cat(sources),
        is_visual=is_visual,
        token_positions=torch.cat(positions),
        video_position_spans=torch.tensor(spans, device=device),
    )


__all__ = [
    "QWEN_VISION_MODEL_TYPES",
    "TimestampedVideoTokens",
    "interleave_timestamps",
    "timestamp_token_ids",
    "QwenVisionOutput",
    "TemporalPatches",
    "encode_temporal_patches",
    "pair_frames",
    "patchify",
    "qwen_family",
]
