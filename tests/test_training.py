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
