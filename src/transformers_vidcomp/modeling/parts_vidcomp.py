r"""
Loading the pretrained parts a composite model is assembled from (`from_pretrained_parts`): a vision tower, an LLM,
and optionally a sampler, a compressor and a projector. Each part is a local folder, a Hub id, or a loaded model;
loading always goes through the real `from_pretrained` calls.
"""

import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from .components_vidcomp import VidCompComponent


PartSource = str | os.PathLike | PreTrainedModel


# The modules of `VidCompForConditionalGeneration` each part fills.
PART_MODULES: dict[str, tuple[str, ...]] = {
    "vision_tower": ("model.vision_tower",),
    "language_model": ("model.language_model", "lm_head"),
    "sampler": ("model.sampler",),
    "compressor": ("model.compressor",),
    "projector": ("model.multi_modal_projector",),
}


def part_module_names(parts: dict[str, str] | None) -> list[str]:
    """The module names filled by the pretrained `parts` (a `config.parts` mapping)."""
    return [name for part in (parts or {}) for name in PART_MODULES[part]]


class PartError(ValueError):
    """A part given to `from_pretrained_parts` is not what its slot needs."""


def part_name(part: PartSource | nn.Module | PreTrainedConfig | dict) -> str:
    """Where a part came from, for `config.parts`: its path or Hub id, else its class."""
    if isinstance(part, (str, os.PathLike)):
        return os.fspath(part)
    name = getattr(part, "name_or_path", None) or getattr(getattr(part, "config", None), "_name_or_path", None)
    return name or type(part).__name__


def load_vision_tower(part: PartSource) -> PreTrainedModel:
    r"""
    A vision model: as given, or loaded with `AutoModel` from a vision checkpoint or from the vision half of a
    two-tower checkpoint (e.g. a full SigLIP, whose `vision_config` is used).
    """
    if isinstance(part, PreTrainedModel):
        if hasattr(part.config, "vision_config"):
            raise PartError(
                f"vision_tower is a two-tower {type(part).__name__}; pass its vision model (e.g. SiglipVisionModel) "
                "or the checkpoint path, from which the vision half is loaded."
            )
        return part
    config = AutoConfig.from_pretrained(part)
    return AutoModel.from_pretrained(part, config=getattr(config, "vision_config", config))


def load_language_model(part: PartSource) -> PreTrainedModel:
    """A causal LM (with its output head): as given, or loaded with `AutoModelForCausalLM`."""
    model = part if isinstance(part, PreTrainedModel) else AutoModelForCausalLM.from_pretrained(part)
    if model.get_output_embeddings() is None:
        raise PartError(
            f"language_model is a {type(model).__name__}, which has no output head; pass a causal LM "
            "(e.g. Qwen2ForCausalLM) or its checkpoint path."
        )
    return model


def video_token_id_for(part: PartSource, video_token: str) -> tuple[int, int]:
    r"""
    The id of `video_token` in the LLM's tokenizer, added as a special token if the tokenizer lacks it (as
    `VidCompProcessor` does when built from the same parts), and the tokenizer's size.
    """
    source = part if isinstance(part, (str, os.PathLike)) else part_name(part)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise PartError(
            f"Could not load the tokenizer of language_model {source!r} to find {video_token!r}: {error}. Pass "
            "video_token_id, or a language model saved with its tokenizer."
        ) from error
    if video_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [video_token]})
    return tokenizer.convert_tokens_to_ids(video_token), len(tokenizer)


def load_component(part: PartSource | PreTrainedConfig | dict | VidCompComponent | None, kind: str):
    r"""
    A sampler or compressor slot: `None` (the config default), a config or dict (built fresh), a loaded component,
    or a folder / Hub id saved with `save_pretrained` (loaded with `AutoModel`).

    Returns:
        `(config_or_none, module_or_none)`: a module only when pretrained weights were loaded or given.
    """
    if part is None:
        return None, None
    if isinstance(part, dict):
        return part, None
    if isinstance(part, PreTrainedConfig):
        return part.to_dict(), None
    module = part if isinstance(part, nn.Module) else AutoModel.from_pretrained(part)
    if not isinstance(module, VidCompComponent):
        raise PartError(f"{kind} must be a transformers-vidcomp {kind}, got {type(module).__name__}.")
    return module.config.to_dict(), module


def load_projector_state(part: str | os.PathLike | nn.Module) -> dict[str, torch.Tensor]:
    """Projector weights: a module's state dict, or a safetensors file holding `linear_1.*` and `linear_2.*`."""
    if isinstance(part, nn.Module):
        return part.state_dict()
    from safetensors.torch import load_file

    return load_file(os.fspath(part))
