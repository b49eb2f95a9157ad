r"""
`vidcomp swap CHECKPOINT OUT --compressor SPEC`: the same model with another sampler or compressor.

The vision tower, the LLM and (when its input width still fits) the projector keep their weights; the new
component starts fresh. Loading goes through `from_pretrained(..., config=new_config, ignore_mismatched_sizes=True)`,
and every key it could not carry over must belong to a swapped slot, or the swap is refused.
"""

import os
from pathlib import Path

from ..modeling import VidCompConfig, VidCompForConditionalGeneration
from ..modeling.parts_vidcomp import ComponentSpecError, component_config
from ..processors import load_processor
from .converters import ConvertedCheckpoint, LocalCheckpointExporter, SourceCheckpointError


# The projector may be re-initialised too: a new compressor can change the width it reads.
PROJECTOR_PREFIX = "model.multi_modal_projector."


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
    swaps = {kind: spec for kind, spec in (("sampler", sampler), ("compressor", compressor)) if spec is not None}
    if not swaps:
        raise ComponentSpecError("Nothing to swap: give a sampler, a compressor or both.")
    config = exporter.build_config(checkpoint).to_dict()
    for kind, spec in swaps.items():
        config[f"{kind}_config"] = component_config(spec, kind)
    new_config = VidCompConfig.from_dict(config)
    model, loading = VidCompForConditionalGeneration.from_pretrained(
        checkpoint, config=new_config, ignore_mismatched_sizes=True, output_loading_info=True
    )
    changed = [*loading["missing_keys"], *loading["unexpected_keys"], *(key for key, *_ in loading["mismatched_keys"])]
    allowed = (*(f"model.{kind}." for kind in swaps), PROJECTOR_PREFIX)
    outside = sorted(key for key in changed if not key.startswith(allowed))
    if outside:
        raise SourceCheckpointError(
            f"Swapping the {' and '.join(swaps)} of {str(checkpoint)!r} would change other weights: {outside[:10]}. "
            "The checkpoint does not match its own config."
        )
    swapped = " and ".join(f"the {kind} `{getattr(new_config, f'{kind}_config').model_type}`" for kind in swaps)
    info = exporter.card_info(checkpoint, new_config)
    info.source = (
        f"`{checkpoint.name}` with {swapped} swapped in by `vidcomp swap`. The vision tower and LLM are unchanged; "
        "train the new parts with the `compressor+projector` stage before use."
    )
    if any(key.startswith(PROJECTOR_PREFIX) for key in changed):
        info.source += " The projector was re-initialised: the new component changed the width it reads."
    return ConvertedCheckpoint(
        model=model.eval(),
        processor=load_processor(checkpoint),
        card_info=info,
        dropped_keys=sorted(loading["unexpected_keys"]),
    )
