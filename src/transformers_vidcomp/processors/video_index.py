r"""
A video stream's packet index, read by demuxing alone, and the decode plan it allows.

Demuxing reads a file's packets without decoding them: their presentation times, keyframe flags and decode order.
That is cheap (an hour of 1080p is demuxed in about a second) and tells, for each frame a sampler wants, how much must
be decoded to reach it: from where the decoder already is, or from the keyframe before it after a seek. The plan
takes, for every wanted frame, the cheaper of the two (`plan_seeks`); `decode_video` and the adaptive sampler's second
pass then decode only the stretches the plan names.

The frames a planned decode returns are those a sequential decode gives at the same places: a frame is numbered by
its place in presentation order among the stream's frames (its ordinal, as a sequential decode counts the frames it
reads), found by its presentation time, and a seek goes to a keyframe from which the frame can be decoded whole. When
the index cannot promise that (packets without times, a stream that opens on leading pictures, packets the demuxer
flags or whose bitstream framing is broken, fewer packets than the header counts), there is no plan and the caller
decodes sequentially.
"""

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from transformers.utils import logging


logger = logging.get_logger(__name__)

# What a seek costs beyond the frames it decodes, in frames: the demuxer's seek, the decoder's flush and refilling the
# frame-threading pipeline. A keyframe closer than this to where the decoder is is not worth a seek.
SEEK_COST_FRAMES = 4


class UnplannableVideo(Exception):
    """A planned decode met something the index did not foresee; the caller decodes sequentially instead."""


@dataclass
class FrameIndex:
    r"""
    The packets of a video stream, in decode order.

    Args:
        pts (`np.ndarray` of shape `(num_packets,)`, int64): each packet's presentation time, in `time_base` units.
        dts (`np.ndarray` of shape `(num_packets,)`, int64): each packet's decode time (its pts where the demuxer
            gives none).
        keyframe (`np.ndarray` of shape `(num_packets,)`, bool): packets a decode may start from.
        frame_packets (`np.ndarray` of shape `(num_frames,)`, int64): for each frame in presentation order (its
            ordinal), the decode-order position of the packet that holds it. Packets the demuxer marks as discarded
            hold no frame.
        time_base (`float`): seconds per pts unit.
    """

    pts: np.ndarray
    dts: np.ndarray
    keyframe: np.ndarray
    frame_packets: np.ndarray
    time_base: float

    @property
    def num_frames(self) -> int:
        return len(self.frame_packets)

    def frame_pts(self, ordinals: np.ndarray) -> np.ndarray:
        """Presentation times of the frames at `ordinals`."""
        return self.pts[self.frame_packets[ordinals]]


def read_frame_index(container) -> FrameIndex | None:
    r"""
    Demuxes `container`'s first video stream without decoding and returns its index, or `None` (with a debug log
    line saying why) when the index cannot place frames exactly; the container is left at its end either way.
    """
    import av

    stream = container.streams.video[0]
    framing = bitstream_framing(stream)
    pts, dts, keyframe, discard = [], [], [], []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's closing empty packet, which flushes the decoder
                continue
            if packet.pts is None or packet.is_corrupt:
                return unplannable(container, "a packet has no presentation time or is flagged corrupt")
            if framing is not None and not framing(packet):
                return unplannable(container, f"a packet at pts {packet.pts} has broken bitstream framing")
            pts.append(packet.pts)
            dts.append(packet.pts if packet.dts is None else packet.dts)
            keyframe.append(packet.is_keyframe)
            discard.append(packet.is_discard)
    except av.error.FFmpegError as error:
        return unplannable(container, f"demuxing failed ({error})")
    if not pts:
        return unplannable(container, "no packets")
    pts, dts = np.asarray(pts, dtype=np.int64), np.asarray(dts, dtype=np.int64)
    keyframe, discard = np.asarray(keyframe, dtype=bool), np.asarray(discard, dtype=bool)
    if not keyframe[0]:
        return unplannable(container, "the stream does not start on a keyframe")
    if len(np.unique(pts)) != len(pts):
        return unplannable(container, "two packets share a presentation time")
    # Pictures that precede the first keyframe in time but follow it in decoding reference frames before the file
    # began; decoders drop or conceal them, so they would not count as a sequential decode counts.
    if (pts[1:] < pts[0]).any():
        return unplannable(container, "the stream opens with leading pictures")
    if stream.frames and len(pts) < stream.frames:
        return unplannable(container, f"{len(pts)} packets for the {stream.frames} frames the header counts")
    shown = np.flatnonzero(~discard)
    frame_packets = shown[np.argsort(pts[shown], kind="stable")]
    return FrameIndex(pts, dts, keyframe, frame_packets, float(stream.time_base))


def unplannable(container, reason: str) -> None:
    logger.debug(f"{container.name!r}: decoding sequentially, no decode plan: {reason}.")
    return None


def bitstream_framing(stream):
    r"""
    A cheap check of a packet's framing for codecs whose packets can be walked without decoding, or `None`: H.264 and
    HEVC in length-prefixed form (MP4, MKV) must be an exact chain of NAL units with a clear forbidden bit; VP9 frames
    begin with the frame marker. Garbage written over a stretch of the file breaks this framing, and a planned decode
    that seeks past such a stretch could not tell how many frames a sequential decode loses in it.
    """
    codec, extradata = stream.codec_context.name, stream.codec_context.extradata
    if codec in ("h264", "hevc") and extradata and extradata[0] == 1:
        length_size = ((extradata[4] if codec == "h264" else extradata[21]) & 3) + 1
        return lambda packet: nal_units_are_framed(memoryview(packet), length_size)
    if codec == "vp9":
        return lambda packet: memoryview(packet)[0] >> 6 == 2
    return None


def nal_units_are_framed(data: memoryview, length_size: int) -> bool:
    position, end = 0, len(data)
    while position < end:
        if position + length_size >= end:
            return False
        length = int.from_bytes(data[position : position + length_size], "big")
        position += length_size
        if length == 0 or position + length > end or data[position] & 0x80:
            return False
        position += length
    return True


def plan_seeks(index: FrameIndex, ordinals: np.ndarray, seek_cost: int = SEEK_COST_FRAMES) -> np.ndarray:
    r"""
    For sorted, distinct frame `ordinals`, the decode-order position of the keyframe to seek to before decoding
    towards each, or -1 to go on decoding from where the decoder is. The first always seeks (the decoder starts
    anywhere in the file).

    Reaching frame `j` costs the packets from where decoding starts to its packet, in decode order. Going on starts
    after the furthest packet decoded so far; a seek starts at the latest keyframe before the frame in decoding and
    in presentation order, so the frame is not a leading picture of it (open GOPs) and the count includes the
    pictures that lead it. Both reach the same packet, so a seek pays when its keyframe lies more than `seek_cost`
    packets past the decoder.

    Returns:
        `np.ndarray` of shape `(len(ordinals),)`, int64.
    """
    packets = index.frame_packets[ordinals]
    keyframes = np.flatnonzero(index.keyframe)
    # The latest keyframe at or before each frame's packet, stepped back while the frame would be one of its leading
    # pictures. Leading pictures precede only the next keyframe, so this takes one or two steps.
    slot = np.searchsorted(keyframes, packets, side="right") - 1
    for _ in range(len(keyframes)):
        leading = (slot > 0) & (index.pts[keyframes[slot]] > index.pts[packets])
        if not leading.any():
            break
        slot = np.where(leading, slot - 1, slot)
    start = keyframes[slot]
    decoded_to = np.maximum.accumulate(np.concatenate([[-1 - seek_cost], packets[:-1]]))
    return np.where(start - decoded_to > seek_cost, start, -1)


def seek_to_keyframe(container, index: FrameIndex, keyframe: int) -> tuple[int, Iterator["av.Packet"]]:
    r"""
    Seeks `container` to the packet `keyframe` (a decode-order position), or to an earlier keyframe, which decodes the
    same frames at a little more cost. Demuxers index seeks by presentation time (MKV) or decode time (MP4), so both
    are tried; a seek that lands anywhere else raises [`UnplannableVideo`].

    Returns:
        the decode-order position of the packet it landed on, and the packets from there on.
    """
    stream = container.streams.video[0]
    for target in dict.fromkeys((int(index.pts[keyframe]), int(index.dts[keyframe]))):
        container.seek(target, stream=stream, backward=True, any_frame=False)
        packets = container.demux(stream)
        first = next(packets, None)
        if first is None or first.pts is None:
            break
        landed = np.flatnonzero(index.pts == first.pts)
        if len(landed) and landed[0] <= keyframe and index.keyframe[landed[0]]:
            return int(landed[0]), itertools.chain([first], packets)
    raise UnplannableVideo(f"a seek towards the keyframe at {index.pts[keyframe] * index.time_base:.3f}s missed it")


__all__ = ["FrameIndex", "UnplannableVideo", "plan_seeks", "read_frame_index", "seek_to_keyframe"]
