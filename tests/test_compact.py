"""The compact spatiotemporal convolutional compressor, its autoencoder, and reconstruction pretraining."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments

from transformers_vidcomp import InvalidVideoInputError, PackedFrames, TokenBudgetError, VidCompConfig
from transformers_vidcomp.conversion.writer import save_checkpoint
from transformers_vidcomp.modeling import (
    CompactAutoencoderConfig,
    CompactCompressor,
    CompactCompressorConfig,
    CompactVideoAutoencoder,
    VidCompForConditionalGeneration,
)
from transformers_vidcomp.tiny import TINY_TEXT, build_tiny, sized_for_tiny_vision
from transformers_vidcomp.training import (
    CompactPretrainCollator,
    UnknownStageError,
    apply_training_stage,
    stage_parameter_groups,
)


def packed(frame_counts, height, width, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(sum(frame_counts), height, width, dim, generator=generator)
    times = torch.cat([torch.arange(n, dtype=torch.float32) * 0.25 + 10 * v for v, n in enumerate(frame_counts)])
    return PackedFrames(values, torch.tensor(frame_counts), times)


def compressor(seed=0, **kwargs):
    torch.manual_seed(seed)
    return CompactCompressor(CompactCompressorConfig(**{"hidden_size": 8, "bottleneck_ratio": 2, **kwargs})).eval()


def reference_conv_block(block, x, stride):
    """The supplement's convolutional block written with per-frame Conv2d and per-patch Conv1d, on one video.

    x: (dim, T, H, W). Zero padding of (k - 1) // 2 before and k - 1 - (k - 1) // 2 after each convolved axis.
    """
    ks, kt = block.spatial.kernel_size[-1], block.temporal.kernel_size[0]
    s_pad = ((ks - 1) // 2, ks - 1 - (ks - 1) // 2)
    t_pad = ((kt - 1) // 2, kt - 1 - (kt - 1) // 2)
    spatial_w, temporal_w = block.spatial.weight[:, :, 0], block.temporal.weight[:, :, :, 0, 0]
    frames = torch.stack(
        [F.conv2d(F.pad(x[:, t], (*s_pad, *s_pad)), spatial_w, block.spatial.bias, stride) for t in range(x.shape[1])],
        dim=1,
    )
    bottleneck, frames_in, out_h, out_w = frames.shape
    sequences = frames.reshape(bottleneck, frames_in, out_h * out_w).permute(2, 0, 1)  # one sequence per patch
    out = F.conv1d(F.pad(sequences, t_pad), temporal_w, block.temporal.bias, stride)
    return F.silu(out.permute(1, 2, 0).reshape(-1, out.shape[-1], out_h, out_w))


def reference_encode(model, video):
    """(T, H, W, d) -> (T', H', W', d) with the blocks applied one video at a time."""
    x = video.permute(3, 0, 1, 2)
    for block in model.blocks:
        down = block.resample == "down"
        h = reference_conv_block(block.conv_blocks[0], x, 2 if down else 1)
        h = reference_conv_block(block.conv_blocks[1], h, 1)
        x = (x[:, ::2, ::2, ::2] if down else x) + h
    return x.permute(1, 2, 3, 0)


@pytest.mark.parametrize("frame_counts", [[1, 6, 11], [8, 8]])  # one packed row; one padded row per video
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"spatial_kernel_size": 2, "temporal_kernel_size": 2}, {"num_downsampling_blocks": 1},
     {"num_residual_blocks": 4, "num_downsampling_blocks": 3, "temporal_kernel_size": 5}],
)
def test_matches_the_per_frame_conv2d_per_patch_conv1d_reference(kwargs, frame_counts):
    model = compressor(**kwargs)
    features = packed(frame_counts, 7, 5, 8)
    out = model(features)
    expected = torch.cat([reference_encode(model, video).reshape(-1, 8) for video in features.split()])
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    frame_counts=st.lists(st.integers(1, 13), min_size=1, max_size=3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    budget=st.one_of(st.none(), st.integers(1, 60)),
)
def test_token_counts_budget_and_batched_equals_per_video(frame_counts, height, width, budget):
    model = compressor()
    per_group = math.ceil(height / 4) * math.ceil(width / 4)
    features = packed(frame_counts, height, width, 8)
    if budget is not None and budget < per_group:
        with pytest.raises(TokenBudgetError, match="temporal group"):
            model(features, token_budget=budget)
        return
    with torch.no_grad():
        out = model(features, token_budget=budget)
        unlimited = model(features)
    groups = [math.ceil(n / 4) for n in frame_counts]
    assert unlimited.token_counts.tolist() == [g * per_group for g in groups]  # ceil(T/4) ceil(H/4) ceil(W/4)
    assert out.token_counts.tolist() == [model.max_tokens(n, height, width, budget) for n in frame_counts]
    if budget is not None:
        assert (out.token_counts <= budget).all()
    assert out.tokens.shape == (int(out.token_counts.sum()), 8)

    starts = torch.cumsum(features.frame_counts, 0) - features.frame_counts
    tokens, index, times = (t.split(out.token_counts.tolist()) for t in
                            (out.tokens, out.token_frame_index, out.token_timestamps))
    full = unlimited.tokens.split(unlimited.token_counts.tolist())
    for v, (video, n) in enumerate(zip(features.split(), frame_counts)):
        alone = model(PackedFrames(video, torch.tensor([n]), features.timestamps[starts[v]: starts[v] + n]))
        torch.testing.assert_close(full[v], alone.tokens, atol=1e-5, rtol=1e-5)
        # Tokens carry their group's first frame; under a budget, whole groups are kept, evenly spread.
        kept = index[v].reshape(-1, per_group)[:, 0] // 4
        assert (index[v].reshape(-1, per_group) == (kept * 4)[:, None]).all()
        assert torch.equal(times[v], features.timestamps[starts[v] + index[v]])
        if budget is not None:
            allowed = min(budget // per_group, groups[v])
            assert kept.tolist() == [j * groups[v] // allowed for j in range(allowed)]
        torch.testing.assert_close(
            tokens[v].reshape(-1, per_group, 8), full[v].reshape(-1, per_group, 8)[kept], atol=0, rtol=0
        )


def test_layout_computes_the_fewest_frames():
    model = compressor()
    equal = model.layout(torch.tensor([16, 16, 16]))  # one row each: no padding, no gaps
    assert (equal.num_rows, equal.row_length, equal.offset.tolist()) == (3, 16, [0, 0, 0])
    # Padded rows would compute 4 x 32 frames; one row computes 4 + 8 + 12 + 32 and a group of 4 between videos.
    unequal = model.layout(torch.tensor([3, 8, 10, 32]))
    assert (unequal.num_rows, unequal.row_length, unequal.offset.tolist()) == (1, 68, [0, 8, 20, 36])
    mask = unequal.mask(0, torch.float32).flatten()
    inside = torch.zeros(68)
    for start, n in [(0, 3), (8, 8), (20, 10), (36, 32)]:
        inside[start: start + n] = 1
    assert torch.equal(mask, inside)
    assert unequal.mask(2, torch.float32).flatten().tolist() == [1, 0, 1, 1, 0, 1, 1, 1, 0] + [1] * 8
    wide = compressor(temporal_kernel_size=5).layout(torch.tensor([3, 8, 10, 32]))  # reaches 2 groups past
    assert wide.offset.tolist() == [0, 12, 28] + [48] and wide.row_length == 80


def test_gradients_reach_every_weight():
    model = compressor().train()
    out = model(packed([3, 9], 6, 6, 8))
    out.tokens.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_parameter_count_at_vit_g_width():
    """d = 1408 (ViT-G/14): 6 blocks of d * d/4 * (3*3 + 3) + d/4 + d; the decoder has as many again."""
    with torch.device("meta"):
        encoder = CompactCompressor(CompactCompressorConfig(hidden_size=1408))
        autoencoder = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=1408))
        short = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=1408, temporal_kernel_size=2))
    per_block = 1408 * 352 * (9 + 3) + 352 + 1408
    assert encoder.config.conv_block_parameters() == per_block == 5_949_152
    assert sum(p.numel() for p in encoder.parameters()) == 6 * per_block == 35_694_912
    assert sum(p.numel() for p in autoencoder.parameters()) == 12 * per_block == 71_389_824
    # The paper's "about 65M" overall is what a temporal kernel of 2 gives.
    assert sum(p.numel() for p in short.parameters()) == 12 * (1408 * 352 * 11 + 352 + 1408) == 65_442_432


def test_bad_input_and_config():
    model = compressor()
    with pytest.raises(InvalidVideoInputError, match=r"grid_w, 8\), got \(4, 3, 3, 16\)"):
        model(packed([4], 3, 3, 16))
    with pytest.raises(InvalidVideoInputError, match="grid_w, 8"):
        model(PackedFrames(torch.zeros(4, 9, 8), torch.tensor([4]), torch.arange(4.0)))
    with pytest.raises(TokenBudgetError, match="positive"):
        model(packed([4], 3, 3, 8), token_budget=0)
    with pytest.raises(TokenBudgetError, match="cannot hold one temporal group"):
        model.max_tokens(8, 8, 8, token_budget=3)
    with pytest.raises(ValueError, match="multiple of bottleneck_ratio"):
        CompactCompressorConfig(hidden_size=10, bottleneck_ratio=4)
    with pytest.raises(ValueError, match="num_downsampling_blocks"):
        CompactCompressorConfig(num_residual_blocks=2, num_downsampling_blocks=3)
    with pytest.raises(ValueError, match="Kernel sizes"):
        CompactCompressorConfig(temporal_kernel_size=0)


@settings(max_examples=10, deadline=None)
@given(frame_counts=st.lists(st.integers(1, 10), min_size=1, max_size=3), height=st.integers(1, 7),
       width=st.integers(1, 7))
def test_autoencoder_reconstructs_the_input_shape_batched_as_per_video(frame_counts, height, width):
    torch.manual_seed(0)
    autoencoder = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=8, bottleneck_ratio=2)).eval()
    features = packed(frame_counts, height, width, 8)
    with torch.no_grad():
        out = autoencoder(features.values, features.frame_counts)
        alone = [autoencoder(video, torch.tensor([len(video)])) for video in features.split()]
    assert out.reconstruction.shape == features.values.shape
    torch.testing.assert_close(out.reconstruction, torch.cat([a.reconstruction for a in alone]), atol=1e-5, rtol=1e-5)
    squared = (out.reconstruction - features.values).square()
    torch.testing.assert_close(out.loss, squared.mean())
    weights = torch.tensor(frame_counts, dtype=torch.float32) / sum(frame_counts)
    torch.testing.assert_close(out.loss, sum(w * a.loss for w, a in zip(weights, alone)))


def test_autoencoder_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    autoencoder = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=8, bottleneck_ratio=2, num_residual_blocks=2))
    autoencoder.save_pretrained(tmp_path)
    loaded = CompactVideoAutoencoder.from_pretrained(tmp_path)
    assert loaded.config.num_residual_blocks == 2 and loaded.config.model_type == "vidcomp_compact_autoencoder"
    features = packed([5, 2], 3, 4, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features.values, features.frame_counts).reconstruction,
                                   autoencoder(features.values, features.frame_counts).reconstruction, atol=0, rtol=0)


def test_stage_trains_the_autoencoder_only(tiny):
    autoencoder = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=8, bottleneck_ratio=2))
    counts = apply_training_stage(autoencoder, "compressor-pretrain")
    assert counts == {"trainable": sum(p.numel() for p in autoencoder.parameters()), "frozen": 0}
    groups = stage_parameter_groups(autoencoder, "compressor-pretrain")
    assert {(g["name"], g["lr"]) for g in groups} == {("compressor", 2e-5), ("decoder", 2e-5)}
    with pytest.raises(UnknownStageError, match="CompactVideoAutoencoder"):
        apply_training_stage(tiny[0], "compressor-pretrain")
    with pytest.raises(UnknownStageError, match="CompactVideoAutoencoder"):
        apply_training_stage(autoencoder, "compressor")


def test_collator_needs_videos_and_unprojected_features(tiny_compact):
    model, processor = tiny_compact
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        CompactPretrainCollator(model, processor.video_processor)([{}])
    projecting = VidCompForConditionalGeneration(VidCompConfig(**{
        **{key: getattr(model.config, key) for key in ("vision_config", "text_config", "video_token_id")},
        "compressor_config": sized_for_tiny_vision({"model_type": "vidcomp_spatial_pool_compressor"}),
        "project_before_compression": True,
    }))
    with pytest.raises(ValueError, match="project_before_compression"):
        CompactPretrainCollator(projecting, processor.video_processor)


@pytest.fixture(scope="module")
def tiny_compact():
    """A tiny VidComp model whose compressor is the compact one, with the baseline's processor."""
    base, processor = build_tiny("baseline")
    config = VidCompConfig(
        vision_config=base.config.vision_config,
        text_config=base.config.text_config,
        sampler_config=base.config.sampler_config,
        compressor_config=sized_for_tiny_vision({"model_type": "vidcomp_compact_compressor"}),
        video_token_id=base.config.video_token_id,
    )
    torch.manual_seed(0)
    return VidCompForConditionalGeneration(config).eval(), processor


def test_pretraining_lowers_the_loss_and_the_encoder_loads_into_a_video_llm(tiny_compact, demo_video, tmp_path):
    model, processor = tiny_compact
    vision_before = {n: p.clone() for n, p in model.model.vision_tower.named_parameters()}
    torch.manual_seed(0)
    autoencoder = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=model.config.vision_config.hidden_size))
    apply_training_stage(autoencoder, "compressor-pretrain")
    collator = CompactPretrainCollator(model, processor.video_processor, {"num_frames": 6, "fps": 10.0})
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=2, max_steps=20, learning_rate=3e-3,
        lr_scheduler_type="constant", logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
        remove_unused_columns=False, disable_tqdm=True,
    )
    trainer = Trainer(model=autoencoder, args=args, train_dataset=[{"video": str(demo_video[0])}] * 40,
                      data_collator=collator)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    for name, parameter in model.model.vision_tower.named_parameters():
        assert torch.equal(parameter, vision_before[name]), f"frozen {name} changed"

    # The trained encoder is a compressor part: loaded into a video LLM, it gives the tokens it gives alone.
    autoencoder.eval().compressor.save_pretrained(tmp_path / "compressor")
    text = {k: v for k, v in TINY_TEXT.items() if k != "model_type"}
    llm = Qwen2ForCausalLM(Qwen2Config(**text, vocab_size=model.config.text_config.vocab_size))
    llm_model = VidCompForConditionalGeneration.from_pretrained_parts(
        vision_tower=model.model.vision_tower, language_model=llm, compressor=tmp_path / "compressor",
        video_token_id=model.config.video_token_id,
    )
    assert llm_model.config.parts["compressor"] == str(tmp_path / "compressor")
    batch = collator([{"video": str(demo_video[0])}])
    video = processor.video_processor(videos=[str(demo_video[0])], return_tensors="pt", num_frames=6, fps=10.0)
    with torch.no_grad():
        alone = autoencoder.compressor(PackedFrames(batch["video_features"], batch["video_num_frames"],
                                                    torch.arange(6.0)))
        inside = llm_model.get_video_features(video["pixel_values_videos"], video["video_num_frames"])
    assert inside.token_counts.tolist() == [2 * 2 * 2]  # ceil(6/4) * ceil(8/4) * ceil(8/4)
    torch.testing.assert_close(inside.last_hidden_state, alone.tokens, atol=0, rtol=0)


def test_a_video_llm_with_the_compact_compressor_saves_as_remote_code(tiny_compact, demo_video, tmp_path):
    model, processor = tiny_compact
    folder = save_checkpoint(model, processor, tmp_path / "ckpt").path
    source = (folder / "compressor_compact.py").read_text()
    assert "transformers_vidcomp" not in source and "from .." not in source
    loaded = VidCompForConditionalGeneration.from_pretrained(folder).eval()
    video = processor.video_processor(videos=[str(demo_video[0])], return_tensors="pt", num_frames=9, fps=10.0)
    with torch.no_grad():
        before = model.get_video_features(video["pixel_values_videos"], video["video_num_frames"],
                                          video_token_budget=8)
        after = loaded.get_video_features(video["pixel_values_videos"], video["video_num_frames"],
                                          video_token_budget=8)
    assert before.token_counts.tolist() == [8]  # 3 groups of 4 tokens, 2 of them fit the budget
    assert before.token_frame_index.tolist() == [0] * 4 + [4] * 4
    torch.testing.assert_close(after.pooler_output, before.pooler_output)
