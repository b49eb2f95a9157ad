r"""The `video-text-to-text` pipeline, which Transformers 5.x does not ship."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline


class VideoTextToTextPipeline(ImageTextToTextPipeline):
    r"""
    Answers questions about videos.

    ```python
    >>> pipe = pipeline("video-text-to-text", model="path/to/checkpoint", trust_remote_code=True)
    >>> chat = [{"role": "user", "content": [{"type": "video", "path": "clip.mp4"},
    ...                                      {"type": "text", "text": "What happens?"}]}]
    >>> pipe(chat, max_new_tokens=20)
    [{'input_text': [{'role': 'user', 'content': [...]}], 'generated_text': '...'}]
    >>> pipe(videos="clip.mp4", text="What happens?")  # the same chat, built for you
    ```

    It takes every call form of Transformers' `image-text-to-text` pipeline, with videos in place of images:

    - `pipe(chat)`, `pipe(text=chat)` or `pipe([chat1, chat2], batch_size=2)`, each chat a list of messages whose
      user turns hold `{"type": "video", "path": ...}` and `{"type": "text", "text": ...}` blocks;
    - `pipe(videos=..., text=...)`, a video (a path or a `(frames, height, width, 3)` uint8 array) or a list of them,
      paired with a question or a list of them;
    - `pipe({"video": ..., "text": ...})` or a list of such pairs.

    By default only the newly generated text is returned; with `return_full_text=True` a chat comes back with the
    assistant's turn appended (the `videos=`/`text=` forms are chats too). `max_new_tokens=` and
    `generate_kwargs=` reach `generate`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Batched prompts are padded by the tokenizer's side; a decoder generates after the prompt, so pad on the
        # left, as Transformers' text-generation pipeline does.
        if self.tokenizer is not None and self.tokenizer.padding_side == "right":
            self.tokenizer.padding_side = "left"

    def __call__(self, videos=None, text=None, **kwargs) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        kwargs.setdefault("return_full_text", False)
        if text is None and is_chat(videos):  # pipe(chat): the chat came as the first, positional, argument
            videos, text = None, videos
        if is_chat(text):
            if videos is not None:
                raise ValueError(
                    "Got a chat and videos= apart. Put each video in the chat, as a {'type': 'video', 'path': ...} "
                    "block of a user turn, and pass the chat alone."
                )
            return super().__call__(text=text, **kwargs)
        if text is None and is_video_question(videos):  # {"video": ..., "text": ...} or a list of them
            pairs = [videos] if isinstance(videos, dict) else videos
            pair_videos = [pair["video"] if "video" in pair else pair["videos"] for pair in pairs]
            pair_questions = [pair["text"] for pair in pairs]
            if isinstance(videos, dict):  # one pair gets one answer, as one video does
                videos, text = pair_videos[0], pair_questions[0]
            else:
                videos, text = pair_videos, pair_questions
        if videos is None and isinstance(text, str | list) and text:  # text alone: plain text generation
            return super().__call__(text=text, **kwargs)
        if videos is None or text is None:
            raise ValueError(f"video-text-to-text needs a question about the video. {ACCEPTED_CALLS}")
        single = isinstance(videos, (str, np.ndarray, torch.Tensor)) and isinstance(text, str)
        video_list = [videos] if isinstance(videos, (str, np.ndarray, torch.Tensor)) else list(videos)
        text_list = [text] if isinstance(text, str) else list(text)
        if len(video_list) != len(text_list):
            raise ValueError(f"Got {len(video_list)} videos for {len(text_list)} questions; pair them one to one.")
        chats = [
            [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]
            for video, question in zip(video_list, text_list)
        ]
        return super().__call__(text=chats[0] if single else chats, **kwargs)

    def preprocess(self, inputs=None, timeout=None, continue_final_message=None, **processing_kwargs):
        # A sampler that selects frames while decoding (the adaptive video sampler) must see the video before the
        # processor decodes it at full resolution: hand it to the processor.
        sampler = getattr(getattr(self.model, "model", None), "sampler", None)
        if getattr(sampler, "selects_frames_at_decode", False):
            processor_kwargs = dict(processing_kwargs.pop("processor_kwargs", None) or {})
            processor_kwargs.setdefault("frame_selector", sampler)
            processing_kwargs["processor_kwargs"] = processor_kwargs
        return super().preprocess(inputs, timeout=timeout, continue_final_message=continue_final_message, **processing_kwargs)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        iterator = super().get_iterator(
            inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
        )
        if batch_size is not None and batch_size > 1:
            # Transformers pads each input along its second axis as if the first were the batch. A video's frames are
            # its first axis, and the model takes the frames of all videos one after another: concatenate them.
            loader = iterator.loader.loader
            loader.collate_fn = concatenating_frames(loader.collate_fn)
        return iterator


ACCEPTED_CALLS = (
    "Call it as Transformers' image-text-to-text pipeline, with videos in place of images: "
    "pipe(chat) or pipe(text=chat), where chat is a list of {'role', 'content'} messages whose user turn holds a "
    "{'type': 'video', 'path': ...} block and a {'type': 'text', 'text': ...} block; pipe([chat1, chat2]); "
    "pipe(videos=video, text=question) or pipe(videos=[video1, video2], text=[question1, question2]); "
    "pipe({'video': video, 'text': question}) or a list of those. A video is a path or a (frames, height, width, 3) "
    "uint8 array."
)


def is_chat(value: Any) -> bool:
    r"""A chat (a list of messages with roles) or a list of chats."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    first = value[0]
    if isinstance(first, (list, tuple)) and first:
        first = first[0]
    return isinstance(first, dict) and "role" in first


def is_video_question(value: Any) -> bool:
    r"""A `{"video": ..., "text": ...}` pair or a list of them."""
    pairs = [value] if isinstance(value, dict) else value
    return (
        isinstance(pairs, (list, tuple))
        and bool(pairs)
        and all(isinstance(pair, dict) and "text" in pair and ({"video", "videos"} & pair.keys()) for pair in pairs)
    )


def concatenating_frames(collate: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
    r"""Wraps a pipeline's collate function so that `pixel_values_videos` are concatenated, not padded."""

    def collate_videos(items: list[dict]) -> dict:
        batch = collate([{k: v for k, v in item.items() if k != "pixel_values_videos"} for item in items])
        if "pixel_values_videos" in items[0]:
            batch["pixel_values_videos"] = torch.cat([item["pixel_values_videos"] for item in items])
        return batch

    return collate_videos


__all__ = ["VideoTextToTextPipeline"]
