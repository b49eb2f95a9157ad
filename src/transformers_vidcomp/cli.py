r"""The `vidcomp` command: `methods`, `create-tiny` and `demo`."""

import argparse
import sys
from pathlib import Path

from .conversion.writer import OutputExistsError
from .modeling import COMPRESSOR_REGISTRY, SAMPLER_REGISTRY, InvalidVideoInputError, TokenBudgetError
from .presets import PRESETS, UnknownPresetError
from .processors import VideoDecodeError
from .training import UnknownStageError


# Errors that mean the user asked for something impossible: reported in one line, without a traceback.
USER_ERRORS = (
    FileNotFoundError,
    ImportError,
    InvalidVideoInputError,
    OutputExistsError,
    TokenBudgetError,
    UnknownPresetError,
    UnknownStageError,
    VideoDecodeError,
)


def cmd_methods(args: argparse.Namespace) -> None:
    for kind, registry in (("samplers", SAMPLER_REGISTRY), ("compressors", COMPRESSOR_REGISTRY)):
        print(f"{kind}:")
        for model_type, cls in sorted(registry.items()):
            print(f"  {model_type:<36}{cls.__name__}")
    print("presets:")
    for name, preset in PRESETS.items():
        print(f"  {name:<36}{preset.description}")


def cmd_create_tiny(args: argparse.Namespace) -> None:
    from .tiny import create_tiny_checkpoint

    path = create_tiny_checkpoint(args.out_dir, args.preset, overwrite=args.overwrite)
    print(f"wrote a tiny {args.preset!r} checkpoint to {path}")


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import format_report, run_demo

    report = run_demo(args.video, preset=args.preset, question=args.question, out_dir=args.out)
    print(format_report(report))
    print(f"\nwrote {Path(args.out) / 'report.json'} and {Path(args.out) / 'contact_sheet.png'}")


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

    demo = commands.add_parser("demo", help="run decode -> sample -> encode -> compress -> LLM on a video")
    demo.add_argument("video", nargs="?", help="a video file; without it a demo video is made from photographs")
    demo.add_argument("--preset", default="baseline")
    demo.add_argument("--question", default="What happens in this video?")
    demo.add_argument("--out", default="vidcomp-demo", help="folder for report.json and contact_sheet.png")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as error:
        print(f"vidcomp {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
