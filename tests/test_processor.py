import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from transformers_vidcomp import EmptyVideoError, VideoDecodeError


def chat(video, question="What happens?"):
    return [{"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": question}]}]


def test_decodes_an_mp4_at_the_configured_rate_with_real_timestamps(tiny, demo_video):
    _, processor = tiny
    path, _ = demo_video  # 4 s at 10 fps; the baseline processor decodes at 4 fps
    inputs = processor.apply_chat_template(chat(path), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    assert inputs["pixel_values_videos"].shape == (16, 3, 64, 64)
    assert inputs["video_num_frames"].tolist() == [16]
    expected = torch.tensor([j * 40 // 16 for j in range(16)], dtype=torch.float32) / 10
    torch.testing.assert_close(inputs["video_timestamps"], expected)
    assert (inputs["input_ids"] == processor.video_token_id).sum() == 1
    assert -1.0 <= float(inputs["pixel_values_videos"].min()) and float(inputs["pixel_values_videos"].max()) <= 1.0


def test_frame_cap_and_short_videos(tiny, demo_video, short_video):
    _, processor = tiny
    path, _ = demo_video
    capped = processor(text="<video>", videos=[str(path)], num_frames=3)
    assert capped["video_num_frames"].tolist() == [3]
    short = processor(text="<video>", videos=[str(short_video)], fps=100.0)  # asks more frames than exist
    assert short["video_num_frames"].tolist() == [10]


def test_files_are_scaled_while_decoding_and_match_full_size_decoding(tiny, demo_video):
    from transformers_vidcomp.processors import decode_video

    _, processor = tiny
    path, _ = demo_video  # 96x64 frames; the tiny processor wants 64x64
    scaled, metadata = decode_video(path, sample_indices_fn=lambda metadata: np.arange(0, 40, 4), size=(64, 64))
    full, full_metadata = decode_video(path, sample_indices_fn=lambda metadata: np.arange(0, 40, 4))
    assert scaled.shape == (10, 64, 64, 3) and full.shape == (10, 64, 96, 3)
    assert metadata.frames_indices.tolist() == full_metadata.frames_indices.tolist() == list(range(0, 40, 4))
    # The processor scales files while decoding (FFmpeg's bicubic) and arrays afterwards (torchvision's): the same
    # frames up to the two resamplers' rounding.
    from_file = processor(text="<video>", videos=[str(path)], num_frames=10, fps=None)["pixel_values_videos"]
    metadata = VideoMetadata(total_num_frames=40, fps=10.0, width=96, height=64, duration=4.0)
    from_array = processor(text="<video>", videos=[full], video_metadata=[metadata], do_sample_frames=False)
    assert from_file.shape == from_array["pixel_values_videos"].shape == (10, 3, 64, 64)
    assert (from_file - from_array["pixel_values_videos"]).abs().mean() < 0.03


def test_pad_to_square_letterboxes_with_the_mean_colour_like_expand2square(tiny, demo_video):
    from transformers_vidcomp.processors.video_processing_vidcomp import expand_to_square

    frames = torch.full((2, 3, 4, 6), 200, dtype=torch.uint8)
    square = expand_to_square(frames, [0.5, 0.25, 1.0])
    assert square.shape == (2, 3, 6, 6)
    assert (square[:, :, 1:5] == 200).all()  # (6 - 4) // 2 = 1 row above, the rest below
    assert square[0, :, 0, 0].tolist() == square[0, :, 5, 0].tolist() == [127, 63, 255]

    _, processor = tiny
    path, _ = demo_video  # 96x64: letterboxed to 64x64, the picture 43 rows high
    stretched = processor(text="<video>", videos=[str(path)], num_frames=2, fps=None)["pixel_values_videos"]
    boxed = processor(text="<video>", videos=[str(path)], num_frames=2, fps=None, pad_to_square=True)
    boxed = boxed["pixel_values_videos"]
    fill = (127 / 255 - 0.5) / 0.5
    assert torch.allclose(boxed[:, :, :10], torch.tensor(fill)) and torch.allclose(boxed[:, :, 54:], torch.tensor(fill))
    assert not torch.allclose(stretched[:, :, :10], torch.tensor(fill))
    # Files are scaled while decoding, arrays after padding (as the released code does): the same picture.
    full = processor(text="<video>", videos=[np.stack([f for f in decode_frames(path, [0, 20])])],
                     video_metadata=[VideoMetadata(total_num_frames=2, fps=0.5)], do_sample_frames=False,
                     pad_to_square=True)["pixel_values_videos"]
    # The two differ by where the resampler puts the picture's edge (rows 10 to 53 against 10.7 to 53.3).
    difference = (boxed[:, :, 12:52] - full[:, :, 12:52]).abs().mean()
    assert difference < 0.1 and difference < (stretched[:, :, 12:52] - full[:, :, 12:52]).abs().mean() / 2
    # Where the picture lies, for the model to mask and crop the padding: the stream's size for a file (decoded
    # already scaled to 64x43), the frames' size for an array.
    two_files = processor(text="<video> <video>", videos=[str(path), str(path)], num_frames=2, fps=None,
                          pad_to_square=True)
    assert two_files["video_sizes"].tolist() == [[64, 96], [64, 96]]
    array = processor(text="<video>", videos=[np.zeros((2, 30, 20, 3), dtype=np.uint8)], pad_to_square=True,
                      video_metadata=[VideoMetadata(total_num_frames=2, fps=1.0)], do_sample_frames=False)
    assert array["video_sizes"].tolist() == [[30, 20]]
    assert "video_sizes" not in processor(text="<video>", videos=[str(path)], num_frames=2, fps=None)


def decode_frames(path, indices):
    from transformers_vidcomp.processors import decode_video

    return decode_video(path, sample_indices_fn=lambda metadata: np.asarray(indices))[0]


def test_arrays_with_metadata_get_their_timestamps(tiny):
    _, processor = tiny
    frames = np.random.randint(0, 255, (30, 48, 64, 3), dtype=np.uint8)
    metadata = VideoMetadata(total_num_frames=30, fps=15.0, width=64, height=48, duration=2.0)
    inputs = processor(text=["<video> q"], videos=[frames], video_metadata=[metadata])
    assert inputs["video_num_frames"].tolist() == [8]
    # 2 s at 4 fps = 8 frames, at indices floor(j * 30 / 8), as Transformers samples uniformly
    assert inputs["video_timestamps"].tolist() == pytest.approx([j * 30 // 8 / 15 for j in range(8)])


def test_timestamps_in_prompt_follow_fila_wording(tiny, demo_video):
    _, processor = tiny
    processor.timestamps_in_prompt = True
    path, _ = demo_video
    text = processor.apply_chat_template(chat(path), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, videos=[str(path)], num_frames=4)
    decoded = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "This video samples 4 frames of a 4.0-second video at 0.0, 1.0, 2.0, 3.0 seconds.\n<video>" in decoded


def test_placeholder_count_must_match_videos(tiny, demo_video):
    _, processor = tiny
    path, _ = demo_video
    with pytest.raises(ValueError, match="0 '<video>' placeholders for 1 videos"):
        processor(text="no placeholder", videos=[str(path)])


def test_missing_video(tiny, tmp_path):
    _, processor = tiny
    with pytest.raises(FileNotFoundError, match="No video at"):
        processor(text="<video>", videos=[str(tmp_path / "missing.mp4")])


def test_empty_file(tiny, tmp_path):
    _, processor = tiny
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyVideoError, match="empty file"):
        processor(text="<video>", videos=[str(tmp_path / "empty.mp4")])


def test_not_a_video(tiny, tmp_path):
    _, processor = tiny
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match="could not be (opened|decoded) as a video"):
        processor(text="<video>", videos=[str(tmp_path / "notes.mp4")])


def test_image_file_is_not_a_video(tiny, tmp_path):
    from PIL import Image

    _, processor = tiny
    Image.new("RGB", (32, 32), "red").save(tmp_path / "frame.png")
    with pytest.raises(EmptyVideoError, match="no frames"):
        processor(text="<video>", videos=[str(tmp_path / "frame.png")])


def test_truncated_video(tiny, demo_video, tmp_path):
    _, processor = tiny
    path, _ = demo_video
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError):
        processor(text="<video>", videos=[str(tmp_path / "cut.mp4")])


def test_file_without_video_frames(tiny, tmp_path):
    import av

    # FFmpeg writes no file for a video stream with zero frames, so the zero-frame case on disk is a file whose
    # only stream is audio.
    path = tmp_path / "audio_only.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode())
    _, processor = tiny
    with pytest.raises(EmptyVideoError, match="no video stream"):
        processor(text="<video>", videos=[str(path)])


@pytest.mark.parametrize("shape", [(0, 32, 32, 3), (32, 32)])
def test_zero_frame_or_malformed_arrays(tiny, shape):
    _, processor = tiny
    with pytest.raises(EmptyVideoError, match="at least one frame"):
        processor(text="<video>", videos=[np.zeros(shape, dtype=np.uint8)])


def test_processor_round_trip(tiny, tmp_path):
    from transformers import AutoProcessor

    _, processor = tiny
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "VidCompProcessor"
    assert loaded.video_token_id == processor.video_token_id
    assert loaded.chat_template == processor.chat_template
    assert loaded.video_processor.fps == processor.video_processor.fps


def test_a_held_last_frame_is_not_mistaken_for_a_truncated_file(tmp_path):
    import fractions

    import av

    from transformers_vidcomp.processors import VidCompVideoProcessor

    # 10 pictures one second apart, the last held for 10 s: the stream's average rate (10 / 19) is not its spacing.
    path, time_base = tmp_path / "held.mp4", fractions.Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = time_base
        packets = []
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i * 1000, time_base
            packets += list(stream.encode(frame))
        packets += list(stream.encode())
        max(packets, key=lambda packet: packet.pts).duration = 10_000
        for packet in packets:
            container.mux(packet)
    processor = VidCompVideoProcessor(fps=1.0, num_frames=None, size={"height": 32, "width": 32})
    out = processor(str(path), return_tensors="pt")
    assert out["video_metadata"][0].frames_indices.tolist() == list(range(10))
    brightness = out["pixel_values_videos"].mean(dim=(1, 2, 3))
    assert (brightness.diff() > 0).all()  # ten distinct pictures in order, none repeated or lost


def test_files_decode_with_the_processors_resampling_filter(demo_video):
    from transformers_vidcomp.processors import VidCompVideoProcessor

    path, _ = demo_video
    nearest = VidCompVideoProcessor(size={"height": 32, "width": 32}, resample=0, num_frames=2)(str(path))
    bicubic = VidCompVideoProcessor(size={"height": 32, "width": 32}, resample=3, num_frames=2)(str(path))
    assert not torch.equal(nearest["pixel_values_videos"], bicubic["pixel_values_videos"])
    with pytest.raises(ValueError, match="pad_to_square letterboxes frames to a square, but size is 32x48"):
        VidCompVideoProcessor(size={"height": 32, "width": 48}, pad_to_square=True)(str(path))
