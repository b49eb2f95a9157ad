r"""
`vidcomp convert llava-onevision SRC OUT`: a `LlavaOnevisionForConditionalGeneration` folder (Transformers format,
e.g. `llava-hf/llava-onevision-qwen2-0.5b-ov-hf`) as one of our models, logit for logit.

LLaVA-OneVision's video path is: vision tower -> `hidden_states[vision_feature_layer]` -> projector -> 2x2 bilinear
pooling per frame -> one `image_newline` after the video. In our terms that is the `spatial_pool` compressor (stride
2, bilinear) with `project_before_compression=True` and `video_newline=True`; the towers, projector, LLM and
tokenizer are carried over unchanged. Frames are sampled by the processor (uniformly, `num_frames` of them, as
LLaVA-OneVision is evaluated); the model's `uniform` sampler then keeps them all.
"""

import json
from pathlib import Path

import torch
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
)
from transformers.core_model_loading import WeightRenaming

from ..modeling import SpatialPoolCompressorConfig, UniformSamplerConfig, VidCompConfig
from ..processors import VidCompProcessor, VidCompVideoProcessor
from .cards import CardInfo
from .converters import CheckpointConverter, SourceCheckpointError, register_converter
from .layouts import CheckpointKeysError, CheckpointLayout, CheckpointShapeError


class NotLlavaOnevisionError(SourceCheckpointError):
    """The source folder is not a LLaVA-OneVision checkpoint in Transformers format."""


# LLaVA-OneVision is evaluated on 32 uniformly sampled frames per video.
DEFAULT_NUM_FRAMES = 32
# The video processor settings that decide the pixels, copied from the source so pixel values match exactly.
PIXEL_SETTINGS = (
    "size", "resample", "do_resize", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
    "do_convert_rgb",
)  # fmt: skip


@register_converter
class LlavaOnevisionConverter(CheckpointConverter):
    kind = "llava-onevision"
    description = "a LlavaOnevisionForConditionalGeneration folder in Transformers format"
    # Transformers' own loader reads every historic key layout of the source into its current names; from there
    # only the newline differs.
    layout = CheckpointLayout(
        name="llava-onevision",
        transforms=[WeightRenaming(r"^model\.image_newline$", "model.video_newline")],
    )

    def source_config(self, source: Path) -> LlavaOnevisionConfig:
        config_file = source / "config.json"
        if not source.is_dir() or not config_file.is_file():
            raise NotLlavaOnevisionError(f"{str(source)!r} is not a checkpoint folder with a config.json.")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except json.JSONDecodeError as error:
            raise NotLlavaOnevisionError(f"{config_file} is not valid JSON: {error}.") from error
        if model_type != LlavaOnevisionConfig.model_type:
            raise NotLlavaOnevisionError(
                f"{str(source)!r} holds a {model_type!r} checkpoint, not LLaVA-OneVision ('llava_onevision'). "
                "`vidcomp convert --help` lists the source kinds."
            )
        return LlavaOnevisionConfig.from_pretrained(source)

    def build_config(self, source: Path) -> VidCompConfig:
        original = self.source_config(source)
        try:
            return self.vidcomp_config(original)
        except ValueError as error:  # e.g. a vision_feature_layer beyond the tower's depth
            raise SourceCheckpointError(f"{source / 'config.json'}: {error}") from error

    def vidcomp_config(self, original: LlavaOnevisionConfig) -> VidCompConfig:
        return VidCompConfig(
            vision_config=original.vision_config.to_dict(),
            text_config=original.text_config.to_dict(),
            sampler_config=UniformSamplerConfig(num_frames=DEFAULT_NUM_FRAMES).to_dict(),
            compressor_config=SpatialPoolCompressorConfig(stride=2, mode="bilinear").to_dict(),
            video_token_id=original.video_token_id,
            projector_hidden_act=original.projector_hidden_act,
            multimodal_projector_bias=original.multimodal_projector_bias,
            vision_feature_layer=original.vision_feature_layer,
            vision_feature_select_strategy=original.vision_feature_select_strategy,
            project_before_compression=True,
            video_newline=True,
            tie_word_embeddings=original.tie_word_embeddings,
        )

    def read_weights(self, source: Path) -> dict[str, torch.Tensor]:
        model, loading = LlavaOnevisionForConditionalGeneration.from_pretrained(
            source, output_loading_info=True, dtype="auto"
        )
        # from_pretrained would initialise missing weights randomly and ignore extra ones; a conversion may not.
        if loading["missing_keys"] or loading["unexpected_keys"]:
            raise CheckpointKeysError(list(loading["missing_keys"]), list(loading["unexpected_keys"]), str(source))
        if loading["mismatched_keys"]:
            raise CheckpointShapeError(
                {key: (tuple(got), tuple(want)) for key, got, want in loading["mismatched_keys"]}, str(source)
            )
        return model.state_dict()

    def build_processor(self, source: Path, config: VidCompConfig) -> VidCompProcessor:
        try:
            original = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise NotLlavaOnevisionError(
                f"{str(source)!r} has no usable processor (tokenizer, video_preprocessor_config.json): {error}"
            ) from error
        video_processor = getattr(original, "video_processor", None)
        if video_processor is None:
            raise NotLlavaOnevisionError(f"The processor in {str(source)!r} has no video processor.")
        pixel_settings = {name: getattr(video_processor, name) for name in PIXEL_SETTINGS}
        return VidCompProcessor(
            video_processor=VidCompVideoProcessor(**pixel_settings, fps=None, num_frames=DEFAULT_NUM_FRAMES),
            tokenizer=AutoTokenizer.from_pretrained(source),
            chat_template=original.chat_template,
            video_token=original.video_token,
        )

    def generation_config(self, source: Path, config: VidCompConfig) -> GenerationConfig | None:
        if (source / "generation_config.json").is_file():
            return GenerationConfig.from_pretrained(source)
        return None

    def card_info(self, source: Path, config: VidCompConfig) -> CardInfo:
        name = LlavaOnevisionConfig.from_pretrained(source).name_or_path or source.name
        return CardInfo(
            source=(
                f"Converted from the LLaVA-OneVision checkpoint `{name}` with `vidcomp convert llava-onevision`: the "
                "same vision tower, projector, LLM and tokenizer, running LLaVA-OneVision's video path (2x2 "
                "bilinear pooling after the projector, one newline per video). Images are not supported; pass a "
                "one-frame video."
            ),
            base_model=[name] if "/" in name else [],
            datasets=["lmms-lab/LLaVA-OneVision-Data"],
            extra_tags=["llava-onevision"],
        )
