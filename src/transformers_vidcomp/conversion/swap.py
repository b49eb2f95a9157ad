r"""
`vidcomp swap CHECKPOINT OUT --compressor SPEC`: the same model with another sampler or compressor.

The vision tower, the LLM and (when its input width still fits) the projector keep their weights; the new
component starts fresh. Loading goes through `from_pretrained(..., config=new_config, ignore_mismatched_sizes=True)`,
and every key it could not carry over must belong to a swapped slot, or the swap is refused.
"""

import json
import os
from pathlib import Path

from ..modeling import COMPRESSOR_REGISTRY, SAMPLER_REGISTRY, VidCompConfig, VidCompForConditionalGeneration
from ..processors import VidCompProcessor
from .converters import ConvertedCheckpoint, LocalCheckpointExporter, SourceCheckpointError


class ComponentSpecError(ValueError):
    """A `--sampler` / `--compressor` value is neither a registered method nor a JSON config of one."""


# Slots whose weights may be dropped or created by a swap; anything else changing means the swap broke the model.
SWAPPABLE_PREFIXES = ("model.sampler.", "model.compressor.", "model.multi_modal_projector.")


def component_config(spec: str | dict, registry: dict, kind: str) -> dict:
    r"""
    A component config from a registered `model_type` (its defaults) or a JSON object with a `model_type`.
    """
    if isinstance(spec, str):
        spec = spec.strip()
        if spec.startswith("{"):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as error:
                raise ComponentSpecError(f"The {kind} config is not valid JSON: {error}.") from error
        else:
            spec = {"model_type": spec}
    model_type = spec.get("model_type")
    if model_type not in registry:
        raise ComponentSpecError(
            f"Unknown {kind} {model_type!r}. Registered {kind}s: {', '.join(sorted(registry))} (`vidcomp methods`)."
        )
    return registry[model_type].config_class(**{k: v for k, v in spec.items() if k != "model_type"}).to_dict()


def swap_components(
    checkpoint: str | os.PathLike,
    sampler: str | dict | None = None,
    compressor: str | dict | None = None,
) -> ConvertedCheckpoint:
    r"""
    Loads `checkpoint` with its sampler and/or compressor replaced.

    Returns:
        The model, its processor and card information; `dropped_keys` lists the old weights left behind.
    """
    checkpoint = Path(checkpoint)
    exporter = LocalCheckpointExporter()
    config = exporter.build_config(checkpoint).to_dict()
    if sampler is not None:
        config["sampler_config"] = component_config(sampler, SAMPLER_REGISTRY, "sampler")
    if compressor is not None:
        config["compressor_config"] = component_config(compressor, COMPRESSOR_REGISTRY, "compressor")
    new_config = VidCompConfig.from_dict(config)
    model, loading = VidCompForConditionalGeneration.from_pretrained(
        checkpoint, config=new_config, ignore_mismatched_sizes=True, output_loading_info=True
    )
    changed = [*loading["missing_keys"], *loading["unexpected_keys"], *(key for key, *_ in loading["mismatched_keys"])]
    outside = sorted(key for key in changed if not key.startswith(SWAPPABLE_PREFIXES))
    if outside:
        raise SourceCheckpointError(
            f"Swapping into {str(checkpoint)!r} would change weights outside the sampler, compressor and projector: "
            f"{outside[:10]}. The checkpoint does not match its own config."
        )
    swapped = ", ".join(
        f"the {kind} `{getattr(new_config, f'{kind}_config').model_type}`"
        for kind, given in (("sampler", sampler), ("compressor", compressor)) if given is not None
    )
    info = exporter.card_info(checkpoint, new_config)
    info.source = (
        f"`{checkpoint.name}` with {swapped} swapped in by `vidcomp swap`. The vision tower and LLM are unchanged; "
        "train the new parts with the `compressor+projector` stage before use."
    )
    return ConvertedCheckpoint(
        model=model.eval(),
        processor=VidCompProcessor.from_pretrained(checkpoint),
        card_info=info,
        dropped_keys=sorted(loading["unexpected_keys"]),
    )
