r"""Tiny random Qwen2.5-VL and Qwen3-VL checkpoints built from Transformers' own classes, for tests and benchmarks.

They are saved as Transformers-format folders (model, processor, tokenizer, chat template), the kind
`vidcomp convert qwen2_5_vl` / `qwen3_vl` reads.
"""

import os

import torch

from .tiny import END_OF_TEXT, IM_END, IM_START, build_tiny_tokenizer


VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"

# The part of Qwen's chat template that matters here: a video block is one placeholder between vision start/end.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for block in message['content'] %}"
    "{% if block['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif block['type'] == 'text' %}{{ block['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Two sizes per family: a small grid with tied embeddings, and a larger grid, deeper encoder and separate head.
QWEN_VARIANTS = {
    "small": dict(vision_hidden=32, vision_depth=2, text_layers=2, tie=True, max_pixels=28 * 28 * 6),
    "large": dict(vision_hidden=48, vision_depth=3, text_layers=3, tie=False, max_pixels=28 * 28 * 20),
}


def tiny_qwen_tokenizer():
    tokenizer = build_tiny_tokenizer(special_tokens=(IM_START, IM_END, VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD))
    tokenizer.pad_token = END_OF_TEXT
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_qwen_vl(family: str, folder: str | os.PathLike, variant: str = "small", seed: int = 0):
    r"""
    Builds, saves to `folder` and returns a tiny random `Qwen2_5_VLForConditionalGeneration` (`family="qwen2_5_vl"`)
    or `Qwen3VLForConditionalGeneration` (`"qwen3_vl"`) and its Transformers processor.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    settings = QWEN_VARIANTS[variant]
    tokenizer = tiny_qwen_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD)}
    hidden = 32
    text = {
        "vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 37, "num_hidden_layers":
        settings["text_layers"], "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings":
        settings["tie"], "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
        "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
    }  # fmt: skip
    vision = {
        "depth": settings["vision_depth"], "hidden_size": settings["vision_hidden"], "num_heads": 4,
        "intermediate_size": 40, "out_hidden_size": hidden, "temporal_patch_size": 2, "spatial_merge_size": 2,
    }  # fmt: skip
    common = dict(
        video_token_id=ids[VIDEO_PAD], image_token_id=ids[IMAGE_PAD], vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END], tie_word_embeddings=settings["tie"],
    )  # fmt: skip
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]}
        vision.update(patch_size=14, window_size=56, fullatt_block_indexes=[settings["vision_depth"] - 1],
                      tokens_per_second=2)  # fmt: skip
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        model_class, factor = Qwen2_5_VLForConditionalGeneration, 28
        size = {"shortest_edge": factor * factor * 2, "longest_edge": settings["max_pixels"]}
        video_processor = Qwen2VLVideoProcessor(
            size=size, patch_size=14, temporal_patch_size=2, merge_size=2, fps=2, cap_pixels_per_frame=True
        )
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer, video_processor=video_processor,
            chat_template=QWEN_CHAT_TEMPLATE,
        )  # fmt: skip
    elif family == "qwen3_vl":
        text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                                  "mrope_interleaved": True})  # fmt: skip
        vision.update(patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0, 1][: settings["vision_depth"] - 1])
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **common)
        model_class, factor = Qwen3VLForConditionalGeneration, 32
        size = {"shortest_edge": factor * factor * 4, "longest_edge": settings["max_pixels"] * 16}
        video_processor = Qwen3VLVideoProcessor(
            size=size, patch_size=16, temporal_patch_size=2, merge_size=2, fps=2, cap_pixels_per_frame=True
        )
        processor = Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=16), tokenizer=tokenizer, video_processor=video_processor,
            chat_template=QWEN_CHAT_TEMPLATE,
        )  # fmt: skip
    else:
        raise ValueError(f"family must be 'qwen2_5_vl' or 'qwen3_vl', got {family!r}.")
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


__all__ = ["QWEN_CHAT_TEMPLATE", "QWEN_VARIANTS", "build_tiny_qwen_vl", "tiny_qwen_tokenizer"]
