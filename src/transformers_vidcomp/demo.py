r"""`vidcomp demo`: decode -> sample -> encode -> compress -> LLM on one video, with a per-stage report.

Each stage is timed by forward hooks on the model's own sub-modules, so the demo runs exactly the code path
`generate()` runs, not a re-implementation of it.
"""

import inspect
import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .demo_video import make_demo_video
from .presets import UnsupportedVisualizationError
from .processors import decode_video
from .processors.processing_vidcomp import select_frames
from .evaluation.video_qa import PHOTO_NAMES, format_multiple_choice
from .presets import is_real
from .tiny import build_tiny


UNTRAINED_NOTICE = (
    "Note: this answer comes from an untrained tiny model with random weights; it shows the data path works, "
    "not what a trained model would say."
)


# The default video's question for real presets: one option appears in it (the cat), three do not.
DEMO_OPTIONS = [PHOTO_NAMES["horse"], PHOTO_NAMES["hubble_deep_field"], PHOTO_NAMES["chelsea"], PHOTO_NAMES["retina"]]
DEMO_QUESTION = "Which of these photographs appears in the video?"
DEMO_ANSWER = "C"


@dataclass
class DemoReport:
    video: str
    preset: str
    question: str
    answer: str
    frames_decoded: int
    frames_encoded: int
    frames_kept: int
    kept_timestamps: list[float]
    tokens_per_frame: float
    tokens_to_llm: int
    seconds: dict[str, float]
    scene_cuts: list[float] | None = None
    scenes: list[list[float]] | None = None
    shots: list[float] | None = None
    compressor_statistics: dict[str, int] | None = None
    truth: str | None = None
    trained_note: str | None = None


@contextmanager
def stage_timer(stages: dict[str, torch.nn.Module]):
    r"""Accumulates wall time per named module across all its calls, and keeps each module's last output."""
    seconds, outputs, started, handles = defaultdict(float), {}, {}, []
    for name, module in stages.items():

        def before(module, args, kwargs, name=name):
            started[name] = time.perf_counter()

        def after(module, args, kwargs, output, name=name):
            seconds[name] += time.perf_counter() - started[name]
            outputs[name] = output

        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after, with_kwargs=True))
    try:
        yield seconds, outputs
    finally:
        for handle in handles:
            handle.remove()


def contact_sheet(
    frames: np.ndarray,
    timestamps: list[float],
    path: Path,
    columns: int = 4,
    scenes: list[int] | None = None,
    mark_representatives: bool = False,
) -> None:
    r"""
    Saves the kept frames in a grid, each captioned with its time in seconds. With `scenes` (the scene of each
    frame), each row is one scene; with `mark_representatives`, each scene's last frame, its representative, is
    framed in red after its supplements.
    """
    height, width = frames.shape[1:3]
    caption = 18
    if scenes is None:
        cells = [(i // columns, i % columns) for i in range(len(frames))]
    else:
        scene_numbers = sorted(set(scenes))
        cells, used = [], {scene: 0 for scene in scene_numbers}
        for scene in scenes:
            cells.append((scene_numbers.index(scene), used[scene]))
            used[scene] += 1
        columns = max(used.values())
    rows = max(row for row, _ in cells) + 1
    sheet = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((row, column), frame, t) in enumerate(zip(cells, frames, timestamps)):
        x, y = column * width, row * (height + caption)
        sheet.paste(Image.fromarray(frame), (x, y))
        label = f"t = {t:.1f} s"
        if scenes is not None:
            is_representative = mark_representatives and (i + 1 == len(scenes) or scenes[i + 1] != scenes[i])
            label = f"scene {scenes[i]}, " + ("representative, " if is_representative else "") + label
            if is_representative:
                draw.rectangle((x, y, x + width - 1, y + height - 1), outline="red", width=3)
        draw.text((x + 4, y + height + 3), label, fill="black")
    sheet.save(path)


def shot_plot(
    times: np.ndarray,
    probabilities: np.ndarray,
    shot_starts: np.ndarray,
    kept: np.ndarray,
    threshold: float,
    path: Path,
    true_cuts: list[float] | None = None,
    width: int = 1000,
    height: int = 260,
) -> None:
    r"""
    Draws the shot detector's transition probability over time, the shots it found (alternately shaded, numbered), the
    keyframes kept (red ticks) and, for the generated demo video, the true cuts (dashed green), as a PNG.
    """
    margin_left, margin_right, margin_top, margin_bottom = 50, 15, 25, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    span = max(float(times[-1]), 1e-6)
    plot_w, plot_h = width - margin_left - margin_right, height - margin_top - margin_bottom

    def x_of(t: float) -> float:
        return margin_left + plot_w * t / span

    def y_of(p: float) -> float:
        return margin_top + plot_h * (1.0 - p)

    starts = [float(times[i]) for i in shot_starts] + [span]
    for shot, (begin, end) in enumerate(zip(starts[:-1], starts[1:])):
        draw.rectangle((x_of(begin), margin_top, x_of(end), margin_top + plot_h), fill="#eef3fb" if shot % 2 else "#ffffff")
        draw.text((x_of(begin) + 2, margin_top + 2), str(shot), fill="#555555")
    draw.line((margin_left, y_of(threshold), margin_left + plot_w, y_of(threshold)), fill="#bbbbbb")
    for cut in true_cuts or []:
        for y in range(margin_top, margin_top + plot_h, 8):
            draw.line((x_of(cut), y, x_of(cut), y + 4), fill="green", width=2)
    draw.line([(x_of(float(t)), y_of(float(p))) for t, p in zip(times, probabilities)], fill="black", width=1)
    for t in times[kept]:
        draw.line((x_of(float(t)), margin_top + plot_h, x_of(float(t)), margin_top + plot_h + 10), fill="red", width=2)
    draw.rectangle((margin_left, margin_top, margin_left + plot_w, margin_top + plot_h), outline="black")
    for p in (0.0, 0.5, 1.0):
        draw.text((8, y_of(p) - 6), f"{p:.1f}", fill="black")
    for k in range(6):
        t = span * k / 5
        draw.text((x_of(t) - 10, margin_top + plot_h + 14), f"{t:.1f}s", fill="black")
    draw.text(
        (margin_left, 5),
        f"transition probability (black), {len(shot_starts)} shots (shaded), {int(kept.sum())} keyframes (red)"
        + (", true cuts (green)" if true_cuts else ""),
        fill="black",
    )
    image.save(path)


def attention_heatmaps(
    frames: np.ndarray, weights: torch.Tensor, timestamps: list[float], path: Path, title: str, columns: int = 8
) -> None:
    r"""
    Saves the kept frames in a grid with a compressor's attention over their patches laid on top in red (the
    HICom paper's Figure 6): `weights` of shape `(frames, grid_h, grid_w)`, scaled from the smallest weight (clear)
    to the largest (most red).
    """
    height, width = frames.shape[1:3]
    heat = weights.float()[:, None]
    heat = torch.nn.functional.interpolate(heat, size=(height, width), mode="nearest")[:, 0]
    heat = ((heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-12)).numpy()[..., None]
    red = np.array([255.0, 0.0, 0.0])
    overlaid = (frames * (1 - 0.6 * heat) + red * 0.6 * heat).astype(np.uint8)
    caption, rows = 18, -(-len(frames) // columns)
    sheet = Image.new("RGB", (columns * width, rows * (height + caption) + caption), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 3), title, fill="black")
    for i, (frame, t) in enumerate(zip(overlaid, timestamps)):
        x, y = (i % columns) * width, (i // columns) * (height + caption) + caption
        sheet.paste(Image.fromarray(frame), (x, y))
        draw.text((x + 4, y + height + 3), f"t = {t:.1f} s", fill="black")
    sheet.save(path)


def run_demo(
    video: str | os.PathLike | None = None,
    preset: str = "baseline-real",
    question: str | None = None,
    out_dir: str | os.PathLike = "vidcomp-demo",
    max_new_tokens: int = 16,
    visualize: bool = False,
) -> DemoReport:
    r"""
    Runs the demo and writes `report.json` and `contact_sheet.png` to `out_dir`. With `visualize`, a compressor
    that can report its attention (HICom) also writes `attention_local.png` and `attention_global.png`: its
    attention over the kept frames' patches, from the same inputs it compressed during generation.

    A `-real` preset runs SmolLM2-135M-Instruct with the tower and connector trained here (`transformers_vidcomp.real`);
    on the default video, without a `question`, it is asked which of four photographs appears, and the truth is
    reported beside its answer. Other presets build a tiny random model, which shows the data path only.
    """
    truth, note = None, None
    if is_real(preset):
        from .real import build_real, demo_note

        model, processor = build_real(preset)
        note = demo_note(preset)
        if question is None and video is None:
            question, truth = format_multiple_choice(DEMO_QUESTION, DEMO_OPTIONS), DEMO_ANSWER
            max_new_tokens = 2
    else:
        model, processor = build_tiny(preset)
    question = question or "What happens in this video?"
    if visualize and "return_attention" not in inspect.signature(model.model.compressor.forward).parameters:
        raise UnsupportedVisualizationError(
            f"--visualize needs a compressor that reports its attention (HICom); the {preset!r} preset uses "
            f"{type(model.model.compressor).__name__}."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene_cuts = None
    if video is None:
        video = out / "demo.mp4"
        scene_cuts = make_demo_video(video)

    inner = model.model
    started = time.perf_counter()
    shots, kept_shots, selection_seconds = None, None, {}
    if inner.sampler.selects_frames_at_decode:
        # The sampler picks frames while decoding, exactly as the processor has it do in the pipeline.
        selection = select_frames(video, inner.sampler)
        selection_seconds["select"] = time.perf_counter() - started
        frames, metadata, plan = selection.frames, selection.metadata, selection.plan
        keep_thumbnails = plan.keep.numpy()
        shots = [round(float(selection.thumbnail_times[i]), 3) for i in plan.shot_starts]
        kept_shots = plan.shot_ids[plan.keep].tolist()
        thumbnail_count = len(keep_thumbnails)
        shot_plot(
            selection.thumbnail_times, plan.transition_probabilities.numpy(), plan.shot_starts.numpy(),
            keep_thumbnails, inner.sampler.shot_detector.config.threshold, out / "shots.png", true_cuts=scene_cuts,
        )
    else:
        frames, metadata = decode_video(video, sample_indices_fn=processor.video_processor.sample_frames)
    conversation = [
        {"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": question}]}
    ]
    inputs = processor.apply_chat_template(
        [conversation],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"video_metadata": [metadata], "do_sample_frames": False},
    )
    decode_seconds = time.perf_counter() - started - sum(selection_seconds.values())

    stages = {
        "sample": inner.sampler,
        "encode": inner.vision_tower,
        "compress": inner.compressor,
        "llm": inner.language_model,
    }
    compressor_call = {}

    def remember(module, args, kwargs):
        compressor_call.setdefault("call", (args, kwargs))

    hook = inner.compressor.register_forward_pre_hook(remember, with_kwargs=True) if visualize else None
    with torch.inference_mode(), stage_timer(stages) as (seconds, outputs):
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens)
    if hook is not None:
        hook.remove()
    answer = processor.tokenizer.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    keep = outputs["sample"].keep_mask.cpu().numpy()
    kept_timestamps = [round(float(t), 3) for t in inputs["video_timestamps"][keep]]
    tokens = int(outputs["compress"].token_counts.sum())
    scene_ids = outputs["sample"].scene_ids
    kept_scenes = scene_ids[torch.from_numpy(keep)].tolist() if scene_ids is not None else None
    scenes = None
    if kept_scenes is not None:
        scenes = [[t for t, s in zip(kept_timestamps, kept_scenes) if s == scene] for scene in sorted(set(kept_scenes))]
    report = DemoReport(
        video=str(video),
        preset=preset,
        question=question,
        answer=answer,
        frames_decoded=thumbnail_count if shots is not None else len(frames),
        frames_encoded=len(frames) if inner.sampler.needs_frame_features else int(keep.sum()),
        frames_kept=int(keep.sum()),
        kept_timestamps=kept_timestamps,
        tokens_per_frame=tokens / max(1, int(keep.sum())),
        tokens_to_llm=tokens,
        seconds={"decode": decode_seconds, **selection_seconds, **dict(seconds)},
        scene_cuts=scene_cuts,
        scenes=scenes,
        shots=shots,
        compressor_statistics=outputs["compress"].statistics,
        truth=truth,
        trained_note=note,
    )
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2))
    contact_sheet(
        frames[keep],
        kept_timestamps,
        out / "contact_sheet.png",
        scenes=kept_scenes if kept_shots is None else kept_shots,
        mark_representatives=inner.sampler.scene_ends_at_representative,
    )
    if visualize:
        args, kwargs = compressor_call["call"]
        with torch.inference_mode():
            maps = inner.compressor(*args, **{**kwargs, "return_attention": True}).attention_maps
        attention_heatmaps(frames[keep], maps.local, kept_timestamps, out / "attention_local.png",
                           "local attention (within each group)")
        if maps.global_ is not None:
            attention_heatmaps(frames[keep], maps.global_, kept_timestamps, out / "attention_global.png",
                               "global attention (learnable queries, averaged over queries and heads)")
    return report


def format_report(report: DemoReport) -> str:
    s = report.seconds
    decoded = f"{report.frames_decoded} frames decoded"
    if report.shots is not None:
        decoded = f"{report.frames_kept} chosen frames prepared"
    rows = [
        ("decode", decoded, s["decode"]),
        *([("select", f"{report.frames_decoded} thumbnails, {len(report.shots)} shots", s["select"])]
          if report.shots is not None else []),
        ("sample", f"{report.frames_kept} frames kept" + (
            f" in {len(report.scenes)} scenes" if report.scenes else
            f", {report.frames_decoded - report.frames_kept} dropped"), s.get("sample", 0.0)),
        ("encode", f"{report.frames_encoded} frames through the vision tower", s.get("encode", 0.0)),
        ("compress", f"{report.tokens_to_llm // len(report.scenes)} tokens per scene" if report.scenes
         else f"{report.tokens_per_frame:g} tokens per frame", s.get("compress", 0.0)),
        ("llm", f"{report.tokens_to_llm} video tokens to the LLM", s.get("llm", 0.0)),
    ]
    lines = [f"{'stage':<10}{'what':<42}{'time (ms)':>10}", "-" * 62]
    lines += [f"{name:<10}{what:<42}{1000 * sec:>10.1f}" for name, what, sec in rows]
    if report.compressor_statistics:
        lines += ["", "compressor: " + ", ".join(f"{value} {name}" for name, value in report.compressor_statistics.items())]
    lines += ["", f"question: {report.question}"]
    if report.truth is not None:
        verdict = "correct" if report.answer[:1] == report.truth else "wrong"
        lines += [f"answer:   {report.answer!r}    truth: {report.truth!r}    ({verdict})"]
    else:
        lines += [f"answer:   {report.answer!r}"]
    lines += [report.trained_note or UNTRAINED_NOTICE]
    return "\n".join(lines)
