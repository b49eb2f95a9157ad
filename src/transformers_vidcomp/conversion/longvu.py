r"""
The released LongVU key layout (Vision-CAIR/LongVU_*, `model.safetensors` / `pytorch_model.bin`) in our names.

The release's connector maps onto `LongVUCompressor` module for module, and its `mm_projector` onto the composite
model's projector:

| released key                                  | ours                                         |
|-----------------------------------------------|----------------------------------------------|
| `model.mm_projector_aux_0.{0,2,3}.*` (SigLIP) | `model.compressor.siglip_projector.{0,2,3}.*`|
| `model.mm_projector_aux_1.{0,2,3}.*` (DINOv2) | `model.compressor.dino_projector.{0,2,3}.*`  |
| `model.vision_sampler_0.layers.{i}.*`         | `model.compressor.aggregator.layers.{i}.*`   |
| `model.vision_query`                          | `model.compressor.vision_query`              |
| `model.mm_projector.{0,2}.*`                  | `model.multi_modal_projector.linear_{1,2}.*` |
| `model.embed_tokens.*`, `model.layers.*`, `model.norm.*` | `model.language_model.*`          |
| `lm_head.weight`                              | `lm_head.weight`                             |
| `model.image_newline` (after every frame row) | `model.compressor.image_newline`             |

**The vision towers are not in the released file** (the release keeps them in a plain list and loads them at run
time from `google/siglip-so400m-patch14-384` and `facebook/dinov2-giant`). The converter loads them from those ids
(or the folders given to `LongVUConverter`), writes them into the converted checkpoint, records them in
`config.parts`, and the card names them.

The released config gives the method's settings: `dino_threshold` (0.83) for the sampler in `reference` mode,
`drop_threshold` (0.7) for STC, `lowres_token` (8), `image_token_len` (144), `connector_depth` (3),
`vision_hidden_size` (1024), `frame_pos`, and `tokenizer_model_max_length` for the context. As in the release, each
video's budget is what its prompt leaves of that context after `inference_max_length` (16) answer tokens: the
sampler and the compressor both get `context_length` and `reserved_tokens`, and no fixed `video_token_budget` is set.
"""

import json
import math
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.core_model_loading import WeightRenaming

from ..modeling import LongVUCompressorConfig, LongVUSamplerConfig, VidCompConfig
from ..modeling.parts_vidcomp import load_vision_tower
from ..processors import VidCompProcessor, VidCompVideoProcessor
from .cards import CardInfo
from .converters import CheckpointConverter, SourceCheckpointError, hub_id_of, register_converter
from .layouts import CheckpointLayout
from .sources import read_state_dict


COMPRESSOR_RENAMES: list[tuple[str, str]] = [
    (r"^model\.mm_projector_aux_0\.", "model.compressor.siglip_projector."),
    (r"^model\.mm_projector_aux_1\.", "model.compressor.dino_projector."),
    (r"^model\.vision_sampler_0\.", "model.compressor.aggregator."),
    (r"^model\.vision_query$", "model.compressor.vision_query"),
    (r"^model\.image_newline$", "model.compressor.image_newline"),
]
PROJECTOR_RENAMES: list[tuple[str, str]] = [
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
]
LLM_RENAMES: list[tuple[str, str]] = [(r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1.")]
# Tower weights are added under these prefixes by `LongVUConverter.read_weights`.
TOWER_RENAMES: list[tuple[str, str]] = [
    (r"^siglip_tower\.", "model.vision_tower."),
    (r"^dino_tower\.", "model.sampler.dino."),
]
SIGLIP_TOWER = "google/siglip-so400m-patch14-384"
DINO_TOWER = "facebook/dinov2-giant"
RELEASED_MODEL_TYPES = {"cambrian_qwen": "qwen2", "cambrian_llama": "llama"}
RELEASED_DINO_PATCHES = 27
VIDEO_TOKEN = "<video>"


def released_compressor_key(key: str) -> str | None:
    r"""Our compressor's state-dict key (without `model.compressor.`) for a released connector key, else `None`."""
    for pattern, replacement in COMPRESSOR_RENAMES:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key).removeprefix("model.compressor.")
    return None


class NotLongVUError(SourceCheckpointError):
    """The source folder is not a released LongVU (Cambrian) video checkpoint."""


@register_converter
class LongVUConverter(CheckpointConverter):
    r"""
    Converts a released `Vision-CAIR/LongVU_*` folder (config.json, weights, tokenizer). `vision_tower` and `dino`
    say where the towers the release loads at run time come from: Hub ids (the release's) or local folders.
    """

    kind = "longvu"
    description = "a released Vision-CAIR/LongVU_* folder (cambrian_qwen / cambrian_llama)"
    layout = CheckpointLayout(
        name="longvu",
        transforms=[
            WeightRenaming(pattern, replacement)
            for pattern, replacement in (*COMPRESSOR_RENAMES, *PROJECTOR_RENAMES, *LLM_RENAMES, *TOWER_RENAMES)
        ],
    )

    def __init__(self, vision_tower: str | Path | None = None, dino: str | Path | None = None):
        self.vision_tower_source = str(vision_tower or SIGLIP_TOWER)
        self.dino_source = str(dino or DINO_TOWER)
        self._towers: tuple[PreTrainedModel, PreTrainedModel] | None = None

    def towers(self) -> tuple[PreTrainedModel, PreTrainedModel]:
        r"""The SigLIP and DINOv2 towers, loaded once."""
        if self._towers is None:
            try:
                siglip = load_vision_tower(self.vision_tower_source)
                dino = AutoModel.from_pretrained(self.dino_source)
            except OSError as error:
                raise SourceCheckpointError(
                    f"LongVU's vision towers are not in its checkpoint; they load from {self.vision_tower_source!r} "
                    f"and {self.dino_source!r}, which could not be read ({error}). Download them, or pass local "
                    "folders to LongVUConverter(vision_tower=..., dino=...)."
                ) from error
            self._towers = (siglip, dino)
        return self._towers

    def source_config(self, source: Path) -> dict:
        config_file = source / "config.json"
        if not config_file.is_file():
            raise NotLongVUError(f"{str(source)!r} is not a checkpoint folder with a config.json.")
        config = json.loads(config_file.read_text())
        if config.get("model_type") not in RELEASED_MODEL_TYPES or config.get("mm_projector_type") != "sva":
            raise NotLongVUError(
                f"{str(source)!r} holds a {config.get('model_type')!r} checkpoint with projector "
                f"{config.get('mm_projector_type')!r}, not a released LongVU one (cambrian_qwen or cambrian_llama "
                "with the 'sva' projector)."
            )
        return config

    def video_token_id(self, source: Path) -> int:
        tokenizer = self.tokenizer(source)
        return tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)

    def tokenizer(self, source: Path):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise SourceCheckpointError(
                f"The LongVU checkpoint {str(source)!r} lacks a usable tokenizer: {error}"
            ) from error
        if VIDEO_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]})
        return tokenizer

    def build_config(self, source: Path) -> VidCompConfig:
        original = self.source_config(source)
        siglip, dino = self.towers()
        text_type = RELEASED_MODEL_TYPES[original["model_type"]]
        text_fields = AutoConfig.for_model(text_type).to_dict()
        text_config = {key: value for key, value in original.items() if key in text_fields and key != "model_type"}
        text_config["model_type"] = text_type
        video_token_id = self.video_token_id(source)
        if video_token_id >= original["vocab_size"]:
            raise SourceCheckpointError(
                f"The tokenizer needs id {video_token_id} for {VIDEO_TOKEN!r}, beyond the LLM's "
                f"{original['vocab_size']} embeddings."
            )
        side = math.isqrt(original["image_token_len"])
        aux_side = math.isqrt(original["mm_vision_tower_aux_token_len_list"][0])
        context = original.get("tokenizer_model_max_length") or 8192
        reserved = original.get("inference_max_length", 16)
        try:
            return VidCompConfig(
                vision_config=siglip.config.to_dict(),
                text_config=text_config,
                sampler_config=LongVUSamplerConfig(
                    dino_config=dino.config.to_dict(),
                    mode="reference",
                    threshold=original.get("dino_threshold", 0.83),
                    context_length=context,
                    reserved_tokens=reserved,
                    tokens_per_frame=original.get("lowres_token", 8) ** 2,
                    # The release feeds DINOv2 378-pixel frames: 27 patches a side (of 14 pixels).
                    dino_image_size=RELEASED_DINO_PATCHES * dino.config.patch_size,
                    feature_grid=aux_side,
                ).to_dict(),
                compressor_config=LongVUCompressorConfig(
                    vision_hidden_size=siglip.config.hidden_size,
                    dino_hidden_size=dino.config.hidden_size,
                    sva_hidden_size=original["vision_hidden_size"],
                    num_layers=original.get("connector_depth", 3),
                    query_side=side,
                    kv_window=aux_side // side,
                    lowres_side=original.get("lowres_token", 8),
                    lowres_mode="bilinear",
                    relevance="dot",
                    overflow_resolution="high",
                    stc_threshold=original.get("drop_threshold", 0.7),
                    frame_position_encoding=bool(original.get("frame_pos", False)),
                    newline_size=original["hidden_size"],
                    context_length=context,
                    reserved_tokens=reserved,
                    # The released weights were trained reading each frame's (height, width) as (width, height).
                    swap_video_sizes=True,
                ).to_dict(),
                video_token_id=video_token_id,
                projector_hidden_act="gelu",
                vision_feature_layer=-1,
                vision_feature_select_strategy="full",
                parts={"vision_tower": self.vision_tower_source, "sampler": self.dino_source},
                tie_word_embeddings=original.get("tie_word_embeddings", False),
            )
        except (ValueError, TypeError) as error:
            raise SourceCheckpointError(f"{source / 'config.json'}: {error}") from error

    def read_weights(self, source: Path) -> dict[str, torch.Tensor]:
        state_dict = dict(read_state_dict(source))
        siglip, dino = self.towers()
        state_dict.update({f"siglip_tower.{k}": v for k, v in siglip.state_dict().items()})
        state_dict.update({f"dino_tower.{k}": v for k, v in dino.state_dict().items()})
        return state_dict

    def build_processor(self, source: Path, config: VidCompConfig) -> VidCompProcessor:
        tokenizer = self.tokenizer(source)
        size = config.vision_config.image_size
        # The release samples 1 fps (`range(0, len(vr), round(fps))`), letterboxes (`expand2square`) and normalises
        # for SigLIP (mean = std = 0.5).
        video_processor = VidCompVideoProcessor(
            size={"height": size, "width": size}, fps=1.0, num_frames=None, pad_to_square=True
        )
        return VidCompProcessor(
            video_processor=video_processor,
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
            video_token=VIDEO_TOKEN,
        )

    def card_info(self, source: Path, config: VidCompConfig) -> CardInfo:
        hub_id = hub_id_of(source)
        name = hub_id or source.name
        return CardInfo(
            source=(
                f"Converted from the released LongVU checkpoint `{name}` with `vidcomp convert longvu`: its SVA "
                f"connector, projector and LLM. The vision towers are not in the released file; they come from "
                f"`{self.vision_tower_source}` (SigLIP) and `{self.dino_source}` (DINOv2, in the sampler), as in the "
                "release, and are included here."
            ),
            # Hub ids only: local tower folders are named in the text above.
            base_model=[
                model
                for model in (hub_id, self.vision_tower_source, self.dino_source)
                if model and "/" in model and not Path(model).exists()
            ],
            extra_tags=["longvu"],
        )
