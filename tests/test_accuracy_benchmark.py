r"""`benchmarks/accuracy.py` on a tiny random checkpoint: samplers swapped in at their budgets, cells scored by
`vidcomp eval`'s evaluator, and the table and plot built from the cells."""

import json
import shutil
from collections import Counter
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import accuracy  # noqa: E402

OPTIONS = ["an astronaut", "a cup of coffee", "a cat", "a rocket"]


@pytest.fixture(scope="module")
def model_and_processor(tiny_checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).eval(), AutoProcessor.from_pretrained(
        tiny_checkpoint
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, demo_video):
    folder = tmp_path_factory.mktemp("haystack")
    shutil.copy(demo_video[0], folder / "demo.mp4")
    records = [
        {"video": "demo.mp4", "question": "Which photograph appears?", "options": OPTIONS, "answer": "C",
         "type": "appears", "depth": None},
        {"video": "demo.mp4", "question": "Which photograph is shown briefly?", "options": OPTIONS, "answer": "B",
         "type": "needle", "depth": 0.35},
    ]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder / "manifest.jsonl"


@pytest.mark.parametrize("method, budget, knob", [
    ("uniform", 16, ("num_frames", 16)), ("avs", 16, ("max_frames", 16)),
    ("fila-kmeans", 16, ("num_scenes", 5)), ("longvu", 16, ("max_frames", 16)),
])
def test_sampler_budgets(method, budget, knob, model_and_processor):
    model, _ = model_and_processor
    accuracy.use_sampler(model, accuracy.sampler_config(method, budget))
    assert getattr(model.model.sampler.config, knob[0]) == knob[1]
    assert model.config.sampler_config is model.model.sampler.config
    if method == "avs":  # TransNetV2 has its real weights, not random ones
        from transformers_vidcomp.conversion.transnetv2 import convert_transnetv2

        real = convert_transnetv2(config=model.model.sampler.shot_detector.config).state_dict()
        for name, tensor in model.model.sampler.shot_detector.state_dict().items():
            torch.testing.assert_close(tensor, real[name])


def test_remembered_shots_run_the_network_once_per_video(model_and_processor):
    model, _ = model_and_processor
    accuracy.use_sampler(model, accuracy.sampler_config("avs", 8))
    detector = model.model.sampler.shot_detector
    calls, predict = [], detector.predict_frames
    detector.predict_frames = lambda thumbnails: calls.append(len(thumbnails)) or predict(thumbnails)
    shots = accuracy.RememberedShots(detector)
    thumbnails = torch.randint(0, 255, (30, 27, 48, 3), dtype=torch.uint8)
    other = torch.randint(0, 255, (30, 27, 48, 3), dtype=torch.uint8)
    first = shots.predict_frames(thumbnails)
    again = shots.predict_frames(thumbnails.clone())
    shots.predict_frames(other)
    assert calls == [30, 30]  # the same thumbnails once, other thumbnails again
    for a, b, fresh in zip(first, again, predict(thumbnails)):
        assert (a == b).all() and (a == fresh).all()


def test_cells_table_and_plot(model_and_processor, manifest, tmp_path):
    model, processor = model_and_processor
    samplers, budgets = ["uniform", "fila-kmeans"], [4, 8]
    cells = accuracy.run_cells(model, processor, {0.1: manifest}, samplers, budgets, tmp_path, "tiny", progress=False)
    assert [(c["sampler"], c["budget"]) for c in cells] == [(s, b) for s in samplers for b in budgets]
    for cell in cells:
        rows = [json.loads(line) for line in
                (tmp_path / "runs" / f"0.1min-{cell['sampler']}-{cell['budget']}" / "results.jsonl").read_text().splitlines()]
        assert cell["items"] == 2 and cell["correct"] == sum(r["correct"] for r in rows)
        # 64 patches per frame pooled 2x2: 16 tokens for each kept frame, never more frames than the budget.
        assert cell["tokens"] == sum(r["video_tokens"] for r in rows) / 2 <= 16 * cell["budget"]
        assert cell["needle_by_depth"]["30%-50%"] == {"items": 1, "correct": int(rows[1]["correct"])}
    uniform = {c["budget"]: c["tokens"] for c in cells if c["sampler"] == "uniform"}
    assert uniform == {4: 64, 8: 128}

    # A compressor preset's row: the checkpoint's own sampler, left in place, at its own budget.
    own = model.model.sampler
    cells += accuracy.run_cells(
        model, processor, {0.1: manifest}, ["hicom-real"], [accuracy.OWN_BUDGET], tmp_path, "tiny", progress=False
    )
    assert model.model.sampler is own and cells[-1]["budget"] == accuracy.OWN_BUDGET  # not swapped, not rebuilt
    table = accuracy.summarize(cells, samplers, budgets, [0.1])
    table += accuracy.summarize(cells, ["hicom-real"], [accuracy.OWN_BUDGET], [0.1])
    assert len(table) == 5 and table[0]["per_length"]["0.1"]["accuracy"] == cells[0]["accuracy"]
    assert table[0]["needle"]["items"] == 1
    results = {
        "checkpoint_name": "tiny", "lengths": [0.1], "samplers": samplers, "compressors": ["hicom-real"],
        "questions_per_length": {"0.1": 2},
        "videos_per_length": 1, "seed": 0, "scored_by": {"letter": 0, "likelihood": 10, "error": 0, "total": 10},
        "machine": "test", "seconds": 1.0, "command": "--quick", "scorer": "letter", "table": table, "cells": cells,
    }
    markdown = accuracy.render_markdown(results)
    predictions = sum((Counter(c["predictions"]) for c in cells), Counter())
    assert sum(predictions.values()) == 10
    shares = ", ".join(f"{letter} {count / 10:.0%}" for letter, count in sorted(predictions.items()))
    assert f"the model's answers were {shares}." in markdown
    assert markdown.count("\n| ") == 1 + 5 and "| FiLA K-Means scenes | 8 |" in markdown
    assert f"| HICom (compressor trained here) | {accuracy.OWN_BUDGET} |" in markdown
    accuracy.plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_the_script_end_to_end(tiny_checkpoint, tmp_path):
    out = tmp_path / "results"
    results = accuracy.main([
        "--checkpoint", str(tiny_checkpoint), "--lengths", "0.2", "--budgets", "4", "--videos", "1",
        "--samplers", "uniform", "avs", "--compressors", "--work", str(tmp_path / "work"), "--out", str(out), "--quiet",
        "--threads", str(torch.get_num_threads()),  # the suite's setting, which the script would change
    ])
    manifest = tmp_path / "work" / "haystacks" / "0.2min-1videos-96x72" / "manifest.jsonl"
    questions = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {q["type"] for q in questions} >= {"appears", "needle"}
    needle = next(q for q in questions if q["type"] == "needle")
    assert 0.1 <= needle["depth"] <= 0.9 and needle["duration"] == pytest.approx(12, abs=0.5)
    saved = json.loads((out / "accuracy.json").read_text())
    assert saved["table"] == results["table"] and len(saved["cells"]) == 2
    assert saved["questions_per_length"] == {"0.2": len(questions)}
    assert all(cell["items"] == len(questions) and cell["tokens"] <= 4 * 16 for cell in saved["cells"])
    assert (out / "accuracy.md").read_text() == accuracy.render_markdown(saved)
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 0

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{accuracy.README_START}\nold\n{accuracy.README_END}\nrest\n")
    accuracy.update_readme(accuracy.render_markdown(saved), readme)
    text = readme.read_text()
    assert "old" not in text and "| uniform | 4 |" in text and text.endswith(f"{accuracy.README_END}\nrest\n")


def test_readme_accuracy_section_is_the_rendered_json():
    readme = accuracy.README.read_text()
    section = readme[readme.index(accuracy.README_START) + len(accuracy.README_START): readme.index(accuracy.README_END)]
    saved = accuracy.RESULTS / "accuracy.json"
    if not saved.exists():
        assert "Not measured yet" in section
        return
    assert section.strip() == accuracy.render_markdown(json.loads(saved.read_text())).strip()
    assert (accuracy.RESULTS / "accuracy_vs_tokens.png").stat().st_size > 0
