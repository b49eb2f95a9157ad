r"""
`vidcomp convert hicom SRC OUT`: a released HICom checkpoint (`lntzm/HICom_*`, `model_type` `hicom_qwen2`) as one of
our models with the HICom compressor.

The source is a Qwen2 causal LM whose state dict (transformers 4.46 `save_pretrained`, prefix `model.`) also holds:

- `model.vision_tower.vision_tower.vision_model.*`: the SigLIP vision tower with its MAP head. The tower becomes our
  `vision_tower` (the head's attention pooling is dropped); its `post_layernorm` and the head's `layernorm` and `mlp`
  also go to the compressor's `key_head`, which rebuilds the released local keys;
- `model.vision_tower.guide_encoder.text_model.*`: the SigLIP text tower, our compressor's `guide_encoder`;
- `model.mm_projector.{local,global}_compressor.*`: the compressors, whose names we kept (`text2qk_proj` is our
  `text_projection`).

The config comes from `mm_projector_type` and `use_guide`, parsed as the released `build_vision_projector` does
(`local43_global32_coarse` with `use_guide=direct` is direct injection on both branches: its `_coarse` suffix is never
read). Features are SigLIP's `hidden_states[-2]` (`mm_vision_select_layer`) and, for the keys, the last layer:
`vision_feature_layer=[-2, -1]`. The released `config.json` names its towers only by path; the converter assumes
SigLIP so400m-patch14-384 towers unless `config.json` carries `vision_config` / `guide_config` dicts. The guide
tokenizer (SigLIP's) is read from `SRC/guide_tokenizer` if present, else from the Hub as
`google/siglip-so400m-patch14-384`.
"""

import json
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, SiglipTextConfig, SiglipVisionConfig
from transformers.core_model_loading import WeightRenaming

from ..modeling import HIComCompressorConfig, UniformSamplerConfig, VidCompConfig
from ..processors import HIComProcessor, VidCompVideoProcessor
from .cards import CardInfo
from .converters import CheckpointConverter, SourceCheckpointError, hub_id_of, register_converter, source_model_type
from .layouts import CheckpointLayout
from .sources import read_state_dict


class NotHIComError(SourceCheckpointError):
    """The source folder is not a released HICom checkpoint, or uses a variant we do not reproduce."""


SIGLIP_ID = "google/siglip-so400m-patch14-384"
# SigLIP so400m-patch14-384's towers, for sources whose config.json names them only by path.
SO400M_VISION = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=384,
    patch_size=14, vision_use_head=False,
)
SO400M_TEXT = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, vocab_size=32000,
    max_position_embeddings=64, projection_size=1152, bos_token_id=None, eos_token_id=1, pad_token_id=1,
)
# HICom pads every video to 32 frames and is evaluated on 32 uniformly sampled frames.
DEFAULT_NUM_FRAMES = 32
QWEN2_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
    "tie_word_embeddings", "max_window_layers", "use_sliding_window", "sliding_window", "attention_dropout",
    "bos_token_id", "eos_token_id", "pad_token_id",
)
TOWER = r"^model\.vision_tower\.vision_tower\.vision_model\."
GUIDE = r"^model\.vision_tower\.guide_encoder\.text_model\."
KEY_HEAD_SOURCES = {  # released tower key -> our compressor key, for the SigLIP layers the local keys go through
    "post_layernorm": "post_layernorm",
    "head.layernorm": "layernorm",
    "head.mlp.fc1": "mlp.fc1",
    "head.mlp.fc2": "mlp.fc2",
}


def parse_projector_type(projector_type: str, use_guide: str | None) -> dict:
    r"""
    The compressor settings of a released `mm_projector_type`, read exactly as `build_vision_projector` reads it:
    `local<t><s>` (temporal kernel `t`, spatial kernel `s` of one or two digits), `global<n>` (`n` queries), and
    a branch's injection from `guide<type>` inside its part of the string, else from `use_guide`.
    """
    match = re.search(r"local(\d)(\d{1,2})", projector_type)
    if match is None or "global" not in projector_type:
        raise NotHIComError(
            f"mm_projector_type {projector_type!r} is not a HICom local+global projector (e.g. 'local43_global32')."
        )
    local_phase = projector_type.split("local")[-1].split("global")[0]
    global_phase = projector_type.split("global")[-1].split("local")[0]
    if "adapt" in projector_type:
        raise NotHIComError(f"mm_projector_type {projector_type!r} uses adaptive q/k/v/guide gates, not supported.")
    queries = re.match(r"\d+", global_phase)

    def injection(phase: str) -> str:
        guide = phase.split("guide")[-1].split("_")[0] if "guide" in phase else use_guide
        return "none" if guide in (None, "off") else guide

    return dict(
        group_t=int(match.group(1)),
        group_h=int(match.group(2)),
        group_w=int(match.group(2)),
        num_global_queries=int(queries.group()) if queries else 0,
        local_injection=injection(local_phase),
        global_injection=injection(global_phase),
    )


@register_converter
class HIComConverter(CheckpointConverter):
    kind = "hicom"
    keeps_source_generation_config = True
    description = "a released HICom checkpoint (lntzm/HICom_*, hicom_qwen2) with its SigLIP towers"
    layout = CheckpointLayout(
        name="hicom",
        transforms=[
            WeightRenaming(r"^hicom_key_head\.", "model.compressor.key_head."),
            WeightRenaming(TOWER, "model.vision_tower."),
            WeightRenaming(GUIDE, "model.compressor.guide_encoder."),
            WeightRenaming(r"^model\.mm_projector\.", "model.compressor."),
            WeightRenaming(r"\.text2qk_proj\.", ".text_projection."),
            WeightRenaming(r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
        ],
        # The MAP head's attention pooling (HICom uses only its MLP) and the anyres image newline (images only).
        dropped=(TOWER + r"head\.(probe|attention\.)", r"^model\.image_newline$"),
    )

    def source_config(self, source: Path) -> dict:
        model_type = source_model_type(source, NotHIComError)
        if model_type != "hicom_qwen2":
            raise NotHIComError(
                f"{str(source)!r} holds a {model_type!r} checkpoint, not HICom ('hicom_qwen2'). "
                "`vidcomp convert --help` lists the source kinds."
            )
        config = json.loads((source / "config.json").read_text())
        if config.get("mm_newline_position", "no_token") != "no_token":
            raise NotHIComError(
                f"mm_newline_position {config['mm_newline_position']!r}: only the released 'no_token' is supported."
            )
        return config

    def build_config(self, source: Path) -> VidCompConfig:
        original = self.source_config(source)
        compressor = parse_projector_type(original.get("mm_projector_type", ""), original.get("use_guide"))
        vision = SiglipVisionConfig(**{**SO400M_VISION, **original.get("vision_config", {}), "vision_use_head": False})
        guide = SiglipTextConfig(**{**SO400M_TEXT, **original.get("guide_config", {})})
        layer = original.get("mm_vision_select_layer", -2)
        if layer != -2:
            raise NotHIComError(f"mm_vision_select_layer {layer}: the released models use -2, the layer we convert.")
        if original.get("use_guide") in (None, "off"):
            # Its tower would give the features as keys and no text: not a released configuration.
            raise NotHIComError("use_guide is off: only instruction-conditioned HICom checkpoints are supported.")
        try:
            return VidCompConfig(
                vision_config=vision.to_dict(),
                text_config={"model_type": "qwen2", **{k: original[k] for k in QWEN2_FIELDS if k in original}},
                sampler_config=UniformSamplerConfig(num_frames=DEFAULT_NUM_FRAMES).to_dict(),
                compressor_config=HIComCompressorConfig.reference(
                    hidden_size=vision.hidden_size,
                    output_hidden_size=original["hidden_size"],
                    num_attention_heads=vision.hidden_size // 128,
                    vision_intermediate_size=vision.intermediate_size,
                    vision_hidden_act=vision.hidden_act,
                    vision_layer_norm_eps=vision.layer_norm_eps,
                    guide_config=guide.to_dict(),
                    **compressor,
                ).to_dict(),
                vision_feature_layer=[-2, -1],
                video_token_id=self.video_token_id(source, original),
                tie_word_embeddings=original.get("tie_word_embeddings", False),
            )
        except (KeyError, ValueError) as error:
            raise SourceCheckpointError(f"{source / 'config.json'} cannot describe a HICom model: {error}") from error

    def read_weights(self, source: Path) -> dict[str, torch.Tensor]:
        state = read_state_dict(source)
        # The local keys pass the tower's last state through post_layernorm and the head's MLP: the compressor
        # keeps its own copy of those layers, while the tower keeps its post_layernorm.
        tower = "model.vision_tower.vision_tower.vision_model."
        for released, ours in KEY_HEAD_SOURCES.items():
            for suffix in ("weight", "bias"):
                key = f"{tower}{released}.{suffix}"
                if key in state:
                    state[f"hicom_key_head.{ours}.{suffix}"] = state[key].clone()
                    if released != "post_layernorm":
                        del state[key]
        return state

    def tokenizer(self, source: Path):
        tokenizer = AutoTokenizer.from_pretrained(source)
        if "<video>" not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": ["<video>"]})
        return tokenizer

    def video_token_id(self, source: Path, original: dict) -> int:
        token_id = self.tokenizer(source).convert_tokens_to_ids("<video>")
        if token_id >= original.get("vocab_size", 0):
            raise SourceCheckpointError(
                f"The tokenizer needs id {token_id} for the <video> placeholder, beyond the LLM's "
                f"{original.get('vocab_size')} embeddings."
            )
        return token_id

    def build_processor(self, source: Path, config: VidCompConfig) -> HIComProcessor:
        guide_source = source / "guide_tokenizer" if (source / "guide_tokenizer").is_dir() else SIGLIP_ID
        try:
            guide_tokenizer = AutoTokenizer.from_pretrained(guide_source)
        except (OSError, ValueError) as error:
            raise SourceCheckpointError(
                f"No SigLIP guide tokenizer: put it in {str(source / 'guide_tokenizer')!r} or make {SIGLIP_ID} "
                f"reachable. ({error})"
            ) from error
        image_size = config.vision_config.image_size
        return HIComProcessor(
            video_processor=VidCompVideoProcessor(
                size={"height": image_size, "width": image_size}, fps=None, num_frames=DEFAULT_NUM_FRAMES,
                pad_to_square=True,
            ),
            tokenizer=self.tokenizer(source),
            guide_tokenizer=guide_tokenizer,
            guide_max_length=config.compressor_config.guide_config.max_position_embeddings,
        )

    def card_info(self, source: Path, config: VidCompConfig) -> CardInfo:
        hub_id = hub_id_of(source)
        name = hub_id or source.name
        return CardInfo(
            source=(
                f"Converted from the HICom checkpoint `{name}` with `vidcomp convert hicom`: the same SigLIP vision "
                "and text towers, HICom compressor (released behaviour: direct injection on both branches) and "
                "Qwen2 LLM. Differences from the released pipeline: frames are resized to a square without "
                "padding, short videos are not padded with black frames to 32, and images are not supported."
            ),
            base_model=[hub_id] if hub_id else [],
            extra_tags=["hicom"],
        )
