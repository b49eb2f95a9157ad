r"""
`vidcomp convert llava-onevision SRC OUT`: a `LlavaOnevisionForConditionalGeneration` folder (Transformers format,
e.g. `llava-hf/llava-onevision-qwen2-0.5b-ov-hf`) as one of our models, logit for logit.

LLaVA-OneVision's video path is: vision tower -> `hidden_states[vision_feature_layer]` -> projector -> 2x2 bilinear
pooling per frame -> one `image_newline` after the video. In our terms that is the `spatial_pool` compressor (stride
2, bilinear) with `project_before_compression=True` and `video_newline=True`; the towers, projector, LLM and
tokenizer are carried over unchanged. Frames are sampled by the processor (uniformly, `num_frames` of them, as
LLaVA-OneVision is evaluated); the model's `uniform` sampler then keeps them all.
"""

from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
)
from transformers.core_model_loading import WeightRenaming

from ..modeling import SpatialPoolCompressorConfig, UniformSamplerConfig, VidCompConfig
from ..processors import VidCompProcessor, VidCompVideoProcessor, pixel_settings
from .cards import CardInfo
from .converters import CheckpointConverter, SourceCheckpointError, hub_id_of, register_converter, source_model_type
from .layouts import CheckpointLayout
from .sources import load_transformers_checkpoint


class NotLlavaOnevisionError(SourceCheckpointError):
    """The source folder is not a LLaVA-OneVision checkpoint in Transformers format."""


# LLaVA-OneVision is evaluated on 32 uniformly sampled frames per video. (Its own processor keeps every frame it
# is given; ours samples up to 32, so pass do_sample_frames=False to feed pre-sampled frames unchanged.)
DEFAULT_NUM_FRAMES = 32


@register_converter
class LlavaOnevisionConverter(CheckpointConverter):
    kind = "llava-onevision"
    keeps_source_generation_config = True
    description = "a LlavaOnevisionForConditionalGeneration folder in Transformers format"
    # Transformers' own loader reads every historic key layout of the source into its current names; from there
    # only the newline differs.
    layout = CheckpointLayout(
        name="llava-onevision",
        transforms=[WeightRenaming(r"^model\.image_newline$", "model.video_newline")],
    )

    def source_config(self, source: Path) -> LlavaOnevisionConfig:
        model_type = source_model_type(source, NotLlavaOnevisionError)
        if model_type != LlavaOnevisionConfig.model_type:
            raise NotLlavaOnevisionError(
                f"{str(source)!r} holds a {model_type!r} checkpoint, not LLaVA-OneVision ('llava_onevision'). "
                "`vidcomp convert --help` lists the source kinds."
            )
        try:
            return LlavaOnevisionConfig.from_pretrained(source)
        except (ValueError, TypeError, StrictDataclassError) as error:
            raise SourceCheckpointError(f"{source / 'config.json'} is not a valid LLaVA-OneVision config: {error}") from error

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
        model = load_transformers_checkpoint(LlavaOnevisionForConditionalGeneration, source)
        return model.state_dict()

    def build_processor(self, source: Path, config: VidCompConfig) -> VidCompProcessor:
        try:
            original = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise SourceCheckpointError(
                f"The LLaVA-OneVision checkpoint {str(source)!r} lacks a usable processor (tokenizer, "
                f"video_preprocessor_config.json, chat template); save it with the model. ({error})"
            ) from error
        video_processor = getattr(original, "video_processor", None)
        if video_processor is None:
            raise SourceCheckpointError(f"The processor in {str(source)!r} has no video processor.")
        return VidCompProcessor(
            video_processor=VidCompVideoProcessor(
                **pixel_settings(video_processor), fps=None, num_frames=DEFAULT_NUM_FRAMES
            ),
            tokenizer=AutoTokenizer.from_pretrained(source),
            chat_template=original.chat_template,
            video_token=original.video_token,
        )

    def card_info(self, source: Path, config: VidCompConfig) -> CardInfo:
        hub_id = hub_id_of(source)
        name = hub_id or source.name
        return CardInfo(
            source=(
                f"Converted from the LLaVA-OneVision checkpoint `{name}` with `vidcomp convert llava-onevision`: the "
                "same vision tower, projector, LLM and tokenizer, running LLaVA-OneVision's video path (2x2 "
                "bilinear pooling after the projector, one newline per video). Images are not supported; pass a "
                "one-frame video."
            ),
            base_model=[hub_id] if hub_id else [],
            datasets=["lmms-lab/LLaVA-OneVision-Data"],
            extra_tags=["llava-onevision"],
        )
