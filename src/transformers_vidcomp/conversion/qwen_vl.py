r"""
`vidcomp convert qwen2_5_vl SRC OUT` and `vidcomp convert qwen3_vl SRC OUT`: a Transformers Qwen2.5-VL or Qwen3-VL
checkpoint as one of our models, with any of our samplers and compressors between Qwen's vision encoder and its LLM.

Qwen's weights are carried over unchanged: its vision encoder (with its merger, Qwen's projector) becomes our
`vision_tower`, its text model our `language_model`, its head our `lm_head`. Our model pairs the frames its sampler
keeps into Qwen's temporal patches and gives every token that remains the 3D rotary position Qwen gives that token
(`positions_vidcomp.py`). Without `--sampler` / `--compressor` the model does what Qwen does: the `uniform` sampler
keeps every frame the processor sampled at Qwen's rate, and `spatial_pool` with stride 1 keeps every token.
"""

from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    PreTrainedConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.core_model_loading import WeightRenaming

from ..modeling import SpatialPoolCompressorConfig, UniformSamplerConfig, VidCompConfig
from ..modeling import build_compressor, build_sampler
from ..modeling.parts_vidcomp import load_component
from ..modeling.vision_qwen_vidcomp import timestamp_token_ids
from ..processors import QWEN_VIDEO_SETTINGS, VidCompProcessor, VidCompQwenVideoProcessor, pixel_settings
from .cards import CardInfo
from .converters import CheckpointConverter, SourceCheckpointError, hub_id_of, register_converter, source_model_type
from .layouts import CheckpointLayout
from .sources import load_transformers_checkpoint


# Times whose text a converted Qwen3-VL must tokenize as its pieces do.
TIMESTAMP_CHECKS = (0.3, 12.5, 3599.8, 100.0)


class NotQwenVLError(SourceCheckpointError):
    """The source folder is not a Qwen2.5-VL / Qwen3-VL checkpoint in Transformers format."""


# Methods that work on a converted model as they are, with no training, and those whose weights must be trained
# (or converted from their release) first. The card lists the added components under these headings.
TRAINING_FREE = {
    # Samplers: no weights, or pretrained ones they ship with (TransNetV2 for avs, DINOv2 for longvu).
    "vidcomp_uniform_sampler", "vidcomp_avs_sampler", "vidcomp_fila_kmeans_sampler", "vidcomp_fila_bipartite_sampler",
    "vidcomp_longvu_sampler",
    # Compressors without weights. LongVU's full compressor (its SVA), HICom, the compact autoencoder and FiLA's
    # weighted fusion / attention pooling have learned weights.
    "vidcomp_spatial_pool_compressor", "vidcomp_stc_compressor", "vidcomp_fila_bipartite_merge",
    "vidcomp_fila_temporal_average",
}  # fmt: skip


def needs_training(config: PreTrainedConfig) -> bool:
    """Whether a sampler or compressor must be trained before it helps a converted model (it has learned weights)."""
    return config.model_type not in TRAINING_FREE


class QwenVLConverter(CheckpointConverter):
    r"""
    Shared by both Qwen families. `sampler` and `compressor` are specs as `vidcomp swap` takes them (a registered
    `model_type`, or a JSON object with one); without them the model reproduces Qwen.
    """

    family: ClassVar[str]
    source_config_class: ClassVar[type[PreTrainedConfig]]
    source_model_class: ClassVar[type]
    keeps_source_generation_config = True
    layout = CheckpointLayout(name="qwen-vl", transforms=[WeightRenaming(r"^model\.visual\.", "model.vision_tower.")])

    def __init__(self, sampler: str | dict | None = None, compressor: str | dict | None = None):
        # A spec (a registered `model_type` or JSON) starts fresh; a folder saved with `save_pretrained` (LongVU's
        # sampler with a pretrained DINOv2, the adaptive sampler with TransNetV2) brings its weights.
        self.sampler = sampler
        self.compressor = compressor
        self.components = {}

    def source_config(self, source: Path) -> PreTrainedConfig:
        model_type = source_model_type(source, NotQwenVLError)
        if model_type != self.source_config_class.model_type:
            raise NotQwenVLError(
                f"{str(source)!r} holds a {model_type!r} checkpoint, not {self.source_config_class.model_type!r}. "
                "`vidcomp convert --help` lists the source kinds."
            )
        try:
            # Hub configs carry `rope_scaling: {"type": "mrope", ...}`; Transformers' config reads that form too.
            return self.source_config_class.from_pretrained(source)
        except (ValueError, TypeError, StrictDataclassError) as error:
            raise SourceCheckpointError(f"{source / 'config.json'} is not a valid {self.family} config: {error}") from error

    def build_config(self, source: Path) -> VidCompConfig:
        original = self.source_config(source)
        defaults = {
            "sampler": UniformSamplerConfig(num_frames=self.max_frames(source), fps=None).to_dict(),
            "compressor": SpatialPoolCompressorConfig(stride=1, mode="average").to_dict(),
        }
        for kind in ("sampler", "compressor"):
            component, module = load_component(getattr(self, kind), kind)
            defaults[kind] = component or defaults[kind]
            self.components[kind] = module
        sampler, compressor = defaults["sampler"], defaults["compressor"]
        return VidCompConfig(
            vision_config=original.vision_config.to_dict(),
            text_config=original.text_config.to_dict(),
            sampler_config=sampler,
            compressor_config=compressor,
            video_token_id=original.video_token_id,
            tie_word_embeddings=original.tie_word_embeddings,
            video_segment_tokens=self.video_segment_tokens(source, original),
        )

    def video_segment_tokens(self, source: Path, original: PreTrainedConfig) -> dict[str, list[int]] | None:
        """Qwen3-VL only: the ids of the pieces of `<t seconds><|vision_start|>...<|vision_end|>`."""
        return None

    def max_frames(self, source: Path) -> int:
        """The most frames Qwen's processor samples from one video, which the default sampler keeps."""
        return self.source_processor(source).video_processor.max_frames

    def read_weights(self, source: Path) -> dict[str, torch.Tensor]:
        model = load_transformers_checkpoint(self.source_model_class, source)
        return {**model.state_dict(), **self.component_weights(source)}

    def component_weights(self, source: Path) -> dict[str, torch.Tensor]:
        """Weights of the added sampler and compressor: as loaded from their folders, or freshly initialised."""
        config = self.build_config(source)
        weights = {}
        for kind, build in (("sampler", build_sampler), ("compressor", build_compressor)):
            module = self.components.get(kind) or build(getattr(config, f"{kind}_config"))
            weights.update({f"model.{kind}.{key}": tensor for key, tensor in module.state_dict().items()})
        return weights

    def source_processor(self, source: Path):
        try:
            original = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise SourceCheckpointError(
                f"The {self.family} checkpoint {str(source)!r} lacks a usable processor (tokenizer, "
                f"video_preprocessor_config.json, chat template); save it with the model. ({error})"
            ) from error
        if getattr(original, "video_processor", None) is None:
            raise SourceCheckpointError(f"The processor in {str(source)!r} has no video processor.")
        return original

    def build_processor(self, source: Path, config: VidCompConfig) -> VidCompProcessor:
        original = self.source_processor(source)
        video = original.video_processor
        settings = {name: getattr(video, name) for name in QWEN_VIDEO_SETTINGS if getattr(video, name, None) is not None}
        # A source without `cap_pixels_per_frame` gets the reference behaviour (True, this class's default).
        video_processor = VidCompQwenVideoProcessor(**pixel_settings(video), **settings, qwen_family=self.family)
        return VidCompProcessor(
            video_processor=video_processor,
            tokenizer=AutoTokenizer.from_pretrained(source),
            chat_template=original.chat_template,
            video_token=original.video_token,
        )

    def card_info(self, source: Path, config: VidCompConfig) -> CardInfo:
        hub_id = hub_id_of(source)
        name = hub_id or source.name
        added = []
        for kind in ("sampler", "compressor"):
            component = getattr(config, f"{kind}_config")
            training = "needs training before use" if needs_training(component) else "training-free: works as converted"
            added.append(f"the {kind} `{component.model_type}` ({training})")
        return CardInfo(
            source=(
                f"Converted from the {self.family} checkpoint `{name}` with `vidcomp convert {self.kind}`: Qwen's "
                f"vision encoder, LLM and tokenizer unchanged, with {' and '.join(added)} between them. Every kept "
                "token keeps the 3D rotary position (time, height, width) Qwen gives it. Images are not supported; "
                "pass a one-frame video."
            ),
            base_model=[hub_id] if hub_id else [],
            extra_tags=[self.family],
        )


@register_converter
class Qwen2_5_VLConverter(QwenVLConverter):
    kind = "qwen2_5_vl"
    family = "qwen2_5_vl"
    description = "a Qwen2_5_VLForConditionalGeneration folder in Transformers format"
    source_config_class = Qwen2_5_VLConfig
    source_model_class = Qwen2_5_VLForConditionalGeneration


@register_converter
class Qwen3VLConverter(QwenVLConverter):
    kind = "qwen3_vl"
    family = "qwen3_vl"
    description = "a Qwen3VLForConditionalGeneration folder in Transformers format"
    source_config_class = Qwen3VLConfig
    source_model_class = Qwen3VLForConditionalGeneration

    def video_segment_tokens(self, source: Path, original: PreTrainedConfig) -> dict[str, list[int]]:
        tokenizer = AutoTokenizer.from_pretrained(source)
        pieces = ["<", *"0123456789", ".", " seconds>"]
        tokens = {piece: tokenizer.encode(piece, add_special_tokens=False) for piece in pieces}
        tokens.update(vision_start=[original.vision_start_token_id], vision_end=[original.vision_end_token_id])
        for seconds in TIMESTAMP_CHECKS:
            text = f"<{seconds:.1f} seconds>"
            if tokenizer.encode(text, add_special_tokens=False) != timestamp_token_ids(seconds, tokens):
                raise SourceCheckpointError(
                    f"The tokenizer in {str(source)!r} does not split {text!r} into its digits and punctuation as "
                    "Qwen's does, so the model cannot write a kept patch's time as Qwen3-VL's processor would."
                )
        return tokens


__all__ = ["NotQwenVLError", "Qwen2_5_VLConverter", "Qwen3VLConverter", "QwenVLConverter", "needs_training"]
