r"""Configuration of the composite video LLM: vision tower, sampler, compressor, projector and LLM."""


from typing import Literal

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
    multimodal_projector_bias (`bool`, *optional*, defaults to `True`):
        Whether the projector's linear layers have biases.
    vision_feature_layer (`int` or `list[int]`, *optional*, defaults to -1):
        Which of the vision tower's `hidden_states` are the frame features, as in Transformers' LLaVA models:
        -1 is the last encoder layer's output (before SigLIP's `post_layernorm`); a list concatenates several.
    vision_feature_select_strategy (`str`, *optional*, defaults to `"full"`):
        `"default"` drops the first token of each frame (a CLS token), `"full"` keeps every token. SigLIP has no
        CLS token, so it needs `"full"`.
    project_before_compression (`bool`, *optional*, defaults to `False`):
        Project frame features to the LLM's width before the compressor instead of after it. LLaVA-OneVision
        projects first and pools the projected features; compressing first is cheaper.
    video_newline (`bool`, *optional*, defaults to `False`):
        Append a learned embedding after each video's tokens, LLaVA-OneVision's `image_newline`.
    video_token_budget (`int`, *optional*):
        The most LLM tokens one video may take; passed to the compressor. `None` means no limit.
    vision_batch_size (`int`, *optional*, defaults to 64):
        Frames per vision-tower call, which bounds the encoder's peak memory on long videos.
    video_segment_tokens (`dict[str, list[int]]`, *optional*):
        Qwen3-VL: the token ids of the pieces of its per-patch video text (`"vision_start"`, `"vision_end"`, `"<"`,
        the digits, `"."` and `" seconds>"`), so the model writes `<t seconds><|vision_start|>...<|vision_end|>` for
        each temporal patch it keeps, as Qwen3-VL's processor does for every patch. Set by `vidcomp convert qwen3_vl`.
    parts (`dict[str, str]`, *optional*):
        Where pretrained parts came from, by part name (`vision_tower`, `language_model`, `sampler`,
        `compressor`, `projector`), as recorded by `VidCompForConditionalGeneration.from_pretrained_parts`. Parts
        not listed were initialised fresh.
    """

    model_type = "vidcomp"
    attribute_map = {"video_token_index": "video_token_id"}
    # Trainer gathers predictions along their first dimension as the batch; the videos' tokens are not batch-major.
    keys_to_ignore_at_inference = ["cache", "video_outputs"]
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
    multimodal_projector_bias: bool = True
    vision_feature_layer: int | list[int] = -1
    vision_feature_select_strategy: Literal["default", "full"] = "full"
    project_before_compression: bool = False
    video_newline: bool = False
    video_token_budget: int | None = None
    vision_batch_size: int = 64
    video_segment_tokens: dict[str, list[int]] | None = None
    parts: dict[str, str] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.video_token_budget is not None and self.video_token_budget < 1:
            raise ValueError(f"video_token_budget must be positive or None, got {self.video_token_budget}.")
        if self.vision_batch_size < 1:
            raise ValueError(f"vision_batch_size must be at least 1, got {self.vision_batch_size}.")
        if not self.tie_word_embeddings and self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True
        # hidden_states holds the embeddings and one entry per layer: valid indices are -(L + 1) .. L.
        num_states = self.vision_config.num_hidden_layers + 1
        layers = self.vision_feature_layers
        if not layers or any(not -num_states <= layer < num_states for layer in layers):
            raise ValueError(
                f"vision_feature_layer {self.vision_feature_layer!r} is out of range: the vision tower has "
                f"{num_states - 1} layers, so each index must lie in [{-num_states}, {num_states - 1}]."
            )

    @property
    def vision_feature_layers(self) -> list[int]:
        """`vision_feature_layer` as a list."""
        layer = self.vision_feature_layer
        return [layer] if isinstance(layer, int) else list(layer)


__all__ = ["VidCompConfig"]
