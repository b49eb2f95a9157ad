r"""
Two video-token reductions that Transformers itself ships, run by Transformers' own code on features we give them.

- `llava_onevision_pooling`: `LlavaOnevisionModel.apply_pooling`, LLaVA-OneVision's video path. Every frame's
  `H x W` patch grid is bilinearly interpolated down to `ceil(H / 2) x ceil(W / 2)`:
  `T * ceil(H / 2) * ceil(W / 2)` tokens. (The full model then appends one learned `image_newline` per video, in the
  LLM's embedding space, after its projector: one more token, which this feature-level comparison leaves out.)
- `videollama3_frame_difference_pruning`: VideoLLaMA3's video path. `VideoLlama3VisionModel.pixel_unshuffle` merges
  every 2x2 block of patches into one token (bilinear interpolation to `H / 2 x W / 2`), and
  `VideoLlama3VideoProcessor._get_compression_mask` drops a token when the frame's pixels under it barely differ
  from the previous frame's: the mean absolute difference of the normalised pixels, times 255, must exceed
  `threshold` (0.1) for the token to stay. The first frame keeps all its tokens and every frame keeps at least
  `min_tokens` (1). Tokens: between `H W / 4 + (T - 1) * min_tokens` and `T * H * W / 4`, depending on the video.

Both functions build a tiny real instance of the Transformers class from a config, offline, and call its method;
nothing here re-implements either algorithm. They take the features of ONE video, `(num_frames, height, width, dim)`,
the layout of `PackedFrames.values` (call them once per video of a packed batch).

    import sys; sys.path.insert(0, "benchmarks")
    from transformers_baselines import llava_onevision_pooling, videollama3_frame_difference_pruning
"""

import functools
from typing import NamedTuple

import torch
from einops import rearrange
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionModel,
    VideoLlama3VideoProcessor,
    VideoLlama3VisionConfig,
    VideoLlama3VisionModel,
)

from transformers_vidcomp import InvalidVideoInputError

# The smallest real architectures that carry the two methods; their weights never touch the features.
TINY_TEXT = {
    "model_type": "qwen2", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1,
}  # fmt: skip
TINY_VISION = {"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}

# VideoLLaMA3's defaults for video: 14-pixel patches (its SigLIP encoder), 2x2 merging, and the threshold and minimum
# of its `_get_compression_mask`.
VIDEOLLAMA3_PATCH_SIZE = 14
VIDEOLLAMA3_MERGE_SIZE = 2
VIDEOLLAMA3_THRESHOLD = 0.1
VIDEOLLAMA3_MIN_TOKENS = 1


class PrunedTokens(NamedTuple):
    r"""
    tokens (`torch.FloatTensor` of shape `(kept_tokens, dim)`):
        The kept merged tokens, frame after frame, row by row within a frame.
    keep_mask (`torch.BoolTensor` of shape `(num_frames, height // merge_size, width // merge_size)`):
        Which merged tokens VideoLLaMA3 keeps; `tokens` are the merged grid's entries where it is true.
    """

    tokens: torch.FloatTensor
    keep_mask: torch.BoolTensor


def _check_features(features: torch.Tensor) -> None:
    if features.ndim != 4:
        raise InvalidVideoInputError(
            f"features must have shape (num_frames, height, width, dim), one video's patch grids, got "
            f"{tuple(features.shape)}."
        )


@functools.cache
def llava_onevision_model(grid_size: int, patch_size: int = 14) -> LlavaOnevisionModel:
    r"""A tiny `LlavaOnevisionModel` whose vision config has a `grid_size x grid_size` patch grid."""
    config = LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model", "image_size": grid_size * patch_size, "patch_size": patch_size,
            **TINY_VISION,
        },
        text_config=TINY_TEXT,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_token_id=1,
        video_token_id=2,
    )  # fmt: skip
    # Initialisation draws random weights: it must not move the caller's seeded generator.
    with torch.random.fork_rng(devices=[]):
        return LlavaOnevisionModel(config).eval()


def llava_onevision_pooling(features: torch.Tensor) -> torch.Tensor:
    r"""
    LLaVA-OneVision's per-frame video pooling, by `LlavaOnevisionModel.apply_pooling`.

    Args:
        features (`torch.Tensor` of shape `(num_frames, height, width, dim)`): one video's patch features. The grid
            must be square: LLaVA-OneVision derives both sides from `vision_config.image_size // patch_size`.

    Returns:
        `torch.Tensor` of shape `(num_frames * ceil(height / 2) * ceil(width / 2), dim)`, frame after frame, row by row.
    """
    _check_features(features)
    num_frames, height, width, _ = features.shape
    if height != width:
        raise InvalidVideoInputError(
            f"LLaVA-OneVision pools square patch grids only (its apply_pooling takes both sides from "
            f"vision_config.image_size), got {height}x{width}. Use a square-input vision tower for this baseline."
        )
    pooled = llava_onevision_model(height).apply_pooling(rearrange(features, "t h w d -> t (h w) d"))
    return rearrange(pooled, "t n d -> (t n) d")


@functools.cache
def videollama3_vision_model() -> VideoLlama3VisionModel:
    r"""A tiny `VideoLlama3VisionModel`, for its `pixel_unshuffle` (patch merging), which has no weights."""
    with torch.random.fork_rng(devices=[]):
        return VideoLlama3VisionModel(VideoLlama3VisionConfig(**TINY_VISION)).eval()


@functools.cache
def videollama3_video_processor(patch_size: int, merge_size: int) -> VideoLlama3VideoProcessor:
    return VideoLlama3VideoProcessor(patch_size=patch_size, merge_size=merge_size)


def videollama3_frame_difference_pruning(
    features: torch.Tensor,
    frames: torch.Tensor,
    patch_size: int = VIDEOLLAMA3_PATCH_SIZE,
    merge_size: int = VIDEOLLAMA3_MERGE_SIZE,
    threshold: float = VIDEOLLAMA3_THRESHOLD,
    min_tokens: int = VIDEOLLAMA3_MIN_TOKENS,
) -> PrunedTokens:
    r"""
    VideoLLaMA3's video token compression: merge each `merge_size x merge_size` block of patches into one token, then
    drop the tokens whose pixels did not change since the previous frame.

    `VideoLlama3VideoProcessor` turns `frames` into its normalised patch pixels (no resizing: the frames are the
    ones the features come from) and computes the keep mask with `_get_compression_mask`;
    `VideoLlama3VisionModel.pixel_unshuffle` merges the features, laid out in the processor's patch order.

    Args:
        features (`torch.Tensor` of shape `(num_frames, height, width, dim)`):
            One video's patch features; `height` and `width` must be multiples of `merge_size`.
        frames (`torch.Tensor` of shape `(num_frames, 3, pixel_height, pixel_width)`):
            The RGB frames the features were computed from, raw values in [0, 255] (uint8 or float), before any
            normalisation: VideoLLaMA3's processor rescales and normalises them itself (mean = std = 0.5, as
            `VidCompVideoProcessor` does, so `pixel_values * 127.5 + 127.5` recovers them from our processor's
            output). Patch `(i, j)` covers pixels `[i * patch_size, (i + 1) * patch_size)` vertically (and likewise
            horizontally), as in a stride-`patch_size` convolution: pixels beyond `height * patch_size` rows or
            `width * patch_size` columns, which no patch sees, are cropped.
        patch_size (`int`): pixels per patch side of the encoder that produced `features`.
        merge_size (`int`): patches per merged token side (VideoLLaMA3 uses 2 for video).
        threshold (`float`): a token stays when the mean absolute difference of its normalised pixels to the
            previous frame's, times 255, exceeds it. 0.1 is VideoLLaMA3's default, i.e. a mean change of 0.05 grey
            levels on the [0, 255] scale.
        min_tokens (`int`): tokens a frame keeps at least (its first ones) when none changed.
    """
    _check_features(features)
    num_frames, height, width, _ = features.shape
    if height % merge_size or width % merge_size:
        raise InvalidVideoInputError(
            f"VideoLLaMA3 merges {merge_size}x{merge_size} patch blocks, so the patch grid must be a multiple of "
            f"{merge_size} on both sides, got {height}x{width}. Use frames whose patch grid is (VideoLLaMA3 resizes "
            f"to multiples of {patch_size * merge_size} pixels) or another merge_size."
        )
    if frames.ndim != 4 or frames.shape[0] != num_frames or frames.shape[1] != 3:
        raise InvalidVideoInputError(
            f"frames must have shape ({num_frames}, 3, pixel_height, pixel_width), the RGB frames the features come "
            f"from, got {tuple(frames.shape)}."
        )
    pixel_height, pixel_width = height * patch_size, width * patch_size
    if frames.shape[2] < pixel_height or frames.shape[3] < pixel_width:
        raise InvalidVideoInputError(
            f"A {height}x{width} grid of {patch_size}-pixel patches needs frames of at least "
            f"{pixel_height}x{pixel_width} pixels, got {frames.shape[2]}x{frames.shape[3]}."
        )
    if frames.is_floating_point() and bool((frames < 0).any()):
        raise InvalidVideoInputError(
            "frames hold negative values: pass raw pixel values in [0, 255], not normalised pixel_values "
            "(VideoLLaMA3's processor normalises them itself)."
        )

    processor = videollama3_video_processor(patch_size, merge_size)
    inputs = processor(
        videos=[frames[:, :, :pixel_height, :pixel_width]],
        do_resize=False,
        use_token_compression=False,
        return_tensors="pt",
    )
    keep = processor._get_compression_mask(
        pixel_values_videos=inputs["pixel_values_videos"],
        video_grid_thw=inputs["video_grid_thw"],
        video_merge_sizes=inputs["video_merge_sizes"],
        threshold=threshold,
        min_tokens=min_tokens,
    ).to(features.device)

    # The processor orders patches block by block (each merge block's patches together); its encoder's features,
    # one per patch, come in the same order, which pixel_unshuffle expects.
    patches = rearrange(features, "t (hb m1) (wb m2) d -> (t hb wb m1 m2) d", m1=merge_size, m2=merge_size)
    merged = videollama3_vision_model().pixel_unshuffle(
        patches,
        inputs["video_grid_thw"].to(features.device),
        inputs["video_merge_sizes"].to(features.device),
    )
    keep_mask = rearrange(keep, "(t hb wb) -> t hb wb", t=num_frames, hb=height // merge_size)
    return PrunedTokens(tokens=merged[keep], keep_mask=keep_mask)


__all__ = [
    "PrunedTokens",
    "llava_onevision_pooling",
    "videollama3_frame_difference_pruning",
]
