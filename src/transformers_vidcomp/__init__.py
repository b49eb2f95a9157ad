r"""transformers_vidcomp: frame samplers and video-token compressors as ordinary Transformers components.

Importing the package registers every config, model, processor and the `video-text-to-text` pipeline with the
Transformers Auto classes, and marks the classes so that `save_pretrained` writes a folder that loads as remote code.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
    AutoVideoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling import (
    COMPRESSOR_REGISTRY,
    SAMPLER_REGISTRY,
    CompressorOutput,
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    SamplerOutput,
    TokenBudgetError,
    TransNetV2Config,
    TransNetV2Model,
    VidCompCompressor,
    VidCompConfig,
    VidCompForConditionalGeneration,
    VidCompModel,
    VidCompSampler,
    VidCompVideoFeatures,
)
from .processors import (
    EmptyVideoError,
    HIComProcessor,
    VidCompProcessor,
    VidCompQwenVideoProcessor,
    VidCompVideoProcessor,
    VideoDecodeError,
    VideoTextToTextPipeline,
)


__version__ = "0.1.0"

VIDEO_TEXT_TO_TEXT = "video-text-to-text"

# Hub folders record these in `auto_map`, so they load without this package installed.
COMPOSITE_AUTO_MAP = {
    "AutoConfig": "configuration_vidcomp.VidCompConfig",
    "AutoModel": "modeling_vidcomp.VidCompModel",
    "AutoModelForImageTextToText": "modeling_vidcomp.VidCompForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_vidcomp.VidCompForConditionalGeneration",
}


def _register() -> None:
    AutoConfig.register(VidCompConfig.model_type, VidCompConfig, exist_ok=True)
    AutoModel.register(VidCompConfig, VidCompModel, exist_ok=True)
    AutoModelForImageTextToText.register(VidCompConfig, VidCompForConditionalGeneration, exist_ok=True)
    AutoModelForMultimodalLM.register(VidCompConfig, VidCompForConditionalGeneration, exist_ok=True)
    AutoVideoProcessor.register(VidCompConfig, VidCompVideoProcessor, exist_ok=True)
    AutoProcessor.register(VidCompConfig, VidCompProcessor, exist_ok=True)
    for component in (*SAMPLER_REGISTRY.values(), *COMPRESSOR_REGISTRY.values(), TransNetV2Model):
        AutoConfig.register(component.config_class.model_type, component.config_class, exist_ok=True)
        AutoModel.register(component.config_class, component, exist_ok=True)
        component.config_class.register_for_auto_class("AutoConfig")
        component.register_for_auto_class("AutoModel")

    VidCompConfig.register_for_auto_class("AutoConfig")
    VidCompForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    VidCompProcessor.register_for_auto_class("AutoProcessor")
    HIComProcessor.register_for_auto_class("AutoProcessor")
    VidCompVideoProcessor.register_for_auto_class("AutoVideoProcessor")
    VidCompQwenVideoProcessor.register_for_auto_class("AutoVideoProcessor")
    PIPELINE_REGISTRY.register_pipeline(
        VIDEO_TEXT_TO_TEXT,
        pipeline_class=VideoTextToTextPipeline,
        pt_model=AutoModelForImageTextToText,
        type="multimodal",
    )


_register()

__all__ = [
    "COMPOSITE_AUTO_MAP",
    "COMPRESSOR_REGISTRY",
    "SAMPLER_REGISTRY",
    "VIDEO_TEXT_TO_TEXT",
    "CompressorOutput",
    "EmptyVideoError",
    "HIComProcessor",
    "InstructionCondition",
    "InvalidVideoInputError",
    "PackedFrames",
    "SamplerOutput",
    "TokenBudgetError",
    "TransNetV2Config",
    "TransNetV2Model",
    "VidCompCompressor",
    "VidCompConfig",
    "VidCompForConditionalGeneration",
    "VidCompModel",
    "VidCompProcessor",
    "VidCompQwenVideoProcessor",
    "VidCompSampler",
    "VidCompVideoFeatures",
    "VidCompVideoProcessor",
    "VideoDecodeError",
    "VideoTextToTextPipeline",
]
