r"""The `video-text-to-text` pipeline, which Transformers 5.x does not ship."""

from typing import Any

import numpy as np
import torch
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline


class VideoTextToTextPipeline(ImageTextToTextPipeline):
    r"""
    Answers questions about videos.

    ```python
    >>> pipe = pipeline("video-text-to-text", model="path/to/checkpoint", trust_remote_code=True)
    >>> pipe(videos="clip.mp4", text="What happens?")
    [{'input_text': 'What happens?', 'generated_text': '...'}]
    >>> pipe(text=[{"role": "user", "content": [{"type": "video", "path": "clip.mp4"},
    ...                                         {"type": "text", "text": "What happens?"}]}])
    ```

    `videos` is a path, a `(frames, height, width, 3)` uint8 array, or a list of those, paired with `text` (a string
    or a list of strings). `text` may instead be one chat, or a list of chats, with `{"type": "video"}` blocks. By
    default only the newly generated text is returned.
    """

    def __call__(self, videos=None, text=None, **kwargs) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        kwargs.setdefault("return_full_text", False)
        if videos is None:
            return super().__call__(text=text, **kwargs)
        if text is None:
            raise ValueError("video-text-to-text needs a question: pass text= along with videos=.")
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


__all__ = ["VideoTextToTextPipeline"]
