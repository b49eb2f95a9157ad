"""The adaptive video sampler: NMS shots, allocation, placement, real TransNetV2 on videos, decode-time selection."""

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformers_vidcomp.conversion.transnetv2 import convert_transnetv2
from transformers_vidcomp.demo_video import make_demo_video, write_video
from transformers_vidcomp.modeling import (
    AdaptiveVideoSampler,
    AdaptiveVideoSamplerConfig,
    TokenBudgetError,
    TransNetV2Config,
)
from transformers_vidcomp.modeling.sampler_avs import allocate_frames, place_keyframes, shot_starts_by_nms
from transformers_vidcomp.processors.processing_vidcomp import select_frames
from transformers_vidcomp.processors.video_processing_vidcomp import decode_thumbnails


@pytest.fixture(scope="module")
def sampler():
    model = AdaptiveVideoSampler(AdaptiveVideoSamplerConfig(max_frames=6)).eval()
    model.shot_detector = convert_transnetv2()
    return model


def nms_by_walking(probabilities: list[float], threshold: float, window: int) -> list[int]:
    """Greedy NMS written frame by frame: a transition is kept when it is a window maximum above the threshold and
    lies beyond the radius of the last kept transition (frame 0 counts as one); the shot starts on the next frame."""
    radius, last, starts = window // 2, 0, [0]
    for t, p in enumerate(probabilities):
        neighbourhood = probabilities[max(0, t - radius) : t + radius + 1]
        if p > threshold and p == max(neighbourhood) and t > last + radius:
            last = t
            if t + 1 < len(probabilities):
                starts.append(t + 1)
    return starts


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.3, 0.6, 0.8, 0.95]), min_size=1, max_size=60), st.integers(1, 9))
def test_nms_keeps_the_earliest_window_maximum_above_threshold(values, window):
    starts = shot_starts_by_nms(torch.tensor(values), 0.5, window)
    assert torch.nonzero(starts).flatten().tolist() == nms_by_walking(values, 0.5, window)


def test_a_plateau_of_cuts_is_thinned_to_one_cut_per_half_window():
    starts = torch.nonzero(shot_starts_by_nms(torch.full((120,), 0.97), 0.5, 31)).flatten().tolist()
    assert starts == [0, 17, 33, 49, 65, 81, 97, 113]
    assert all(b - a > 15 for a, b in zip(starts, starts[1:]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 10.0), st.integers(1, 12)), min_size=1, max_size=15), st.integers(1, 40))
def test_allocation_covers_shots_and_spends_the_budget(shots, budget):
    information = torch.tensor([i for i, _ in shots], dtype=torch.float64)
    lengths = torch.tensor([n for _, n in shots])
    counts = allocate_frames(information, lengths, budget)
    assert int(counts.sum()) == min(budget, int(lengths.sum()), budget)
    assert bool((counts <= lengths).all())
    if len(shots) <= budget:
        assert bool((counts >= 1).all())
    else:
        chosen = set(torch.nonzero(counts).flatten().tolist())
        assert len(chosen) == budget and bool((counts <= 1).all())
        worst_chosen = min(information[list(chosen)])
        assert all(information[i] <= worst_chosen for i in range(len(shots)) if i not in chosen)


def test_allocation_follows_information():
    counts = allocate_frames(torch.tensor([1.0, 3.0, 1.0]), torch.tensor([100, 100, 100]), 13)
    assert counts.tolist() == [3, 7, 3]  # 3 each + 10 shared 2:6:2 over the 1:3:1 information


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10), min_size=1, max_size=8), st.data())
def test_placement_is_distinct_and_stays_in_each_shot(lengths, data):
    counts = torch.tensor([data.draw(st.integers(0, n)) for n in lengths])
    density = torch.tensor(data.draw(st.lists(st.floats(0.01, 1.0), min_size=sum(lengths), max_size=sum(lengths))))
    shot_ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    shot_starts = torch.tensor([0, *np.cumsum(lengths)[:-1].tolist()])
    keep = place_keyframes(density, shot_ids, shot_starts, counts)
    assert torch.bincount(shot_ids[keep], minlength=len(lengths)).tolist() == counts.tolist()


def test_placement_crowds_where_content_changes():
    density = torch.tensor([0.01] * 20 + [1.0] * 5 + [0.01] * 20)
    keep = place_keyframes(density, torch.zeros(45, dtype=torch.long), torch.tensor([0]), torch.tensor([4]))
    assert torch.nonzero(keep).flatten().tolist() == [20, 21, 23, 24]


def test_plan_finds_the_cuts_of_a_real_video(sampler, tmp_path):
    path = tmp_path / "three-second-shots.mp4"
    cuts = make_demo_video(path, seconds_per_scene=3.0, fps=10, width=96, height=64)
    thumbnails = decode_thumbnails(path, fps=10, progress=False)
    plan = sampler.plan(torch.from_numpy(thumbnails.frames), torch.from_numpy(thumbnails.timestamps))
    starts = thumbnails.timestamps[plan.shot_starts.numpy()]
    assert len(starts) == len(cuts) + 1
    np.testing.assert_allclose(starts[1:], cuts, atol=0.05)
    assert int(plan.keep.sum()) == 6 and bool((plan.frames_per_shot >= 1).all())
    assert plan.shot_ids[plan.keep].unique().numel() == len(cuts) + 1


def test_single_shot_noise_and_short_videos(sampler):
    still = torch.full((150, 27, 48, 3), 128, dtype=torch.uint8)
    still[:, :, :24] = 40  # one static shot
    plan = sampler.plan(still, torch.arange(150) / 10.0)
    assert len(plan.shot_starts) == 1 and int(plan.keep.sum()) == 6

    noise = torch.randint(0, 256, (120, 27, 48, 3), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    plan = sampler.plan(noise, torch.arange(120) / 10.0)
    assert int(plan.keep.sum()) == 6

    short = still[:7]
    plan = sampler.plan(short, torch.arange(7) / 10.0, max_frames=20)
    assert int(plan.keep.sum()) == 7  # fewer frames than the budget: all of them
    single = sampler.plan(still[:1], torch.zeros(1))
    assert single.keep.tolist() == [True]


@pytest.mark.parametrize("budget", [0, -3])
def test_zero_budget_is_refused(sampler, budget):
    with pytest.raises(TokenBudgetError, match="at least 1 frame"):
        sampler.plan(torch.zeros(10, 27, 48, 3, dtype=torch.uint8), torch.arange(10.0), max_frames=budget)


class EveryFrameACut(torch.nn.Module):
    """A shot detector that calls every frame a transition, as on footage that is all cuts."""

    config = TransNetV2Config()

    def predict_frames(self, thumbnails):
        return np.full(len(thumbnails), 0.97, dtype=np.float32), np.full(len(thumbnails), 0.97, dtype=np.float32)


def test_a_video_that_is_all_cuts_gets_shots_of_half_a_window_and_the_budget():
    sampler = AdaptiveVideoSampler(AdaptiveVideoSamplerConfig(max_frames=5, shot_detector_config={"filters": 2}))
    sampler.shot_detector = EveryFrameACut()
    noise = torch.randint(0, 256, (120, 27, 48, 3), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    plan = sampler.plan(noise, torch.arange(120) / 10.0)
    lengths = torch.diff(plan.shot_starts, append=torch.tensor([120]))
    assert len(plan.shot_starts) == 8 and bool((lengths[:-1] > 15).all())
    assert int(plan.keep.sum()) == 5 and plan.frames_per_shot.max() == 1  # more shots than budget: the 5 richest


def test_zero_budget_config_is_refused():
    with pytest.raises(ValueError, match="frame budget"):
        AdaptiveVideoSamplerConfig(max_frames=0)


def test_processor_decodes_only_the_chosen_frames_at_full_resolution(sampler, demo_video):
    path, _ = demo_video
    selection = select_frames(path, sampler)
    assert selection.frames.shape == (6, 64, 96, 3) and selection.frames.dtype == np.uint8
    metadata = selection.metadata
    assert len(metadata.frames_indices) == 6 and metadata.fps == 10.0
    assert np.all(np.diff(metadata.frames_indices) > 0)
    np.testing.assert_allclose(metadata.frames_indices / metadata.fps, selection.thumbnail_times[selection.plan.keep])
    thumbnails = decode_thumbnails(path, progress=False).frames
    for layout in (thumbnails, thumbnails.transpose(0, 3, 1, 2)):  # channels last or first
        from_array = select_frames(layout, sampler, {"fps": 10.0})
        assert len(from_array.frames) == 6 and from_array.frames.shape[-1] == 3 and from_array.metadata.fps == 10.0


def test_the_model_thins_unselected_frames_uniformly():
    from transformers_vidcomp.modeling import PackedFrames

    sampler = AdaptiveVideoSampler(AdaptiveVideoSamplerConfig(max_frames=4, shot_detector_config={"filters": 2}))
    frames = PackedFrames(torch.zeros(13, 3, 8, 8), torch.tensor([10, 3]), torch.arange(13.0))
    keep = sampler(frames).keep_mask
    assert keep[:10].sum() == 4 and keep[10:].all()


def write_variable_rate_video(path, times: list[float], width: int = 64, height: int = 48) -> None:
    """An H.264 file whose frame k is a flat grey of level 20 * k, shown at `times` (seconds, millisecond pts)."""
    import fractions

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for k, seconds in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 20 * k, dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(seconds * 1000), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_the_second_pass_decodes_exactly_the_chosen_frames_of_a_variable_rate_file(tmp_path):
    # Pairs 30 ms apart across 100 ms boundaries, half a second apart: at the stream's average rate (about 4 fps)
    # both frames of a pair have the same frame number, yet they fall in different 10 fps thumbnail intervals.
    path = tmp_path / "variable.mp4"
    write_variable_rate_video(path, [0.0] + [t + d for t in (0.5, 1.0, 1.5, 2.0, 2.5) for d in (0.08, 0.11)])
    thumbnails = decode_thumbnails(path, fps=10, progress=False)
    assert len(thumbnails.frames) == 11 and len(np.unique(thumbnails.frame_indices)) < 11
    assert thumbnails.frame_ordinals.tolist() == list(range(11))
    sampler = AdaptiveVideoSampler(AdaptiveVideoSamplerConfig(max_frames=11, shot_detector_config={"filters": 2}))
    selection = select_frames(path, sampler.eval())
    keep = selection.plan.keep.numpy()
    assert keep.all()  # 11 frames of a budget of 11, five pairs sharing frame numbers
    assert len(selection.frames) == 11 == len(selection.metadata.frames_indices)
    # Each full-resolution frame is the chosen one (its grey level), and the thumbnails keep their true times.
    levels = selection.frames.reshape(11, -1).mean(1)
    np.testing.assert_allclose(levels, 20 * np.arange(11), atol=3)
    np.testing.assert_allclose(selection.thumbnail_times, [0.0, 0.58, 0.61, 1.08, 1.11, 1.58, 1.61, 2.08, 2.11, 2.58,
                                                           2.61], atol=1e-6)


def test_a_corrupt_stretch_is_skipped_and_reported(tmp_path, caplog):
    from transformers_vidcomp.demo_video import load_photos, render_scene

    frames = np.concatenate([render_scene(photo, 40, 96, 64, zoom=0.3) for photo in load_photos()[:3]])
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=10)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8))
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        thumbnails = decode_thumbnails(path, fps=10, progress=False)
    assert thumbnails.unreadable_packets > 0
    assert 0 < len(thumbnails.frames) < len(frames)
    assert "corrupt packet" in caplog.text and "readable frames" in caplog.text
    # Frames after the corrupt stretch keep their true times, in the thumbnails and in the prompt's frame times.
    np.testing.assert_allclose(thumbnails.frame_indices / 10.0, thumbnails.timestamps, atol=1e-6)
    assert thumbnails.timestamps[-1] == pytest.approx(11.9)
    sampler = AdaptiveVideoSampler(AdaptiveVideoSamplerConfig(max_frames=4, shot_detector_config={"filters": 2})).eval()
    selection = select_frames(path, sampler)
    times = selection.metadata.frames_indices / selection.metadata.fps
    np.testing.assert_allclose(times, selection.thumbnail_times[selection.plan.keep], atol=1e-6)
    assert len(selection.frames) == 4


PIPELINE_SCRIPT = """
import json, sys
sys.modules["transformers_vidcomp"] = None
from transformers import pipeline
pipe = pipeline(model=sys.argv[1], trust_remote_code=True)
sampler = pipe.model.model.sampler
calls = []
plan = sampler.plan
sampler.plan = lambda *args, **kwargs: calls.append(1) or plan(*args, **kwargs)
answer = pipe(videos=sys.argv[2], text="What happens?", max_new_tokens=2)
weight = sampler.shot_detector.stacks[0].cells[0].branches[0].spatial.weight
print(json.dumps({"plans": len(calls), "answer": answer[0]["generated_text"], "weight": weight.flatten()[:4].tolist()}))
"""


def test_avs_compact_checkpoint_selects_frames_in_the_pipeline_without_the_package(tmp_path, demo_video):
    import json
    import os
    import subprocess
    import sys

    from transformers_vidcomp.conversion.transnetv2 import PACKAGED_WEIGHTS, packaged_file
    from transformers_vidcomp.tiny import create_tiny_checkpoint

    folder = create_tiny_checkpoint(tmp_path / "avs-compact", "avs-compact")
    card = (folder / "README.md").read_text()
    assert "TransNetV2" in card and "one-hour video" in card
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(folder), str(demo_video[0])],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["plans"] == 1  # the pipeline handed the video to the sampler before decoding it
    published = torch.load(packaged_file(PACKAGED_WEIGHTS), weights_only=True)
    expected = published["SDDCNN.0.DDCNN.0.Conv3D_1.layers.0.weight"].flatten()[:4]
    np.testing.assert_allclose(report["weight"], expected.numpy())  # real TransNetV2 weights, even in a tiny model


def test_avs_compact_demo_draws_shots(tmp_path):
    from transformers_vidcomp.demo import run_demo

    report = run_demo(preset="avs-compact", out_dir=tmp_path, max_new_tokens=2)
    assert len(report.shots) == len(report.scene_cuts) + 1
    np.testing.assert_allclose(report.shots[1:], report.scene_cuts, atol=0.05)
    assert report.frames_kept == 32 and report.frames_decoded == 80
    assert (tmp_path / "shots.png").stat().st_size > 0 and (tmp_path / "contact_sheet.png").stat().st_size > 0


@pytest.mark.parametrize("fps", [24, 30])
def test_an_array_and_the_file_it_came_from_give_the_same_shots(sampler, tmp_path, fps):
    import av

    path = tmp_path / f"clip{fps}.mp4"
    cuts = make_demo_video(path, seconds_per_scene=2.0, fps=fps, width=96, height=64)
    with av.open(str(path)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    from_file = select_frames(path, sampler)
    from_array = select_frames(frames, sampler, {"fps": fps})
    # Both are scanned at decode_fps (10), not the array at its native rate.
    assert len(from_array.thumbnail_times) == len(from_file.thumbnail_times) == round(10 * len(frames) / fps)
    np.testing.assert_allclose(from_array.thumbnail_times, from_file.thumbnail_times, atol=1e-6)
    file_shots = from_file.thumbnail_times[from_file.plan.shot_starts.numpy()]
    array_shots = from_array.thumbnail_times[from_array.plan.shot_starts.numpy()]
    np.testing.assert_allclose(array_shots, file_shots, atol=1e-6)
    np.testing.assert_allclose(file_shots, [0.0, *cuts], atol=0.11)
    assert from_array.metadata.frames_indices.tolist() == from_file.metadata.frames_indices.tolist()
    assert np.array_equal(from_array.frames, frames[from_array.metadata.frames_indices])
