r"""Training stages: which parts of a [`VidCompForConditionalGeneration`] learn, chosen by one name.

- `projector`: align the projector alone (vision tower, compressor and LLM frozen), LLaVA's stage 1;
- `compressor`: train the compressor (and a sampler with weights) alone;
- `compressor+projector+llm`: everything but the vision tower, the usual instruction-tuning stage.
"""

from transformers import PreTrainedModel


class UnknownStageError(ValueError):
    """The training stage name is not one of `TRAINING_STAGES`."""


TRAINING_STAGES: dict[str, tuple[str, ...]] = {
    "projector": ("multi_modal_projector",),
    "compressor": ("sampler", "compressor"),
    "compressor+projector+llm": ("sampler", "compressor", "multi_modal_projector", "language_model", "lm_head"),
}


def apply_training_stage(model: PreTrainedModel, stage: str) -> dict[str, int]:
    r"""
    Freezes every parameter outside the stage's modules and unfreezes those inside.

    Returns:
        `{"trainable": n, "frozen": m}`, parameter counts after the change.
    """
    if stage not in TRAINING_STAGES:
        raise UnknownStageError(f"Unknown training stage {stage!r}. Stages: {', '.join(TRAINING_STAGES)}.")
    trained_modules = TRAINING_STAGES[stage]
    counts = {"trainable": 0, "frozen": 0}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        parameter.requires_grad_(any(module in parts for module in trained_modules))
        counts["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    return counts
