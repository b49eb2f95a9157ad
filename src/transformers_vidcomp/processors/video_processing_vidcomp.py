r"""Decoding (PyAV) and pixel preparation for the composite video LLM.

Videos of different lengths are returned packed, the way the model consumes them: `pixel_values_videos` holds all
frames of all videos concatenated, and `video_num_frames` says how many belong to each.
"""

import os

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata, load_video


# What decides the pixels a frame becomes. Converters and `from_pretrained_parts` copy exactly these from a source
# image or video processor, so frames are prepared the way the vision tower was trained.
PIXEL_SETTINGS = (
    "size", "resample", "do_resize", "do_center_crop", "crop_size", "do_rescale", "rescale_factor", "do_normalize",
    "image_mean", "image_std", "do_convert_rgb",
)  # fmt: skip


def pixel_settings(processor) -> dict:
    """The `PIXEL_SETTINGS` an image or video processor has set."""
    return {name: getattr(processor, name) for name in PIXEL_SETTINGS if getattr(processor, name, None) is not None}


class VideoDecodeError(ValueError):
    """A video file could not be decoded: it is corrupt, truncated, empty or not a video at all."""


class EmptyVideoError(VideoDecodeError):
    """A video has no frames."""


class VidCompVideoProcessor(BaseVideoProcessor):
    r"""
    Decodes videos with PyAV, takes at most `num_frames` frames at `fps` frames per second, and resizes and
    normalises them for a SigLIP vision tower.

    Returns `pixel_values_videos` of shape `(total_frames, 3, height, width)` and `video_num_frames` of shape
    `(num_videos,)`, plus each video's `VideoMetadata` (whose `timestamps` give the time of every frame).
    """

    resample = PILImageResampling.BICUBIC
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 384, "width": 384}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    fps = 1.0
    num_frames = 64
    return_metadata = True
    model_input_names = ["pixel_values_videos", "video_num_frames"]

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: int | float | None = None,
        **kwargs,
    ) -> np.ndarray:
        r"""
        Uniform indices at `fps` frames per second, capped at `num_frames`, and never more than the video has.
        Unlike the base class, `fps` and `num_frames` combine: a 10-minute video at 1 fps with a cap of 64 frames
        yields 64 evenly spread frames; a 5-second one yields 5.
        """
        num_frames = num_frames if num_frames is not None else self.num_frames
        fps = fps if fps is not None else self.fps
        total = metadata.total_num_frames
        count = total
        if fps is not None and metadata.fps:
            count = max(1, int(total / metadata.fps * fps))
        if num_frames is not None:
            count = min(count, num_frames)
        return super().sample_frames(metadata, num_frames=min(count, total), fps=None)

    def fetch_videos(self, video_url_or_urls: str | list[str], sample_indices_fn=None):
        if isinstance(video_url_or_urls, list):
            return list(zip(*[self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]))
        return decode_video(video_url_or_urls, sample_indices_fn=sample_indices_fn)

    def _decode_and_sample_videos(self, videos, video_metadata, do_sample_frames=None, sample_indices_fn=None):
        for video in videos if isinstance(videos, (list, tuple)) else [videos]:
            if isinstance(video, (np.ndarray, torch.Tensor)) and (video.ndim not in (3, 4) or video.shape[0] == 0):
                raise EmptyVideoError(
                    f"A video array has shape {tuple(video.shape)}: it needs at least one frame, as "
                    "(frames, height, width, 3) or (frames, 3, height, width)."
                )
        return super()._decode_and_sample_videos(videos, video_metadata, do_sample_frames, sample_indices_fn)

    def _preprocess(self, videos: list[torch.Tensor], return_tensors=None, **kwargs):
        processed = super()._preprocess(videos, return_tensors=None, **kwargs)["pixel_values_videos"]
        packed = {
            "pixel_values_videos": torch.cat(list(processed)),
            "video_num_frames": torch.tensor([len(video) for video in processed], dtype=torch.long),
        }
        return BatchFeature(data=packed, tensor_type=return_tensors)


def decode_video(path: str | os.PathLike, sample_indices_fn=None) -> tuple[np.ndarray, VideoMetadata]:
    r"""
    Decodes the frames `sample_indices_fn` picks from a local video file with PyAV, through Transformers'
    `load_video`. Every way a file can fail to be a video raises a [`VideoDecodeError`] that names the file.

    Returns:
        `np.ndarray` of shape `(num_frames, height, width, 3)` (uint8 RGB) and the video's `VideoMetadata`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No video at {path!r}: check the path.")
    if os.path.getsize(path) == 0:
        raise EmptyVideoError(f"{path!r} is an empty file (0 bytes), not a video.")
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise EmptyVideoError(f"{path!r} holds no video stream (it may be audio only).")
            if container.streams.video[0].frames == 0 and container.duration is None:
                raise EmptyVideoError(f"{path!r} has a video stream with no frames.")
        frames, metadata = load_video(path, backend="pyav", sample_indices_fn=sample_indices_fn)
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, ZeroDivisionError) as error:
        raise VideoDecodeError(
            f"{path!r} could not be decoded as a video ({type(error).__name__}: {error}). The file may be corrupt, "
            "truncated or not a video; re-encode it (for example `ffmpeg -i in -c:v libx264 out.mp4`)."
        ) from error
    expected = len(metadata.frames_indices) if metadata.frames_indices is not None else len(frames)
    if len(frames) < expected:
        raise VideoDecodeError(
            f"{path!r} is truncated: its header promises {metadata.total_num_frames} frames but only "
            f"{len(frames)} of the {expected} requested could be decoded. Re-encode or re-download the file."
        )
    return frames, metadata


__all__ = ["EmptyVideoError", "PIXEL_SETTINGS", "VidCompVideoProcessor", "VideoDecodeError", "decode_video", "pixel_settings"]
