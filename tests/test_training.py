import pytest
import torch
from transformers import Trainer, TrainingArguments

from transformers_vidcomp.training import UnknownStageError, VidCompDataCollator, apply_training_stage


def example(video, answer="A rocket, a cat and a cup of coffee."):
    return {"messages": [
        {"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]}


def test_collator_labels_only_the_answer(tiny, demo_video):
    _, processor = tiny
    batch = VidCompDataCollator(processor, {"num_frames": 3})([example(demo_video[0]), example(demo_video[0], "A cat.")])
    assert batch["video_num_frames"].tolist() == [3, 3]
    answers = [processor.tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert answers[0].startswith("A rocket, a cat and a cup of coffee.<|im_end|>")
    assert answers[1].startswith("A cat.<|im_end|>")
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_collator_needs_an_answer(tiny, demo_video):
    _, processor = tiny
    with pytest.raises(ValueError, match="end with the assistant"):
        VidCompDataCollator(processor)([{"messages": example(demo_video[0])["messages"][:1]}])


def test_trainer_lowers_the_loss(tiny, demo_video, tmp_path):
    model, processor = tiny
    model.train()
    apply_training_stage(model, "compressor+projector+llm")
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=20, learning_rate=5e-3, lr_scheduler_type="constant",
        logging_steps=1, report_to=[], use_cpu=True, remove_unused_columns=False, save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=[example(demo_video[0])] * 40,
                      data_collator=VidCompDataCollator(processor, {"num_frames": 4}))
    vision_before = {n: p.clone() for n, p in model.model.vision_tower.named_parameters()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    for name, parameter in model.model.vision_tower.named_parameters():
        assert torch.equal(parameter, vision_before[name]), f"frozen {name} changed"


@pytest.mark.parametrize(
    "stage, trained, frozen",
    [
        ("projector", {"multi_modal_projector"}, {"vision_tower", "language_model", "lm_head"}),
        ("compressor", set(), {"vision_tower", "multi_modal_projector", "language_model", "lm_head"}),
        ("compressor+projector+llm", {"multi_modal_projector", "language_model", "lm_head"}, {"vision_tower"}),
    ],
)
def test_stages_freeze_the_right_parts(tiny, stage, trained, frozen):
    model, _ = tiny
    counts = apply_training_stage(model, stage)
    for name, parameter in model.named_parameters():
        parts = set(name.split("."))
        if parts & trained:
            assert parameter.requires_grad, name
        if parts & frozen:
            assert not parameter.requires_grad, name
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_unknown_stage(tiny):
    with pytest.raises(UnknownStageError, match="projector"):
        apply_training_stage(tiny[0], "everything")


def test_trainer_evaluates_and_predicts_on_batches_of_different_lengths(tiny, demo_video, tmp_path):
    model, processor = tiny
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True)
    dataset = [example(demo_video[0]), example(demo_video[0], "A cat.")] * 2 + [
        example(demo_video[0], "A rocket on a pad, a cat on a mat and a cup of coffee on a table.")
    ]
    trainer = Trainer(model=model, args=args, eval_dataset=dataset,
                      data_collator=VidCompDataCollator(processor, {"num_frames": 4}))
    assert torch.isfinite(torch.tensor(trainer.evaluate()["eval_loss"]))
    logits, labels = trainer.predict(dataset).predictions  # the expanded labels, aligned with the logits
    # Three batches, each padded to its longest example; every video's 4 frames become 64 tokens.
    assert logits.shape[:2] == labels.shape and logits.shape[0] == len(dataset)
    assert ((labels == -100).sum(1) >= 64).all()


@pytest.fixture(scope="module")
def tiny_compact():
    from transformers_vidcomp.tiny import build_tiny

    return build_tiny("avs-compact", seed=0)


PARTS = ("sampler", "vision_tower", "compressor", "multi_modal_projector", "language_model", "lm_head")


def part_of(name: str) -> str:
    return next(part for part in PARTS if part in name.split("."))


@pytest.mark.parametrize(
    "stage, trained",
    [
        # The compact paper's stage 2 and SFT: the pretrained compressor (and TransNetV2) stay as they are.
        ("projector+llm", {"multi_modal_projector", "language_model", "lm_head"}),
        # FiLA-Video's stages 2 and 3: the merging module waits for stage 4.
        ("vision+projector+llm", {"vision_tower", "multi_modal_projector", "language_model", "lm_head"}),
    ],
)
def test_paper_stages_train_exactly_their_parts(tiny_compact, stage, trained):
    model, _ = tiny_compact
    counts = apply_training_stage(model, stage)
    by_part = {}
    for name, parameter in model.named_parameters():
        by_part.setdefault(part_of(name), set()).add(parameter.requires_grad)
    assert set(by_part) == set(PARTS)  # the compact model has weights in every part, TransNetV2's in the sampler
    assert {part for part, flags in by_part.items() if flags == {True}} == trained
    assert {part for part, flags in by_part.items() if flags == {False}} == set(PARTS) - trained
    compressor = sum(p.numel() for p in model.model.compressor.parameters())
    assert compressor > 0 and counts["frozen"] >= compressor


def test_projector_llm_stage_has_the_compact_papers_rate(tiny_compact):
    from transformers_vidcomp.training import stage_parameter_groups

    model, _ = tiny_compact
    groups = stage_parameter_groups(model, "projector+llm")
    assert {group["name"]: group["lr"] for group in groups} == {
        "multi_modal_projector": 1e-5, "language_model": 1e-5, "lm_head": 1e-5,
    }
    grouped = {id(p) for group in groups for p in group["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    assert not grouped & {id(p) for p in model.model.compressor.parameters()}


def test_every_stage_is_described_and_finetune_help_names_the_papers_stages(capsys):
    from transformers_vidcomp.cli import main
    from transformers_vidcomp.training import STAGE_DESCRIPTIONS, TRAINING_STAGES

    assert list(STAGE_DESCRIPTIONS) == list(TRAINING_STAGES)
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for stage in TRAINING_STAGES:
        assert f" {stage} " in text
    for paper_stage in (
        "FiLA-Video's stage 1", "FiLA-Video's stages 2 and 3", "FiLA-Video's stage 4", "compact paper's stage 1",
        "compact paper's stage 2 and SFT", "compact paper's compressor pretraining", "HICom's conditional pre-training",
    ):
        assert paper_stage in text


def test_finetune_uses_the_stages_paper_rate_and_leaves_the_compressor(demo_video, tmp_path):
    import json

    from safetensors.torch import load_file

    from transformers_vidcomp.cli import main
    from transformers_vidcomp.tiny import create_tiny_checkpoint

    start_dir = create_tiny_checkpoint(tmp_path / "fila", "fila")
    example = {"messages": [
        {"role": "user", "content": [{"type": "video", "path": str(demo_video[0])}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A rocket."}]},
    ]}
    (tmp_path / "data.jsonl").write_text(json.dumps(example) + "\n")
    out = tmp_path / "out"
    assert main(["finetune", str(start_dir), str(tmp_path / "data.jsonl"), str(out), "--stage", "projector+llm",
                 "--max-steps", "1", "--num-frames", "8", "--quiet"]) == 0
    start, end = load_file(start_dir / "model.safetensors"), load_file(out / "model.safetensors")
    moved = {part: max((end[k] - start[k]).abs().max().item() for k in start if part in k.split(".")) for part in
             ("compressor", "vision_tower", "multi_modal_projector", "language_model")}
    assert moved["compressor"] == 0 and moved["vision_tower"] == 0
    # Adam's first step moves every weight with a gradient by the learning rate: the compact paper's 1e-5.
    for part in ("multi_modal_projector", "language_model"):
        assert 0.5e-5 < moved[part] < 2e-5, moved


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_finetune_refuses_a_run_that_trains_nothing(steps, tmp_path, capsys):
    r"""`--max-steps 0` skips the answer steps after alignment; alone (or negative) it would train nothing."""
    from transformers_vidcomp.cli import main

    (tmp_path / "data.jsonl").write_text("{}\n")
    code = main(["finetune", str(tmp_path / "ckpt"), str(tmp_path / "data.jsonl"), str(tmp_path / "out"),
                 "--max-steps", steps, "--quiet"])
    assert code != 0 and "trains nothing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
