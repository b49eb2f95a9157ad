r"""Training stages: which parts of a [`VidCompForConditionalGeneration`] learn, chosen by one name.

`STAGE_DESCRIPTIONS` says what each stage trains and which paper's stage it reproduces (`vidcomp finetune --help`
prints it); `STAGE_LEARNING_RATES` holds the paper's learning rate per part where the paper gives one, ready for an
optimizer through `stage_parameter_groups`.
"""

from transformers import PreTrainedModel

from ..modeling.autoencoder_compact import CompactVideoAutoencoder
from ..modeling.parts_vidcomp import part_module_names


class UnknownStageError(ValueError):
    """The training stage name is not one of `TRAINING_STAGES`."""


# Module names trained by each stage; `video_newline` is an embedding in LLM space, so it trains with the projector.
TRAINING_STAGES: dict[str, tuple[str, ...]] = {
    "projector": ("multi_modal_projector", "video_newline"),
    "compressor": ("sampler", "compressor"),
    "compressor+projector": ("sampler", "compressor", "multi_modal_projector", "video_newline"),
    "compressor+projector+llm": (
        "sampler", "compressor", "multi_modal_projector", "video_newline", "language_model", "lm_head",
    ),
    "projector+llm": ("multi_modal_projector", "video_newline", "language_model", "lm_head"),
    "vision+projector+llm": ("vision_tower", "multi_modal_projector", "video_newline", "language_model", "lm_head"),
    "new-parts": (),  # decided per model from config.parts
    "vision+connector": ("vision_tower", "sampler", "compressor", "multi_modal_projector", "video_newline"),
    "fila-stage4": (
        "vision_tower", "sampler", "compressor", "multi_modal_projector", "video_newline", "language_model", "lm_head",
    ),
    "compressor-pretrain": ("compressor", "decoder"),
    "hicom-conditional-pretrain": ("compressor",),
}

# What each stage trains, and the papers' stages it reproduces (with the section that describes them).
STAGE_DESCRIPTIONS: dict[str, str] = {
    "projector": "the projector alone (vision tower, compressor and LLM frozen), at 1e-3: LLaVA's stage 1, "
    "FiLA-Video's stage 1 (§4.1, Table 4) and the compact paper's stage 1 (supplement §1.4)",
    "compressor": "the compressor (and a sampler with weights) alone",
    "compressor+projector": "a newly swapped-in compressor and the projector; vision tower and LLM frozen",
    "compressor+projector+llm": "everything but the vision tower, the usual instruction tuning",
    "projector+llm": "the projector and the LLM at 1e-5, the pretrained compressor and the vision tower frozen: the "
    "compact paper's stage 2 and SFT (supplement §1.4)",
    "vision+projector+llm": "vision tower (2e-6), projector (2e-6) and LLM (1e-5), the compressor frozen: "
    "FiLA-Video's stages 2 and 3 (§4.1, Table 4)",
    "new-parts": "everything from_pretrained_parts did not load (recorded in config.parts)",
    "vision+connector": "vision tower, sampler, compressor and projector, the LLM frozen (LoRA on it with "
    "--lora-rank): how the -real presets' tower is trained from scratch against SmolLM2, after --align-steps of "
    "name alignment (training/recipe_real.py)",
    "fila-stage4": "everything, the scene-merging compressor included: vision tower, projector and merging module "
    "2e-6, LLM 1e-5, FiLA-Video's stage 4 (§3.4, §4.1, Table 4; preset fila-multirate)",
    "compressor-pretrain": "the compact compressor's reconstruction pretraining at 2e-5, for a CompactVideoAutoencoder "
    "(compressor and decoder; vision tower frozen): the compact paper's compressor pretraining (supplement §1.4); "
    "run it with Trainer, not vidcomp finetune",
    "hicom-conditional-pretrain": "HICom's conditional pre-training (appendix): the compressor at 1e-4 and its "
    "instruction injection at 1e-3; LLM, vision tower, text guide and key head frozen",
}

# Stages that exist for one compressor only, by its model type.
STAGE_COMPRESSORS: dict[str, str] = {"hicom-conditional-pretrain": "vidcomp_hicom_compressor"}

# Modules inside a stage's modules that stay frozen (pretrained towers a compressor carries).
STAGE_FROZEN: dict[str, tuple[str, ...]] = {
    "hicom-conditional-pretrain": ("guide_encoder", "key_head"),
}

# Pretrained parts that no stage trains: TransNetV2 carries its published weights, and choosing frames by its shots
# is not differentiable.
NEVER_TRAINED: tuple[str, ...] = ("shot_detector",)

# Learning rates per module for stages whose paper gives them; other stages use the optimizer's one rate.
STAGE_LEARNING_RATES: dict[str, dict[str, float]] = {
    # FiLA-Video §4.1 and the compact paper's supplement §1.4 both align the projector alone at 1e-3.
    "projector": {"multi_modal_projector": 1e-3, "video_newline": 1e-3},
    # Compact video representations, supplement §1.4: stage 2 and SFT train the LLM and projector with AdamW at 1e-5.
    "projector+llm": {"multi_modal_projector": 1e-5, "video_newline": 1e-5, "language_model": 1e-5, "lm_head": 1e-5},
    # FiLA-Video §4.1: stages 2 and 3 train the vision encoder at 2e-6, the projector at 2e-6, the LLM at 1e-5.
    "vision+projector+llm": {
        "vision_tower": 2e-6, "multi_modal_projector": 2e-6, "video_newline": 2e-6, "language_model": 1e-5,
        "lm_head": 1e-5,
    },
    # FiLA-Video §4: vision encoder 2e-6, projector 2e-6, LLM 1e-5, scene merging 2e-6.
    "fila-stage4": {
        "vision_tower": 2e-6, "multi_modal_projector": 2e-6, "video_newline": 2e-6, "language_model": 1e-5,
        "lm_head": 1e-5, "sampler": 2e-6, "compressor": 2e-6,
    },
    # Compact video representations, supplement §1.4: AdamW at 2e-5.
    "compressor-pretrain": {"compressor": 2e-5, "decoder": 2e-5},
    # HICom appendix: 1e-3 for the instruction injection, 1e-4 for the other compressor parameters.
    "hicom-conditional-pretrain": {"compressor": 1e-4, "guide_injector": 1e-3},
}


def inside(name: str, modules: tuple[str, ...]) -> bool:
    """Whether the parameter or buffer `name` lies inside a module named in `modules` (at any depth)."""
    return not set(name.split(".")).isdisjoint(modules)


def apply_training_stage(model: PreTrainedModel, stage: str) -> dict[str, int]:
    r"""
    Freezes every parameter outside the stage's modules and unfreezes those inside.

    Returns:
        `{"trainable": n, "frozen": m}`, parameter counts after the change.
    """
    if stage not in TRAINING_STAGES:
        raise UnknownStageError(f"Unknown training stage {stage!r}. Stages: {', '.join(TRAINING_STAGES)}.")
    if (stage == "compressor-pretrain") != isinstance(model, CompactVideoAutoencoder):
        raise UnknownStageError(
            "The compressor-pretrain stage is the stage of a CompactVideoAutoencoder, and a CompactVideoAutoencoder "
            f"has no other; got stage {stage!r} for a {type(model).__name__}. Train a video LLM's compressor with "
            "the compressor stage."
        )
    required = STAGE_COMPRESSORS.get(stage)
    compressor_config = getattr(getattr(model, "config", None), "compressor_config", None)
    if required is not None and getattr(compressor_config, "model_type", None) != required:
        raise UnknownStageError(
            f"The {stage} stage trains a {required} compressor, but this model's compressor is "
            f"{getattr(compressor_config, 'model_type', type(model).__name__)}. Choose another stage."
        )
    if stage == "new-parts":
        loaded = part_module_names(model.config.parts)
        if not loaded:
            raise UnknownStageError(
                "The new-parts stage trains what from_pretrained_parts did not load, but this model's config.parts "
                "records no pretrained parts. Choose another stage."
            )

        def is_trained(name: str) -> bool:
            return not any(name == prefix or name.startswith(prefix + ".") for prefix in loaded)
    else:
        def is_trained(name: str) -> bool:
            frozen = STAGE_FROZEN.get(stage, ()) + NEVER_TRAINED
            return inside(name, TRAINING_STAGES[stage]) and not inside(name, frozen)

    counts = {"trainable": 0, "frozen": 0}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trained(name))
        counts["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    return counts


def stage_parameter_groups(model: PreTrainedModel, stage: str) -> list[dict]:
    r"""
    Applies `stage`, then groups the trainable parameters by the stage's learning rates, ready for an optimizer:
    `Trainer(..., optimizers=(torch.optim.AdamW(stage_parameter_groups(model, "fila-stage4")), None))`.

    Returns:
        One `{"params": [...], "lr": rate, "name": module}` per module with trainable parameters.
    """
    if stage not in STAGE_LEARNING_RATES:
        raise UnknownStageError(
            f"Stage {stage!r} has no per-part learning rates; stages that do: {', '.join(STAGE_LEARNING_RATES)}."
        )
    apply_training_stage(model, stage)
    rates = STAGE_LEARNING_RATES[stage]
    groups: dict[str, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            # The innermost named module decides, so a part inside the compressor can have its own rate.
            module = [part for part in name.split(".") if part in rates][-1]
            groups.setdefault(module, []).append(parameter)
    return [{"params": params, "lr": rates[module], "name": module} for module, params in groups.items()]
