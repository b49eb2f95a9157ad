"""Needle retention: haystack videos (needle, cuts, dissolves at the stated frames) and the evaluation's plumbing."""

import av
import numpy as np
import pytest
import torch

from transformers_vidcomp.demo_video import (
    HaystackSpecError,
    iter_haystack_chunks,
    plan_haystack,
    render_haystack,
    render_plan_scene,
    write_haystack_video,
)
from transformers_vidcomp.evaluation import needle as needle_eval
from transformers_vidcomp.evaluation.needle import NeedleCell, PresetSampler, run_needle, to_thumbnails
from transformers_vidcomp.modeling import TransNetV2Config, TransNetV2Model

OPTIONS = dict(fps=2.0, width=40, height=30, scene_seconds=(3.0, 6.0), dissolve_probability=0.5, dissolve_frames=3)


@pytest.fixture(scope="module")
def haystack():
    plan = plan_haystack(240, needle_depth=0.6, needle_frames=4, seed=3, **OPTIONS)
    return render_haystack(plan), plan


def test_the_needle_is_at_the_stated_frames(haystack):
    frames, plan = haystack
    start = round(0.6 * (240 - 4))
    assert plan.needle_frames.tolist() == [start, start + 1, start + 2, start + 3]
    np.testing.assert_allclose(plan.needle_times, plan.needle_frames / 2.0)
    needle = render_plan_scene(plan, plan.needle)
    np.testing.assert_array_equal(frames[plan.needle_frames], needle)
    # The needle's photograph appears nowhere else: its neighbours are haystack frames, far from it in colour.
    outside = np.delete(frames, plan.needle_frames, axis=0).astype(float)
    distance = np.abs(outside - needle.astype(float).mean(0)).mean((1, 2, 3))
    assert distance.min() > 10
    assert plan.needle.photo not in {scene.photo for scene in plan.scenes}


def test_scenes_cover_the_video_and_cuts_and_dissolves_are_where_stated(haystack):
    frames, plan = haystack
    assert frames.shape == (240, 30, 40, 3) and frames.dtype == np.uint8
    assert plan.scenes[0].start == 0 and plan.scenes[-1].end == 240
    kinds = {t.kind for t in plan.transitions}
    assert kinds == {"cut", "dissolve"}
    needle = set(plan.needle_frames.tolist())
    renders = [render_plan_scene(plan, scene).astype(float) for scene in plan.scenes]
    for transition in plan.transitions:
        old, new = plan.scenes[transition.index - 1], plan.scenes[transition.index]
        assert new.start == transition.start == old.end - transition.length
        span = set(range(transition.start - 1, transition.start + transition.length + 1))
        if span & needle:
            continue
        if transition.kind == "cut":
            np.testing.assert_array_equal(frames[transition.start], renders[transition.index][0])
            np.testing.assert_array_equal(frames[transition.start - 1], renders[transition.index - 1][-1])
            continue
        for k in range(transition.length):
            alpha = (k + 1) / (transition.length + 1)
            blend = (1 - alpha) * renders[transition.index - 1][old.num_frames - transition.length + k]
            blend = blend + alpha * renders[transition.index][k]
            assert np.abs(frames[transition.start + k] - blend).max() <= 0.5 + 1e-6
        # Outside the dissolve, each scene is itself.
        after = transition.start + transition.length
        np.testing.assert_array_equal(frames[after], renders[transition.index][transition.length])


def test_the_haystack_does_not_depend_on_the_needle_and_streams_in_scene_chunks(haystack):
    frames, plan = haystack
    bare = render_haystack(plan_haystack(240, seed=3, needle_frames=4, **OPTIONS))
    changed = np.nonzero((bare != frames).any((1, 2, 3)))[0]
    assert changed.tolist() == plan.needle_frames.tolist()
    chunks = list(iter_haystack_chunks(plan))
    assert len(chunks) == len(plan.scenes) and max(len(c) for c in chunks) <= max(s.num_frames for s in plan.scenes)


def test_a_haystack_video_file_has_every_frame(tmp_path):
    plan = plan_haystack(30, fps=10.0, width=48, height=32, needle_depth=0.5, needle_frames=2, scene_seconds=(0.8, 1.2))
    path = tmp_path / "haystack.mp4"
    write_haystack_video(path, plan)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    frames = render_haystack(plan)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(float) - frames).mean() < 12  # H.264 at this size is lossy, but the same video


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(needle_depth=1.5), "needle_depth"),
        (dict(needle_depth=0.5, needle_photo="astronaut"), "also in the haystack"),
        (dict(needle_depth=0.5, needle_frames=0), "needle_frames"),
        (dict(photos=("astronaut",)), "two photographs"),
    ],
)
def test_bad_specifications_are_refused(kwargs, message):
    with pytest.raises(HaystackSpecError, match=message):
        plan_haystack(20, **kwargs)


def test_a_sampler_that_keeps_every_frame_has_recall_one_and_pooling_gives_each_frame_its_tokens():
    result = run_needle(
        lengths_minutes=(0.5,), depths=(0.0, 0.5, 1.0), budgets=(30, 7), samplers=("uniform",),
        compressors=("spatial-pool",), needle_frames=2, clip_frames=8,
    )
    every_frame = [r for r in result["sampler_recall"] if r["budget"] == 30]
    assert [r["retained"] for r in every_frame] == [True] * 3 and all(r["fraction"] == 1.0 for r in every_frame)
    # 7 of 30 uniform frames, first to last (the baseline's include_last), are 0, 4, 9, 14, 19, 24, 29: the needle at
    # 0 (frames 0-1), at 50% (14-15) and at 100% (28-29) each keeps one of its two frames.
    seven = {r["depth"]: r for r in result["sampler_recall"] if r["budget"] == 7}
    assert [seven[d]["fraction"] for d in (0.0, 0.5, 1.0)] == [0.5, 0.5, 0.5]
    assert [seven[d]["retained"] for d in (0.0, 0.5, 1.0)] == [True, True, True]
    # Spatial pooling: the 8x8 patch grid pooled 2x2 is 16 tokens per frame, each from its own frame.
    for row in result["compressor_tokens"]:
        assert row["needle_tokens"] == 16 * 2 and row["total_tokens"] == 16 * row["clip_frames"]
        assert row["share"] == pytest.approx(row["fair_share"])


@pytest.mark.parametrize("name, budget", [("fila-kmeans", 24), ("longvu", 10**6)])
def test_cached_features_with_the_needle_substituted_give_the_full_models_choice(name, budget):
    sampler = PresetSampler(name)
    options = dict(fps=1.0, width=64, height=48, needle_frames=3, seed=1)
    plan = plan_haystack(50, needle_depth=0.5, **options)
    frames = render_haystack(plan)
    sampler.prepare_haystack(render_haystack(plan_haystack(50, **options)))
    keep = sampler.keep(NeedleCell(1, 0.5, frames, plan), budget)
    # The preset's own model (8 scenes of 3 frames; LongVU uncapped) on the needle video, end to end.
    with torch.no_grad():
        full = sampler.model.get_video_features(sampler.pixels(frames), torch.tensor([50])).keep_mask
    np.testing.assert_array_equal(keep, full.numpy())


def test_shot_probabilities_recomputed_near_the_needle_equal_a_run_over_the_whole_video(monkeypatch):
    sampler = PresetSampler("avs")
    # Same architecture and receptive field as the real network, random weights and few filters: fast.
    torch.manual_seed(0)
    small = TransNetV2Model(TransNetV2Config(filters=2, inference_windows="streaming", window_frames=1024)).eval()
    sampler.sampler.shot_detector = small
    options = dict(fps=1.0, width=48, height=27, needle_frames=2, seed=2)
    plan = plan_haystack(700, needle_depth=0.5, **options)
    frames = render_haystack(plan)
    sampler.prepare_haystack(render_haystack(plan_haystack(700, **options)))
    spliced = sampler.shot_probabilities(NeedleCell(1, 0.5, frames, plan))
    with torch.no_grad():
        whole = small.predict_frames(to_thumbnails(frames))
    assert np.abs(whole[0] - sampler.haystack_probabilities[0]).max() > 1e-4  # the needle changes the output
    for ours, reference in zip(spliced, whole):
        np.testing.assert_allclose(ours, reference, atol=1e-5)
    # The recomputed window is a strict part of the video, so the splice was exercised.
    assert 350 - 2 * needle_eval.TRANSNET_REACH > 0 and 352 + 2 * needle_eval.TRANSNET_REACH < 700
