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
class PaperSetting:
    r"""One setting a paper fixes (or leaves open), the value a preset gives it, and where the paper says so."""

    setting: str
    value: str
    source: str


@dataclass(frozen=True)
class PaperReference:
    r"""
    What a paper preset reproduces, for its tests, model card and the README's table. Widths belong to the vision
    tower, so the component configs take them from the checkpoint's tower; these are the paper's.

    Args:
        paper: the paper, as cited in cards and the README.
        vision_tower: the paper's vision encoder and input size.
        vision_hidden_size: its feature width `d`, which sizes the compressor.
        patch_grid: patches per side of one frame at the paper's input size.
        tokens_per_video: visual tokens one video sends to the LLM in the paper.
        parameters: the paper's parameter count of `parameters_of`.
        parameters_of: what `parameters` counts, in the reading the preset follows.
        settings: every setting the preset takes from the paper or had to choose.
    """

    paper: str
    vision_tower: str
    vision_hidden_size: int
    patch_grid: int
    tokens_per_video: int
    parameters: int
    parameters_of: str
    settings: tuple[PaperSetting, ...]


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
    # Presets that reproduce a paper's settings say which, and where the paper gives each.
    paper: PaperReference | None = None


FILA_PAPER = PaperReference(
    paper="FiLA-Video (Guo et al., arXiv:2504.20384)",
    vision_tower="SigLIP so400m-patch14-384",
    vision_hidden_size=1152,
    patch_grid=27,
    # §4.2 and Table 1: FiLA-Video uses half the visual tokens of FiLA-Base's 64 frames, i.e. 32 frames' worth.
    tokens_per_video=64 * 27 * 27 // 2,
    # Eq. 7: W has shape (k, N, D).
    parameters=3 * 27 * 27 * 1152,
    parameters_of="the weighted fusion W (k x N x D), the only trained part of the scene path",
    settings=(
        PaperSetting("vision encoder", "SigLIP so400m-patch14-384 (27 x 27 patches of width 1152)", "§4.1, Table 4"),
        PaperSetting("frames sampled", "96, uniformly (`num_frames=96`, no fps cap)", "Appendix D (Fig. 1); §3.4"),
        PaperSetting(
            "scenes k", "32: half the visual tokens of FiLA-Base's 64 frames (`num_scenes=32`)", "§4.2, Table 1",
        ),
        PaperSetting(
            "frames per scene r + 1", "3 (`supplements_per_scene=2`); the paper gives no r for inference, 3 is its "
            "stage-4 merge of 96 frames into 32", "§3.1.1 Eq. 6 (r); §3.4 and §4.1 (3 to 1)",
        ),
        PaperSetting("frame representative", "mean of the frame's patch tokens", "§3.1.1 Eq. 1"),
        PaperSetting("K-Means initialisation", "k random frames (`init=\"random\"`, seed 0)", "§3.1.1 Initialization"),
        PaperSetting(
            "K-Means stopping", "ours: at most 100 iterations, tolerance 1e-4 (the paper: until the centres converge "
            "or an unstated maximum)", "§3.1.1",
        ),
        PaperSetting(
            "supplements", "the r frames since the previous representative most similar (cosine) to it",
            "§3.1.1 Eq. 5-6; §4.3, Table 2",
        ),
        PaperSetting("scene merging", "weighted fusion, W (k x N x D) initialised to 1/k", "§3.2 Eq. 7-8; Table 3"),
        PaperSetting(
            "timestamps in the prompt", "\"This video samples N frames of a T-second video at t1, t2, ... seconds.\" "
            "listing the 96 sampled frames, in training and inference alike", "§3.3",
        ),
        PaperSetting(
            "training", "stages 1-3: `projector`, then `vision+projector+llm`; stage 4: preset `fila-multirate` "
            "with `fila-stage4` (96 uniform frames merged 3 to 1)", "§3.4, §4.1, Table 4",
        ),
    ),
)

# The supplement gives the compressor's structure and "approximately 65 million parameters" but no kernel sizes. With
# 3x3 spatial kernels, the d = 1408 encoder alone has 35.7M with temporal kernels of 3; the reading that reaches 65M
# counts encoder and symmetric decoder ("the overall structure") with temporal kernels of 2: 65,442,432.
COMPACT_PAPER = PaperReference(
    paper="Learning Compact Video Representations (Chen et al., arXiv:2602.17869), supplement",
    vision_tower="ViT-G/14, CLIP-style, at 224 px",
    vision_hidden_size=1408,
    patch_grid=16,
    # 32 frames of 16 x 16 patches, 4 x 4 x 4 into one token: 64 times fewer.
    tokens_per_video=32 * 16 * 16 // 64,
    parameters=65_000_000,
    parameters_of="compressor and decoder (the autoencoder pretrained on reconstruction), in our reading",
    settings=(
        PaperSetting(
            "vision encoder", "ViT-G/14 CLIP-style; ours: width 1408 (ViT-g/14; bigG's 1664 fits no ~65M reading) and "
            "224 px input, 16 x 16 patches (the paper gives neither)", "supplement §1.1",
        ),
        PaperSetting("frames", "32 keyframes, training and inference (`max_frames=32`)", "supplement §1.4"),
        PaperSetting("shot detector", "TransNetV2, published weights and 100-frame windows", "supplement §1.2"),
        PaperSetting("shot detection rate", "10 fps thumbnails, files and arrays alike (`decode_fps=10`)",
                     "supplement §1.2"),
        PaperSetting("non-maximum suppression window", "3 s (`nms_seconds=3`)", "supplement §1.2"),
        PaperSetting(
            "frames per shot and keyframes", "ours: the paper's main text calls AVS information-density based but "
            "gives no rule; see `sampler_avs.py`", "main paper (rule not published)",
        ),
        PaperSetting(
            "compressor", "3 residual blocks of two (2D spatial d -> d/4, 1D temporal d/4 -> d, SiLU) blocks, the "
            "first two downsampling by 2: 4 x 4 x 4 into one token", "supplement §1.3",
        ),
        PaperSetting(
            "kernel sizes", "ours: 3 x 3 spatial, 2 temporal, the one reading that gives ~65M (below)",
            "supplement §1.3 (not given)",
        ),
        PaperSetting(
            "parameters", "65,442,432 for compressor and decoder (32,721,216 the compressor) at d = 1408",
            "supplement §1.3 (\"approximately 65 million\")",
        ),
        PaperSetting("timestamps in the prompt", "none", "supplement (frame times are never mentioned)"),
        PaperSetting("compressor pretraining", "stage `compressor-pretrain`, AdamW 2e-5, vision tower frozen",
                     "supplement §1.4"),
        PaperSetting(
            "MLLM training", "stage 1: `projector` (1e-3); stage 2 and SFT: `projector+llm` (1e-5), compressor "
            "frozen", "supplement §1.4",
        ),
    ),
)


PRESETS: dict[str, Preset] = {
    "baseline": Preset(
        name="baseline",
        description="uniform sampling of 16 of the frames decoded at 4 fps, first to last frame as LLaVA-OneVision "
        "samples, then its 2x2 bilinear pooling of each frame",
        sampler_config={"model_type": "vidcomp_uniform_sampler", "num_frames": 16, "include_last": True},
        compressor_config={"model_type": "vidcomp_spatial_pool_compressor", "stride": 2, "mode": "bilinear"},
        video_processor_kwargs={"fps": 4.0, "num_frames": 64},
    ),
    "fila": Preset(
        name="fila",
        description="FiLA-Video, small: K-Means scene selection (8 scenes of up to 3 frames from at most 64 frames at "
        "4 fps) and learnable weighted fusion of each scene into one frame's tokens; the paper's settings are "
        "fila-paper",
        sampler_config={"model_type": "vidcomp_fila_kmeans_sampler", "num_scenes": 8, "supplements_per_scene": 2},
        compressor_config={"model_type": "vidcomp_fila_weighted_fusion", "scene_size": 3},
        video_processor_kwargs={"fps": 4.0, "num_frames": 64},
        # No frame times in the prompt: the processor would list every decoded frame, while K-Means then keeps
        # only the scenes' frames, which are chosen inside the model after the text is written.
    ),
    "fila-paper": Preset(
        name="fila-paper",
        description="FiLA-Video as its paper runs it: 96 uniformly sampled frames, K-Means from k random frames into "
        "32 scenes of up to 3 frames (half the tokens of FiLA-Base's 64 frames), weighted fusion of each scene, and "
        "the sampled frames' times in the prompt as in training. Left open by the paper and chosen here: r = 2 "
        "supplements (the stage-4 merge of 3 frames), at most 100 K-Means iterations with tolerance 1e-4 and seed "
        "0, supplements from the frames since the previous representative, frames after the last one in no scene",
        sampler_config={
            "model_type": "vidcomp_fila_kmeans_sampler", "num_scenes": 32, "supplements_per_scene": 2,
            "supplement_mode": "similar", "init": "random",
        },
        compressor_config={"model_type": "vidcomp_fila_weighted_fusion", "scene_size": 3},
        video_processor_kwargs={"fps": None, "num_frames": 96},
        processor_kwargs={"timestamps_in_prompt": True},
        paper=FILA_PAPER,
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
        "compressor, 4x4x4 groups into one token each; the frames' times in the prompt and streaming shot "
        "detection are ours, the paper's settings are avs-compact-paper",
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
    "avs-compact-paper": Preset(
        name="avs-compact-paper",
        description="compact video representations as the supplement specifies: 32 keyframes from TransNetV2 shots "
        "(published 100-frame windows over 10 fps thumbnails, 3 s non-maximum suppression), then the 2D+1D "
        "convolutional compressor, 4x4x4 into one token: 128 tokens for 32 frames of ViT-G/14 at 224 px; no frame "
        "times in the prompt. Left open by the paper and chosen here: the allocation of frames to shots and the "
        "keyframes in a shot (ours, see sampler_avs.py), 3x3 spatial and 2 temporal kernels, the reading in which "
        "the ~65M parameters are compressor plus decoder at width 1408 (65.4M)",
        sampler_config={"model_type": "vidcomp_avs_sampler", "max_frames": 32, "decode_fps": 10.0, "nms_seconds": 3.0},
        compressor_config={
            "model_type": "vidcomp_compact_compressor", "num_residual_blocks": 3, "num_downsampling_blocks": 2,
            "bottleneck_ratio": 4, "spatial_kernel_size": 3, "temporal_kernel_size": 2,
        },
        # As avs-compact: used only for arrays that reach the processor without the sampler.
        video_processor_kwargs={"fps": 10.0, "num_frames": 256},
        paper=COMPACT_PAPER,
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


# What a -real variant changes of its base preset for the real tower's 2x2 patch grid. LongVU's SVA queries a 12x12
# grid (8x8 at low resolution) under 1024 tokens, ~7 frames at full resolution, for SigLIP's 27x27: here 2x2 (1x1)
# under 32 tokens, ~8 frames, where 144 queries per frame would only repeat 4 patches; its SVA is about as wide as
# the tower (1024 for SigLIP's 1152 there), 192 here. Every -real preset shares the
# baseline's LLM adapters, which learnt to answer without frame times in the prompt: with them, answer steps of
# avs-compact-real started at a loss of 4.6 (0.2-0.9 without).
REAL_SETTINGS: dict[str, dict] = {
    "longvu": {
        "compressor_config": {"query_side": 2, "lowres_side": 1, "sva_hidden_size": 192}, "video_token_budget": 32,
    },
    "avs-compact": {"processor_kwargs": {"timestamps_in_prompt": False}},
}


def real_variant(base: str) -> Preset:
    """The `-real` variant of preset `base`: its sampler, compressor and decoding, with real weights."""
    preset = PRESETS[base]
    settings = REAL_SETTINGS.get(base, {})
    return Preset(
        name=base + REAL_SUFFIX,
        description=f"{preset.description}; with SmolLM2-135M-Instruct (frozen) and the vision tower and projector "
        "trained here on synthetic video QA"
        + (f" (for the tower's 2x2 patch grid: {settings})" if settings else ""),
        sampler_config=preset.sampler_config,
        compressor_config={**preset.compressor_config, **settings.get("compressor_config", {})},
        video_processor_kwargs=preset.video_processor_kwargs,
        processor_kwargs={**preset.processor_kwargs, **settings.get("processor_kwargs", {})},
        video_token_budget=settings.get("video_token_budget", preset.video_token_budget),
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
