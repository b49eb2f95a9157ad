r"""
Accuracy against tokens to the LLM, for every training-free frame sampler on one trained connector, and for every
preset whose compressor was trained here (issue 17, item 5).

Held-out haystacks (`evaluation.video_qa.write_qa_set`, seeds no training run uses) of each length hide a needle of
1-2 s at a depth of 10-90% and are asked every question type (appears, first, last, count, at_time, needle). Each
sampler (uniform; adaptive over TransNetV2 shots; FiLA's K-Means scenes; LongVU's DINOv2 reduction) takes the
place of the checkpoint's own, at each frame budget, choosing among all of a video's frames; the tower, compressor,
projector and LLM stay as trained. Each trained compressor preset (`COMPRESSORS`: its compressor trained with the
recipe on the baseline's tower and adapters) runs on its own checkpoint at its preset's budget. `vidcomp eval`'s
evaluator scores every item (`evaluation.video_qa_eval`: the generated letter, else the letters' likelihood), and
each cell's rows are kept in `--work`, so an interrupted run resumes. Writes `accuracy.json`, `accuracy.md` and `accuracy_vs_tokens.png` to `--out`; `--update-readme` rewrites
the README's accuracy section from the JSON.

    python benchmarks/accuracy.py --quick                 # 1 and 5 minutes, budgets 8 and 32, 2 videos per length
    python benchmarks/accuracy.py [--checkpoint DIR] [--lengths 1 5 15] [--budgets 8 16 32 64] [--update-readme]

Without `--checkpoint` it evaluates the real baseline (`transformers_vidcomp.real`: SmolLM2-135M-Instruct with the
tower and projector trained here), written once into `--work`.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from transformers_vidcomp.evaluation.video_qa_eval import (
    VideoQAEvaluator,
    evaluate_items,
    file_sha256,
    read_manifest,
)
from transformers_vidcomp.evaluation.video_qa import QUESTION_TYPES
from transformers_vidcomp.modeling import SAMPLER_REGISTRY, TransNetV2Model
from transformers_vidcomp.presets import PRESETS

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
README_START, README_END = "<!-- accuracy-results:start -->", "<!-- accuracy-results:end -->"
SAMPLERS = ("uniform", "avs", "fila-kmeans", "longvu")
SAMPLER_NAMES = {
    "uniform": "uniform", "avs": "adaptive (TransNetV2 shots)", "fila-kmeans": "FiLA K-Means scenes",
    "longvu": "LongVU DINOv2 reduction",
}
# Presets whose compressor parts were trained with the recipe (weights/README.md) on the baseline's tower and
# adapters; each runs as its preset does, its sampler choosing among all of a video's frames.
COMPRESSORS = ("hicom-real", "fila-real", "longvu-real", "avs-compact-real")
COMPRESSOR_NAMES = {
    "hicom-real": "HICom (compressor trained here)", "fila-real": "FiLA K-Means + fusion (trained here)",
    "longvu-real": "LongVU reduction + SVA + STC (trained here)",
    "avs-compact-real": "adaptive + compact 2D+1D (trained here)",
}
METHOD_NAMES = {**SAMPLER_NAMES, **COMPRESSOR_NAMES}
OWN_BUDGET = "preset"  # a compressor row's frames: its preset's own
FULL = dict(lengths=[1.0, 5.0, 15.0], budgets=[8, 16, 32, 64], videos=5)
QUICK = dict(lengths=[1.0, 5.0], budgets=[8, 32], videos=2)
HELD_OUT_SEED = 170_017  # far from the seeds training draws its videos with
# As the committed weights were trained on (weights/README.md): 2 fps, 96x72.
VIDEO = dict(fps=2.0, width=96, height=72, needle_seconds=(1.0, 2.0))
MAX_CANDIDATE_FRAMES = 4096  # every frame of a 15-minute video at 2 fps is a candidate for every sampler


def sampler_config(method: str, budget: int) -> dict:
    r"""
    The config of `method`'s sampler at a budget of `budget` frames, each preset's settings otherwise: `num_frames`
    (uniform), `max_frames` (adaptive; LongVU, which may keep fewer), and for FiLA's K-Means `budget // (1 +
    supplements)` scenes of up to 1 + supplements frames.
    """
    from transformers_vidcomp.tiny import sized_for_tiny_vision

    if method == "uniform":
        return {"model_type": "vidcomp_uniform_sampler", "num_frames": budget}
    if method == "avs":
        # Long streaming steps spare TransNetV2's per-step overhead; its outputs do not depend on the step.
        detector = {**PRESETS["avs-compact"].sampler_config["shot_detector_config"], "window_frames": 1024}
        return {**PRESETS["avs-compact"].sampler_config, "max_frames": budget, "shot_detector_config": detector}
    if method == "fila-kmeans":
        base = PRESETS["fila"].sampler_config
        return {**base, "num_scenes": max(1, budget // (1 + base["supplements_per_scene"]))}
    if method == "longvu":
        # No pretrained DINOv2 reaches this machine: LongVU's reduction runs on the tiny DINOv2, randomly initialised.
        return sized_for_tiny_vision({**PRESETS["longvu"].sampler_config, "max_frames": budget})
    raise ValueError(f"Unknown sampler {method!r}; choose from {', '.join(SAMPLERS)}.")


class RememberedShots(torch.nn.Module):
    r"""
    TransNetV2 that remembers its probabilities per sequence of thumbnails, so that the questions about one video and
    every frame budget share one run of the network (the adaptive sampler only calls `predict_frames`).
    """

    def __init__(self, detector: TransNetV2Model):
        super().__init__()
        self.detector, self.config = detector, detector.config
        self.remembered: dict[str, tuple] = {}

    def predict_frames(self, thumbnails: torch.Tensor) -> tuple:
        key = hashlib.sha256(thumbnails.contiguous().numpy().tobytes()).hexdigest()
        if key not in self.remembered:
            self.remembered[key] = self.detector.predict_frames(thumbnails)
        return self.remembered[key]


def use_sampler(model, config: dict, shots: RememberedShots | None = None, seed: int = 0) -> None:
    r"""
    Puts a fresh sampler of `config` into `model` and records it in the config. An adaptive sampler gets `shots` as
    its shot detector, or TransNetV2 with its real weights.
    """
    from transformers_vidcomp.conversion.transnetv2 import convert_transnetv2

    cls = SAMPLER_REGISTRY[config["model_type"]]
    torch.manual_seed(seed)
    sampler = cls(cls.config_class(**{key: value for key, value in config.items() if key != "model_type"})).eval()
    if hasattr(sampler, "shot_detector"):
        if shots is None:
            sampler.shot_detector.load_state_dict(convert_transnetv2(config=sampler.shot_detector.config).state_dict())
        else:
            sampler.shot_detector = shots
    model.model.sampler = sampler.to(model.device)
    model.config.sampler_config = sampler.config


def write_haystacks(
    work: Path, lengths: list[float], videos: int, types: tuple[str, ...] | None = None
) -> dict[float, Path]:
    r"""
    One held-out QA set per length (`videos` haystacks each, asked `types`, every type by default), written once;
    returns each manifest.
    """
    from transformers_vidcomp.evaluation.video_qa import write_qa_set

    manifests = {}
    for index, minutes in enumerate(lengths):
        asked = f"-{'-'.join(types)}" if types else ""
        folder = work / "haystacks" / f"{minutes:g}min-{videos}videos-{VIDEO['width']}x{VIDEO['height']}{asked}"
        manifest = folder / "manifest.jsonl"
        if not manifest.exists():
            seconds = minutes * 60
            kinds = {"types": tuple(types)} if types else {}
            write_qa_set(folder, videos, seed=HELD_OUT_SEED + index, seconds=(seconds, seconds), **VIDEO, **kinds)
        manifests[minutes] = manifest
    return manifests


def default_checkpoint(work: Path, preset: str = "baseline-real") -> Path:
    r"""
    A real preset (SmolLM2 with the parts trained here), written into `work` on first use, in a folder named by the
    shipped weights' checksum, so that new weights make a new checkpoint.
    """
    from transformers_vidcomp.real import SHARED_WEIGHTS, create_real_checkpoint, trained_weights_path

    own = trained_weights_path(preset)
    shared = own.with_name(SHARED_WEIGHTS)
    # A compressor preset's checkpoint holds the baseline's tower and adapters too: new ones of either make a new one.
    digest = file_sha256(own)[:12] + ("" if own == shared else file_sha256(shared)[:12])
    folder = work / f"{preset}-{digest}"
    if not (folder / "config.json").exists():
        create_real_checkpoint(folder, preset, overwrite=True)
    return folder


def needle_depth_bins(rows: list[dict], edges=(0.1, 0.3, 0.5, 0.7, 0.9)) -> dict[str, dict]:
    """Needle accuracy by depth, in bins `[edge_i, edge_i+1)` (the last one closed)."""
    bins = {}
    for low, high in zip(edges[:-1], edges[1:]):
        inside = [r for r in rows if r["type"] == "needle" and low <= r["depth"] < high + (high == edges[-1]) * 1e-9]
        bins[f"{low:.0%}-{high:.0%}"] = {"items": len(inside), "correct": sum(r["correct"] for r in inside)}
    return bins


def run_cells(model, processor, manifests: dict[float, Path], samplers, budgets, work: Path, checkpoint: str,
              progress: bool = True, scorer: str = "letter", max_new_tokens: int = 3) -> list[dict]:
    r"""
    Every (sampler, budget, length) cell: its summary, needle accuracy by depth and time. Models trained on letter
    answers write the letter first, so a few new tokens suffice to read it.
    """
    cells, shots = [], None
    for method in samplers:
        for budget in budgets:
            if budget == OWN_BUDGET:
                config = model.config.sampler_config.to_dict()
            else:
                config = sampler_config(method, budget)
                use_sampler(model, config, shots)
            if hasattr(model.model.sampler, "shot_detector") and shots is None:
                shots = model.model.sampler.shot_detector = RememberedShots(model.model.sampler.shot_detector)
            evaluator = VideoQAEvaluator(
                model, processor, scorer=scorer, max_new_tokens=max_new_tokens,
                processor_kwargs={"fps": None, "num_frames": MAX_CANDIDATE_FRAMES},
            )
            for minutes, manifest in manifests.items():
                started = time.perf_counter()
                out = work / "runs" / f"{minutes:g}min-{method}-{budget}"
                run = {"model": checkpoint, "manifest": str(manifest), "manifest_sha256": file_sha256(manifest),
                       "sampler": config, "budget": budget,
                       "scorer": evaluator.scorer, "max_new_tokens": evaluator.max_new_tokens}
                summary = evaluate_items(evaluator, read_manifest(manifest), out, json.loads(json.dumps(run)),
                                         progress=progress, title=f"{method}, {budget} frames, {minutes:g} min")
                if summary is None:  # another process of accelerate launch: the main one reports
                    continue
                rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
                cells.append({
                    "sampler": method, "budget": budget, "minutes": minutes,
                    "items": summary["items"], "correct": summary["correct"], "accuracy": summary["accuracy"],
                    "tokens": summary["mean_video_tokens"], "scored_by": summary["scored_by"],
                    "errors": summary["errors"], "per_type": summary["per_type"],
                    "needle_by_depth": needle_depth_bins(rows), "seconds": time.perf_counter() - started,
                    "predictions": dict(Counter(row["prediction"] for row in rows if row["prediction"])),
                })
                print(f"{method:>12} {budget:>3} frames {minutes:>4g} min: accuracy {summary['accuracy']:.1%} "
                      f"({summary['correct']}/{summary['items']}), {summary['mean_video_tokens']:.0f} tokens")
    return cells


def load_checkpoint(checkpoint: Path, device) -> tuple:
    """A checkpoint of ours and its processor (`load_processor`: HICom's, which AutoProcessor takes for remote code)."""
    from transformers import AutoModelForImageTextToText

    from transformers_vidcomp.processors import load_processor

    return AutoModelForImageTextToText.from_pretrained(checkpoint).eval().to(device), load_processor(checkpoint)


def run_compressor_cells(manifests: dict[float, Path], presets, work: Path, device, **options) -> list[dict]:
    """Every length's cell of each trained compressor preset, on its own checkpoint with its own sampler."""
    cells = []
    for preset in presets:
        checkpoint = default_checkpoint(work, preset)
        model, processor = load_checkpoint(checkpoint, device)
        cells += run_cells(
            model, processor, manifests, [preset], [OWN_BUDGET], work, str(checkpoint.resolve()), **options
        )
    return cells


def pooled(cells: list[dict], question_type: str | None = None) -> dict:
    """Accuracy over the cells' items (of one question type, if given), and their mean tokens weighted by items."""
    groups = [c["per_type"].get(question_type, {"items": 0, "correct": 0}) if question_type else c for c in cells]
    items, correct = sum(g["items"] for g in groups), sum(g["correct"] for g in groups)
    tokens = sum(c["tokens"] * c["items"] for c in cells) / max(1, sum(c["items"] for c in cells))
    return {"items": items, "correct": correct, "accuracy": correct / items if items else None, "tokens": tokens}


def summarize(cells: list[dict], samplers, budgets, lengths) -> list[dict]:
    """One line per (sampler, budget): pooled over lengths, per length, and the needle questions alone."""
    lines = []
    for method in samplers:
        for budget in budgets:
            mine = [c for c in cells if c["sampler"] == method and c["budget"] == budget]
            lines.append({
                "sampler": method, "budget": budget, **pooled(mine),
                "per_length": {f"{m:g}": pooled([c for c in mine if c["minutes"] == m]) for m in lengths},
                "needle": pooled(mine, "needle"),
            })
    return lines


def percent(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def render_markdown(results: dict) -> str:
    lengths = [f"{m:g}" for m in results["lengths"]]
    header = ["sampler", "frames", "tokens to LLM", *(f"{m} min" for m in lengths), "all", "needle"]
    lines = [
        f"Checkpoint `{results['checkpoint_name']}`; held-out questions per length: "
        + ", ".join(f"{m} min {n}" for m, n in results["questions_per_length"].items())
        + f" ({results['videos_per_length']} videos each, seed {results['seed']}"
        + (f"; {', '.join(results['types'])} questions only" if results.get("types") else "") + "), "
        + (f"scored by the generated letter (else the letters' likelihood: {results['scored_by']['likelihood']} of "
           f"{results['scored_by']['total']} items)" if results["scorer"] == "letter" else "scored by the letters' likelihood")
        + f". {results['machine']}; {results['seconds'] / 60:.0f} minutes. Generated by "
        f"`python benchmarks/accuracy.py {results['command']}`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    predictions = sum((Counter(cell["predictions"]) for cell in results["cells"]), Counter())
    total = sum(predictions.values())
    if total:  # a model that gives one letter whatever the video scores that letter's share of the answers
        shares = ", ".join(f"{letter} {count / total:.0%}" for letter, count in sorted(predictions.items()))
        lines[0] += f" Chance is 25% (four options); the model's answers were {shares}."
    for line in results["table"]:
        per_length = [percent(line["per_length"][m]["accuracy"]) for m in lengths]
        lines.append(
            f"| {METHOD_NAMES[line['sampler']]} | {line['budget']} | {line['tokens']:.0f} | "
            + " | ".join(per_length) + f" | {percent(line['accuracy'])} | {percent(line['needle']['accuracy'])} |"
        )
    lines += ["", "![accuracy against tokens](benchmarks/results/accuracy_vs_tokens.png)"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, key, title in ((axes[0], None, "all questions"), (axes[1], "needle", "needle questions")):
        methods = results["samplers"] + results.get("compressors", [])
        for method, marker in zip(methods, "osD^PXv*"):
            line = [entry for entry in results["table"] if entry["sampler"] == method]
            values = [(entry["tokens"], (entry[key] if key else entry)["accuracy"]) for entry in line]
            values = [(t, a) for t, a in values if a is not None]
            if values:  # a compressor runs at its preset's budget: one point, no line
                style = "-" if method in results["samplers"] else "none"
                axis.plot(*zip(*values), marker=marker, linestyle=style, alpha=0.8, label=METHOD_NAMES[method])
        axis.axhline(0.25, color="grey", linestyle=":", label="chance (4 options)")
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set(xlabel="video tokens to the LLM (mean per question)", title=title, ylim=(0, 1.05))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{results['checkpoint_name']}: accuracy against tokens, "
                    f"{', '.join(f'{m:g}' for m in results['lengths'])}-minute held-out haystacks")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def update_readme(markdown: str, readme: Path = README) -> None:
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + markdown + text[end:])


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--checkpoint", help="a checkpoint of ours (default: the real baseline with trained weights)")
    parser.add_argument("--quick", action="store_true", help=f"the short run: {QUICK}")
    parser.add_argument("--lengths", type=float, nargs="+", help="haystack lengths in minutes")
    parser.add_argument("--budgets", type=int, nargs="+", help="frame budgets")
    parser.add_argument("--videos", type=int, help="held-out videos per length (about 6 questions each)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument(
        "--types", nargs="+", choices=QUESTION_TYPES,
        help="question types to ask (all by default); `--types needle` with more videos measures the needle alone",
    )
    parser.add_argument(
        "--compressors", nargs="*", default=list(COMPRESSORS), choices=COMPRESSORS,
        help="trained compressor presets, each on its own checkpoint at its preset's budget (none: samplers only)",
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vidcomp-accuracy",
                        help="videos and per-cell rows (kept, so a rerun resumes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scorer", choices=("letter", "likelihood"), default="letter", help="as in vidcomp eval")
    parser.add_argument("--max-new-tokens", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads; on shared cores one is far faster (a 60-token prefill of SmolLM2: 0.6 s against 3-10 s "
        "with 2 threads at a load of 12)",
    )
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    defaults = QUICK if args.quick else FULL
    lengths, budgets = args.lengths or defaults["lengths"], args.budgets or defaults["budgets"]
    videos = args.videos or defaults["videos"]

    from transformers_vidcomp.evaluation.video_qa_eval import process_state

    state = process_state()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:  # the others then find what it wrote
        if not args.checkpoint:
            default_checkpoint(args.work)
        write_haystacks(args.work, lengths, videos, args.types)
    state.wait_for_everyone()
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.work)
    manifests = write_haystacks(args.work, lengths, videos, args.types)
    model, processor = load_checkpoint(checkpoint, state.device)
    options = dict(progress=not args.quiet, scorer=args.scorer, max_new_tokens=args.max_new_tokens)
    cells = run_cells(model, processor, manifests, args.samplers, budgets, args.work, str(checkpoint.resolve()),
                      **options)
    if state.is_main_process:
        for preset in args.compressors:
            default_checkpoint(args.work, preset)
    state.wait_for_everyone()
    cells += run_compressor_cells(manifests, args.compressors, args.work, state.device, **options)
    if not state.is_main_process:
        return None

    scored_by = {name: sum(c["scored_by"][name] for c in cells) for name in ("letter", "likelihood", "error")}
    command = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--update-readme")
    results = {
        "checkpoint": str(checkpoint.resolve()), "checkpoint_name": checkpoint.name, "lengths": lengths,
        "budgets": budgets, "samplers": args.samplers, "compressors": args.compressors, "videos_per_length": videos,
        "types": args.types,
        "questions_per_length": {f"{m:g}": len(read_manifest(manifests[m])) for m in lengths}, "seed": HELD_OUT_SEED,
        "scored_by": {**scored_by, "total": sum(scored_by.values())},
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__.split('+')[0]} with "
                   f"{torch.get_num_threads()} threads",
        "seconds": time.perf_counter() - started, "command": command, "scorer": args.scorer,
        "table": summarize(cells, args.samplers, budgets, lengths) + summarize(
            cells, args.compressors, [OWN_BUDGET], lengths
        ),
        "cells": cells,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(results, indent=1))
    markdown = render_markdown(results)
    (args.out / "accuracy.md").write_text(markdown)
    plot(results, args.out / "accuracy_vs_tokens.png")
    print(markdown)
    if args.update_readme:
        update_readme(markdown)
        print(f"README.md accuracy section rewritten from {args.out / 'accuracy.json'}")
    return results


if __name__ == "__main__":
    main()
