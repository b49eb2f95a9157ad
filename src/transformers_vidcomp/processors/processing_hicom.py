r"""HICom's processor: [`VidCompProcessor`] plus the guide text, tokenized for the compressor's own text encoder."""

import re

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

from .processing_vidcomp import VidCompProcessor


logger = logging.get_logger(__name__)

# Lines that are answer options or instructions about them, not part of the question (MVBench / Video-MME style).
DEFAULT_GUIDE_DROP_PATTERNS = (
    r"^\s*(?:\([A-H]\)|[A-H][\.\)])\s.*$",
    r"^\s*(?:Options|Choices)\s*:?\s*$",
    r"^.*\b[Aa]nswer with the option.*$",
    r"^.*\b[Bb]est option.*$",
)
CHAT_TURN = re.compile(r"<\|im_start\|>[^\n]*\n(?P<content>.*?)(?:<\|im_end\|>|$)", re.DOTALL)


class HIComProcessor(VidCompProcessor):
    r"""
    A [`VidCompProcessor`] that also writes, for each video, its guide text in the guide encoder's vocabulary:
    `guide_input_ids` and `guide_attention_mask` of shape `(num_videos, guide_max_length)`, which the model hands to
    HICom's compressor. As in the released evaluation, the guide is the user's question without the answer options.

    The guide of a video is the chat turn that holds it (the whole text without chat markup), without the video
    placeholder, and without lines matching `guide_drop_patterns`. Give `guide_text=[...]` (one per video) to
    `__call__` to set it yourself. Texts are padded to `guide_max_length` like SigLIP's training (the encoder reads
    the last position); longer texts are truncated, with a warning. An empty guide gets an all-zero mask, and the
    compressor then compresses that video unconditionally.

    Args:
        video_processor ([`VidCompVideoProcessor`]), tokenizer: as for [`VidCompProcessor`].
        guide_tokenizer ([`PreTrainedTokenizerBase`]): the guide encoder's tokenizer (SigLIP's for real checkpoints).
        guide_max_length (`int`, *optional*, defaults to 64): guide tokens per video (SigLIP's text length).
        guide_drop_patterns (`list[str]`, *optional*): regular expressions (multi-line) of lines to drop from the
            guide; defaults to answer options and answer-format instructions. An empty list keeps the whole turn.
    """

    def __init__(
        self,
        video_processor=None,
        tokenizer=None,
        guide_tokenizer=None,
        chat_template: str | None = None,
        video_token: str = "<video>",
        timestamps_in_prompt: bool = False,
        guide_max_length: int = 64,
        guide_drop_patterns: list[str] | None = None,
        **kwargs,
    ):
        if guide_tokenizer is None:
            raise ValueError("HIComProcessor needs a guide_tokenizer, the tokenizer of the compressor's text encoder.")
        if guide_max_length < 1:
            raise ValueError(f"guide_max_length must be at least 1, got {guide_max_length}.")
        self.guide_max_length = guide_max_length
        patterns = DEFAULT_GUIDE_DROP_PATTERNS if guide_drop_patterns is None else guide_drop_patterns
        self.guide_drop_patterns = list(patterns)
        super().__init__(
            video_processor,
            tokenizer,
            chat_template=chat_template,
            video_token=video_token,
            timestamps_in_prompt=timestamps_in_prompt,
            guide_tokenizer=guide_tokenizer,
            **kwargs,
        )

    def __call__(self, text=None, videos=None, guide_text: list[str] | None = None, **kwargs) -> BatchFeature:
        r"""
        Returns what [`VidCompProcessor`] returns, plus `guide_input_ids` and `guide_attention_mask`
        `(num_videos, guide_max_length)` when there are videos.

        Args:
            guide_text (`list[str]`, *optional*): the guide of each video, instead of the extracted question.
        """
        inputs = super().__call__(text=text, videos=videos, **kwargs)
        texts = [text] if isinstance(text, str) else list(text or [])
        guides = guide_text if guide_text is not None else self.guide_texts(texts)
        num_videos = sum(t.count(self.video_token) for t in texts)
        if not guides or num_videos == 0:
            return inputs
        if len(guides) != num_videos:
            raise ValueError(f"guide_text has {len(guides)} entries for {num_videos} videos; give one per video.")
        inputs.update(self.tokenize_guides(guides))
        return inputs

    def guide_texts(self, texts: list[str]) -> list[str]:
        """The extracted guide of every video, in order: its turn's text without placeholder, markup and options."""
        guides = []
        for text in texts:
            turns = [m.group("content") for m in CHAT_TURN.finditer(text)] or [text]
            for turn in turns:
                guides.extend([self.question(turn)] * turn.count(self.video_token))
        return guides

    def question(self, turn: str) -> str:
        text = turn.replace(self.video_token, " ")
        for pattern in self.guide_drop_patterns:
            text = re.sub(pattern, "", text, flags=re.MULTILINE)
        return " ".join(text.split())

    def tokenize_guides(self, guides: list[str]) -> dict[str, torch.Tensor]:
        max_length = self.guide_max_length
        lengths = [len(ids) for ids in self.guide_tokenizer(guides)["input_ids"]]
        too_long = [i for i, n in enumerate(lengths) if n > max_length]
        if too_long:
            logger.warning(
                f"The guide text of video(s) {too_long} has {[lengths[i] for i in too_long]} tokens; it is truncated "
                f"to the guide tokenizer's {max_length}. Shorten the question or pass guide_text."
            )
        input_ids = self.guide_tokenizer(
            guides,
            padding="max_length",
            padding_side="right",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )["input_ids"]
        kept = torch.tensor([min(n, max_length) if g else 0 for n, g in zip(lengths, guides)])
        attention_mask = (torch.arange(max_length)[None, :] < kept[:, None]).long()
        return {"guide_input_ids": input_ids, "guide_attention_mask": attention_mask}

    @property
    def model_input_names(self) -> list[str]:
        return super().model_input_names + ["guide_input_ids", "guide_attention_mask"]


__all__ = ["HIComProcessor"]
