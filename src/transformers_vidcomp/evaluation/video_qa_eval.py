r"""
`vidcomp eval`: multiple-choice video QA, in the layout of public long-video benchmarks (Video-MME, MLVU,
LongVideoBench): a JSONL manifest of videos, questions, options and answer letters.

**Manifest.** One JSON object per line: `video` (a path; relative paths are read from the manifest's folder),
`question` (without its options), `options` (in letter order A, B, C, ...), `answer` (the letter), `type` and `depth`
(in [0, 1], or null), plus optional fields; `id` defaults to the line number. The model sees
`format_multiple_choice(question, options)` through its processor's chat template, with the video.

**Scoring.** The model answers greedily; the prediction is the first standalone capital letter among the options'
letters in its answer (`parse_letter`: "B", "(B)", "B. a cat" and "The answer is B" give B; "Bob" gives nothing),
`scored_by = "letter"`. When the answer holds no such letter, the prediction is the option whose letter the model
finds most likely after the prompt (`continuation_log_likelihoods`, the log-probability of each letter's tokens),
`scored_by = "likelihood"`. `scorer="likelihood"` scores every item that way and generates nothing. Each row and the
summary state which scorer decided.

**Reliability and scale.** Rows are appended to `DIR/rows/process-<rank>.jsonl` and flushed as each item finishes; a
restarted run reads every rows file first and does only what is missing (a line torn by the interruption is dropped).
An item whose video cannot be read (missing, corrupt, not a video) becomes an error row, counted wrong and listed in
the summary, and the run goes on. Under `accelerate launch` process `rank` of `n` takes the items `i % n == rank`;
after all finish, the main process merges the rows in manifest order into `DIR/results.jsonl`, and writes
`DIR/summary.json` and `DIR/accuracy.png`. One plain process is the case `n = 1`.
"""

import copy
import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import ascii_uppercase as OPTION_LETTERS

import torch
from tqdm.auto import tqdm

from ..processors import VideoDecodeError
from .video_qa import format_multiple_choice

SCORERS = ("letter", "likelihood")
# What a file that is not a readable video raises while the processor decodes it (missing, a folder, no permission:
# OSError; PyAV's errors arrive as VideoDecodeError).
UNREADABLE_VIDEO_ERRORS = (VideoDecodeError, OSError)
ROWS_FOLDER = "rows"


class ManifestError(ValueError):
    """A manifest line that is not a multiple-choice item."""


class ResultsFolderError(ValueError):
    """An output folder that holds another run's results, or rows that cannot be read."""


@dataclass(frozen=True)
class QAItem:
    r"""
    One multiple-choice question about one video.

    Args:
        id (`str`): unique within the manifest (the line number when the manifest gives none).
        video (`Path`): the video file, resolved against the manifest's folder.
        question (`str`): the question, without its options.
        options (`tuple[str, ...]`): the options, in letter order.
        answer (`str`): the correct option's letter.
        type (`str`): the question type, e.g. `"appears"` or `"needle"`.
        depth (`float`, *optional*): where in the video the asked-about content lies, as a fraction of its length.
    """

    id: str
    video: Path
    question: str
    options: tuple[str, ...]
    answer: str
    type: str
    depth: float | None = None

    @property
    def letters(self) -> str:
        return OPTION_LETTERS[: len(self.options)]


def parse_item(record: dict, line_number: int, folder: Path) -> QAItem:
    """One manifest object as a `QAItem`; `ManifestError` says which field is wrong (the caller adds the line)."""
    missing = [key for key in ("video", "question", "options", "answer") if key not in record]
    if missing:
        raise ManifestError(f"it lacks {', '.join(map(repr, missing))}")
    options = record["options"]
    if not isinstance(options, list) or not 2 <= len(options) <= len(OPTION_LETTERS) or not all(
        isinstance(option, str) for option in options
    ):
        raise ManifestError(f"'options' must be a list of 2 to {len(OPTION_LETTERS)} strings, got {options!r}")
    answer = record["answer"]
    if not isinstance(answer, str) or answer not in OPTION_LETTERS[: len(options)]:
        raise ManifestError(
            f"'answer' must be the correct option's letter, one of {', '.join(OPTION_LETTERS[: len(options)])}; "
            f"got {answer!r}"
        )
    depth = record.get("depth")
    if depth is not None and not (isinstance(depth, (int, float)) and 0.0 <= depth <= 1.0):
        raise ManifestError(f"'depth' must be a number in [0, 1] or null, got {depth!r}")
    video = Path(record["video"])
    return QAItem(
        id=str(record.get("id", line_number)),
        video=video if video.is_absolute() else folder / video,
        question=str(record["question"]),
        options=tuple(options),
        answer=answer,
        type=str(record.get("type", "unspecified")),
        depth=None if depth is None else float(depth),
    )


def read_manifest(path: str | os.PathLike) -> list[QAItem]:
    r"""Reads a JSONL manifest of multiple-choice items; a bad line raises `ManifestError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No manifest at {str(path)!r}: give the JSONL file of questions.")
    items, seen = [], {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{path}:{line_number} is not valid JSON ({error.msg}).") from None
        if not isinstance(record, dict):
            raise ManifestError(f"{path}:{line_number} is not a JSON object.")
        try:
            item = parse_item(record, line_number, path.parent)
        except ManifestError as error:
            raise ManifestError(f"{path}:{line_number}: {error}.") from None
        if item.id in seen:
            raise ManifestError(f"{path}:{line_number} repeats the id {item.id!r} of line {seen[item.id]}.")
        seen[item.id] = line_number
        items.append(item)
    if not items:
        raise ManifestError(f"{path} holds no items.")
    return items


def parse_letter(text: str, letters: str) -> str | None:
    r"""
    The first of `letters` in `text` that stands alone (no letter or digit on either side), or None.

    >>> parse_letter("The answer is (C).", "ABCD"), parse_letter("Bob sees a cat", "ABCD")
    ('C', None)
    """
    match = re.search(rf"(?<![^\W_])[{re.escape(letters)}](?![^\W_])", text)
    return match.group(0) if match else None


def continuation_log_likelihoods(
    model: torch.nn.Module,
    next_token_log_probs: torch.Tensor,
    cache,
    continuations: Sequence[Sequence[int]],
) -> torch.Tensor:
    r"""
    The log-probability of each continuation after a prompt, summed over its tokens.

    Args:
        model: the causal LM that read the prompt.
        next_token_log_probs (shape `(vocab_size,)`): log-probabilities of the token after the prompt.
        cache: the prompt's key-value cache; continuations of more than one token are run on copies of it.
        continuations: token ids of each continuation (one option letter each, usually a single token).

    Returns:
        shape `(num_continuations,)`: `log p(continuation | prompt)`.
    """
    scores = []
    for tokens in continuations:
        score = next_token_log_probs[tokens[0]].float()
        if len(tokens) > 1:
            step = model(input_ids=torch.tensor([tokens[:-1]], device=next_token_log_probs.device),
                         cache=copy.deepcopy(cache), use_cache=True)
            log_probs = step.logits[0].float().log_softmax(-1)
            score = score + log_probs.gather(-1, torch.tensor(tokens[1:], device=log_probs.device)[:, None]).sum()
        scores.append(score)
    return torch.stack(scores)


class VideoQAEvaluator:
    r"""
    Answers multiple-choice items with one model, one item at a time.

    Args:
        model: a video LLM of ours (`VidCompForConditionalGeneration`), in eval mode.
        processor: its processor (chat template, video decoding).
        scorer (`str`): `"letter"` (the generated letter, else the letters' likelihood) or `"likelihood"` (always
            the letters' likelihood; nothing is generated).
        max_new_tokens (`int`): the longest answer generated.
        processor_kwargs (`dict`, *optional*): settings for the processor, e.g. `{"num_frames": 32}`.
        generation_kwargs (`dict`, *optional*): more arguments for `generate`, e.g. `{"suppress_tokens": [...]}`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        scorer: str = "letter",
        max_new_tokens: int = 16,
        processor_kwargs: dict | None = None,
        generation_kwargs: dict | None = None,
    ):
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}.")
        self.model, self.processor = model, processor
        self.scorer, self.max_new_tokens = scorer, max_new_tokens
        self.processor_kwargs = dict(processor_kwargs or {})
        self.generation_kwargs = dict(generation_kwargs or {})
        sampler = getattr(getattr(model, "model", None), "sampler", None)
        if getattr(sampler, "selects_frames_at_decode", False):
            # The adaptive sampler chooses frames while the file decodes, as in the pipeline.
            self.processor_kwargs.setdefault("frame_selector", sampler)

    def prepare(self, item: QAItem):
        """The model's inputs for `item`; decoding the video raises one of `UNREADABLE_VIDEO_ERRORS` if it fails."""
        if not item.video.exists():  # Transformers would take a missing path for a URL
            raise FileNotFoundError(f"No video at {str(item.video)!r}.")
        conversation = [{"role": "user", "content": [
            {"type": "video", "path": str(item.video)},
            {"type": "text", "text": format_multiple_choice(item.question, item.options)},
        ]}]
        inputs = self.processor.apply_chat_template(
            [conversation], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs=self.processor_kwargs,
        )
        return inputs.to(self.model.device)

    def letter_continuations(self, letters: str) -> list[list[int]]:
        return [self.processor.tokenizer.encode(letter, add_special_tokens=False) for letter in letters]

    @torch.inference_mode()
    def score(self, item: QAItem) -> dict:
        r"""
        One result row: `id`, `type`, `depth`, `prediction` (a letter, or None for an error row), `answer`,
        `correct`, `scored_by` (`"letter"`, `"likelihood"` or None), `error` (None, or why the video was unreadable),
        and `generated` (the answer text), `video_tokens` (tokens the LLM received for the video),
        `log_likelihoods` (per letter, when the likelihood decided) and `seconds`.
        """
        started = time.perf_counter()
        row = {"id": item.id, "type": item.type, "depth": item.depth, "prediction": None, "answer": item.answer,
               "correct": False, "scored_by": None, "error": None, "generated": None, "video_tokens": None,
               "log_likelihoods": None}
        try:
            inputs = self.prepare(item)
        except UNREADABLE_VIDEO_ERRORS as error:
            return {**row, "error": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - started}
        # One prefill encodes the video and gives the next-token scores and the cache the likelihood scorer reads;
        # generation then reuses the encoded video.
        prompt = self.model(**inputs, use_cache=True, logits_to_keep=1)
        video = prompt.video_outputs
        row["video_tokens"] = int(video.token_counts.sum())
        if self.scorer == "letter":
            generated = self.model.generate(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                mm_encoder_outputs={"video": video}, max_new_tokens=self.max_new_tokens, do_sample=False,
                **self.generation_kwargs,
            )
            new_tokens = generated[0, inputs["input_ids"].shape[1]:]
            row["generated"] = self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
            letter = parse_letter(row["generated"], item.letters)
            if letter is not None:
                row.update(prediction=letter, scored_by="letter")
        if row["prediction"] is None:
            log_probs = prompt.logits[0, -1].float().log_softmax(-1)
            likelihoods = continuation_log_likelihoods(
                self.model, log_probs, prompt.cache, self.letter_continuations(item.letters)
            )
            row["log_likelihoods"] = dict(zip(item.letters, likelihoods.tolist()))
            row.update(prediction=item.letters[int(likelihoods.argmax())], scored_by="likelihood")
        row["correct"] = row["prediction"] == item.answer
        return {**row, "seconds": time.perf_counter() - started}


def tally(rows: Sequence[dict]) -> dict:
    correct = sum(bool(row["correct"]) for row in rows)
    return {"items": len(rows), "correct": correct, "accuracy": correct / len(rows) if rows else math.nan}


def depth_key(depth: float) -> str:
    return f"{depth:.2f}"


def summarize(rows: Sequence[dict]) -> dict:
    r"""
    Accuracy overall, per question type and per depth (items with a depth), each with its counts; how many items
    each scorer decided; error rows (counted wrong) with their ids.
    """
    by_type, by_depth = {}, {}
    for row in rows:
        by_type.setdefault(row["type"], []).append(row)
        if row["depth"] is not None:
            by_depth.setdefault(depth_key(row["depth"]), []).append(row)
    errors = [row for row in rows if row["error"] is not None]
    scored_by = Counter(row["scored_by"] or "error" for row in rows)
    return {
        **tally(rows),
        "scored_by": {name: scored_by.get(name, 0) for name in (*SCORERS, "error")},
        "scoring": "the first standalone option letter in the generated answer (letter), else the option letter with "
                   "the highest log-likelihood after the prompt (likelihood); error rows count as wrong",
        "errors": len(errors),
        "error_ids": [row["id"] for row in errors],
        "per_type": {name: tally(group) for name, group in sorted(by_type.items())},
        "per_depth": {key: tally(by_depth[key]) for key in sorted(by_depth, key=float)},
        "mean_video_tokens": (
            sum(row["video_tokens"] for row in rows if row["video_tokens"] is not None)
            / max(1, sum(row["video_tokens"] is not None for row in rows))
        ),
    }


def plot_accuracy(summary: dict, path: str | os.PathLike, title: str = "") -> None:
    """Bars of accuracy per question type and per depth, with the overall accuracy as a line, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("question type", summary["per_type"])] + (
        [("depth of the asked-about content", summary["per_depth"])] if summary["per_depth"] else []
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for axis, (label, groups) in zip(axes[0], panels):
        names = list(groups)
        axis.bar(names, [groups[name]["accuracy"] for name in names], color="tab:blue")
        for x, name in enumerate(names):
            axis.annotate(f"{groups[name]['correct']}/{groups[name]['items']}", (x, groups[name]["accuracy"]),
                          ha="center", va="bottom", fontsize=8)
        axis.axhline(summary["accuracy"], color="tab:red", linestyle="--", label=f"overall {summary['accuracy']:.1%}")
        axis.set(ylim=(0, 1.1), xlabel=label, ylabel="accuracy")
        axis.tick_params(axis="x", rotation=30)
        axis.legend(loc="lower right", fontsize=8)
    figure.suptitle(title or f"{summary['items']} items, {summary['errors']} unreadable")
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120, format="png"))
    plt.close(figure)


def write_atomically(path: str | os.PathLike, write) -> None:
    """Calls `write(temporary_path)`, then renames the file into place, so a reader never sees half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def read_rows(path: Path, repair: bool = False) -> list[dict]:
    r"""
    The complete rows of a rows file. A last line without its newline was torn by an interruption: it is dropped, and
    with `repair` (the file's own writer) cut from the file so that appending goes on cleanly.
    """
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    rows = []
    for line_number, line in enumerate(complete.decode().splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise ResultsFolderError(
                f"{path}:{line_number} is not a result row; the folder was written by something else. "
                "Use another --out."
            ) from None
    return rows


def read_all_rows(rows_dir: Path, own_file: Path | None = None) -> dict[str, dict]:
    """Every finished row of every process, by item id."""
    rows = {}
    for path in sorted(rows_dir.glob("process-*.jsonl")):
        for row in read_rows(path, repair=path == own_file):
            rows.setdefault(row["id"], row)
    return rows


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_run(out_dir: Path, run: dict) -> bool:
    r"""
    Refuses to mix runs: `out_dir/run.json`, when present, must describe the same model, manifest and scoring.
    Returns whether it is present.
    """
    path = out_dir / "run.json"
    if not path.exists():
        return False
    recorded = json.loads(path.read_text())
    differences = [key for key in run if recorded.get(key) != run[key]]
    if differences:
        details = "; ".join(f"{key}: {recorded.get(key)!r} there, {run[key]!r} now" for key in differences)
        raise ResultsFolderError(
            f"{out_dir} holds results of another run ({details}). Give another --out, or delete it to start over."
        )
    return True


def process_state():
    r"""
    This process's place among those `accelerate launch` started (one plain process is the only one). Without an
    accelerator, Accelerate joins CPU processes only when told `cpu`; `accelerate launch --cpu` says so in the
    environment, which `PartialState` alone does not read.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available())


def evaluate_items(
    evaluator: VideoQAEvaluator,
    items: Sequence[QAItem],
    out_dir: str | os.PathLike,
    run: dict,
    progress: bool = True,
    title: str = "",
) -> dict | None:
    r"""
    Scores `items` into `out_dir`, resuming whatever an earlier run with the same `run` description finished, shared
    among the processes of `accelerate launch` (or alone). Returns the summary on the main process, None on others.

    Args:
        evaluator: the model, its processor and the scoring settings.
        items: the manifest's items.
        out_dir: where `rows/`, `results.jsonl`, `summary.json`, `accuracy.png` and `run.json` go.
        run (`dict`): what identifies the run (model, manifest checksum, settings), JSON-serialisable; an `out_dir`
            holding another run's results is refused.
        progress: show a progress bar (main process).
        title: the plot's title.
    """
    state = process_state()
    out_dir = Path(out_dir)
    rows_dir = out_dir / ROWS_FOLDER
    known = check_run(out_dir, run)
    state.wait_for_everyone()  # every process has checked before the main one records the run
    if state.is_main_process:
        rows_dir.mkdir(parents=True, exist_ok=True)
        if not known:
            write_text_atomically(out_dir / "run.json", json.dumps(run, indent=1))
    state.wait_for_everyone()

    own_file = rows_dir / f"process-{state.process_index}.jsonl"
    done = read_all_rows(rows_dir, own_file=own_file)
    mine = [item for index, item in enumerate(items)
            if index % state.num_processes == state.process_index and item.id not in done]
    with open(own_file, "a") as rows_file:
        for item in tqdm(mine, desc=f"eval (process {state.process_index})", disable=not progress,
                         position=state.process_index, unit="item"):
            rows_file.write(json.dumps(evaluator.score(item)) + "\n")
            rows_file.flush()
            os.fsync(rows_file.fileno())
    state.wait_for_everyone()
    if not state.is_main_process:
        return None

    finished = read_all_rows(rows_dir)
    missing = [item.id for item in items if item.id not in finished]
    if missing:
        raise ResultsFolderError(f"{len(missing)} items have no row after the run (first: {missing[0]!r}).")
    rows = [finished[item.id] for item in items]
    summary = summarize(rows)
    write_text_atomically(out_dir / "results.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    write_text_atomically(out_dir / "summary.json", json.dumps({**run, **summary}, indent=1))
    plot_accuracy(summary, out_dir / "accuracy.png", title=title)
    return summary


def evaluate_manifest(
    model_path: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    scorer: str = "letter",
    max_new_tokens: int = 16,
    processor_kwargs: dict | None = None,
    progress: bool = True,
) -> dict | None:
    r"""
    `vidcomp eval MODEL MANIFEST --out DIR`: loads a checkpoint of ours (`AutoModelForImageTextToText`,
    `AutoProcessor`) and scores the manifest with [`evaluate_items`]. Returns the summary on the main process.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import transformers_vidcomp  # noqa: F401  (registers our Auto classes)
    from ..processors import load_processor

    manifest = Path(manifest)
    items = read_manifest(manifest)
    run = {
        "model": str(Path(model_path).resolve()) if Path(model_path).exists() else str(model_path),
        "manifest": str(manifest.resolve()),
        "manifest_sha256": file_sha256(manifest),
        "scorer": scorer,
        "max_new_tokens": max_new_tokens,
        "processor_kwargs": processor_kwargs or {},
    }
    model = AutoModelForImageTextToText.from_pretrained(model_path).eval().to(process_state().device)
    # Our own loader: AutoProcessor maps a config to one processor class and would ask for remote code for HICom's.
    processor = load_processor(model_path) if Path(model_path).is_dir() else AutoProcessor.from_pretrained(model_path)
    evaluator = VideoQAEvaluator(model, processor, scorer, max_new_tokens, processor_kwargs)
    return evaluate_items(evaluator, items, out_dir, run, progress=progress, title=f"{Path(model_path).name}")


def format_summary(summary: dict) -> Iterable[str]:
    """The summary as lines for a terminal."""
    yield f"accuracy {summary['accuracy']:.1%} ({summary['correct']}/{summary['items']})"
    scored = ", ".join(f"{name} {count}" for name, count in summary["scored_by"].items())
    yield f"scored by: {scored}"
    if summary["errors"]:
        yield f"unreadable videos (counted wrong): {summary['errors']}: {', '.join(summary['error_ids'][:10])}"
    for heading, key in (("type", "per_type"), ("depth", "per_depth")):
        for name, group in summary[key].items():
            yield f"  {heading} {name:<16}{group['accuracy']:7.1%}  ({group['correct']}/{group['items']})"
