r"""
`vidcomp finetune`: `Trainer` fine-tuning of a checkpoint of ours on chat examples with videos.

The same command runs in one process or many, because distribution is Transformers' and Accelerate's job, not ours:

    vidcomp finetune CKPT data.jsonl out/ --stage compressor+projector+llm --max-steps 100
    torchrun --nproc_per_node 2 -m transformers_vidcomp.cli finetune CKPT data.jsonl out/ --per-device-batch-size 1
    accelerate launch -m transformers_vidcomp.cli finetune CKPT data.jsonl out/

On CPUs the processes talk over gloo. `data.jsonl` holds one `{"messages": [...]}` per line, in the format of
[`VidCompDataCollator`]. With `--data-order sequential`, two processes with a per-device batch of 1 see exactly the
batches one process with a batch of 2 sees, and end with the same weights up to floating-point tolerance.
"""

import argparse
import json
import os
import tempfile
import textwrap
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from .collator import VidCompDataCollator
from .stages import (
    STAGE_DESCRIPTIONS,
    STAGE_LEARNING_RATES,
    TRAINING_STAGES,
    apply_training_stage,
    stage_parameter_groups,
)


# The rate of stages whose papers give none, when --learning-rate is not given.
DEFAULT_LEARNING_RATE = 1e-5


class TrainingDataError(ValueError):
    """The training data file is missing, empty, or not one JSON example with `messages` per line."""


def read_json_lines(path: str | os.PathLike) -> list[tuple[int, object]]:
    """The value of every non-empty line of a JSON-lines file, with its line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No training data at {str(path)!r}.")
    values = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise TrainingDataError(f"{path}:{number} is not valid JSON: {error}.") from error
    return values


def read_examples(path: str | os.PathLike) -> list[dict]:
    """One `{"messages": [...]}` per non-empty line of a JSON-lines file."""
    path = Path(path)
    examples = []
    for number, example in read_json_lines(path):
        if isinstance(example, dict) and {"video", "question", "options", "answer"} <= set(example):
            example = qa_messages(example, path.parent)
        if not isinstance(example, dict) or not isinstance(example.get("messages"), list):
            raise TrainingDataError(
                f'{path}:{number} must be an object with a "messages" list, or a QA manifest row (video, question, '
                "options, answer)."
            )
        examples.append(example)
    if not examples:
        raise TrainingDataError(f"{path} holds no examples.")
    return examples


def qa_messages(row: dict, folder: Path) -> dict:
    r"""
    A multiple-choice QA manifest row (`evaluation.video_qa`) as a chat example: the video and
    `format_multiple_choice(question, options)` from the user, the answer's letter from the assistant.
    """
    from ..evaluation.video_qa import format_multiple_choice

    video = Path(row["video"]) if Path(row["video"]).is_absolute() else folder / row["video"]
    prompt = format_multiple_choice(row["question"], row["options"])
    return {"messages": [
        {"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]},
    ]}


def finetune(args: argparse.Namespace) -> Path:
    r"""Runs the fine-tuning `args` describe and writes the result, Hub-ready, to `args.out_dir` (main process only)."""
    from ..conversion.cards import REAL_WEIGHTS_TAG, render_model_card
    from ..conversion.converters import LocalCheckpointExporter
    from ..conversion.writer import save_checkpoint
    from ..modeling import VidCompForConditionalGeneration
    from ..processors import load_processor

    if args.max_steps < 0 or not (args.max_steps or args.align_steps or args.describe_steps):
        raise TrainingDataError(
            f"--max-steps {args.max_steps} with no --align-steps or --describe-steps trains nothing: give a positive "
            "number of answer steps, or alignment steps with --max-steps 0."
        )
    examples = read_examples(args.data)
    model = VidCompForConditionalGeneration.from_pretrained(args.checkpoint_dir, dtype=torch.float32)
    processor = load_processor(args.checkpoint_dir)
    model.train()
    curves = {}
    # A stage that trains the tower aligns each frame's tokens; one that trains a compressor on a trained tower
    # aligns the tokens the whole video path returns.
    aligns_frames = "vision_tower" in TRAINING_STAGES[args.stage]
    if args.align_steps:
        from .recipe_real import align_to_names

        apply_training_stage(model, args.stage)
        title = "tower + projector" if aligns_frames else "through the compressor"
        curves[f"1. name alignment ({title})"] = align_to_names(
            model, processor, args.align_steps, batch_size=args.align_batch_size, seed=args.seed, quiet=args.quiet,
            through_compressor=not aligns_frames, clip_frames=args.num_frames or 16,
            learning_rate=1e-3 if args.learning_rate is None else args.learning_rate,
        )
    apply_training_stage(model, args.stage)
    if args.align_steps and aligns_frames:
        # Aligned, the tower and projector stay as they are: answer steps through a frozen 135M LLM pulled them off
        # the keyword embeddings (held-out frames read right: 97% after alignment, 45% after 60 answer steps).
        for name, parameter in model.named_parameters():
            if name.startswith(("model.vision_tower.", "model.multi_modal_projector.")):
                parameter.requires_grad_(False)
    if args.lora_rank:
        from .recipe_real import add_lora

        add_lora(model, args.lora_rank)
    on_cpu = not torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Trainer needs a working folder even when it saves nothing; the result goes to out_dir through our writer.
    scratch = tempfile.TemporaryDirectory(prefix="vidcomp-trainer-")
    paper_rates = args.learning_rate is None and args.stage in STAGE_LEARNING_RATES

    def make_trainer(dataset: list[dict], steps: int) -> Trainer:
        training_args = TrainingArguments(
            output_dir=scratch.name,
            per_device_train_batch_size=args.per_device_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            max_steps=steps,
            learning_rate=DEFAULT_LEARNING_RATE if args.learning_rate is None else args.learning_rate,
            lr_scheduler_type="constant",
            seed=args.seed,
            data_seed=args.seed,
            train_sampling_strategy=args.data_order,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            remove_unused_columns=False,
            use_cpu=on_cpu,
            bf16=args.bf16,
            ddp_backend="gloo" if on_cpu and distributed else None,
            disable_tqdm=args.quiet,
        )
        optimizer = None
        if paper_rates:
            # The stage's paper gives a rate per part: AdamW (the papers' optimizer) with those, else as Trainer's.
            optimizer = torch.optim.AdamW(
                stage_parameter_groups(model, args.stage), betas=(training_args.adam_beta1, training_args.adam_beta2),
                eps=training_args.adam_epsilon, weight_decay=training_args.weight_decay,
            )
        return Trainer(
            model=model, args=training_args, train_dataset=dataset, data_collator=collator, optimizers=(optimizer, None)
        )

    collator = VidCompDataCollator(processor, {"num_frames": args.num_frames} if args.num_frames else None)
    if args.describe_steps:
        from .recipe_real import described_examples

        # One keyword per frame the sampler keeps (uniform ones), so runs and one-frame flashes read as in video.
        sampler_config = model.config.sampler_config
        frames_per_video = args.num_frames or getattr(sampler_config, "num_frames", None)
        described = described_examples(
            args.data, processor.tokenizer, frames_per_video, getattr(sampler_config, "include_last", False)
        )
        warm_up = make_trainer(described, args.describe_steps)
        warm_up.train()
        curves[f"{len(curves) + 1}. answers, videos described in text"] = losses_of(warm_up)
    trainer = make_trainer(examples, args.max_steps) if args.max_steps else None
    if trainer is not None:
        trainer.train()
    scratch.cleanup()
    losses = losses_of(trainer) if trainer is not None else []
    lora_factors = {}
    if args.lora_rank:
        from .recipe_real import merge_lora

        lora_factors = merge_lora(model)
    if is_main_process():
        info = LocalCheckpointExporter().card_info(Path(args.checkpoint_dir), model.config)
        info.source = (
            f"Fine-tuned from `{Path(args.checkpoint_dir).name}` with `vidcomp finetune` ({args.stage} stage, "
            f"{args.max_steps} steps on {len(examples)} examples, "
            f"{'the paper learning rates of the stage' if paper_rates else f'learning rate {DEFAULT_LEARNING_RATE if args.learning_rate is None else args.learning_rate}'})."
        )
        if REAL_WEIGHTS_TAG in info.extra_tags:  # a -real model's tower and connector are trained now
            from ..real import training_statement

            info.trained, info.training = True, training_statement(trained=True)
        card = render_model_card(model, processor, info, repo_id=Path(args.out_dir).name)
        save_checkpoint(model.eval(), processor, args.out_dir, overwrite=args.overwrite, model_card=card)
        (Path(args.out_dir) / "training_losses.json").write_text(json.dumps(losses))
        if args.align_steps:
            alignment = next(iter(curves.values()))
            (Path(args.out_dir) / "alignment_losses.json").write_text(json.dumps(alignment))
        from .recipe_real import loss_plot

        if losses:
            curves[f"{len(curves) + 1}. answers ({args.stage}" + (f", LoRA r={args.lora_rank})" if args.lora_rank else ")")] = losses
        loss_plot(curves, Path(args.out_dir) / "training_loss.png")
        if args.parts_out:
            from ..real import save_trained_parts

            save_trained_parts(model, args.parts_out, extra=lora_factors, modules=TRAINING_STAGES[args.stage])
    return Path(args.out_dir)


def is_main_process() -> bool:
    """Whether this is the process that writes results, under any launcher Accelerate knows (or alone)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def losses_of(trainer: Trainer) -> list[float]:
    """The loss of every logged step of a finished `Trainer` run."""
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def stages_help() -> str:
    """The stages and the papers' stages they reproduce, for `vidcomp finetune --help`."""
    lines = ["training stages (--stage):"]
    for stage, description in STAGE_DESCRIPTIONS.items():
        rates = " [paper learning rates]" if stage in STAGE_LEARNING_RATES else ""
        text = textwrap.fill(description, 100, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False)
        lines += [f"  {stage}{rates}", text]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = stages_help()
    parser.add_argument("checkpoint_dir", help="a checkpoint of ours to start from")
    parser.add_argument("data", help='JSON lines, one {"messages": [...]} per line')
    parser.add_argument("out_dir", help="where the fine-tuned checkpoint is written (Hub-ready)")
    parser.add_argument(
        "--stage", default="compressor+projector+llm", choices=list(TRAINING_STAGES), metavar="STAGE",
        help="which parts train (listed below with the papers' stages they reproduce)",
    )
    parser.add_argument("--max-steps", type=int, default=100, help="answer steps on the data (0: none, after alignment)")
    parser.add_argument(
        "--learning-rate", type=float,
        help=f"one rate for every trained part; by default the stage's paper rates where it has them "
        f"(marked below), else {DEFAULT_LEARNING_RATE}",
    )
    parser.add_argument("--per-device-batch-size", type=int, default=1)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--num-frames", type=int, help="frames per video (the processor's default otherwise)")
    parser.add_argument("--data-order", default="random", choices=["random", "sequential"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--bf16", action="store_true",
        help="bf16 mixed precision for the answer steps (autocast; the weights stay float32; name alignment runs in "
        "float32): on CPUs with AMX or AVX512-BF16 a step of the -real recipe takes about 0.6x the time",
    )
    parser.add_argument(
        "--align-steps", type=int, default=0,
        help="first train the vision tower and projector this many steps to put each photograph's frames at the "
        "LLM's embedding of its name (the -real presets' recipe, training/recipe_real.py); with a stage that leaves "
        "the tower frozen (compressor+projector), the compressor, on one-photograph clips through the whole video path",
    )
    parser.add_argument(
        "--align-batch-size", type=int, default=32,
        help="frames per name-alignment step (clips of --num-frames, default 16, through a compressor)",
    )
    parser.add_argument(
        "--describe-steps", type=int, default=0,
        help="before the video steps, this many answer steps on the same questions with each video replaced by its "
        "photographs' keywords in text, one per frame the sampler keeps (QA manifests of vidcomp make-qa; the -real "
        "presets' recipe)",
    )
    parser.add_argument(
        "--lora-rank", type=int, default=0,
        help="train low-rank adapters on the frozen LLM's linear layers (peft), merged into it after training",
    )
    parser.add_argument(
        "--parts-out", help="also write the trained weights outside the LLM (and LoRA factors) to this safetensors file"
    )
