"""`vidcomp eval`: letter parsing, the likelihood fallback against a direct computation, error rows, resuming, and two
processes under `accelerate launch` against one."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from transformers_vidcomp.evaluation.video_qa import format_multiple_choice
from transformers_vidcomp.evaluation.video_qa_eval import (
    ManifestError,
    ResultsFolderError,
    VideoQAEvaluator,
    continuation_log_likelihoods,
    evaluate_manifest,
    parse_letter,
    read_manifest,
)

OPTIONS = ["an astronaut", "a cup of coffee", "a cat", "a rocket"]


def write_manifest(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture(scope="module")
def qa_folder(tmp_path_factory, demo_video, short_video):
    r"""A manifest of 5 items over two real videos, with paths relative to the manifest's folder."""
    folder = tmp_path_factory.mktemp("qa")
    shutil.copy(demo_video[0], folder / "demo.mp4")
    shutil.copy(short_video, folder / "short.mp4")
    records = [
        {"video": "demo.mp4", "question": "Which photograph appears?", "options": OPTIONS, "answer": "C",
         "type": "appears", "depth": None},
        {"video": "demo.mp4", "question": "Which photograph appears first?", "options": OPTIONS, "answer": "A",
         "type": "first", "depth": None, "id": "first-1"},
        {"video": "short.mp4", "question": "Which photograph appears last?", "options": OPTIONS, "answer": "D",
         "type": "last", "depth": None},
        {"video": "short.mp4", "question": "Which photograph is shown briefly?", "options": OPTIONS[:3],
         "answer": "B", "type": "needle", "depth": 0.25},
        {"video": "demo.mp4", "question": "Which photograph is shown briefly?", "options": OPTIONS, "answer": "D",
         "type": "needle", "depth": 0.75},
    ]
    return folder, write_manifest(folder / "manifest.jsonl", records)


def assert_same_rows(actual, expected):
    r"""
    A run reproduces another's rows: all but the timing, with log-likelihoods to 1e-5 (processes with other thread
    counts sum in another order, which moves the last float32 digits).
    """
    def without_time(row):
        return {key: value for key, value in row.items() if key != "seconds"}

    expected = [
        {key: pytest.approx(value, abs=1e-5) if key == "log_likelihoods" else value for key, value in row.items()}
        for row in map(without_time, expected)
    ]
    assert [without_time(row) for row in actual] == expected


def read_results(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def evaluator(tiny_checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).eval()
    return VideoQAEvaluator(model, AutoProcessor.from_pretrained(tiny_checkpoint), max_new_tokens=6)


@pytest.fixture(scope="module")
def full_run(tiny_checkpoint, qa_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "full"
    summary = evaluate_manifest(tiny_checkpoint, qa_folder[1], out, max_new_tokens=6, progress=False)
    return out, summary


def test_format_multiple_choice():
    assert format_multiple_choice("Which?", ["a cat", "a rocket"]) == (
        "Which?\nA. a cat\nB. a rocket\nAnswer with the option's letter."
    )
    with pytest.raises(ValueError, match="2 to 26 options"):
        format_multiple_choice("Which?", ["a cat"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"), ("(C)", "C"), ("D. a rocket", "D"), ("The answer is A.", "A"), ("I think B, not C", "B"),
        ("answer: c", None), ("Bob and Carl", None), ("ABBA", None), ("E is not an option", None), ("", None),
        ("3B or 4A", None), ("Option\nC", "C"), ("**B**", "B"),
    ],
)
def test_parse_letter(text, expected):
    assert parse_letter(text, "ABCD") == expected


def test_manifest_reading(qa_folder, tmp_path):
    folder, manifest = qa_folder
    items = read_manifest(manifest)
    assert [item.id for item in items] == ["1", "first-1", "3", "4", "5"]
    assert items[0].video == folder / "demo.mp4" and items[3].letters == "ABC" and items[3].depth == 0.25
    good = {"video": "v.mp4", "question": "Q?", "options": ["x", "y"], "answer": "A"}
    cases = [
        ("{not json", "bad.jsonl:1 is not valid JSON"),
        (json.dumps({**good, "answer": "C"}), "bad.jsonl:1: 'answer' must be the correct option's letter, one of A, B"),
        (json.dumps({k: v for k, v in good.items() if k != "question"}), "lacks 'question'"),
        (json.dumps({**good, "options": "xy"}), "'options' must be a list"),
        (json.dumps({**good, "depth": 1.5}), "'depth' must be a number in"),
        (json.dumps({**good, "id": 7}) + "\n" + json.dumps({**good, "id": "7"}), "bad.jsonl:2 repeats the id '7'"),
        ("", "holds no items"),
    ]
    for text, message in cases:
        with pytest.raises(ManifestError, match=message):
            (tmp_path / "bad.jsonl").write_text(text + "\n")
            read_manifest(tmp_path / "bad.jsonl")


def direct_log_likelihood(model, inputs, continuation):
    """log p(continuation | prompt with its video), from one forward pass over prompt + continuation."""
    ids = torch.cat([inputs["input_ids"], torch.tensor([continuation])], dim=1)
    video = {key: inputs[key] for key in ("pixel_values_videos", "video_num_frames", "video_timestamps")}
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **video).logits
    log_probs = logits[0, -len(continuation) - 1 : -1].log_softmax(-1)
    return float(log_probs.gather(-1, torch.tensor(continuation)[:, None]).sum())


def letter_suppressing_tokens(tokenizer, letters="ABCD"):
    """Every token whose text contains an option letter: generation can then write no letter at all."""
    return [i for i in range(len(tokenizer)) if any(letter in tokenizer.decode([i]) for letter in letters)]


def test_likelihood_fallback_picks_the_most_likely_letter(evaluator, qa_folder):
    item = read_manifest(qa_folder[1])[0]
    tokenizer = evaluator.processor.tokenizer
    silenced = VideoQAEvaluator(
        evaluator.model, evaluator.processor, max_new_tokens=6,
        generation_kwargs={"suppress_tokens": letter_suppressing_tokens(tokenizer)},
    )
    row = silenced.score(item)
    assert row["generated"] and parse_letter(row["generated"], "ABCD") is None
    assert row["scored_by"] == "likelihood" and row["error"] is None
    inputs = silenced.prepare(item)
    direct = {letter: direct_log_likelihood(evaluator.model, inputs, tokenizer.encode(letter, add_special_tokens=False))
              for letter in "ABCD"}
    assert row["log_likelihoods"] == pytest.approx(direct, abs=1e-4)
    assert row["prediction"] == max(direct, key=direct.get)
    assert row["correct"] == (row["prediction"] == item.answer)
    # Always-likelihood scoring generates nothing and agrees.
    likelihood_only = VideoQAEvaluator(evaluator.model, evaluator.processor, scorer="likelihood").score(item)
    assert likelihood_only["generated"] is None and likelihood_only["prediction"] == row["prediction"]


def test_multi_token_continuations_match_a_direct_computation(evaluator, qa_folder):
    item = read_manifest(qa_folder[1])[0]
    model, tokenizer = evaluator.model, evaluator.processor.tokenizer
    inputs = evaluator.prepare(item)
    continuations = [tokenizer.encode(text, add_special_tokens=False) for text in ("A rocket", "C", "a cat sits")]
    assert max(map(len, continuations)) > 2
    with torch.no_grad():
        prompt = model(**inputs, use_cache=True, logits_to_keep=1)
        scores = continuation_log_likelihoods(model, prompt.logits[0, -1].log_softmax(-1), prompt.cache, continuations)
    direct = [direct_log_likelihood(model, inputs, tokens) for tokens in continuations]
    torch.testing.assert_close(scores, torch.tensor(direct), atol=1e-4, rtol=1e-4)


def test_a_generated_letter_decides(evaluator, qa_folder):
    item = read_manifest(qa_folder[1])[0]
    tokenizer = evaluator.processor.tokenizer
    (c_token,) = tokenizer.encode("C", add_special_tokens=False)
    biased = VideoQAEvaluator(evaluator.model, evaluator.processor, max_new_tokens=1,
                              generation_kwargs={"sequence_bias": {(c_token,): 100.0}})
    row = biased.score(item)
    assert row["generated"] == "C"
    assert (row["prediction"], row["scored_by"], row["correct"], row["log_likelihoods"]) == ("C", "letter", True, None)
    assert row["video_tokens"] > 0


def test_results_summary_and_plot(full_run, qa_folder):
    out, summary = full_run
    rows = read_results(out)
    assert [row["id"] for row in rows] == ["1", "first-1", "3", "4", "5"]
    for row in rows:
        assert {"id", "type", "depth", "prediction", "answer", "correct", "scored_by", "error"} <= set(row)
        assert row["scored_by"] in ("letter", "likelihood") and row["error"] is None
        assert row["correct"] == (row["prediction"] == row["answer"])
    assert summary == {key: value for key, value in json.loads((out / "summary.json").read_text()).items()
                       if key in summary}
    assert summary["items"] == 5 and summary["correct"] == sum(row["correct"] for row in rows)
    assert summary["accuracy"] == pytest.approx(summary["correct"] / 5)
    assert sum(summary["scored_by"].values()) == 5 and summary["errors"] == 0
    assert {name: group["items"] for name, group in summary["per_type"].items()} == {
        "appears": 1, "first": 1, "last": 1, "needle": 2}
    assert list(summary["per_depth"]) == ["0.25", "0.75"]
    assert summary["per_type"]["needle"]["correct"] == sum(row["correct"] for row in rows if row["type"] == "needle")
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_resumes_without_redoing_items(full_run, qa_folder, tiny_checkpoint, tmp_path, monkeypatch):
    full_out, _ = full_run
    out = tmp_path / "resumed"
    (out / "rows").mkdir(parents=True)
    shutil.copy(full_out / "run.json", out / "run.json")
    finished = (full_out / "rows" / "process-0.jsonl").read_text().splitlines(keepends=True)
    # Two items finished, the third was being written when the run was killed.
    (out / "rows" / "process-0.jsonl").write_text("".join(finished[:2]) + finished[2][:25])

    scored = []
    original = VideoQAEvaluator.score
    monkeypatch.setattr(VideoQAEvaluator, "score", lambda self, item: scored.append(item.id) or original(self, item))
    evaluate_manifest(tiny_checkpoint, qa_folder[1], out, max_new_tokens=6, progress=False)
    assert scored == ["3", "4", "5"]
    assert_same_rows(read_results(out), read_results(full_out))
    assert json.loads((out / "summary.json").read_text()) == json.loads((full_out / "summary.json").read_text())
    # The torn line was cut, not glued to the next row.
    assert len((out / "rows" / "process-0.jsonl").read_text().splitlines()) == 5

    scored.clear()
    evaluate_manifest(tiny_checkpoint, qa_folder[1], out, max_new_tokens=6, progress=False)
    assert scored == []


def test_another_run_in_the_same_folder_is_refused(full_run, qa_folder, tiny_checkpoint):
    with pytest.raises(ResultsFolderError, match="holds results of another run .*max_new_tokens: 6 there, 9 now"):
        evaluate_manifest(tiny_checkpoint, qa_folder[1], full_run[0], max_new_tokens=9, progress=False)


def test_unreadable_videos_become_error_rows(qa_folder, tiny_checkpoint, tmp_path):
    folder, manifest = qa_folder
    (tmp_path / "random.mp4").write_bytes(os.urandom(4096))
    (tmp_path / "notes.mp4").write_text("these are notes, not a video\n" * 20)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "folder.mp4").mkdir()
    shutil.copy(folder / "short.mp4", tmp_path / "short.mp4")
    good = {"question": "Which photograph appears?", "options": OPTIONS, "answer": "B", "type": "appears"}
    broken = ["random.mp4", "notes.mp4", "empty.mp4", "missing.mp4", "folder.mp4"]
    records = [{**good, "video": name, "id": name} for name in [broken[0], "short.mp4", *broken[1:]]]
    out = tmp_path / "out"
    summary = evaluate_manifest(
        tiny_checkpoint, write_manifest(tmp_path / "m.jsonl", records), out, max_new_tokens=4, progress=False
    )
    rows = {row["id"]: row for row in read_results(out)}
    for name in broken:
        assert rows[name]["error"] and rows[name]["correct"] is False and rows[name]["prediction"] is None
        assert rows[name]["scored_by"] is None
    assert rows["missing.mp4"]["error"].startswith("FileNotFoundError")
    assert rows["empty.mp4"]["error"].startswith("EmptyVideoError")
    assert rows["short.mp4"]["error"] is None and rows["short.mp4"]["scored_by"] in ("letter", "likelihood")
    assert summary["errors"] == 5 and sorted(summary["error_ids"]) == sorted(broken)
    assert summary["scored_by"]["error"] == 5 and summary["items"] == 6
    assert summary["accuracy"] == pytest.approx(int(rows["short.mp4"]["correct"]) / 6)


def test_cli(full_run, qa_folder, tiny_checkpoint, tmp_path, capsys):
    from transformers_vidcomp.cli import main

    assert main(["eval", str(tiny_checkpoint), str(qa_folder[1]), "--out", str(full_run[0]),
                 "--max-new-tokens", "6", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {full_run[1]['accuracy']:.1%} ({full_run[1]['correct']}/5)" in printed
    assert "type needle" in printed and "depth 0.25" in printed
    (tmp_path / "bad.jsonl").write_text(json.dumps({"video": "v.mp4", "question": "Q", "options": ["x"]}) + "\n")
    assert main(["eval", str(tiny_checkpoint), str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: it lacks 'answer'" in capsys.readouterr().err


def test_two_processes_match_one(full_run, qa_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "two"
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "transformers_vidcomp.cli", "eval", str(tiny_checkpoint),
         str(qa_folder[1]), "--out", str(out), "--max-new-tokens", "6", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    shards = [[json.loads(line)["id"] for line in (out / "rows" / f"process-{rank}.jsonl").read_text().splitlines()]
              for rank in (0, 1)]
    assert shards == [["1", "3", "5"], ["first-1", "4"]]
    assert_same_rows(read_results(out), read_results(full_run[0]))
    assert json.loads((out / "summary.json").read_text())["accuracy"] == full_run[1]["accuracy"]
    assert run.stdout.count("accuracy ") == 1  # only the main process reports
