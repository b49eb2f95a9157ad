r"""
Every preset side by side, on the same videos and the same tiny encoder, from the video file to the LLM's prefill:
tokens to the LLM, compression ratio, time per stage, peak memory, and how time grows with video length. In the same
run, the two compressors Transformers itself ships for video (LLaVA-OneVision's 2x2 pooling and VideoLLaMA3's
frame-difference pruning) run on identical features.

    python benchmarks/run.py                       # 1, 5, 15 and 60 minutes; writes benchmarks/results/
    python benchmarks/run.py --minutes 1 5 --presets baseline longvu
    python benchmarks/run.py --update-readme       # also rewrites the README's results section from the JSON
    python benchmarks/run.py --presets qwen2_5_vl qwen2_5_vl+stc qwen2_5_vl+adaptive transformers:qwen2_5_vl \
        --skip-needle --out benchmarks/results/qwen2_5_vl   # the Qwen2.5-VL rows (QWEN_ROWS) against Transformers'

The videos are synthetic and made from real photographs (`demo_video.plan_haystack`: pans, zooms, cuts and
dissolves) at 1 fps and 320x180, so an hour is 3,600 frames. Every preset decodes every frame at 1 fps (the presets'
own frame caps are lifted, so the samplers see the whole hour), except the adaptive sampler, which streams the file as
10 fps thumbnails (all 3,600 frames of a 1 fps file) and decodes only its keyframes. LongVU runs in the paper's 8k
context (`--longvu-context`): its video budget is what the prompt's text and 16 tokens for the answer leave, as the
released code computes it.

Each (preset, length) runs in a fresh process, so its peak resident memory (`ru_maxrss`, which includes Python, torch
and Transformers, about 0.75 GB) is its own. Stages:

- decode: the processor's call (streamed PyAV decode, frames scaled to the encoder's size as they decode, then
  normalised); for the adaptive sampler, its two decodes (thumbnails, keyframes);
- sample: the sampler (LongVU's DINOv2 encoder runs inside it; the adaptive sampler's TransNetV2 plan);
- encode: the vision tower; compress: the compressor (with its own projectors where it has them);
- prefill: the language model over the prompt and the video tokens (one forward pass, no generation).

Model stages are timed by forward hooks on the model's own modules (`demo.stage_timer`), so this is the code path
`generate()` runs. Time grows linearly with length when the per-preset least-squares line fits (R^2 is printed).

The same command then runs the needle-retention evaluation (`transformers_vidcomp.evaluation.needle`, also
`benchmarks/needle.py` alone) and adds its table and heatmap to the results and the README.
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent.parent / "README.md"
README_START, README_END = "<!-- benchmark-results:start -->", "<!-- benchmark-results:end -->"
PRESETS = ("baseline", "longvu", "hicom", "fila", "avs-compact")
TRANSFORMERS_BASELINES = ("transformers:llava-onevision", "transformers:videollama3")
# A tiny random Qwen2.5-VL converted into ours: as converted (Qwen's frame choice, 2 fps and at most 768 frames, every
# token), with STC over every frame of the hour under a budget of QWEN_BUDGET tokens, and with the adaptive sampler;
# and Transformers' own Qwen2.5-VL on the same checkpoint at its release rate (2 fps, at most 768 frames).
QWEN_ROWS = ("qwen2_5_vl", "qwen2_5_vl+stc", "qwen2_5_vl+adaptive", "transformers:qwen2_5_vl")
QWEN_BUDGET = 2048
QWEN_COMPONENTS = {
    "qwen2_5_vl": {},
    "qwen2_5_vl+stc": {
        "sampler": {"model_type": "vidcomp_uniform_sampler", "num_frames": 10**6},
        "compressor": {"model_type": "vidcomp_stc_compressor"},
    },
    "qwen2_5_vl+adaptive": {
        "sampler": {"model_type": "vidcomp_avs_sampler", "max_frames": 32,
                    "shot_detector_config": {"inference_windows": "streaming"}},
    },
}
MINUTES = (1, 5, 15, 60)
NEEDLE_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
NEEDLE_BUDGETS = (8, 16, 32, 64)
QUESTION = "What happens in this video?"


def write_benchmark_video(path: Path, seconds: int, width: int = 320, height: int = 180) -> None:
    r"""A haystack video at 1 fps (`demo_video.plan_haystack`: real photographs, pans, zooms, cuts, dissolves),
    streamed to the file scene by scene."""
    from transformers_vidcomp.demo_video import plan_haystack, write_haystack_video

    write_haystack_video(path, plan_haystack(seconds, fps=1.0, width=width, height=height, seed=0))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_inputs(name: str, video: str, longvu_context: int):
    r"""Builds the tiny model of `name` and its inputs for `video`; returns the model, processor, inputs and seconds
    by stage."""
    from transformers_vidcomp.processors.processing_vidcomp import select_frames
    from transformers_vidcomp.tiny import build_tiny

    if name in QWEN_COMPONENTS:
        model, processor = converted_tiny_qwen(name)
        processor.video_processor.max_frames = 10**6  # Qwen's rate (every frame of a 1 fps file): no frame cap
        if name == "qwen2_5_vl+stc":
            model.config.video_token_budget = QWEN_BUDGET
    else:
        preset = "baseline" if name.startswith("transformers:") else name
        model, processor = build_tiny(preset)
        video_processor = processor.video_processor
        video_processor.fps, video_processor.num_frames = 1.0, None  # every frame at 1 fps: the sampler sees the hour
    sampler = model.model.sampler
    seconds, kwargs = {}, {}
    clock = time.perf_counter()
    if sampler.selects_frames_at_decode:
        selection = select_frames(video, sampler)
        seconds["decode"] = selection.seconds["thumbnails"] + selection.seconds["chosen frames"]
        seconds["sample"] = selection.seconds["plan"]
        video, kwargs = selection.frames, {"video_metadata": [selection.metadata], "do_sample_frames": False}
        clock = time.perf_counter()
    conversation = [
        {"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": QUESTION}]}
    ]
    inputs = processor.apply_chat_template(
        [conversation], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        processor_kwargs=kwargs,
    )
    seconds["decode"] = seconds.get("decode", 0.0) + time.perf_counter() - clock
    if name == "longvu":  # sized as released: what the prompt and 16 answer tokens leave of the context
        model.config.video_token_budget = None
        model.model.compressor.config.context_length = longvu_context
    return model, processor, inputs, seconds


def tiny_qwen_source() -> Path:
    """The tiny random Qwen2.5-VL checkpoint every Qwen row uses (built once per run, seed 0)."""
    from transformers_vidcomp.tiny_qwen import build_tiny_qwen_vl

    folder = Path(tempfile.gettempdir()) / "vidcomp-benchmark-tiny-qwen2_5_vl"
    if not (folder / "config.json").exists():
        build_tiny_qwen_vl("qwen2_5_vl", folder, "small", seed=0)
    return folder


def converted_tiny_qwen(name: str):
    from transformers_vidcomp.conversion import Qwen2_5_VLConverter

    converted = Qwen2_5_VLConverter(**QWEN_COMPONENTS[name]).convert(tiny_qwen_source())
    return converted.model, converted.processor


def run_transformers_qwen(video: str) -> dict:
    r"""Transformers' `Qwen2_5_VLForConditionalGeneration` on its own processor's inputs, at its default rate."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from transformers.video_utils import load_video

    from transformers_vidcomp.demo import stage_timer

    source = tiny_qwen_source()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source).eval()
    processor = AutoProcessor.from_pretrained(source)
    seconds = {}
    clock = time.perf_counter()
    frames, metadata = load_video(video, backend="pyav")
    prompt = f"<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    inputs = processor(
        text=[prompt], videos=[frames], videos_kwargs={"video_metadata": [metadata], "do_sample_frames": True},
        return_tensors="pt",
    )
    seconds["decode"] = time.perf_counter() - clock
    stages = {"encode": model.model.visual, "prefill": model.model.language_model}
    with torch.inference_mode():
        model(**inputs, logits_to_keep=1)
        with stage_timer(stages) as (hooked, _):
            clock = time.perf_counter()
            model(**inputs, logits_to_keep=1)
            seconds["total"] = seconds["decode"] + time.perf_counter() - clock
    seconds.update(hooked, sample=0.0, compress=0.0)
    video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum())
    raw_tokens = math.ceil(metadata.total_num_frames / 2) * video_tokens // int(inputs["video_grid_thw"][:, 0].sum())
    return {"tokens": video_tokens, "raw_tokens": raw_tokens, "text_tokens": int(inputs["input_ids"].shape[1]) - video_tokens,
            "frames_kept": int(inputs["video_grid_thw"][:, 0].sum()) * 2, "seconds": seconds, "statistics": {}}


def run_preset(name: str, video: str, longvu_context: int) -> dict:
    import torch

    from transformers_vidcomp.demo import stage_timer

    model, _, inputs, seconds = prepare_inputs(name, video, longvu_context)
    inner = model.model
    stages = {"sample": inner.sampler, "encode": inner.vision_tower, "compress": inner.compressor,
              "prefill": inner.language_model}
    with torch.inference_mode():
        model(**inputs, logits_to_keep=1)  # a first pass pays one-time initialisation; the second is timed
        with stage_timer(stages) as (hooked, outputs):
            clock = time.perf_counter()
            model(**inputs, logits_to_keep=1)
            seconds["total"] = seconds["decode"] + seconds.get("sample", 0.0) + time.perf_counter() - clock
    for stage, value in hooked.items():
        seconds[stage] = seconds.get(stage, 0.0) + value
    compressed = outputs["compress"]
    extra = {}
    if name in QWEN_COMPONENTS:  # Qwen's own count for every frame of the file (Qwen's 2 fps takes all of 1 fps)
        from transformers_vidcomp.processors.video_processing_vidcomp import open_video_stream

        with open_video_stream(video) as container:
            frames = container.streams.video[0].frames
        height, width = inputs["pixel_values_videos"].shape[-2:]
        extra["raw_tokens"] = math.ceil(frames / 2) * (height // 28) * (width // 28)
    return {
        **extra,
        "tokens": int(compressed.token_counts.sum()),
        "text_tokens": int(inputs["input_ids"].shape[1] - 1),
        "frames_kept": int(outputs["sample"].keep_mask.sum()),
        "seconds": seconds,
        "statistics": compressed.statistics or {},
    }


def run_transformers_baseline(name: str, video: str) -> dict:
    r"""Decode and encode as the `baseline` preset does, every frame, then Transformers' own compressor on them."""
    import torch

    import transformers_baselines

    model, processor, inputs, seconds = prepare_inputs(name, video, 0)
    inner = model.model
    # VideoLLaMA3 compares raw pixels (its own processor normalises them): undo our normalisation.
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (processor.video_processor.image_mean,
                                                              processor.video_processor.image_std))
    pixels = (inputs["pixel_values_videos"] * std + mean) * 255

    def forward() -> tuple[torch.Tensor, dict[str, float]]:
        timed = {}
        clock = time.perf_counter()
        features = inner.encode_frames(inputs["pixel_values_videos"])
        timed["encode"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if name == "transformers:llava-onevision":
            tokens = transformers_baselines.llava_onevision_pooling(features)
        else:
            tokens, _ = transformers_baselines.videollama3_frame_difference_pruning(
                features, pixels, patch_size=inner.config.vision_config.patch_size
            )
        tokens = inner.multi_modal_projector(tokens)
        timed["compress"] = time.perf_counter() - clock
        embeds = inner.language_model.get_input_embeddings()(inputs["input_ids"])
        prompt = torch.cat([embeds[0], tokens]).unsqueeze(0)  # the same prompt, and the video tokens after it
        clock = time.perf_counter()
        inner.language_model(inputs_embeds=prompt)
        timed["prefill"] = time.perf_counter() - clock
        return tokens, timed

    with torch.inference_mode():
        forward()  # a first pass pays one-time initialisation; the second is timed
        tokens, timed = forward()
    seconds.update(timed, sample=0.0)
    seconds["total"] = sum(seconds.values())
    return {"tokens": int(tokens.shape[0]), "text_tokens": int(inputs["input_ids"].shape[1] - 1),
            "frames_kept": int(inputs["video_num_frames"].sum()), "seconds": seconds, "statistics": {}}


def worker(name: str, video: str, longvu_context: int) -> None:
    started = time.perf_counter()
    if name == "transformers:qwen2_5_vl":
        result = run_transformers_qwen(video)
    elif name.startswith("transformers:"):
        result = run_transformers_baseline(name, video)
    else:
        result = run_preset(name, video, longvu_context)
    result["wall_seconds"] = time.perf_counter() - started
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def measure(name: str, video: Path, longvu_context: int) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--video", str(video), "--longvu-context", str(longvu_context)]
    env_path = str(Path(__file__).parent)
    result = subprocess.run(command, capture_output=True, text=True, env=_env_with_path(env_path))
    if result.returncode != 0:
        raise RuntimeError(f"{name} on {video.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _env_with_path(folder: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, env.get("PYTHONPATH")]))
    return env


def linear_fit(minutes: list[float], seconds: list[float]) -> dict:
    r"""Least-squares `seconds = slope * minutes + intercept`, and the fit's R^2."""
    x, y = np.asarray(minutes, dtype=float), np.asarray(seconds, dtype=float)
    if len(x) < 2:
        return {"slope": math.nan, "intercept": math.nan, "r2": math.nan}
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    return {"slope": float(slope), "intercept": float(intercept),
            "r2": float(1 - (residual**2).sum() / total) if total > 0 else 1.0}


def raw_tokens_per_frame() -> int:
    from transformers_vidcomp.tiny import TINY_VISION

    return (TINY_VISION["image_size"] // TINY_VISION["patch_size"]) ** 2


def summarise(runs: dict[str, dict[str, dict]], minutes: list[float]) -> dict:
    per_frame = raw_tokens_per_frame()
    summary = {}
    for name, by_length in runs.items():
        lengths = [m for m in minutes if str(m) in by_length]
        longest = by_length[str(lengths[-1])]
        stage = longest["seconds"]
        summary[name] = {
            "fit": linear_fit(lengths, [by_length[str(m)]["seconds"]["total"] for m in lengths]),
            "compress_to_encode": stage.get("compress", 0.0) / stage["encode"] if stage.get("encode") else math.nan,
            # Against the raw tokens of every frame: the tiny SigLIP's grid, or Qwen's own count for the Qwen rows.
            "compression": {
                str(m): by_length[str(m)].get("raw_tokens", m * 60 * per_frame) / by_length[str(m)]["tokens"]
                for m in lengths
            },
        }
    return summary


def render_markdown(results: dict) -> str:
    r"""The results as markdown: the README's results section is exactly this text."""
    minutes = results["minutes"]
    longest = str(minutes[-1])
    runs, summary = results["runs"], results["summary"]
    lines = [
        f"Tiny encoder (SigLIP architecture, {results['raw_tokens_per_frame']} patches per frame), synthetic videos at "
        f"1 fps; {results['machine']}. Generated by `python benchmarks/run.py --update-readme`.",
        "",
        f"Stages for the {minutes[-1]:g}-minute video (seconds), and the linear fit of total time against length:",
        "",
        f"| method | tokens to the LLM | compression | decode | sample | encode | compress | prefill | total "
        f"| compress / encode | peak RSS GiB | s per video minute | R^2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_length in runs.items():
        run, info = by_length[longest], summary[name]
        s = run["seconds"]
        lines.append(
            f"| {name} | {run['tokens']:,} | {info['compression'][longest]:,.0f}x | {s.get('decode', 0):.2f} "
            f"| {s.get('sample', 0):.3f} | {s.get('encode', 0):.3f} | {s.get('compress', 0):.3f} "
            f"| {s.get('prefill', 0):.3f} | {s['total']:.2f} | {info['compress_to_encode']:.2f} "
            f"| {run['peak_rss_mib'] / 1024:.2f} "
            f"| {info['fit']['slope']:.2f} | {info['fit']['r2']:.3f} |"
        )
    worst = max(runs, key=lambda name: runs[name][longest]["peak_rss_mib"])
    lines += ["", f"Largest peak resident memory for the {minutes[-1]:g}-minute video: {worst}, "
              f"{runs[worst][longest]['peak_rss_mib'] / 1024:.2f} GiB."]
    if "longvu" in runs:
        run = runs["longvu"][longest]
        lines.append(f"LongVU fits the {minutes[-1]:g}-minute video into a context of {run['tokens'] + run['text_tokens']:,} "
                     f"tokens ({run['tokens']:,} video, {run['text_tokens']} text; the paper's context is "
                     f"{results['longvu_context']:,}).")
    lines += ["", "Tokens to the LLM by video length:", "",
              "| method | " + " | ".join(f"{m:g} min" for m in minutes) + " |",
              "|---|" + "---:|" * len(minutes)]
    for name, by_length in runs.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_length[str(m)]['tokens']:,}" for m in minutes) + " |")
    lines += ["", "![tokens against length](benchmarks/results/tokens_vs_length.png) "
              "![time against length](benchmarks/results/time_vs_length.png) "
              "![time per stage](benchmarks/results/stage_times.png)"]
    if "needle" in results:
        from transformers_vidcomp.evaluation.needle import needle_markdown

        # Its headings go two levels down, under this section's.
        needle = needle_markdown(results["needle"]).strip().replace("\n## ", "\n#### ").replace("# ", "### ", 1)
        lines += ["", needle, "", "![needle retention: depth against length](benchmarks/results/needle_heatmap.png)"]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes, runs = results["minutes"], results["runs"]
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, by_length in runs.items():
        axis.plot(minutes, [by_length[str(m)]["tokens"] for m in minutes], marker="o", label=name)
    axis.set(xlabel="video length (minutes, 1 fps)", ylabel="tokens to the LLM", yscale="log", xscale="log")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "tokens_vs_length.png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, by_length in runs.items():
        line = axis.plot(minutes, [by_length[str(m)]["seconds"]["total"] for m in minutes], marker="o", label=name)
        fit = results["summary"][name]["fit"]
        axis.plot(minutes, [fit["slope"] * m + fit["intercept"] for m in minutes], ls=":", color=line[0].get_color())
    axis.set(xlabel="video length (minutes, 1 fps)", ylabel="seconds, video file to prefill (dotted: linear fit)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "time_vs_length.png", dpi=120)
    plt.close(figure)

    longest = str(minutes[-1])
    stages = ("decode", "sample", "encode", "compress", "prefill")
    figure, axis = plt.subplots(figsize=(7, 4))
    names = list(runs)
    bottom = np.zeros(len(names))
    for stage in stages:
        values = np.array([runs[n][longest]["seconds"].get(stage, 0.0) for n in names])
        axis.barh(names, values, left=bottom, label=stage)
        bottom += values
    axis.set(xlabel=f"seconds for a {minutes[-1]:g}-minute video", title="time per stage")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "stage_times.png", dpi=120)
    plt.close(figure)


def update_readme(markdown: str, readme: Path = README) -> None:
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + markdown + text[end:])


def machine_description() -> str:
    import torch

    return f"{os.cpu_count()} CPU cores, torch {torch.__version__.split('+')[0]} with {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=list(MINUTES))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS) + list(TRANSFORMERS_BASELINES))
    parser.add_argument("--longvu-context", type=int, default=8192, help="LongVU's context length (paper: 8k)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--videos", type=Path, help="folder to keep the generated videos in (default: temporary)")
    parser.add_argument("--skip-needle", action="store_true", help="leave out the needle-retention evaluation")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--worker")
    parser.add_argument("--video")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.video, args.longvu_context)
        return

    from tqdm.auto import tqdm

    minutes = sorted(args.minutes)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.videos or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        videos = {}
        for m in minutes:
            videos[m] = folder / f"haystack-{m:g}min.mp4"
            if not videos[m].exists():
                write_benchmark_video(videos[m], seconds=round(m * 60))
        runs = {name: {} for name in args.presets}
        jobs = [(name, m) for m in minutes for name in args.presets]
        for name, m in tqdm(jobs, desc="benchmark runs", unit="run"):
            runs[name][str(m)] = measure(name, videos[m], args.longvu_context)
    results = {"minutes": minutes, "machine": machine_description(), "raw_tokens_per_frame": raw_tokens_per_frame(),
               "longvu_context": args.longvu_context, "runs": runs}
    results["summary"] = summarise(runs, minutes)
    if not args.skip_needle:
        from transformers_vidcomp.evaluation.needle import plot_needle_heatmap, run_needle

        results["needle"] = run_needle(lengths_minutes=minutes, depths=NEEDLE_DEPTHS, budgets=NEEDLE_BUDGETS, seed=0)
        plot_needle_heatmap(results["needle"], args.out / "needle_heatmap.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    markdown = render_markdown(results)
    (args.out / "results.md").write_text(markdown)
    plot(results, args.out)
    print(markdown)
    if args.update_readme:
        update_readme(markdown)
        print(f"README.md results section rewritten from {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
