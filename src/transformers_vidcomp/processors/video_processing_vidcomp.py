r"""Decoding (PyAV) and pixel preparation for the composite video LLM.

Videos of different lengths are returned packed, the way the model consumes them: `pixel_values_videos` holds all
frames of all videos concatenated, and `video_num_frames` says how many belong to each.
"""

import math
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .video_index import FrameIndex, UnplannableVideo, plan_seeks, read_frame_index, seek_to_keyframe


logger = logging.get_logger(__name__)

# The processor's `resample` filters FFmpeg's scaler has; with any other, files decode at full size and are resized
# by the processor.
FFMPEG_INTERPOLATION = {
    PILImageResampling.NEAREST: "POINT",
    PILImageResampling.BILINEAR: "BILINEAR",
    PILImageResampling.BICUBIC: "BICUBIC",
    PILImageResampling.LANCZOS: "LANCZOS",
    PILImageResampling.BOX: "AREA",
}


class DecodeSize(NamedTuple):
    r"""The frame size a decode scales to, with FFmpeg's `interpolation`: exactly `height x width`, or with
    `keep_aspect` the largest size of the frame's aspect ratio that fits in it (frames that will be letterboxed)."""

    height: int
    width: int
    keep_aspect: bool = False
    interpolation: str = "BICUBIC"

    def for_frame(self, frame_height: int, frame_width: int) -> tuple[int, int]:
        if not self.keep_aspect or not frame_height or not frame_width:
            return self.height, self.width
        scale = min(self.height / frame_height, self.width / frame_width)
        return max(1, round(frame_height * scale)), max(1, round(frame_width * scale))


# The size the video processor's call in progress resizes to, for `fetch_videos`.
DECODE_SIZE: ContextVar[DecodeSize | None] = ContextVar("vidcomp_decode_size", default=None)


def expand_to_square(video: torch.Tensor, image_mean: float | list[float]) -> torch.Tensor:
    r"""
    Centres frames `(T, 3, H, W)` on a square canvas of side `max(H, W)` filled with the mean colour
    (`int(mean * 255)` per channel), as LLaVA's `expand2square`: the shorter side is padded by `(side - length) // 2`
    before and the rest after.
    """
    frames, channels, height, width = video.shape
    if height == width:
        return video
    side = max(height, width)
    means = image_mean if isinstance(image_mean, (list, tuple)) else [image_mean] * channels
    fill = torch.tensor([int(mean * 255) for mean in means], dtype=video.dtype, device=video.device)
    canvas = fill.view(1, channels, 1, 1).expand(frames, channels, side, side).clone()
    top, left = (side - height) // 2, (side - width) // 2
    canvas[:, :, top : top + height, left : left + width] = video
    return canvas

# Frames on an interval boundary of the resampling rate can land a hair below it in float arithmetic.
INTERVAL_SLACK = 1e-2


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


class VidCompVideosKwargs(VideosKwargs, total=False):
    r"""
    pad_to_square (`bool`, *optional*, defaults to `False`):
        Centre each frame on a square of the mean colour before resizing (LLaVA's `expand2square`), as LongVU and
        HICom prepare frames: the picture keeps its aspect ratio instead of being stretched.
    """

    pad_to_square: bool


class VidCompVideoProcessor(BaseVideoProcessor):
    r"""
    Decodes videos with PyAV, takes at most `num_frames` frames at `fps` frames per second, and resizes and
    normalises them for a SigLIP vision tower (stretched to `size`, or letterboxed with `pad_to_square`).

    Returns `pixel_values_videos` of shape `(total_frames, 3, height, width)` and `video_num_frames` of shape
    `(num_videos,)`, plus each video's `VideoMetadata` (whose `timestamps` give the time of every frame). With
    `pad_to_square` it also returns `video_sizes` of shape `(num_videos, 2)`: the (height, width) of each video's
    frames before letterboxing, which fixes where the picture lies on the canvas.
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
    pad_to_square = False
    valid_kwargs = VidCompVideosKwargs
    model_input_names = ["pixel_values_videos", "video_num_frames", "video_sizes"]

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

    def preprocess(self, videos, **kwargs) -> BatchFeature:
        # Files are scaled to this call's `size` while they decode (see `decode_video`); Transformers resolves the
        # call's settings only after decoding, so they reach `fetch_videos` through a context variable.
        size = kwargs.get("size") or self.size
        do_resize = kwargs.get("do_resize")
        do_resize = self.do_resize if do_resize is None else do_resize
        # A call's plain dict, or the processor's own SizeDict; sizes without both sides (`shortest_edge`) decode at
        # full size.
        sides = ("height", "width")
        height, width = (size.get(side) if isinstance(size, dict) else getattr(size, side, None) for side in sides)
        pad_to_square = kwargs.get("pad_to_square")
        pad_to_square = self.pad_to_square if pad_to_square is None else pad_to_square
        if pad_to_square and height and width and height != width:
            raise ValueError(
                f"pad_to_square letterboxes frames to a square, but size is {height}x{width}: use a square size, or "
                "pad_to_square=False to stretch frames to it."
            )
        resample = kwargs.get("resample")
        resample = self.resample if resample is None else resample
        interpolation = FFMPEG_INTERPOLATION.get(resample) if isinstance(resample, int) else None
        scaled = do_resize and height and width and interpolation
        token = DECODE_SIZE.set(DecodeSize(height, width, pad_to_square, interpolation) if scaled else None)
        try:
            return super().preprocess(videos, **kwargs)
        finally:
            DECODE_SIZE.reset(token)

    def resize(self, video: torch.Tensor, size, **kwargs) -> torch.Tensor:
        if tuple(video.shape[-2:]) == (size.height, size.width):  # already scaled while decoding
            return video
        return super().resize(video, size, **kwargs)

    def fetch_videos(self, video_url_or_urls: str | list[str], sample_indices_fn=None):
        if isinstance(video_url_or_urls, list):
            return list(zip(*[self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]))
        return decode_video(video_url_or_urls, sample_indices_fn=sample_indices_fn, size=DECODE_SIZE.get())

    def _decode_and_sample_videos(self, videos, video_metadata, do_sample_frames=None, sample_indices_fn=None):
        for video in videos if isinstance(videos, (list, tuple)) else [videos]:
            if isinstance(video, (np.ndarray, torch.Tensor)) and (video.ndim not in (3, 4) or video.shape[0] == 0):
                raise EmptyVideoError(
                    f"A video array has shape {tuple(video.shape)}: it needs at least one frame, as "
                    "(frames, height, width, 3) or (frames, 3, height, width)."
                )
        return super()._decode_and_sample_videos(videos, video_metadata, do_sample_frames, sample_indices_fn)

    def _preprocess(self, videos: list[torch.Tensor], return_tensors=None, pad_to_square: bool = False, **kwargs):
        packed = {}
        if pad_to_square:
            # Where the picture lies on the canvas, for methods that mask or crop the padding (LongVU).
            packed["video_sizes"] = torch.tensor([list(video.shape[-2:]) for video in videos], dtype=torch.long)
            videos = [expand_to_square(video, kwargs["image_mean"]) for video in videos]
        processed = super()._preprocess(videos, return_tensors=None, **kwargs)["pixel_values_videos"]
        packed["pixel_values_videos"] = torch.cat(list(processed))
        packed["video_num_frames"] = torch.tensor([len(video) for video in processed], dtype=torch.long)
        return BatchFeature(data=packed, tensor_type=return_tensors)


def decode_video(
    path: str | os.PathLike,
    sample_indices_fn=None,
    size: tuple[int, int] | DecodeSize | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, VideoMetadata]:
    r"""
    Decodes the frames `sample_indices_fn` picks from a local video file with PyAV, each converted to RGB as it is
    decoded, and scaled to `size = (height, width)` when given (FFmpeg's scaler; a `DecodeSize` carries
    the processor's filter, and with `keep_aspect` fits the frame inside the size instead): memory holds the chosen
    frames at the processor's size, never the whole video at its own resolution, so an hour-long video decodes in the
    memory its result needs. The file's packet index (`read_frame_index`) gives the exact frame count and a decode
    plan: stretches between sparse frames are skipped by seeking to the keyframe before the next one, dense ones are
    decoded straight through (`decode_chosen_frames`). Frames are numbered in decode order, as the sampler counts
    them. A corrupt stretch is skipped with a warning (later frames then count from where decoding resumed, so their
    times are approximate); a file that ends before the frame count its header states raises.
    Every way a file can fail to be a video raises a [`VideoDecodeError`] that names the file.

    Returns:
        `np.ndarray` of shape `(num_frames, height, width, 3)` (uint8 RGB) and the video's `VideoMetadata`, whose
        `frames_indices` are the decoded frames' indices.
    """
    path = os.fspath(path)
    import av

    try:
        with open_video_stream(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            index = read_frame_index(container)
            total, counted = stream.frames, bool(stream.frames)
            if not counted and rate:  # no frame count in the header (MKV, WebM): the stream's duration, else the file's
                seconds = float(stream.duration * stream.time_base) if stream.duration else None
                seconds = seconds or (container.duration / av.time_base if container.duration else 0)
                total = round(seconds * rate)
            if not total:  # a header without frames or duration: an image, not a video
                raise EmptyVideoError(f"{path!r} has a video stream with no frames.")
            # The index counts the frames exactly, where a header may have no count and a duration only estimates.
            total = index.num_frames if index is not None else total
            metadata = VideoMetadata(
                total_num_frames=total, fps=rate, duration=total / rate if rate else None, width=stream.width,
                height=stream.height, video_backend="pyav",
            )
            indices = sample_indices_fn(metadata=metadata) if sample_indices_fn is not None else np.arange(total)
            frames, decoded, unreadable, seen = decode_chosen_frames(
                path, container, index, indices, None if size is None else DecodeSize(*size), progress,
                "decoding video",
            )
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, ZeroDivisionError) as error:
        raise VideoDecodeError(
            f"{path!r} could not be decoded as a video ({type(error).__name__}: {error}). The file may be corrupt, "
            "truncated or not a video; re-encode it (for example `ffmpeg -i in -c:v libx264 out.mp4`)."
        ) from error
    # A stream that ends before the count its header states is cut short; an estimated count may simply be high.
    if len(decoded) == 0 or (counted and seen < total and np.max(indices) > decoded[-1]):
        raise VideoDecodeError(
            f"{path!r} is truncated: its header promises {total} frames but it ends after {seen}, with "
            f"{len(decoded)} of the {len(np.unique(indices))} requested frames. Re-encode or re-download the file."
        )
    warn_unreadable(path, unreadable, len(decoded))
    metadata.frames_indices = decoded
    return frames, metadata


@dataclass
class Thumbnails:
    r"""
    Small frames decoded from a video at a reduced rate, for selection before the real decode.

    Args:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, uint8): RGB thumbnails.
        frame_indices (`np.ndarray` of shape `(num_frames,)`): each thumbnail's frame number, its presentation time in
            frames of the stream's average rate (see `readable_frames`): true times, even after a corrupt stretch.
        frame_ordinals (`np.ndarray` of shape `(num_frames,)`): each thumbnail's place among the frames the decoder
            read, which `decode_frames_at` takes: two frames of a variable-rate file can share a frame number, never
            an ordinal.
        timestamps (`np.ndarray` of shape `(num_frames,)`): seconds from the first readable frame.
        metadata (`VideoMetadata`): the stream's frame rate, size, duration and decoded frame count.
        unreadable_packets (`int`): packets the decoder rejected; their frames are missing.
    """

    frames: np.ndarray
    frame_indices: np.ndarray
    frame_ordinals: np.ndarray
    timestamps: np.ndarray
    metadata: VideoMetadata
    unreadable_packets: int = 0


def open_video_stream(path: str | os.PathLike):
    """Opens `path` with PyAV, refusing missing, empty and stream-less files with a `VideoDecodeError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No video at {path!r}: check the path.")
    if os.path.getsize(path) == 0:
        raise EmptyVideoError(f"{path!r} is an empty file (0 bytes), not a video.")
    import av

    try:
        container = av.open(path)
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            f"{path!r} could not be opened as a video ({type(error).__name__}: {error}). It may be corrupt or not a "
            "video; re-encode it (for example `ffmpeg -i in -c:v libx264 out.mp4`)."
        ) from error
    if not container.streams.video:
        container.close()
        raise EmptyVideoError(f"{path!r} holds no video stream (it may be audio only).")
    # Frame and slice threading on every core; it must be set before the first packet opens the decoder.
    container.streams.video[0].thread_type = "AUTO"
    container.streams.video[0].codec_context.thread_count = 0
    return container


def readable_frames(container, unreadable: list[float]) -> Iterator[tuple[int, float, "av.VideoFrame"]]:
    r"""
    Every frame of the first video stream that can be decoded, in order, as `(index, seconds, frame)`: `seconds` from
    the first readable frame (its presentation time), `index` that time in frames of the stream's average rate, so a
    frame keeps its true time even after a stretch the decoder rejected: such packets are skipped and their times
    appended to `unreadable`. (On a variable-rate file two frames can share an index; a second pass over the file
    finds frames by their place in decode order instead.)
    """
    import av

    stream = container.streams.video[0]
    rate = float(stream.average_rate) if stream.average_rate else None
    start, count = None, 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            unreadable.append(float(packet.pts * packet.time_base) if packet.pts is not None else math.nan)
            continue
        for frame in frames:
            time = frame.time if frame.time is not None else count / (rate or 1.0)
            start = time if start is None else start
            seconds = time - start
            yield (round(seconds * rate) if rate else count), seconds, frame
            count += 1


def warn_unreadable(path: str, unreadable: list[float], kept: int) -> None:
    if unreadable:
        where = ", ".join(f"{t:.1f}s" for t in unreadable[:5] if not math.isnan(t)) or "unknown times"
        logger.warning(
            f"{path!r}: {len(unreadable)} corrupt packet(s) could not be decoded (at {where}); continuing with the "
            f"{kept} readable frames. Re-encode the file to recover what the corrupt stretch held."
        )


def decode_thumbnails(
    path: str | os.PathLike, fps: float | None = None, width: int = 48, height: int = 27, progress: bool = True
) -> Thumbnails:
    r"""
    Streams a video once and keeps only `width x height` RGB thumbnails (bicubic, as FFmpeg's scaler does by
    default) of the first frame in every `1 / fps` seconds, so an hour-long video never sits in memory at full
    resolution: at 10 fps and 48x27 an hour is 140 MB. A corrupt stretch is skipped with a warning.
    """
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive (or None for every frame), got {fps}.")
    path = os.fspath(path)
    frames, indices, ordinals, times, unreadable = [], [], [], [], []
    with open_video_stream(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else None
        last_interval, decoded, last_index = None, 0, 0
        # The bar shows on terminals only (`disable=None`), not in logs and pipelines.
        bar = logging.tqdm(
            total=stream.frames or None, unit="frame", desc="decoding thumbnails", disable=None if progress else True
        )
        with bar:
            for index, seconds, frame in readable_frames(container, unreadable):
                bar.update(1)
                decoded, last_index = decoded + 1, index
                interval = math.floor(seconds * fps + INTERVAL_SLACK) if fps else index
                if interval == last_interval:
                    continue
                last_interval = interval
                thumbnail = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                frames.append(thumbnail.to_ndarray())
                indices.append(index)
                ordinals.append(decoded - 1)
                times.append(seconds)
        if not frames:
            raise EmptyVideoError(f"{path!r} has no decodable video frame.")
        metadata = VideoMetadata(
            total_num_frames=last_index + 1,
            fps=rate,
            duration=(last_index + 1) / rate if rate else None,
            width=stream.width,
            height=stream.height,
            video_backend="pyav",
        )
    warn_unreadable(path, unreadable, decoded)
    return Thumbnails(
        frames=np.stack(frames),
        frame_indices=np.asarray(indices, dtype=np.int64),
        frame_ordinals=np.asarray(ordinals, dtype=np.int64),
        timestamps=np.asarray(times, dtype=np.float64),
        metadata=metadata,
        unreadable_packets=len(unreadable),
    )


def decode_chosen_frames(
    path: str,
    container,
    index: FrameIndex | None,
    ordinals: np.ndarray,
    size: DecodeSize | None,
    progress: bool,
    description: str,
) -> tuple[np.ndarray, np.ndarray, list[float], int]:
    r"""
    Decodes the frames at `ordinals` (their places among the frames a sequential decode reads) and converts only those
    to RGB, scaled to `size` when given. With an `index` (from `read_frame_index` on `container`) the decode follows
    its plan; without one, or when the file decodes other than its index foretold, `path` is decoded sequentially from
    its start, which gives the same frames.

    Chosen ordinals past the frames the decoder reads (a corrupt stretch loses frames) are left out (the caller
    decides whether that is an error).

    Returns:
        the frames, `np.ndarray` of shape `(num_decoded, height, width, 3)` uint8 in time order; their ordinals
        `(num_decoded,)`; the times of the packets the decoder rejected; and how many frames were read.
    """
    import av

    wanted = np.unique(np.asarray(ordinals, dtype=np.int64))
    with logging.tqdm(total=len(wanted), unit="frame", desc=description, disable=None if progress else True) as bar:
        if index is not None:
            try:
                frames = decode_planned(container, index, wanted[wanted < index.num_frames], size, bar)
                return frames, wanted[wanted < index.num_frames], [], index.num_frames
            except (UnplannableVideo, av.error.FFmpegError) as error:
                logger.debug(f"{path!r}: the decode plan failed ({error}); decoding sequentially.")
                bar.reset()
        with open_video_stream(path) as fresh:
            return decode_sequentially(fresh, wanted, size, bar)


def to_rgb(frame, size: DecodeSize | None) -> np.ndarray:
    """`frame` as an RGB array, scaled to `size` by FFmpeg's scaler when given."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    height, width = size.for_frame(frame.height, frame.width)
    return frame.reformat(width=width, height=height, format="rgb24", interpolation=size.interpolation).to_ndarray()


class FrameBuffer:
    """One array for a decode's result, allocated at the first frame: no list of frames is stacked (and held twice)."""

    def __init__(self, capacity: int, size: DecodeSize | None):
        self.capacity, self.size, self.frames, self.count = capacity, size, None, 0

    def add(self, frame) -> None:
        rgb = to_rgb(frame, self.size)
        if self.frames is None:
            self.frames = np.empty((self.capacity, *rgb.shape), dtype=np.uint8)
        self.frames[self.count] = rgb
        self.count += 1

    def result(self) -> np.ndarray:
        return np.empty((0, 0, 0, 3), dtype=np.uint8) if self.frames is None else self.frames[: self.count]


def decode_sequentially(
    container, wanted: np.ndarray, size: DecodeSize | None, bar
) -> tuple[np.ndarray, np.ndarray, list[float], int]:
    """`decode_chosen_frames` without a plan: every frame up to the last wanted one, in one streamed pass."""
    buffer, decoded, unreadable = FrameBuffer(len(wanted), size), [], []
    served, seen = 0, 0  # how many of `wanted` are behind the decoder, and how many frames it read
    for _, _, frame in readable_frames(container, unreadable):
        ordinal, seen = seen, seen + 1
        if ordinal < wanted[served]:
            continue
        served = int(np.searchsorted(wanted, ordinal, side="right"))
        buffer.add(frame)
        decoded.append(ordinal)
        bar.update(1)
        if served == len(wanted):
            break
    return buffer.result(), np.asarray(decoded, dtype=np.int64), unreadable, seen


def decode_planned(container, index: FrameIndex, wanted: np.ndarray, size: DecodeSize | None, bar) -> np.ndarray:
    r"""
    `decode_chosen_frames` by `index`'s plan (`plan_seeks`): each wanted frame is reached by decoding on or by a seek
    to a keyframe, and recognised by its presentation time. Pictures no other picture references are skipped unless
    wanted (FFmpeg's `skip_frame="NONREF"`, set packet by packet): they change nothing the wanted frames are decoded
    from, and with B-frames they are up to half the stream. Any frame the index did not foretell (a decoding error, a
    dropped or unexpected frame, a stream that ends early) raises [`UnplannableVideo`].
    """
    buffer = FrameBuffer(len(wanted), size)
    seeks, targets = plan_seeks(index, wanted), index.frame_pts(wanted)
    wanted_packets = set(index.frame_packets[wanted].tolist())
    codec = container.streams.video[0].codec_context
    served = 0
    while served < len(wanted):
        target = targets[served]
        position, packets = seek_to_keyframe(container, index, seeks[served])
        for frame in frames_skipping_unwanted(packets, position, wanted_packets, codec):
            if frame.pts is None or frame.pts > target:
                raise UnplannableVideo(f"expected a frame at pts {target}, the decoder gave {frame.pts}")
            if frame.pts < target:
                continue
            buffer.add(frame)
            bar.update(1)
            served += 1
            if served == len(wanted) or seeks[served] >= 0:
                break
            target = targets[served]
        else:
            raise UnplannableVideo(f"the stream ended before the frame at pts {target}")
    return buffer.result()


def frames_skipping_unwanted(packets: Iterator, position: int, wanted_packets: set[int], codec) -> Iterator:
    r"""The frames `packets` decode to, the first packet at decode-order `position`; non-reference pictures are
    decoded only from `wanted_packets`."""
    skipping = None
    for packet in packets:
        if packet.size:
            skip = position not in wanted_packets
            if skip is not skipping:  # the decoder copies the setting as each packet goes in, even when threaded
                codec.skip_frame, skipping = ("NONREF" if skip else "DEFAULT"), skip
            position += 1
        yield from packet.decode()


def decode_frames_at(path: str | os.PathLike, ordinals: np.ndarray) -> np.ndarray:
    r"""
    Decodes the video again and converts to full-resolution RGB only the frames at `ordinals` (their places among the
    frames the decoder reads, `Thumbnails.frame_ordinals`), so memory holds just the chosen frames. The decode
    follows the file's plan (see `decode_chosen_frames`): a seek to the keyframe before each chosen frame where that
    decodes less than going on.

    Returns:
        `np.ndarray` of shape `(len(unique ordinals), height, width, 3)`, uint8, in decode order.
    """
    path = os.fspath(path)
    wanted = np.unique(np.asarray(ordinals, dtype=np.int64))
    with open_video_stream(path) as container:
        index = read_frame_index(container)
        frames, decoded, _, _ = decode_chosen_frames(
            path, container, index, wanted, None, False, "decoding chosen frames"
        )
    if not np.array_equal(decoded, wanted):
        raise VideoDecodeError(
            f"{path!r} yielded {len(decoded)} of the {len(wanted)} chosen frames on the second decode; the file changed "
            "or decodes differently between passes. Re-encode it."
        )
    return frames


__all__ = [
    "DecodeSize", "EmptyVideoError", "Thumbnails", "decode_frames_at", "decode_thumbnails", "decode_video",
    "expand_to_square", "open_video_stream", "PIXEL_SETTINGS", "pixel_settings", "VidCompVideoProcessor",
    "VidCompVideosKwargs", "VideoDecodeError",
]  # fmt: skip
