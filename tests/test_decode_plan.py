"""The planned decode (packet index, seeks to keyframes) returns exactly the frames a sequential decode gives."""

import logging

import numpy as np
import pytest

from transformers_vidcomp.processors import video_processing_vidcomp as vp
from transformers_vidcomp.processors.video_index import FrameIndex, plan_seeks, read_frame_index

FPS, WIDTH, HEIGHT, FRAMES = 25, 128, 96, 200


def clip() -> np.ndarray:
    from transformers_vidcomp.demo_video import load_photos, render_scene

    return np.concatenate([render_scene(photo, FRAMES // 4, WIDTH, HEIGHT, zoom=0.3) for photo in load_photos()])


def encode(path, codec: str, options: dict, times: list[float] | None = None) -> None:
    """Encodes `clip()` with PyAV; `times` (seconds) give a variable frame rate in millisecond ticks."""
    import fractions

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt, stream.options = WIDTH, HEIGHT, "yuv420p", options
        if times is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for k, rgb in enumerate(clip()):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[k] * 1000), fractions.Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


GOP = "keyint=25:min-keyint=25:scenecut=0"
ZOO = {
    # B-frames (pyramid), closed GOPs, frame count in the header.
    "h264_bframes.mp4": ("libx264", {"x264-params": f"{GOP}:bframes=3"}),
    # Open GOPs: B-frames after a keyframe in decoding that show before it and reference the previous GOP.
    "h264_open_gop.mp4": ("libx264", {"x264-params": f"{GOP}:bframes=3:open-gop=1"}),
    "hevc_open_gop.mkv": ("libx265", {"x265-params": f"{GOP}:bframes=4:open-gop=1:log-level=error"}),
    # No frame count in the header.
    "h264.mkv": ("libx264", {"x264-params": f"{GOP}:bframes=2"}),
    "vp9.webm": ("libvpx-vp9", {"g": "25", "deadline": "realtime", "cpu-used": "8"}),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    for name, (codec, options) in ZOO.items():
        encode(folder / name, codec, options)
    # Variable frame rate: irregular gaps from 20 to 80 ms.
    gaps = np.random.default_rng(0).uniform(0.02, 0.08, FRAMES)
    encode(folder / "h264_variable_rate.mp4", "libx264", {"x264-params": f"{GOP}:bframes=3"}, list(np.cumsum(gaps)))
    # A corrupt middle stretch: garbage over 3 kB in the middle of the media data.
    data = bytearray((folder / "h264_bframes.mp4").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (folder / "h264_corrupt_middle.mp4").write_bytes(bytes(data))
    return folder


PLANNED = [*ZOO, "h264_variable_rate.mp4"]
SAMPLINGS = {
    "32 uniform": lambda total: np.linspace(0, total - 1, 32).astype(int),
    "sparse": lambda total: np.arange(3, total, 37),
    "dense stretch": lambda total: np.arange(40, 120, 2),
    "keyframes and neighbours": lambda total: np.sort(np.r_[np.arange(0, total, 25), np.arange(24, total, 25)]),
    "last frame": lambda total: np.array([total - 1]),
}


def sequential(path, ordinals) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one decode of every frame from the start, keeping those at `ordinals`."""
    with vp.open_video_stream(path) as container, vp.logging.tqdm(disable=True) as bar:
        frames, decoded, _, _ = vp.decode_sequentially(container, np.unique(ordinals), None, bar)
    return frames, decoded


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("name", PLANNED)
def test_planned_decode_is_bit_identical_to_a_sequential_decode(zoo, name, sampling):
    path = str(zoo / name)
    with vp.open_video_stream(path) as container:
        index = read_frame_index(container)
        assert index is not None and index.num_frames == FRAMES
        ordinals = SAMPLINGS[sampling](index.num_frames)
        with vp.logging.tqdm(disable=True) as bar:
            planned = vp.decode_planned(container, index, ordinals, None, bar)
    reference, reference_ordinals = sequential(path, ordinals)
    assert reference_ordinals.tolist() == sorted(set(ordinals.tolist()))
    assert planned.shape == reference.shape and np.array_equal(planned, reference)
    # Through the public decoder too, scaled, with the exact frame count even where the header has none (MKV, WebM).
    frames, metadata = vp.decode_video(path, sample_indices_fn=lambda metadata: ordinals, size=(48, 64), progress=False)
    assert metadata.total_num_frames == FRAMES
    assert metadata.frames_indices.tolist() == reference_ordinals.tolist()
    with vp.open_video_stream(path) as container, vp.logging.tqdm(disable=True) as bar:
        scaled, _, _, _ = vp.decode_sequentially(container, np.unique(ordinals), vp.DecodeSize(48, 64), bar)
    assert np.array_equal(frames, scaled)


@pytest.mark.parametrize("name", ["h264_bframes.mp4", "hevc_open_gop.mkv", "vp9.webm"])
def test_sparse_frames_are_reached_by_seeking_and_dense_ones_by_decoding_on(zoo, name):
    with vp.open_video_stream(zoo / name) as container:
        index = read_frame_index(container)
    sparse = plan_seeks(index, np.arange(3, FRAMES, 37))
    assert (sparse >= 0).sum() > 3 and index.keyframe[sparse[sparse >= 0]].all()
    dense = plan_seeks(index, np.arange(0, FRAMES, 3))
    assert (dense >= 0).sum() == 1  # only the first, which positions the decoder


def synthetic_index(pts: list[int], keyframes: list[int]) -> FrameIndex:
    pts = np.asarray(pts, dtype=np.int64)
    keyframe = np.zeros(len(pts), dtype=bool)
    keyframe[keyframes] = True
    return FrameIndex(pts, pts.copy(), keyframe, np.argsort(pts, kind="stable"), 1.0)


def test_a_seek_pays_only_when_its_keyframe_is_past_the_decoder():
    # Keyframes every 25 frames, no reordering.
    index = synthetic_index(list(range(200)), list(range(0, 200, 25)))
    seeks = plan_seeks(index, np.array([0, 10, 60, 61, 74, 76, 190]), seek_cost=4)
    # 60: keyframe 50 lies 39 packets past frame 10; 74 and 61: go on; 76: keyframe 75 is next to the decoder at 74.
    assert seeks.tolist() == [0, -1, 50, -1, -1, -1, 175]
    assert plan_seeks(index, np.array([5, 27]), seek_cost=30).tolist() == [0, -1]


def test_a_leading_picture_is_reached_from_the_keyframe_before_its_own():
    # Decode order I0 P4 B2 B1 B3 | I8 (open GOP) B6 B5 B7 P12 ...: B5..B7 show before I8 and lean on the first GOP.
    pts = [0, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11]
    index = synthetic_index(pts, [0, 5])
    ordinals = np.array([6, 8])  # frames at pts 6 (a leading picture of I8) and 8 (I8 itself)
    assert index.frame_pts(ordinals).tolist() == [6, 8]
    assert plan_seeks(index, ordinals[:1], seek_cost=0).tolist() == [0]
    assert plan_seeks(index, ordinals[1:], seek_cost=0).tolist() == [5]


def test_a_corrupt_middle_stretch_is_decoded_sequentially_as_before(zoo, caplog):
    path = str(zoo / "h264_corrupt_middle.mp4")
    with caplog.at_level(logging.DEBUG, logger="transformers_vidcomp"), vp.open_video_stream(path) as container:
        assert read_frame_index(container) is None
    assert "decoding sequentially" in caplog.text and "broken bitstream framing" in caplog.text
    # Frames the decoder lost in the stretch shift later ones down, as ever: the last frames asked for never come.
    ordinals = np.arange(2, 170, 9)
    frames, metadata = vp.decode_video(path, sample_indices_fn=lambda metadata: ordinals, progress=False)
    reference, reference_ordinals = sequential(path, ordinals)
    assert metadata.frames_indices.tolist() == reference_ordinals.tolist() and np.array_equal(frames, reference)
    assert reference_ordinals[-1] > FRAMES // 2  # frames after the corrupt stretch are there


def test_a_stream_without_seekable_keyframes_falls_back_to_sequential_decoding(zoo, tmp_path, caplog):
    import av

    # The same H.264 stream remuxed with no packet flagged as a keyframe (the muxer flags the first one itself) and so
    # no cues: the demuxer refuses to seek.
    path = tmp_path / "unflagged.mkv"
    with av.open(str(zoo / "h264_bframes.mp4")) as source, av.open(str(path), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream, packet.is_keyframe = stream, False
                target.mux(packet)
    ordinals = np.arange(5, 150, 30)
    with caplog.at_level(logging.DEBUG, logger="transformers_vidcomp"):
        frames, metadata = vp.decode_video(path, sample_indices_fn=lambda metadata: ordinals, progress=False)
    assert "the decode plan failed" in caplog.text and "decoding sequentially" in caplog.text
    reference, reference_ordinals = sequential(path, ordinals)
    assert metadata.frames_indices.tolist() == reference_ordinals.tolist() == ordinals.tolist()
    assert np.array_equal(frames, reference)


def test_a_plan_the_file_breaks_falls_back_to_the_same_frames(zoo, monkeypatch, caplog):
    def missed(container, index, keyframe):
        raise vp.UnplannableVideo("a seek missed")

    path = str(zoo / "hevc_open_gop.mkv")
    ordinals = np.arange(3, FRAMES, 37)
    reference, reference_ordinals = sequential(path, ordinals)
    monkeypatch.setattr(vp, "seek_to_keyframe", missed)
    with caplog.at_level(logging.DEBUG, logger="transformers_vidcomp"):
        frames, metadata = vp.decode_video(path, sample_indices_fn=lambda metadata: ordinals, progress=False)
    assert "the decode plan failed (a seek missed); decoding sequentially" in caplog.text
    assert metadata.frames_indices.tolist() == reference_ordinals.tolist() and np.array_equal(frames, reference)


@pytest.mark.parametrize("name", ["h264_open_gop.mp4", "h264_variable_rate.mp4", "h264_corrupt_middle.mp4"])
def test_the_adaptive_samplers_second_pass_decodes_by_the_plan(zoo, name):
    path = zoo / name
    thumbnails = vp.decode_thumbnails(path, fps=2, progress=False)
    chosen = thumbnails.frame_ordinals[::3]
    reference, _ = sequential(path, chosen)
    assert np.array_equal(vp.decode_frames_at(path, chosen), reference)
