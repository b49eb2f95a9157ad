r"""Turns chat examples with videos into a training batch whose labels cover only the assistant's answers."""

from dataclasses import dataclass
from typing import Any

import torch
from transformers import ProcessorMixin


@dataclass
class VidCompDataCollator:
    r"""
    Collates examples of the form `{"messages": [...]}`, where the messages hold `{"type": "video"}` blocks and end
    with the assistant's answer, into `input_ids`, `attention_mask`, video tensors and `labels`.

    Labels are -100 everywhere except on the final assistant answer (and the end-of-turn token after it), so the
    loss teaches the answer, not the question. Batches are right-padded.

    Args:
        processor ([`VidCompProcessor`]): the model's processor.
        processor_kwargs (`dict`, *optional*): extra arguments for the processor, e.g. `{"num_frames": 8}`.
    """

    processor: ProcessorMixin
    processor_kwargs: dict | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        conversations = [example["messages"] for example in examples]
        for conversation in conversations:
            if not conversation or conversation[-1]["role"] != "assistant":
                raise ValueError("Each training example must end with the assistant's answer to learn from.")
        kwargs = {"padding": True, "padding_side": "right", **(self.processor_kwargs or {})}
        batch = self.processor.apply_chat_template(
            conversations, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs=kwargs
        )
        prompts = self.processor.apply_chat_template(
            [conversation[:-1] for conversation in conversations], tokenize=False, add_generation_prompt=True
        )
        prompt_lengths = torch.tensor(
            [len(ids) for ids in self.processor.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        )
        positions = torch.arange(batch["input_ids"].shape[1])
        is_answer = (positions[None, :] >= prompt_lengths[:, None]) & batch["attention_mask"].bool()
        batch["labels"] = batch["input_ids"].masked_fill(~is_answer, -100)
        return dict(batch)
