import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModel
from transformers.video_utils import VideoMetadata, default_sample_indices_fn

from transformers_vidcomp import InvalidVideoInputError, PackedFrames, TokenBudgetError
from transformers_vidcomp.modeling import (
    SpatialPoolCompressor,
    SpatialPoolCompressorConfig,
    UniformSampler,
    UniformSamplerConfig,
    uniform_keep_mask,
)


def packed(counts, shape=(3, 4, 4), fps=10.0):
    counts = torch.tensor(counts)
    total = int(counts.sum())
    times = torch.cat([torch.arange(n, dtype=torch.float32) / fps for n in counts.tolist()])
    return PackedFrames(torch.randn(total, *shape), counts, times)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 300), keep=st.integers(1, 300))
def test_uniform_keep_mask_matches_transformers_default_sampling(length, keep):
    keep = min(keep, length)
    expected = default_sample_indices_fn(VideoMetadata(total_num_frames=length, fps=1.0), num_frames=keep)
    position = torch.arange(length)
    mask = uniform_keep_mask(position, torch.full_like(position, length), torch.full_like(position, keep))
    assert torch.nonzero(mask).flatten().tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 300), keep=st.integers(1, 300))
def test_uniform_keep_mask_with_last_is_exact_linspace(length, keep):
    keep = min(keep, length)
    # np.linspace(0, length - 1, keep, dtype=int) in exact arithmetic: its float steps can floor one index short.
    expected = [0] if keep == 1 else [j * (length - 1) // (keep - 1) for j in range(keep)]
    position = torch.arange(length)
    mask = uniform_keep_mask(
        position, torch.full_like(position, length), torch.full_like(position, keep), include_last=True
    )
    assert torch.nonzero(mask).flatten().tolist() == expected
    assert mask[-1] == (keep > 1 or length == 1)


def test_packed_frames_rejects_bad_shapes():
    with pytest.raises(InvalidVideoInputError, match="no frames"):
        PackedFrames(torch.zeros(3, 2), torch.tensor([3, 0]), torch.zeros(3))
    with pytest.raises(InvalidVideoInputError, match="adds up to 4"):
        PackedFrames(torch.zeros(3, 2), torch.tensor([2, 2]), torch.zeros(3))
    with pytest.raises(InvalidVideoInputError, match="timestamps"):
        PackedFrames(torch.zeros(3, 2), torch.tensor([3]), torch.zeros(2))
    with pytest.raises(InvalidVideoInputError, match="integer"):
        PackedFrames(torch.zeros(3, 2), torch.tensor([3.0]), torch.zeros(3))
    for sizes in ([[90, 160]], [[90, 0]], [[90.0, 160.0], [1.0, 1.0]]):
        with pytest.raises(InvalidVideoInputError, match=r"video_sizes must be positive integers of shape \(2, 2\)"):
            PackedFrames(torch.zeros(3, 2), torch.tensor([2, 1]), torch.zeros(3), torch.tensor(sizes))
    # Frame selection and new values keep each video's picture size.
    frames = PackedFrames(torch.zeros(3, 2), torch.tensor([2, 1]), torch.zeros(3), torch.tensor([[90, 160], [4, 4]]))
    kept = frames.select(torch.tensor([False, True, True])).with_values(torch.ones(2, 5))
    assert kept.video_sizes.tolist() == [[90, 160], [4, 4]] and kept.frame_counts.tolist() == [1, 1]


def test_packed_frames_positions_and_selection():
    frames = packed([3, 1, 4])
    assert frames.video_index().tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert frames.position_in_video().tolist() == [0, 1, 2, 0, 0, 1, 2, 3]
    keep = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    kept = frames.select(keep)
    assert kept.frame_counts.tolist() == [2, 1, 2]
    assert torch.equal(kept.values, frames.values[keep])
    assert frames.rank_within_video(keep).tolist() == [0, 1, 1, 0, 0, 0, 0, 1]


def test_uniform_sampler_by_count_matches_default_sampling_per_video():
    frames = packed([40, 7, 16])
    sampler = UniformSampler(UniformSamplerConfig(num_frames=8))
    keep = sampler(frames).keep_mask
    for video, (mask, n) in enumerate(zip(torch.split(keep, [40, 7, 16]), [40, 7, 16])):
        expected = default_sample_indices_fn(VideoMetadata(total_num_frames=n, fps=1.0), num_frames=min(8, n))
        assert torch.nonzero(mask).flatten().tolist() == expected.tolist(), video


def test_uniform_sampler_including_last_frame_sees_the_end_of_every_video():
    frames = packed([60, 7, 16], fps=4.0)
    default = UniformSampler(UniformSamplerConfig(num_frames=16))(frames).keep_mask
    with_last = UniformSampler(UniformSamplerConfig(num_frames=16, include_last=True))(frames).keep_mask
    # Transformers' rule stops at frame 56 of 60 (14.0 s of a 15 s video at 4 fps); a closing scene after it is lost.
    assert torch.nonzero(default[:60]).flatten()[-1] == 56
    assert torch.nonzero(with_last[:60]).flatten().tolist() == [j * 59 // 15 for j in range(16)]
    assert frames.count_per_video(with_last).tolist() == [16, 7, 16]
    assert all(mask[-1] for mask in torch.split(with_last, [60, 7, 16]))


def test_uniform_sampler_by_rate_keeps_first_frame_of_each_interval():
    frames = packed([30, 12], fps=10.0)
    keep = UniformSampler(UniformSamplerConfig(num_frames=None, fps=2.0))(frames).keep_mask
    first, second = torch.split(keep, [30, 12])
    assert torch.nonzero(first).flatten().tolist() == [0, 5, 10, 15, 20, 25]
    assert torch.nonzero(second).flatten().tolist() == [0, 5, 10]
    capped = UniformSampler(UniformSamplerConfig(num_frames=3, fps=2.0))(frames).keep_mask
    assert torch.nonzero(capped[:30]).flatten().tolist() == [0, 10, 20]


def test_uniform_sampler_config_validation():
    with pytest.raises(ValueError, match="num_frames, fps or both"):
        UniformSamplerConfig(num_frames=None, fps=None)
    with pytest.raises(ValueError, match="num_frames"):
        UniformSamplerConfig(num_frames=0)


def test_spatial_pool_matches_llava_onevision_apply_pooling():
    from transformers import LlavaOnevisionConfig, LlavaOnevisionModel

    config = LlavaOnevisionConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=54, patch_size=6),
        text_config=dict(model_type="qwen2", vocab_size=64, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
    )
    reference = LlavaOnevisionModel(config).eval()
    grid = 54 // 6  # 9x9: odd, so the ceil in the pooled size matters
    features = torch.randn(5, grid * grid, 16)
    expected = reference.apply_pooling(features)

    frames = PackedFrames(features.view(5, grid, grid, 16), torch.tensor([2, 3]), torch.arange(5.0))
    out = SpatialPoolCompressor(SpatialPoolCompressorConfig())(frames)
    torch.testing.assert_close(out.tokens, expected.reshape(-1, 16), rtol=0, atol=0)
    assert out.token_counts.tolist() == [2 * 25, 3 * 25]
    assert out.token_frame_index.view(5, 25)[:, 0].tolist() == [0, 1, 0, 1, 2]


def test_spatial_pool_average_mode_averages_partial_border_windows():
    values = torch.arange(3 * 3, dtype=torch.float32).view(1, 3, 3, 1)
    out = SpatialPoolCompressor(SpatialPoolCompressorConfig(mode="average"))(
        PackedFrames(values, torch.tensor([1]), torch.zeros(1))
    )
    grid = values[0, :, :, 0]
    expected = [grid[:2, :2].mean(), grid[:2, 2:].mean(), grid[2:, :2].mean(), grid[2:, 2:].mean()]
    torch.testing.assert_close(out.tokens.flatten(), torch.stack(expected))


@pytest.mark.parametrize("budget", [16, 40, 100, 10_000])
def test_spatial_pool_never_exceeds_the_budget(budget):
    frames = packed([12, 3], shape=(8, 8, 4))  # 16 tokens per frame after pooling
    out = SpatialPoolCompressor(SpatialPoolCompressorConfig())(frames, token_budget=budget)
    assert (out.token_counts <= budget).all()
    assert out.token_counts.tolist() == [min(12, budget // 16) * 16, min(3, budget // 16) * 16]
    assert out.tokens.shape[0] == int(out.token_counts.sum())


@pytest.mark.parametrize("budget", [0, -3, 15])
def test_spatial_pool_rejects_impossible_budgets(budget):
    with pytest.raises(TokenBudgetError):
        SpatialPoolCompressor(SpatialPoolCompressorConfig())(packed([2], shape=(8, 8, 4)), token_budget=budget)


@pytest.mark.parametrize(
    "component",
    [UniformSampler(UniformSamplerConfig(num_frames=5, fps=1.5)), SpatialPoolCompressor(SpatialPoolCompressorConfig(stride=3))],
)
def test_components_round_trip_through_automodel(component, tmp_path):
    import transformers_vidcomp  # noqa: F401  registers the Auto classes

    component.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is type(component)
    assert loaded.config.to_diff_dict() == component.config.to_diff_dict()


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    num_frames=st.one_of(st.none(), st.integers(1, 20)),
    fps=st.one_of(st.none(), st.floats(0.5, 12.0)),
    stride=st.integers(1, 4),
    grid=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    budget=st.one_of(st.none(), st.integers(81, 2000)),
)
def test_max_kept_frames_and_max_tokens_are_the_exact_worst_case(counts, num_frames, fps, stride, grid, budget):
    # Model cards print these bounds, so for content-blind methods they must be exactly what a video produces.
    if num_frames is None and fps is None:
        num_frames = 8
    sampler = UniformSampler(UniformSamplerConfig(num_frames=num_frames, fps=fps))
    compressor = SpatialPoolCompressor(SpatialPoolCompressorConfig(stride=stride))
    frames = packed(counts, shape=(*grid, 2), fps=fps or 1.0)  # one frame per sampling interval: nothing to skip
    kept = sampler(frames).keep_mask
    assert frames.count_per_video(kept).tolist() == [sampler.max_kept_frames(n) for n in counts]
    features = frames.select(kept)
    out = compressor(features, token_budget=budget)
    expected = [compressor.max_tokens(int(n), *grid, token_budget=budget) for n in features.frame_counts]
    assert out.token_counts.tolist() == expected


def test_a_compressor_with_an_unknown_projection_is_refused_when_defined():
    from transformers_vidcomp.modeling.components_vidcomp import VidCompCompressor

    with pytest.raises(TypeError, match="'after', 'inside' or 'own', not 'before'"):
        type("BeforeCompressor", (VidCompCompressor,), {"projection": "before"})
