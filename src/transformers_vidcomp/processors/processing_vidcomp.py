r"""The processor: tokenizer + video processor + a chat template with `{"type": "video"}` blocks."""

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack
from transformers.utils import logging
from transformers.video_utils import VideoMetadata

from .video_processing_vidcomp import (
    INTERVAL_SLACK,
    VidCompVideoProcessor,
    VidCompVideosKwargs,
    VideoDecodeError,
    decode_frames_at,
    decode_thumbnails,
    pixel_settings,
)


logger = logging.get_logger(__name__)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for block in message['content'] %}"
    "{% if block['type'] == 'video' %}<video>"
    "{% elif block['type'] == 'text' %}{{ block['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class VidCompProcessorKwargs(ProcessingKwargs, total=False):
    videos_kwargs: VidCompVideosKwargs
    _defaults = {
        "text_kwargs": {"padding": False},
        "videos_kwargs": {"return_metadata": True},
    }


class VidCompProcessor(ProcessorMixin):
    r"""
    Tokenizes the text and prepares the videos for [`VidCompForConditionalGeneration`].

    The text holds one `video_token` per video. The model expands each to the number of tokens its compressor
    produces, which may depend on the video, so the processor does not need to know it.

    Args:
        video_processor ([`VidCompVideoProcessor`]): decodes and normalises the videos.
        tokenizer ([`PreTrainedTokenizerBase`]): the LLM's tokenizer; it must know `video_token`.
        chat_template (`str`, *optional*): a Jinja template that renders `{"type": "video"}` as `video_token`.
        video_token (`str`, *optional*, defaults to `"<video>"`): the placeholder written once per video.
        timestamps_in_prompt (`bool`, *optional*, defaults to `False`):
            Following FiLA-Video, write "This video samples N frames of a T-second video at t1, t2, ... seconds."
            before each video, from the decoded frames' real times.
    """

    def __init__(
        self,
        video_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        video_token: str = "<video>",
        timestamps_in_prompt: bool = False,
        **kwargs,
    ):
        self.video_token = video_token
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        self.timestamps_in_prompt = timestamps_in_prompt
        # Subclasses with more sub-processors (HICom's guide tokenizer) pass them on by keyword.
        sub_processors = {name: kwargs[name] for name in self.get_attributes() if name in kwargs}
        super().__init__(video_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **sub_processors)

    @classmethod
    def from_pretrained_parts(
        cls,
        vision_tower: str | os.PathLike,
        language_model: str | os.PathLike,
        video_token: str = "<video>",
        **video_processor_kwargs,
    ) -> "VidCompProcessor":
        r"""
        The processor matching `VidCompForConditionalGeneration.from_pretrained_parts` on the same parts: the LLM's
        tokenizer (with `video_token` added if absent, so both agree on its id) and a video processor with the
        vision tower's pixel settings (size, resampling, rescaling, normalisation) when it ships an image processor.

        Args:
            vision_tower: folder or Hub id of the vision tower.
            language_model: folder or Hub id of the LLM.
            video_processor_kwargs: overrides for [`VidCompVideoProcessor`], e.g. `fps` or `num_frames`.
        """
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(language_model)
        if video_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [video_token]})
        try:
            settings = pixel_settings(AutoImageProcessor.from_pretrained(vision_tower))
        except (OSError, ValueError):  # a tower saved without its image processor keeps our SigLIP defaults
            settings = {}
        video_processor = VidCompVideoProcessor(**{**settings, **video_processor_kwargs})
        return cls(video_processor=video_processor, tokenizer=tokenizer, video_token=video_token)

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos=None,
        frame_selector=None,
        **kwargs: Unpack[VidCompProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Returns `input_ids`, `attention_mask`, and with videos `pixel_values_videos`
        `(total_frames, 3, height, width)`, `video_num_frames` `(num_videos,)` and `video_timestamps`
        `(total_frames,)` in seconds; with `pad_to_square`, also `video_sizes` `(num_videos, 2)`, each video's
        (height, width) before letterboxing.

        `frame_selector` is a sampler that chooses frames while decoding (`selects_frames_at_decode`, such as the
        adaptive video sampler): each video is then decoded as thumbnails, the sampler's `plan` picks frames, and only
        those are decoded at full resolution. The `video-text-to-text` pipeline passes the model's sampler itself.
        """
        if text is None:
            raise ValueError("VidCompProcessor needs text; put one video placeholder in it per video.")
        texts = [text] if isinstance(text, str) else list(text)
        output_kwargs = self._merge_kwargs(
            VidCompProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        return_tensors = output_kwargs["text_kwargs"].pop("return_tensors", None)
        output_kwargs["videos_kwargs"].pop("return_tensors", None)

        video_list = flatten_videos(videos)
        num_placeholders = sum(t.count(self.video_token) for t in texts)
        if num_placeholders != len(video_list):
            raise ValueError(
                f"The text holds {num_placeholders} {self.video_token!r} placeholders for {len(video_list)} videos. "
                "Put exactly one placeholder per video, or use apply_chat_template with {'type': 'video'} blocks."
            )

        data = {}
        if video_list and frame_selector is not None:
            given = output_kwargs["videos_kwargs"].get("video_metadata") or [None] * len(video_list)
            selections = [select_frames(video, frame_selector, m) for video, m in zip(video_list, given)]
            video_list = [selection.frames for selection in selections]
            output_kwargs["videos_kwargs"].update(
                video_metadata=[selection.metadata for selection in selections], do_sample_frames=False
            )
        if video_list:
            output_kwargs["videos_kwargs"]["return_metadata"] = True
            video_inputs = self.video_processor(video_list, **output_kwargs["videos_kwargs"])
            metadata = video_inputs.pop("video_metadata")
            timestamps = [frame_timestamps(m, n) for m, n in zip(metadata, video_inputs["video_num_frames"].tolist())]
            video_inputs["video_timestamps"] = torch.from_numpy(np.concatenate(timestamps)).float()
            if "video_sizes" in video_inputs:
                # Letterboxing is undone from the stream's own frame size, as the release reads it; frames scaled
                # while decoding keep its aspect only to the pixel.
                video_inputs["video_sizes"] = torch.tensor([
                    [m.height, m.width] if m is not None and m.height and m.width else size
                    for m, size in zip(metadata, video_inputs["video_sizes"].tolist())
                ])
            if self.timestamps_in_prompt:
                texts = self.add_timestamp_sentences(texts, metadata, timestamps)
            data.update(video_inputs)

        data.update(self.tokenizer(texts, **output_kwargs["text_kwargs"]))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def add_timestamp_sentences(
        self, texts: list[str], metadata: list[VideoMetadata], timestamps: list[np.ndarray]
    ) -> list[str]:
        """Writes FiLA-Video's sentence about the sampled frames' times before each video placeholder, in order."""
        sentences = [
            f"This video samples {len(times)} frames of a {video_duration(m, times):.1f}-second video at "
            f"{', '.join(f'{t:.1f}' for t in times)} seconds.\n"
            for m, times in zip(metadata, timestamps)
        ]
        next_video = 0
        annotated = []
        for text in texts:
            parts = text.split(self.video_token)
            pieces = [parts[0]]
            for part in parts[1:]:
                pieces += [sentences[next_video], self.video_token, part]
                next_video += 1
            annotated.append("".join(pieces))
        return annotated

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs):
        return self.tokenizer.decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return self.tokenizer.model_input_names + self.video_processor.model_input_names + ["video_timestamps"]


@dataclass
class FrameSelection:
    r"""
    What a decode-time sampler chose of one video.

    Args:
        frames (`np.ndarray` of shape `(num_kept, height, width, 3)`, uint8): the chosen frames at full resolution.
        metadata (`VideoMetadata`): with `frames_indices` and `fps` giving the chosen frames' true times.
        plan (`ModelOutput`): the sampler's plan over all thumbnails (for AVS a `ShotPlan`: keep mask, shot ids,
            transition probabilities, shot starts).
        thumbnail_times (`np.ndarray` of shape `(num_thumbnails,)`): the time in seconds of every thumbnail the plan
            indexes.
        seconds (`dict[str, float]`): wall time of each step, for reports: `thumbnails` and `chosen frames` (the two
            decodes of a file) and `plan` (the sampler).
    """

    frames: np.ndarray
    metadata: VideoMetadata
    plan: object
    thumbnail_times: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


# Thumbnails of a decoded array are made this many frames at a time, so a long array is never copied in float.
THUMBNAIL_CHUNK = 256


def select_frames(video, frame_selector, metadata: VideoMetadata | dict | None = None) -> FrameSelection:
    r"""
    The frames `frame_selector.plan` keeps of one video. A file is streamed twice: once as thumbnails at the selector's
    `decode_fps`, once for the chosen frames only, at full resolution. An array (`(frames, height, width, 3)` or
    `(frames, 3, height, width)`, uint8) is already decoded: its frames are timed by the frame rate in `metadata` (1
    fps without one), and the first of every `1 / decode_fps` seconds is thumbnailed, as a file's would be, so an
    array and the file it came from give the same shots.
    """
    detector = frame_selector.shot_detector.config
    if isinstance(video, (str, os.PathLike)):
        clock = time.perf_counter()
        thumbnails = decode_thumbnails(
            video, fps=frame_selector.config.decode_fps, width=detector.frame_width, height=detector.frame_height
        )
        seconds = {"thumbnails": time.perf_counter() - clock}
        clock = time.perf_counter()
        plan = frame_selector.plan(torch.from_numpy(thumbnails.frames), torch.from_numpy(thumbnails.timestamps))
        seconds["plan"] = time.perf_counter() - clock
        keep = plan.keep.numpy()
        chosen = thumbnails.frame_indices[keep]
        found = thumbnails.metadata
        selected = VideoMetadata(
            total_num_frames=found.total_num_frames, fps=found.fps, duration=found.duration, width=found.width,
            height=found.height, video_backend="pyav", frames_indices=chosen,
        )
        clock = time.perf_counter()
        # By ordinal: on a variable-rate file two chosen frames can share a frame number (a time in frames).
        frames = decode_frames_at(video, thumbnails.frame_ordinals[keep])
        seconds["chosen frames"] = time.perf_counter() - clock
        return FrameSelection(frames, selected, plan, thumbnails.timestamps, seconds)

    frames = np.asarray(video)
    if frames.ndim == 4 and frames.shape[1] == 3 and frames.shape[-1] != 3:
        frames = frames.transpose(0, 2, 3, 1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoDecodeError(
            f"A video array must be (frames, height, width, 3) or (frames, 3, height, width) with at least one frame "
            f"for frame selection, got shape {tuple(frames.shape)}."
        )
    fps = (metadata.get("fps") if isinstance(metadata, dict) else getattr(metadata, "fps", None)) or None
    if fps is None:
        logger.warning_once(
            "A video array came without a frame rate, so its frames are taken to be 1 second apart for shot "
            "detection. Pass `video_metadata` (with `fps`) alongside decoded frames."
        )
    times = np.arange(len(frames), dtype=np.float64) / (fps or 1.0)
    # Shots are found at `decode_fps`, as a file is thumbnailed: the first frame of every 1 / decode_fps seconds.
    scanned = first_frame_per_interval(times, frame_selector.config.decode_fps)
    thumbnails = torch.cat([
        torch.nn.functional.interpolate(
            torch.from_numpy(frames[chunk]).permute(0, 3, 1, 2).float(),
            size=(detector.frame_height, detector.frame_width), mode="bicubic", antialias=True,
        ).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        for chunk in np.array_split(scanned, max(1, -(-len(scanned) // THUMBNAIL_CHUNK)))
    ])
    plan = frame_selector.plan(thumbnails, torch.from_numpy(times[scanned]))
    chosen = scanned[plan.keep.numpy()]
    selected = VideoMetadata(total_num_frames=len(frames), fps=fps or 1.0, frames_indices=chosen)
    return FrameSelection(frames[chosen], selected, plan, times[scanned])


def first_frame_per_interval(times: np.ndarray, fps: float) -> np.ndarray:
    r"""
    Indices of the first frame in each `1 / fps` seconds that holds one: the frames `decode_thumbnails` keeps of a
    file, for frames already decoded. `times` (seconds, increasing) has shape `(num_frames,)`.
    """
    interval = np.floor(times * fps + INTERVAL_SLACK)
    return np.flatnonzero(np.concatenate([[True], interval[1:] != interval[:-1]]))


def flatten_videos(videos) -> list:
    """One flat list of videos from `None`, a single video, a list of videos or a list of lists (one per text)."""
    if videos is None:
        return []
    if isinstance(videos, (str, np.ndarray, torch.Tensor)):
        return [videos]
    flat = []
    for item in videos:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return flat


def frame_timestamps(metadata: VideoMetadata, num_frames: int) -> np.ndarray:
    """Seconds from the start of the video of each returned frame; 1 fps is assumed when the frame rate is unknown."""
    indices = metadata.frames_indices if metadata.frames_indices is not None else np.arange(num_frames)
    indices = np.asarray(indices, dtype=np.float64)
    if len(indices) != num_frames:
        raise VideoDecodeError(f"Metadata lists {len(indices)} frames but {num_frames} were decoded.")
    if not metadata.fps:
        logger.warning_once(
            "A video came without a frame rate, so its frames are taken to be 1 second apart. Pass "
            "`video_metadata` (with `fps`) alongside decoded frames to get real timestamps."
        )
        return indices
    return indices / metadata.fps


def video_duration(metadata: VideoMetadata, timestamps: np.ndarray) -> float:
    if metadata.duration:
        return float(metadata.duration)
    if metadata.fps and metadata.total_num_frames:
        return metadata.total_num_frames / metadata.fps
    return float(timestamps[-1]) + 1.0


__all__ = ["VidCompProcessor"]
