"""The two Transformers baselines of `benchmarks/run.py`, called through Transformers' own code, and our `baseline`
preset's pooling checked against LLaVA-OneVision's."""

import inspect
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlavaOnevisionModel, VideoLlama3VideoProcessor

from transformers_vidcomp import COMPRESSOR_REGISTRY, InvalidVideoInputError, PackedFrames
from transformers_vidcomp.presets import PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from transformers_baselines import (  # noqa: E402
    VIDEOLLAMA3_MIN_TOKENS,
    VIDEOLLAMA3_THRESHOLD,
    llava_onevision_model,
    llava_onevision_pooling,
    videollama3_frame_difference_pruning,
)

PATCH = 4
MERGE = 2


def baseline_compressor():
    settings = dict(PRESETS["baseline"].compressor_config)
    compressor_class = COMPRESSOR_REGISTRY[settings.pop("model_type")]
    return compressor_class(compressor_class.config_class(**settings)).eval()


def packed(features_per_video: list[torch.Tensor]) -> PackedFrames:
    counts = torch.tensor([features.shape[0] for features in features_per_video])
    return PackedFrames(torch.cat(features_per_video), counts, torch.arange(int(counts.sum())).float())


@pytest.mark.parametrize("grid", [4, 5, 27])  # even, odd, and SigLIP-so400m-384's 27x27
def test_baseline_preset_pools_exactly_like_llava_onevision(grid):
    generator = torch.Generator().manual_seed(grid)
    videos = [torch.randn(frames, grid, grid, 6, generator=generator) for frames in (3, 2)]
    with torch.no_grad():
        ours = baseline_compressor()(packed(videos))
        theirs = [llava_onevision_pooling(video) for video in videos]

    assert [len(tokens) for tokens in theirs] == [frames * math.ceil(grid / 2) ** 2 for frames in (3, 2)]
    assert ours.token_counts.tolist() == [len(tokens) for tokens in theirs]
    torch.testing.assert_close(ours.tokens, torch.cat(theirs), rtol=0, atol=0)


def test_llava_onevision_pooling_is_transformers_apply_pooling():
    features = torch.randn(2, 6, 6, 5)
    model = llava_onevision_model(6)
    assert isinstance(model, LlavaOnevisionModel)
    assert model.config.vision_config.image_size // model.config.vision_config.patch_size == 6
    # 2x2 bilinear interpolation on an even grid is the mean of each 2x2 block.
    expected = features.reshape(2, 3, 2, 3, 2, 5).mean(dim=(2, 4)).reshape(-1, 5)
    torch.testing.assert_close(llava_onevision_pooling(features), expected)


def test_building_the_baselines_leaves_the_callers_generator_alone():
    llava_onevision_model.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    llava_onevision_pooling(torch.randn(1, 8, 8, 2))
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), expected)


def test_llava_onevision_refuses_non_square_grids():
    with pytest.raises(InvalidVideoInputError, match="square"):
        llava_onevision_pooling(torch.randn(2, 4, 6, 3))


def random_frames(num_frames: int, grid_h: int, grid_w: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num_frames, 3, grid_h * PATCH, grid_w * PATCH), generator=generator).to(torch.uint8)


def block(frames: torch.Tensor, frame: int, row: int, column: int) -> torch.Tensor:
    """The pixels under merged token (row, column) of one frame, as a view."""
    side = PATCH * MERGE
    return frames[frame, :, row * side : (row + 1) * side, column * side : (column + 1) * side]


def prune(features, frames, **kwargs):
    return videollama3_frame_difference_pruning(features, frames, patch_size=PATCH, merge_size=MERGE, **kwargs)


def test_videollama3_keeps_the_first_frame_drops_a_repeated_one_and_keeps_what_changed():
    grid_h, grid_w = 4, 6
    frames = random_frames(4, grid_h, grid_w)
    frames[1] = frames[0]  # an exact repeat
    frames[2] = frames[0]
    block(frames, 2, 1, 2)[0, 0, 0] ^= 0x80  # ... but for one pixel of merged token (1, 2), moved by 128 levels
    block(frames, 2, 0, 1).copy_(255 - block(frames, 2, 0, 1))  # and a whole block inverted
    # frame 3 is new noise: everything changed.
    features = torch.randn(4, grid_h, grid_w, 7)

    tokens, keep_mask = prune(features, frames)

    assert keep_mask.shape == (4, grid_h // MERGE, grid_w // MERGE)
    assert keep_mask[0].all() and keep_mask[3].all()
    # A repeated frame keeps only the min_tokens=1 first token VideoLLaMA3 guarantees every frame.
    assert keep_mask[1].flatten().tolist() == [True] + [False] * 5
    assert keep_mask[2].nonzero().tolist() == [[0, 1], [1, 2]]
    # The kept tokens are the 2x2-merged features at the kept places: on an even grid, the mean of each block.
    merged = features.reshape(4, grid_h // 2, 2, grid_w // 2, 2, 7).mean(dim=(2, 4))
    torch.testing.assert_close(tokens, merged[keep_mask])
    # ... which is also what our baseline preset (LLaVA-OneVision's pooling) emits for those places.
    with torch.no_grad():
        pooled = baseline_compressor()(packed([features])).tokens.reshape(4, grid_h // 2, grid_w // 2, 7)
    torch.testing.assert_close(tokens, pooled[keep_mask])


def test_videollama3_mask_is_its_processors_own_mask_with_its_defaults():
    frames = random_frames(5, 4, 4, seed=1)
    frames[2] = frames[1]
    frames[4, :, :8] = frames[3, :, :8]
    defaults = inspect.signature(VideoLlama3VideoProcessor._get_compression_mask).parameters
    assert (defaults["threshold"].default, defaults["min_tokens"].default) == (
        VIDEOLLAMA3_THRESHOLD,
        VIDEOLLAMA3_MIN_TOKENS,
    )
    own = VideoLlama3VideoProcessor(patch_size=PATCH, merge_size=MERGE)(videos=[frames], do_resize=False)

    _, keep_mask = prune(torch.randn(5, 4, 4, 3), frames)

    assert torch.equal(keep_mask.flatten(), own["video_compression_mask"])
    assert keep_mask[4].tolist() == [[False, False], [True, True]]


def test_videollama3_threshold_is_a_mean_change_of_a_twentieth_of_a_grey_level():
    frames = random_frames(2, 2, 4, seed=2).clamp(max=254)
    frames[1] = frames[0]
    values_per_token = 3 * (PATCH * MERGE) ** 2  # 192: 0.05 grey levels on average is 9.6 values moved by one level
    assert values_per_token == 192
    for column, moved in ((0, 9), (1, 10)):
        steps = torch.zeros(values_per_token, dtype=torch.uint8)
        steps[:moved] = 1
        block(frames, 1, 0, column).add_(steps.view(3, PATCH * MERGE, PATCH * MERGE))

    _, keep_mask = prune(torch.randn(2, 2, 4, 3), frames)
    assert keep_mask[1, 0].tolist() == [False, True]

    # A higher threshold prunes more; min_tokens=0 lets a frame lose every token.
    _, keep_mask = prune(torch.randn(2, 2, 4, 3), frames, threshold=0.2, min_tokens=0)
    assert not keep_mask[1].any()


def test_videollama3_reads_only_the_pixels_the_patches_cover_and_accepts_float_frames():
    frames = random_frames(3, 4, 4, seed=3)
    frames[1] = frames[0]
    frames[2] = frames[0]
    larger = torch.randint(0, 256, (3, 3, 4 * PATCH + 3, 4 * PATCH + 5), dtype=torch.uint8)
    larger[:, :, : 4 * PATCH, : 4 * PATCH] = frames  # the margin no patch covers is noise, new in every frame
    features = torch.randn(3, 4, 4, 4)

    expected = prune(features, frames)
    for pixels in (larger, larger.float()):
        tokens, keep_mask = prune(features, pixels)
        assert torch.equal(keep_mask, expected.keep_mask)
        assert torch.equal(tokens, expected.tokens)
    assert expected.keep_mask[1:].sum() == 2  # the repeats keep one token each


@pytest.mark.parametrize(
    ("features", "frames", "message"),
    [
        (torch.randn(2, 3, 4, 5), random_frames(2, 3, 4), "multiple of 2"),
        (torch.randn(2, 4, 4, 5), random_frames(3, 4, 4), r"shape \(2, 3"),
        (torch.randn(2, 4, 4, 5), random_frames(2, 2, 4), "at least 16x16"),
        (torch.randn(2, 4, 4, 5), random_frames(2, 4, 4).float() / 127.5 - 1, "negative"),
        (torch.randn(4, 4, 5), random_frames(2, 4, 4), "num_frames, height, width, dim"),
    ],
)
def test_videollama3_refuses_inputs_it_cannot_prune(features, frames, message):
    with pytest.raises(InvalidVideoInputError, match=message):
        prune(features, frames)
