r"""Configuration of the composite video LLM: vision tower, sampler, compressor, projector and LLM."""


from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .components_vidcomp import COMPRESSOR_REGISTRY, SAMPLER_REGISTRY, ComponentConfigSpec
from .methods_vidcomp import SpatialPoolCompressorConfig, UniformSamplerConfig


@strict
class VidCompConfig(PreTrainedConfig):
    r"""
    A video LLM whose frame sampler and token compressor are chosen by config:

    ```python
    >>> config = VidCompConfig(
    ...     sampler_config={"model_type": "vidcomp_uniform_sampler", "num_frames": 32},
    ...     compressor_config={"model_type": "vidcomp_spatial_pool_compressor", "stride": 2},
    ... )
    ```

    vision_config (`dict` or `PreTrainedConfig`, *optional*):
        The vision tower, built with `AutoModel.from_config`. Defaults to a SigLIP vision model.
    text_config (`dict` or `PreTrainedConfig`, *optional*):
        The LLM, built with `AutoModel.from_config`. Defaults to Qwen2.
    sampler_config (`dict` or `PreTrainedConfig`, *optional*):
        The frame sampler; its `model_type` picks the method. Defaults to `uniform` with 16 frames.
    compressor_config (`dict` or `PreTrainedConfig`, *optional*):
        The token compressor; its `model_type` picks the method. Defaults to `spatial_pool` (2x2 bilinear).
    video_token_id (`int`, *optional*, defaults to 151647):
        The placeholder token. The processor writes it once per video; the model expands it to the video's tokens.
    projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
        Activation between the two layers of the projector from compressor tokens to LLM embeddings.
    vision_feature_layer (`int`, *optional*, defaults to -1):
        Which hidden state of the vision tower to use as frame features.
    video_token_budget (`int`, *optional*):
        The most LLM tokens one video may take; passed to the compressor. `None` means no limit.
    vision_batch_size (`int`, *optional*, defaults to 64):
        Frames per vision-tower call, which bounds the encoder's peak memory on long videos.
    """

    model_type = "vidcomp"
    attribute_map = {"video_token_index": "video_token_id"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="siglip_vision_model", init_kwargs={"vision_use_head": False}
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
        "sampler_config": ComponentConfigSpec(SAMPLER_REGISTRY, "sampler", UniformSamplerConfig.model_type),
        "compressor_config": ComponentConfigSpec(
            COMPRESSOR_REGISTRY, "compressor", SpatialPoolCompressorConfig.model_type
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    sampler_config: dict | PreTrainedConfig | None = None
    compressor_config: dict | PreTrainedConfig | None = None
    video_token_id: int = 151647
    projector_hidden_act: str = "gelu"
    vision_feature_layer: int = -1
    video_token_budget: int | None = None
    vision_batch_size: int = 64
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.video_token_budget is not None and self.video_token_budget < 1:
            raise ValueError(f"video_token_budget must be positive or None, got {self.video_token_budget}.")
        if self.vision_batch_size < 1:
            raise ValueError(f"vision_batch_size must be at least 1, got {self.vision_batch_size}.")
        if not self.tie_word_embeddings and self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True


__all__ = ["VidCompConfig"]
