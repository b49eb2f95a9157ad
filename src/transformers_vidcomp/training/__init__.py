"""Fine-tuning with `Trainer`: a processor-based collator and stage presets that freeze the right parts."""

from .collator import VidCompDataCollator
from .pretrain_compact import CompactPretrainCollator
from .stages import (
    STAGE_DESCRIPTIONS,
    STAGE_LEARNING_RATES,
    TRAINING_STAGES,
    UnknownStageError,
    apply_training_stage,
    stage_parameter_groups,
)

__all__ = [
    "CompactPretrainCollator",
    "STAGE_DESCRIPTIONS",
    "STAGE_LEARNING_RATES",
    "TRAINING_STAGES",
    "UnknownStageError",
    "VidCompDataCollator",
    "apply_training_stage",
    "stage_parameter_groups",
]
