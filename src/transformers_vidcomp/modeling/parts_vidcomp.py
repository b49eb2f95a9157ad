r"""
Loading the pretrained parts a composite model is assembled from (`from_pretrained_parts`): a vision tower, an LLM,
and optionally a sampler, a compressor and a projector. Each part is a local folder, a Hub id, or a loaded model;
loading always goes through the real `from_pretrained` calls.
"""

import json
import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedConfig, PreTrainedModel

from .components_vidcomp import COMPRESSOR_REGISTRY, SAMPLER_REGISTRY, VidCompComponent


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


class ComponentSpecError(PartError):
    """A sampler or compressor spec is neither a registered method nor a valid JSON config of one."""


COMPONENT_REGISTRIES = {"sampler": SAMPLER_REGISTRY, "compressor": COMPRESSOR_REGISTRY}


def is_component_spec(text: str, kind: str) -> bool:
    """Whether `text` names a registered method or holds a JSON config, rather than a folder or Hub id."""
    return text.strip().startswith("{") or text in COMPONENT_REGISTRIES[kind]


def component_config(spec: str | dict, kind: str) -> dict:
    r"""
    A validated sampler or compressor config from a registered `model_type` (its defaults), a JSON object, or a
    dict with a `model_type`. Unknown keys and invalid values are errors, not silently dropped.
    """
    registry = COMPONENT_REGISTRIES[kind]
    if isinstance(spec, str):
        text = spec.strip()
        try:
            spec = json.loads(text) if text.startswith("{") else {"model_type": text}
        except json.JSONDecodeError as error:
            raise ComponentSpecError(f"The {kind} config is not valid JSON: {error}.") from error
    model_type = spec.get("model_type")
    if model_type not in registry:
        raise ComponentSpecError(
            f"Unknown {kind} {model_type!r}. Registered {kind}s: {', '.join(sorted(registry))} (`vidcomp methods`)."
        )
    config_class = registry[model_type].config_class
    settings = {key: value for key, value in spec.items() if key != "model_type"}
    unknown = sorted(set(settings) - set(config_class.__dataclass_fields__))
    if unknown:
        raise ComponentSpecError(f"{model_type} has no setting(s) {unknown}; its settings are in `{config_class.__name__}`.")
    try:
        return config_class(**settings).to_dict()
    except Exception as error:  # strict dataclass validation and __post_init__ checks raise several types
        raise ComponentSpecError(f"Invalid {kind} config {spec}: {error}") from error


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
        model = part
    else:
        config = AutoConfig.from_pretrained(part)
        model = AutoModel.from_pretrained(part, config=getattr(config, "vision_config", config))
    if model.main_input_name != "pixel_values" or not hasattr(model.config, "patch_size"):
        raise PartError(f"vision_tower {part_name(part)!r} is a {type(model).__name__}, not a patch-based vision model.")
    return model


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
    The id of `video_token` in the LLM's tokenizer (from its folder or Hub id, also for a loaded model), added as
    a special token if the tokenizer lacks it (as `VidCompProcessor.from_pretrained_parts` does), and the
    tokenizer's size.
    """
    source = part_name(part)
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
    if isinstance(part, PreTrainedConfig):
        return part.to_dict(), None
    if isinstance(part, dict) or (isinstance(part, str) and is_component_spec(part, kind)):
        return component_config(part, kind), None
    module = part if isinstance(part, nn.Module) else AutoModel.from_pretrained(part)
    if not isinstance(module, VidCompComponent):
        raise PartError(f"{kind} must be a transformers-vidcomp {kind}, got {type(module).__name__}.")
    return module.config.to_dict(), module


def load_projector_state(part: str | os.PathLike | nn.Module) -> dict[str, torch.Tensor]:
    """Projector weights: a module's state dict, or a safetensors file holding `linear_1.*` and `linear_2.*`."""
    if isinstance(part, nn.Module):
        return part.state_dict()
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(part))
    except (OSError, ValueError, RuntimeError) as error:
        raise PartError(f"Could not read projector weights from {os.fspath(part)!r}: {error}") from error
