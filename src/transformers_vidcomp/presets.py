r"""Named presets: which sampler and compressor a checkpoint uses, and how its processor decodes video.

`vidcomp create-tiny OUT --preset NAME` builds a tiny, randomly initialised checkpoint of a preset; method issues add
their presets here.
"""

from dataclasses import dataclass, field


class UnknownPresetError(ValueError):
    """The preset name is not one of `PRESETS`."""


class UnsupportedVisualizationError(ValueError):
    """`vidcomp demo --visualize` was asked of a preset whose compressor cannot report its attention."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    sampler_config: dict
    compressor_config: dict
    video_processor_kwargs: dict = field(default_factory=dict)
    processor_kwargs: dict = field(default_factory=dict)
    video_token_budget: int | None = None
    # The compressor encodes the question with its own text encoder (HICom): the processor writes guide tokens.
    guide_tokenizer: bool = False


PRESETS: dict[str, Preset] = {
    "baseline": Preset(
        name="baseline",
        description="uniform sampling of 16 of the frames decoded at 4 fps, then LLaVA-OneVision's 2x2 bilinear pooling of each frame",
        sampler_config={"model_type": "vidcomp_uniform_sampler", "num_frames": 16},
        compressor_config={"model_type": "vidcomp_spatial_pool_compressor", "stride": 2, "mode": "bilinear"},
        video_processor_kwargs={"fps": 4.0, "num_frames": 64},
    ),
    "fila": Preset(
        name="fila",
        description="FiLA-Video: K-Means scene selection (8 scenes of up to 3 frames) and learnable weighted fusion "
        "of each scene into one frame's tokens",
        sampler_config={"model_type": "vidcomp_fila_kmeans_sampler", "num_scenes": 8, "supplements_per_scene": 2},
        compressor_config={"model_type": "vidcomp_fila_weighted_fusion", "scene_size": 3},
        video_processor_kwargs={"fps": 4.0, "num_frames": 64},
        # No frame times in the prompt: the processor would list every decoded frame, while K-Means then keeps
        # only the scenes' frames, which are chosen inside the model after the text is written.
    ),
    "fila-multirate": Preset(
        name="fila-multirate",
        description="FiLA-Video's stage-4 training mode: 96 uniform frames, every 3 consecutive fused into one by "
        "the same weighted fusion (train it with the fila-stage4 stage), with the frames' times in the prompt",
        sampler_config={"model_type": "vidcomp_uniform_sampler", "num_frames": 96},
        compressor_config={"model_type": "vidcomp_fila_weighted_fusion", "scene_size": 3},
        video_processor_kwargs={"fps": None, "num_frames": 96},
        processor_kwargs={"timestamps_in_prompt": True},
    ),
    "avs-compact": Preset(
        name="avs-compact",
        description="adaptive video sampling: TransNetV2 shots (real weights) in 10 fps thumbnails, 32 keyframes "
        "spread by information density and decoded alone at full resolution; then the 2D+1D convolutional "
        "compressor, 4x4x4 groups into one token each",
        # Streaming shot detection: the network over the whole video, while it decodes (see TransNetV2Config).
        sampler_config={
            "model_type": "vidcomp_avs_sampler", "max_frames": 32,
            "shot_detector_config": {"inference_windows": "streaming"},
        },
        compressor_config={"model_type": "vidcomp_compact_compressor"},
        # Used only when frames reach the processor without the sampler (an array passed by hand): a bounded decode,
        # which the sampler then thins uniformly.
        video_processor_kwargs={"fps": 10.0, "num_frames": 256},
        processor_kwargs={"timestamps_in_prompt": True},
    ),
    "longvu": Preset(
        name="longvu",
        description="LongVU: DINOv2 temporal reduction (paper: windows of 8, threshold 0.8), SigLIP + DINOv2 fused "
        "into 12x12 tokens per frame by the SVA, query-guided 12x12 / 8x8 resolution mixing and spatial token "
        "compression (theta 0.8) under a budget of 1024 tokens per video",
        sampler_config={"model_type": "vidcomp_longvu_sampler", "mode": "paper"},
        compressor_config={"model_type": "vidcomp_longvu_compressor"},
        # Frames are letterboxed with the mean colour, as the release prepares them (`expand2square`).
        video_processor_kwargs={"fps": 4.0, "num_frames": 64, "pad_to_square": True},
        video_token_budget=1024,
    ),
    "hicom": Preset(
        name="hicom",
        description="HICom: 32 uniform frames; local grouped attention (4x3x3 groups, direct injection) and 32 "
        "global learnable queries (coarse injection) conditioned on the question through a SigLIP text encoder",
        sampler_config={"model_type": "vidcomp_uniform_sampler", "num_frames": 32},
        compressor_config={
            "model_type": "vidcomp_hicom_compressor", "local_injection": "direct", "global_injection": "coarse",
        },
        video_processor_kwargs={"fps": None, "num_frames": 32, "pad_to_square": True},
        guide_tokenizer=True,
    ),
}


def get_preset(name: str) -> Preset:
    if name.endswith(REAL_SUFFIX) and name[: -len(REAL_SUFFIX)] in PRESETS:
        return real_variant(name[: -len(REAL_SUFFIX)])
    if name not in PRESETS:
        raise UnknownPresetError(
            f"Unknown preset {name!r}. Available presets: {', '.join(sorted(PRESETS))}, and each with "
            f"{REAL_SUFFIX!r} (real LLM and trained tower), e.g. baseline{REAL_SUFFIX}."
        )
    return PRESETS[name]


# Real variants (issue 17): "<preset>-real" is the preset's sampler and compressor between the vision tower trained
# here and SmolLM2-135M-Instruct (`transformers_vidcomp.real`). Frames are the tower's 64x64.
REAL_SUFFIX = "-real"


def real_variant(base: str) -> Preset:
    """The `-real` variant of preset `base`: its sampler, compressor and decoding, with real weights."""
    preset = PRESETS[base]
    return Preset(
        name=base + REAL_SUFFIX,
        description=f"{preset.description}; with SmolLM2-135M-Instruct (frozen) and the vision tower and projector "
        "trained here on synthetic video QA",
        sampler_config=preset.sampler_config,
        compressor_config=preset.compressor_config,
        video_processor_kwargs=preset.video_processor_kwargs,
        processor_kwargs=preset.processor_kwargs,
        video_token_budget=preset.video_token_budget,
        guide_tokenizer=preset.guide_tokenizer,
    )


def is_real(name: str) -> bool:
    """Whether `name` is a `-real` preset."""
    return name.endswith(REAL_SUFFIX) and name[: -len(REAL_SUFFIX)] in PRESETS


def real_base(name: str) -> str:
    """The preset a `-real` preset derives from."""
    if not is_real(name):
        raise UnknownPresetError(f"{name!r} is not a real preset; real presets end in {REAL_SUFFIX!r}, e.g. baseline-real.")
    return name[: -len(REAL_SUFFIX)]
