r"""The benchmark harness (`benchmarks/run.py`): its arithmetic, one real run, and the README it writes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import run  # noqa: E402


def test_linear_fit_recovers_a_line_and_scores_a_curve():
    minutes = [1, 5, 15, 60]
    fit = run.linear_fit(minutes, [0.5 * m + 3 for m in minutes])
    assert fit["slope"] == pytest.approx(0.5) and fit["intercept"] == pytest.approx(3) and fit["r2"] == pytest.approx(1)
    assert run.linear_fit(minutes, [m**2 for m in minutes])["r2"] < 0.99


def test_readme_results_section_is_the_rendered_benchmark_json():
    results = json.loads((BENCHMARKS / "results" / "results.json").read_text())
    readme = run.README.read_text()
    section = readme[readme.index(run.README_START) + len(run.README_START) : readme.index(run.README_END)]
    assert section.strip() == run.render_markdown(results).strip()
    for name in ("tokens_vs_length.png", "time_vs_length.png", "stage_times.png"):
        assert (BENCHMARKS / "results" / name).stat().st_size > 0


def test_one_preset_end_to_end_in_its_own_process(tmp_path):
    video = tmp_path / "clip.mp4"
    run.write_benchmark_video(video, seconds=6)
    result = run.measure("baseline", video, longvu_context=8192)
    # 6 frames at 1 fps, all kept by the 16-frame uniform sampler; 8x8 patches pooled 2x2 -> 16 tokens per frame.
    assert result["frames_kept"] == 6 and result["tokens"] == 6 * 16
    assert set(result["seconds"]) >= {"decode", "sample", "encode", "compress", "prefill", "total"}
    assert 0 < result["peak_rss_mib"] < 3 * 1024
    summary = run.summarise({"baseline": {"0.1": result}}, [0.1])
    assert summary["baseline"]["compression"]["0.1"] == pytest.approx(6 * 64 / 96)


def test_longvu_is_sized_by_what_its_prompt_leaves_of_the_context(tmp_path):
    video = tmp_path / "clip.mp4"
    run.write_benchmark_video(video, seconds=40)
    result = run.measure("longvu", video, longvu_context=2000)
    # The 320x180 frames are letterboxed: the 12x12 grid keeps its 6 picture rows (72 tokens), the 8x8 grid 4 (32).
    # The release's max_visual_len: context - prompt text - 16 answer tokens; then Eq. 1's k = (L - N * 32) // (72 - 32)
    # frames stay at 12x12 and the rest go to 8x8.
    budget = 2000 - result["text_tokens"] - 16
    frames = result["frames_kept"]
    high = (budget - frames * 32) // 40
    assert 0 < high < frames
    assert result["statistics"]["frames at high resolution"] == high
    assert result["statistics"]["tokens cropped as letterbox padding"] == high * 72 + (frames - high) * 32
    assert result["tokens"] == high * 72 + (frames - high) * 32 <= budget
