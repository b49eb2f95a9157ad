"""Fine-tuning with `Trainer`: a processor-based collator and stage presets that freeze the right parts."""

from .collator import VidCompDataCollator
from .stages import TRAINING_STAGES, UnknownStageError, apply_training_stage

__all__ = ["TRAINING_STAGES", "UnknownStageError", "VidCompDataCollator", "apply_training_stage"]
