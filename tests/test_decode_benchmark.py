r"""The decoding benchmark (`benchmarks/decode.py`): a generated file, one request measured in child processes."""

import sys
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import decode  # noqa: E402


def test_generated_file_has_the_named_shape_and_keyframe_interval(tmp_path):
    path = tmp_path / decode.video_name(0.05, "720p", "h264", 1)
    decode.generate(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [packet.pts for packet in container.demux(stream) if packet.size and packet.is_keyframe]
        assert (stream.width, stream.height, stream.frames, float(stream.average_rate)) == (1280, 720, 90, 30.0)
        assert stream.codec_context.has_b_frames
    assert len(keyframes) == 3  # every 30 frames
    results = {path.name: {"32 frames": {c: decode.run_child(c, "32 frames", path, 300) for c in ("ours", "seek floor")}}}
    ours, floor = results[path.name]["32 frames"]["ours"], results[path.name]["32 frames"]["seek floor"]
    assert ours["frames"] == floor["frames"] == 32 and ours["seconds"] > 0 and ours["peak_rss_mib"] > 0
    row = decode.table(results)[-1]
    assert row.startswith(f"| {path.stem} | 32 frames |")
    ratios = [f"{ours[key] / floor[key]:.2f}x" for key in ("seconds", "cpu_seconds")]
    assert row.endswith(f"| {ratios[0]} | {ratios[1]} |")
    assert "n/a" not in row


def test_the_quick_matrix_and_the_full_one():
    assert decode.file_matrix(False, None) == ["5min_720p30_h264_key1s.mp4", "5min_720p30_h264_key8s.mp4"]
    full = decode.file_matrix(True, None)
    assert len(full) == 16 and "60min_1080p30_hevc_key8s.mp4" in full
    assert decode.parse_name("60min_1080p30_hevc_key8s.mp4") == (60.0, "1080p", "hevc", 8)
