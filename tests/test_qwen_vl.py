"""Qwen2.5-VL and Qwen3-VL checkpoints convert into the composite with exact parity; kept tokens keep Qwen's 3D
positions (Qwen3-VL: its per-patch timestamps and DeepStack features too)."""

import pytest
import torch
from transformers.video_utils import load_video

from transformers_vidcomp.conversion import Qwen2_5_VLConverter, get_converter
from transformers_vidcomp.demo_video import make_demo_video
from transformers_vidcomp.modeling.vision_qwen_vidcomp import timestamp_token_ids
from transformers_vidcomp.tiny import sized_for_tiny_vision
from transformers_vidcomp.tiny_qwen import build_tiny_qwen_vl


PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n<|im_start|>assistant\n"
OTHER_PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe it.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    r"""Two real mp4s at 8 fps, 2 s and 3 s long: Qwen samples 4 and 6 frames at 2 fps (2 and 3 temporal patches)."""
    folder = tmp_path_factory.mktemp("qwen-videos")
    make_demo_video(folder / "two.mp4", seconds_per_scene=1.0, fps=8, width=96, height=64, photos=("rocket", "coffee"))
    make_demo_video(
        folder / "three.mp4", seconds_per_scene=1.0, fps=8, width=96, height=64, photos=("chelsea", "rocket", "coffee")
    )
    return [folder / "two.mp4", folder / "three.mp4"]


def qwen_inputs(processor, prompts, paths):
    decoded = [load_video(str(path), backend="pyav") for path in paths]
    processor.tokenizer.padding_side = "left"
    return processor(
        text=prompts,
        videos=[frames for frames, _ in decoded],
        videos_kwargs={"video_metadata": [metadata for _, metadata in decoded], "do_sample_frames": True},
        padding=True,
        return_tensors="pt",
    )


def our_inputs(processor, prompts, paths):
    processor.tokenizer.padding_side = "left"
    return processor(text=prompts, videos=[str(path) for path in paths], padding=True, return_tensors="pt")


def convert_tiny(tmp_path_factory, family, variant):
    source = tmp_path_factory.mktemp(family) / variant
    reference, reference_processor = build_tiny_qwen_vl(family, source, variant)
    result = get_converter(family).convert(source)
    return source, reference, reference_processor, result.model, result.processor


FAMILIES_AND_SIZES = [(family, size) for family in ("qwen2_5_vl", "qwen3_vl") for size in ("small", "large")]


@pytest.fixture(scope="module", params=FAMILIES_AND_SIZES, ids=["-".join(p) for p in FAMILIES_AND_SIZES])
def converted(request, tmp_path_factory):
    return convert_tiny(tmp_path_factory, *request.param)


@pytest.fixture(scope="module")
def qwen2_5_small(tmp_path_factory):
    source = tmp_path_factory.mktemp("qwen2_5_small") / "small"
    return source, *build_tiny_qwen_vl("qwen2_5_vl", source, "small")


@pytest.fixture(scope="module", params=["small", "large"])
def converted_qwen2_5(request, tmp_path_factory):
    return convert_tiny(tmp_path_factory, "qwen2_5_vl", request.param)


def test_converted_model_matches_transformers(converted, videos):
    _, reference, reference_processor, model, processor = converted
    theirs = qwen_inputs(reference_processor, [PROMPT], videos[:1])
    ours = our_inputs(processor, [PROMPT], videos[:1])
    # Qwen's frame choice (4 frames of 16), resized and normalised as Qwen's processor does, before its patchify.
    assert ours["video_num_frames"].tolist() == [4]
    with torch.no_grad():
        expected = reference(**theirs).logits
        actual = model(**ours).logits
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)

    expected_ids = reference.generate(**theirs, max_new_tokens=8, do_sample=False)
    actual_ids = model.generate(**ours, max_new_tokens=8, do_sample=False)
    assert actual_ids[:, -8:].tolist() == expected_ids[:, -8:].tolist()


def test_batch_of_two_videos_of_different_lengths(converted, videos):
    _, reference, reference_processor, model, processor = converted
    prompts = [PROMPT, OTHER_PROMPT]
    theirs = qwen_inputs(reference_processor, prompts, videos)
    ours = our_inputs(processor, prompts, videos)
    assert ours["video_num_frames"].tolist() == [4, 6]
    with torch.no_grad():
        expected = reference(**theirs).logits
        actual = model(**ours).logits
    real = theirs["attention_mask"].bool()
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual[real], expected[real], atol=1e-5, rtol=0)

    expected_ids = reference.generate(**theirs, max_new_tokens=6, do_sample=False)
    actual_ids = model.generate(**ours, max_new_tokens=6, do_sample=False)
    assert actual_ids[:, -6:].tolist() == expected_ids[:, -6:].tolist()


def reference_positions(reference, theirs):
    """Qwen's own 3D positions for its full sequence, `(3, batch, length)`."""
    positions, _ = reference.model.get_rope_index(
        theirs["input_ids"],
        mm_token_type_ids=theirs["mm_token_type_ids"],
        video_grid_thw=theirs["video_grid_thw"],
        second_per_grid_ts=theirs["second_per_grid_ts"],
        attention_mask=theirs["attention_mask"],
    )
    return positions


def our_positions(model, ours):
    """Our expanded sequence's (text, t, h, w) positions and the videos' features."""
    with torch.no_grad():
        out = model(**ours)
    features = out.video_outputs
    input_ids, mask, _ = model.model.expand_video_placeholders(
        ours["input_ids"], ours["attention_mask"], None, features.token_counts
    )
    return model.model.video_position_ids(input_ids, mask, features), input_ids, features


POOL = {"model_type": "vidcomp_spatial_pool_compressor", "mode": "average"}
# STC over a window of all three patches: the anchor (patch 0) keeps its tokens, and the budget leaves room for 3 more,
# the 3 least like the anchor at their place, anywhere in patches 1 and 2: a keep mask inside frames.
STC = {"model_type": "vidcomp_stc_compressor", "window": 3, "threshold": 1.0}


@pytest.mark.parametrize(
    "compressor, stride, budget_extra, kept_patches",
    [
        ({**POOL, "stride": 1}, 1, (2, 0), [0, 1]),  # a keep mask of whole patches: a budget of two keeps 2 of 3
        ({**POOL, "stride": 2}, 2, None, [0, 1, 2]),  # pooled 2x2 windows, each at its window's first cell
        (STC, 1, (1, 3), None),
    ],
    ids=["budget", "pooled", "stc"],
)
def test_kept_tokens_keep_qwen_positions(converted_qwen2_5, videos, compressor, stride, budget_extra, kept_patches):
    source, reference, reference_processor, _, processor = converted_qwen2_5
    model = Qwen2_5_VLConverter(compressor=compressor).convert(source).model
    theirs = qwen_inputs(reference_processor, [PROMPT], videos[1:])
    ours = our_inputs(processor, [PROMPT], videos[1:])
    grid_t, grid_h, grid_w = theirs["video_grid_thw"][0].tolist()
    merged_h, merged_w = grid_h // 2, grid_w // 2
    per_patch = -(-merged_h // stride) * -(-merged_w // stride)
    expected_count = grid_t * per_patch
    if budget_extra is not None:
        patches, extra = budget_extra
        ours["video_token_budget"] = expected_count = patches * per_patch + extra
    expected = reference_positions(reference, theirs)[:, 0]
    positions, input_ids, features = our_positions(model, ours)
    rope = positions[1:, 0]
    assert int(features.token_counts) == expected_count < grid_t * merged_h * merged_w

    # Each kept token is the Qwen token of its patch and cell; it gets that token's position.
    video_pad = model.config.video_token_id
    reference_video = expected[:, theirs["input_ids"][0] == video_pad]
    patch = features.token_frame_index // 2
    rows, columns = features.token_positions[:, 1], features.token_positions[:, 2]
    source_token = (patch * merged_h + rows) * merged_w + columns
    assert torch.equal(rope[:, input_ids[0] == video_pad], reference_video[:, source_token])
    assert torch.equal(rows % stride, torch.zeros_like(rows)) and torch.equal(columns % stride, torch.zeros_like(columns))
    if kept_patches is not None:
        assert patch.unique().tolist() == kept_patches
    else:  # STC: the anchor whole, three tokens of the later patches
        assert (patch == 0).sum() == per_patch and (patch > 0).sum() == 3

    # The text after the video continues as Qwen's rule does: from the video's start plus the grid's span.
    after_ours = rope[:, (input_ids[0] == video_pad).nonzero().max() + 1 :]
    after_theirs = expected[:, (theirs["input_ids"][0] == video_pad).nonzero().max() + 1 :]
    assert torch.equal(after_ours, after_theirs)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_convert_cli_writes_a_verified_remote_code_folder(family, tmp_path, capsys):
    """The folder reloads in a fresh interpreter without this package (trust_remote_code), logits within 1e-5."""
    from transformers_vidcomp.cli import main

    source = tmp_path / "qwen"
    build_tiny_qwen_vl(family, source, "small")
    out = tmp_path / "ours"
    compressor = '{"model_type": "vidcomp_spatial_pool_compressor", "stride": 2, "mode": "average"}'
    assert main(["convert", family, str(source), str(out), "--compressor", compressor]) == 0
    assert "verified: reloaded with trust_remote_code" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "vidcomp_spatial_pool_compressor` (training-free" in card
    for name in ("vision_qwen_vidcomp.py", "positions_vidcomp.py", "video_processing_qwen_vidcomp.py"):
        assert (out / name).is_file()


@pytest.fixture(scope="module")
def qwen3_source(tmp_path_factory):
    source = tmp_path_factory.mktemp("qwen3") / "large"
    reference, reference_processor = build_tiny_qwen_vl("qwen3_vl", source, "large")
    return source, reference, reference_processor


def test_qwen3_writes_the_kept_frames_times_and_matches_qwen_on_them(qwen3_source, videos):
    """A sampler keeps 2 of Qwen's 4 frames: the model equals Qwen3-VL given just those frames, timestamps included."""
    source, reference, reference_processor = qwen3_source
    sampler = {"model_type": "vidcomp_uniform_sampler", "num_frames": 2}
    converted = get_converter("qwen3_vl")
    converted = type(converted)(sampler=sampler).convert(source)
    model, processor = converted.model, converted.processor
    ours = our_inputs(processor, [PROMPT], videos[:1])
    frames, metadata = load_video(str(videos[0]), backend="pyav")
    kept = [0, 10]  # Qwen samples frames 0, 5, 10, 15; the uniform sampler keeps the 1st and 3rd
    metadata.frames_indices = kept
    theirs = reference_processor(
        text=[PROMPT], videos=[frames[kept]],
        videos_kwargs={"video_metadata": [metadata], "do_sample_frames": False}, return_tensors="pt",
    )  # fmt: skip
    assert "<0.6 seconds>" in reference_processor.tokenizer.decode(theirs["input_ids"][0])
    with torch.no_grad():
        expected = reference(**theirs).logits
        out = model(**ours)
    assert out.logits.shape == expected.shape
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)


def visual_slots(features):
    """The visual tokens among a Qwen3-VL video's slots (text slots get no DeepStack feature) by (patch, row, column)."""
    level = features.deepstack_features[0]
    visual = level.abs().sum(-1) > 0
    start, row, column = features.token_positions[visual].unbind(-1)
    patch = features.token_frame_index[visual] // 2
    places = list(zip(patch.tolist(), (row - start).tolist(), (column - start).tolist()))
    return places, [level[visual] for level in features.deepstack_features]


def test_qwen3_deepstack_follows_kept_tokens(qwen3_source, videos):
    source, *_ = qwen3_source
    full = get_converter("qwen3_vl").convert(source)
    stc = type(get_converter("qwen3_vl"))(compressor=STC).convert(source).model
    ours = our_inputs(full.processor, [PROMPT], videos[1:])
    with torch.no_grad():
        everything = full.model(**ours).video_outputs
        kept = stc(**ours, video_token_budget=9).video_outputs  # a 2x3 grid per patch: the anchor's 6, and 3 more
    all_places, all_levels = visual_slots(everything)
    kept_places, kept_levels = visual_slots(kept)
    assert len(all_places) == 18 and len(kept_places) == 9 and len(all_levels) == 2
    rows = torch.tensor([all_places.index(place) for place in kept_places])
    for full_level, kept_level in zip(all_levels, kept_levels):
        torch.testing.assert_close(kept_level, full_level[rows], atol=0, rtol=0)
    # Only patches that kept tokens are written, each after its time: the text slots hold exactly those embeddings.
    pieces = stc.config.video_segment_tokens
    times = ours["video_timestamps"].view(-1, 2).mean(-1)
    expected_ids = [
        token
        for patch in sorted({patch for patch, _, _ in kept_places})
        for token in (*timestamp_token_ids(float(times[patch]), pieces), *pieces["vision_start"], *pieces["vision_end"])
    ]
    text_slots = kept.deepstack_features[0].abs().sum(-1) == 0
    embeddings = stc.get_input_embeddings()(torch.tensor(expected_ids))
    torch.testing.assert_close(kept.pooler_output[text_slots], embeddings, atol=0, rtol=0)


# Every training-free method on a converted Qwen2.5-VL, as converted: no step of training.
TRAINING_FREE = {
    "fila-kmeans+bipartite-merge": (
        {"model_type": "vidcomp_fila_kmeans_sampler", "num_scenes": 2, "supplements_per_scene": 1},
        {"model_type": "vidcomp_fila_bipartite_merge", "scene_size": 2},
    ),
    "longvu-dinov2+stc": (
        sized_for_tiny_vision({"model_type": "vidcomp_longvu_sampler"}),
        {"model_type": "vidcomp_stc_compressor", "window": 2, "threshold": 0.5},
    ),
    "uniform+temporal-average": (
        {"model_type": "vidcomp_uniform_sampler", "num_frames": 4},
        {"model_type": "vidcomp_fila_temporal_average", "scene_size": 2},
    ),
    "adaptive+pool": (
        sized_for_tiny_vision({"model_type": "vidcomp_avs_sampler", "max_frames": 4}),
        {**POOL, "stride": 2},
    ),
}


@pytest.mark.parametrize("methods", TRAINING_FREE.values(), ids=TRAINING_FREE.keys())
def test_training_free_methods_run_on_a_converted_model(qwen2_5_small, videos, methods):
    from transformers import pipeline

    from transformers_vidcomp.conversion.qwen_vl import needs_training

    source, *_ = qwen2_5_small
    sampler, compressor = methods
    converted = Qwen2_5_VLConverter(sampler=sampler, compressor=compressor).convert(source)
    model, processor = converted.model, converted.processor
    assert not needs_training(model.config.sampler_config) and not needs_training(model.config.compressor_config)
    selector = model.model.sampler if model.model.sampler.selects_frames_at_decode else None
    inputs = processor(text=[PROMPT], videos=[str(videos[1])], frame_selector=selector, return_tensors="pt")
    with torch.no_grad():
        features = model(**inputs).video_outputs
    grid_h, grid_w = 2, 3  # the small variant's merged grid for these 64x96 frames
    _, rows, columns = features.token_positions.unbind(-1)
    assert 0 < int(features.token_counts) and bool((rows < grid_h).all()) and bool((columns < grid_w).all())
    pipe = pipeline("video-text-to-text", model=model, processor=processor)
    answer = pipe(videos=str(videos[1]), text="What happens?", max_new_tokens=3)
    assert isinstance(answer[0]["generated_text"], str)


def test_trainer_fine_tunes_a_converted_model(qwen2_5_small, videos, tmp_path):
    from transformers import Trainer, TrainingArguments

    from transformers_vidcomp.training import VidCompDataCollator

    source, *_ = qwen2_5_small
    converted = Qwen2_5_VLConverter(compressor={**POOL, "stride": 2}).convert(source)
    model, processor = converted.model.train(), converted.processor
    example = {
        "messages": [
            {"role": "user", "content": [{"type": "video", "path": str(videos[0])}, {"type": "text", "text": "What?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A rocket, then coffee."}]},
        ],
    }
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=8, learning_rate=5e-3, report_to=[],
        use_cpu=True, remove_unused_columns=False, save_strategy="no", disable_tqdm=True, logging_steps=1,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=[example] * 16, data_collator=VidCompDataCollator(processor))
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert sum(losses[-2:]) < sum(losses[:2])
