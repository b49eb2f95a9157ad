r"""
Synthetic multiple-choice video QA whose every answer is known: videos planned with the haystack machinery of
`demo_video` from scikit-image's photographs, questions read off the plan, and a JSONL manifest in the layout of
public long-video benchmarks.

Question types (`QUESTION_TYPES`), each answered by an option's letter:

- `appears`: which of four photographs appears in the video (the three others appear nowhere in it);
- `first` / `last`: which of the video's photographs is on screen first / last;
- `count`: how many different photographs the video shows (options are numbers);
- `at_time`: which photograph is on screen at a given second (asked in the middle of a scene, away from cuts);
- `needle`: which photograph is shown briefly (`needle_seconds`, 1-2 s) at depth `d` of a long haystack; the
  other options appear nowhere in the video.

Ground truth comes from what is on screen frame by frame (`frame_photos`): a dissolve frame shows the photograph
that weighs more in the blend, and the needle's frames show the needle.

Manifest rows (one JSON object per line): `video` (path relative to the manifest's folder), `question` (without
options), `options` (letter order), `answer` (the letter), `type`, `depth` (the needle's, else null), plus `id`,
`duration`, `seed`, `photos` (the video's photographs in order of first appearance) and `scenes` (the photograph of
each stretch of the video, in screen order: one shown again later is listed again) with `scene_frames` (how many
frames each stretch lasts; they sum to the video's frames). The prompt a model sees is
`format_multiple_choice(question, options)`, shared by training and evaluation.
"""

import itertools
import json
import os
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..demo_video import HaystackPlan, plan_haystack, write_haystack_video


# Plain-English names of the scikit-image photographs used, in the phrasing options show.
PHOTO_NAMES: dict[str, str] = {
    "astronaut": "an astronaut",
    "coffee": "a cup of coffee",
    "chelsea": "a cat",
    "rocket": "a rocket",
    "horse": "a horse",
    "hubble_deep_field": "a field of galaxies",
    "retina": "a retina",
    "immunohistochemistry": "stained tissue under a microscope",
    "camera": "a man with a camera",
    "moon": "the surface of the moon",
    "brick": "a brick wall",
    "grass": "grass",
    "gravel": "gravel",
    "coins": "old coins",
    "page": "a page of printed text",
    "clock": "a clock",
    "checkerboard": "a checkerboard",
    "colorwheel": "a colour wheel",
    "logo": "a snake logo",
    "cell": "a cell under a microscope",
}
QA_PHOTOS: tuple[str, ...] = tuple(PHOTO_NAMES)
QUESTION_TYPES: tuple[str, ...] = ("appears", "first", "last", "count", "at_time", "needle")

QUESTIONS = {
    "appears": "Which of these photographs appears in the video?",
    "first": "Which of these photographs is shown first in the video?",
    "last": "Which of these photographs is shown last in the video?",
    "count": "How many different photographs does the video show?",
    "at_time": "Which of these photographs is on screen at {seconds:g} seconds?",
    "needle": "One photograph is shown only briefly in this video. Which is it?",
}


class QASpecError(ValueError):
    """A QA set cannot be generated as asked (unknown question type or photograph, too few photographs)."""


def format_multiple_choice(question: str, options: list[str]) -> str:
    r"""
    The text a model is asked: the question, one lettered option per line, and the instruction to answer with a
    letter. Training and evaluation both build prompts with it, so they are identical.
    """
    if not 2 <= len(options) <= 26:
        raise QASpecError(f"A multiple-choice question needs 2 to 26 options, got {len(options)}.")
    lines = [question, *(f"{letter}. {option}" for letter, option in zip(string.ascii_uppercase, options))]
    return "\n".join(lines + ["Answer with the option's letter."])


def frame_photos(plan: HaystackPlan) -> list[str]:
    r"""
    The photograph on screen in each frame of `plan` (length `plan.num_frames`): a scene's own frames show its
    photograph; a dissolve frame shows the one with the larger weight (the new scene from the middle on, see
    `Transition`); the needle's frames show the needle.
    """
    shown = np.empty(plan.num_frames, dtype=object)
    for scene in plan.scenes:
        shown[scene.start : scene.end] = scene.photo
    for transition in plan.transitions:
        old = plan.scenes[transition.index - 1].photo
        alphas = np.arange(1, transition.length + 1) / (transition.length + 1)
        frames = transition.start + np.arange(transition.length)
        shown[frames[alphas < 0.5]] = old
    if plan.needle is not None:
        shown[plan.needle.start : plan.needle.end] = plan.needle.photo
    return shown.tolist()


def in_order(photos: list[str]) -> list[str]:
    """The distinct photographs of a frame list, in order of first appearance."""
    return list(dict.fromkeys(photos))


@dataclass(frozen=True)
class QAVideoSpec:
    r"""
    One video to generate.

    Args:
        seconds: its length. fps, width, height: its frames.
        photos: the photographs its scenes draw from (each scene picks one, never twice in a row).
        scene_seconds: the range of scene lengths.
        needle_photo, needle_depth, needle_seconds: a brief shot of a photograph used nowhere else, at a depth.
        seed: the plan's seed.
    """

    seconds: float
    photos: tuple[str, ...]
    seed: int
    fps: float = 2.0
    width: int = 64
    height: int = 64
    scene_seconds: tuple[float, float] = (2.0, 5.0)
    needle_photo: str | None = None
    needle_depth: float | None = None
    needle_seconds: float = 1.0

    def plan(self) -> HaystackPlan:
        needle = {}
        if self.needle_photo is not None:
            needle = dict(
                needle_depth=self.needle_depth,
                needle_photo=self.needle_photo,
                needle_frames=max(1, round(self.needle_seconds * self.fps)),
            )
        return plan_haystack(
            max(1, round(self.seconds * self.fps)), fps=self.fps, width=self.width, height=self.height,
            photos=self.photos, scene_seconds=self.scene_seconds, seed=self.seed, **needle,
        )


def lettered(correct: str, others: list[str], rng: np.random.Generator) -> tuple[list[str], str]:
    """The options (correct one among `others`, shuffled) and the correct one's letter."""
    options = [correct, *others]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return options, string.ascii_uppercase[int(np.argmax(order == 0))]


def questions_for(
    plan: HaystackPlan, rng: np.random.Generator, types: tuple[str, ...], pool: tuple[str, ...], num_options: int = 4
) -> list[dict]:
    r"""
    The questions of `types` that `plan` can answer, each a manifest row without `video`: options name photographs
    of `pool` (or counts), exactly one of them right.
    """
    shown = frame_photos(plan)
    order = in_order(shown)
    absent = [photo for photo in pool if photo not in order]
    rows = []

    def row(kind: str, question: str, correct: str, others: list[str], depth: float | None = None) -> None:
        options, answer = lettered(correct, others, rng)
        rows.append({"question": question, "options": options, "answer": answer, "type": kind, "depth": depth})

    def distractors(candidates: list[str], count: int) -> list[str]:
        picked = rng.choice(len(candidates), size=count, replace=False)
        return [PHOTO_NAMES[candidates[i]] for i in picked]

    haystack_photos = order if plan.needle is None else [p for p in order if p != plan.needle.photo]
    for kind in types:
        if kind == "appears" and len(absent) >= num_options - 1:
            correct = haystack_photos[int(rng.integers(len(haystack_photos)))]
            row(kind, QUESTIONS[kind], PHOTO_NAMES[correct], distractors(absent, num_options - 1))
        elif kind in ("first", "last") and len(order) >= 2:
            # The photograph on screen at the first / last frame (the last may also have been shown before).
            correct = shown[0] if kind == "first" else shown[-1]
            # Other photographs of the video first (they make the question about order), then absent ones.
            others = [p for p in order if p != correct][: num_options - 1]
            extra = distractors(absent, num_options - 1 - len(others)) if len(others) < num_options - 1 else []
            row(kind, QUESTIONS[kind], PHOTO_NAMES[correct], [PHOTO_NAMES[p] for p in others] + extra)
        elif kind == "count":
            count = len(order)
            low = max(1, count - int(rng.integers(num_options)))
            others = [str(n) for n in range(low, low + num_options) if n != count][: num_options - 1]
            row(kind, QUESTIONS[kind], str(count), others)
        elif kind == "at_time":
            scene = plan.scenes[int(rng.integers(len(plan.scenes)))]
            frame = scene.start + scene.num_frames // 2
            correct = shown[frame]
            others = [p for p in order if p != correct]
            picked = [others[i] for i in rng.permutation(len(others))[: num_options - 1]]
            extra = distractors(absent, num_options - 1 - len(picked)) if len(picked) < num_options - 1 else []
            question = QUESTIONS[kind].format(seconds=round(frame / plan.fps, 1))
            row(kind, question, PHOTO_NAMES[correct], [PHOTO_NAMES[p] for p in picked] + extra)
        elif kind == "needle" and plan.needle is not None and len(absent) >= num_options - 1:
            depth = plan.describe()["needle"]["depth"]
            row(kind, QUESTIONS[kind], PHOTO_NAMES[plan.needle.photo], distractors(absent, num_options - 1),
                depth=round(depth, 4))
    return rows


def random_spec(
    rng: np.random.Generator, seed: int, pool: tuple[str, ...], photos_per_video: tuple[int, int],
    seconds: tuple[float, float], needle_seconds: tuple[float, float] | None, **spec_kwargs,
) -> QAVideoSpec:
    """A video spec drawn from `rng`: a random subset of `pool` in a random order, a random length and needle."""
    count = int(rng.integers(photos_per_video[0], photos_per_video[1] + 1))
    chosen = tuple(pool[i] for i in rng.choice(len(pool), size=count + 1, replace=False))
    needle = {}
    if needle_seconds is not None:
        needle = dict(needle_photo=chosen[-1], needle_depth=float(rng.uniform(0.1, 0.9)),
                      needle_seconds=float(rng.uniform(*needle_seconds)))
    return QAVideoSpec(seconds=float(rng.uniform(*seconds)), photos=chosen[:-1], seed=seed, **needle, **spec_kwargs)


def generate_qa_items(
    num_videos: int,
    seed: int = 0,
    types: tuple[str, ...] = QUESTION_TYPES,
    pool: tuple[str, ...] = QA_PHOTOS,
    photos_per_video: tuple[int, int] = (3, 5),
    seconds: tuple[float, float] = (10.0, 20.0),
    needle_seconds: tuple[float, float] | None = None,
    **spec_kwargs,
) -> Iterator[tuple[QAVideoSpec, HaystackPlan, list[dict]]]:
    r"""
    Plans `num_videos` videos and their questions, reproducibly from `seed`: each video draws
    `photos_per_video` photographs of `pool` and lasts `seconds`; with `needle_seconds`, it hides a needle of that
    length (another photograph of `pool`) at a random depth in 10-90%. Yields `(spec, plan, rows)`; nothing is
    rendered.
    """
    unknown = sorted(set(types) - set(QUESTION_TYPES))
    if unknown:
        raise QASpecError(f"Unknown question type(s) {unknown}; types: {', '.join(QUESTION_TYPES)}.")
    missing = sorted(set(pool) - set(PHOTO_NAMES))
    if missing:
        raise QASpecError(f"No plain-English name for photograph(s) {missing}; add them to PHOTO_NAMES.")
    if len(pool) < photos_per_video[1] + 4:
        raise QASpecError(
            f"A pool of {len(pool)} photographs leaves too few absent ones for distractors with up to "
            f"{photos_per_video[1]} per video; use a larger pool or fewer photographs per video."
        )
    rng = np.random.default_rng(seed)
    for _ in range(num_videos):
        video_seed = int(rng.integers(2**31))
        spec = random_spec(rng, video_seed, pool, photos_per_video, seconds, needle_seconds, **spec_kwargs)
        plan = spec.plan()
        yield spec, plan, questions_for(plan, rng, types, pool)


def write_qa_set(
    out_dir: str | os.PathLike,
    num_videos: int,
    seed: int = 0,
    progress: bool = True,
    **generate_kwargs,
) -> Path:
    r"""
    Writes `num_videos` videos (`videos/NNNNN.mp4`, streamed scene by scene) and `manifest.jsonl` with their
    questions into `out_dir`; the manifest is written last, through a temporary file, so a finished manifest names
    only finished videos. Keywords as `generate_qa_items`. Returns the manifest's path.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    items = generate_qa_items(num_videos, seed=seed, **generate_kwargs)
    for index, (spec, plan, questions) in enumerate(
        tqdm(items, total=num_videos, desc="QA videos", disable=not progress)
    ):
        video = Path("videos") / f"{index:05d}.mp4"
        write_haystack_video(out / video, plan)
        shown = frame_photos(plan)
        runs = [(photo, len(list(frames))) for photo, frames in itertools.groupby(shown)]
        scenes, scene_frames = [photo for photo, _ in runs], [length for _, length in runs]
        for question in questions:
            rows.append({
                "id": len(rows), "video": video.as_posix(), **question, "duration": plan.num_frames / plan.fps,
                "seed": spec.seed, "photos": in_order(shown), "scenes": scenes, "scene_frames": scene_frames,
            })
    manifest = out / "manifest.jsonl"
    staging = out / ".manifest.jsonl.partial"
    staging.write_text("".join(json.dumps(row) + "\n" for row in rows))
    staging.replace(manifest)
    return manifest


__all__ = [
    "PHOTO_NAMES",
    "QA_PHOTOS",
    "QASpecError",
    "QAVideoSpec",
    "QUESTION_TYPES",
    "format_multiple_choice",
    "frame_photos",
    "generate_qa_items",
    "questions_for",
    "write_qa_set",
]
