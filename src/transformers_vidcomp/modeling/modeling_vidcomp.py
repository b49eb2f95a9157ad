r"""The composite video LLM: decode -> sample -> encode -> compress -> project -> splice into the LLM.

The number of tokens a video becomes is known only after its compressor runs (LongVU's STC and adaptive sampling
depend on the pixels). So the processor writes **one** `<video>` placeholder per video, and the model expands it to
the video's token count, together with the attention mask and the labels. `generate()` encodes each video once,
expands the prompt, and hands the tokens to the prefill step through `mm_encoder_outputs`.
"""

import os
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.generation.streamers import BaseStreamer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.versions import require_version

from .components_vidcomp import (
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    TokenBudgetError,
    batches_with_progress,
)
from .configuration_vidcomp import VidCompConfig
from .methods_vidcomp import build_compressor, build_sampler
from .positions_vidcomp import multimodal_position_ids, temporal_positions
from .vision_qwen_vidcomp import encode_temporal_patches, interleave_timestamps, pair_frames, qwen_family
from .parts_vidcomp import (
    PartError,
    PartSource,
    load_component,
    load_language_model,
    load_projector_state,
    load_vision_tower,
    part_module_names,
    part_name,
    video_token_id_for,
)


# Transformers 5.24 renamed the key-value cache from `past_key_values` to `cache`, in forward arguments and outputs, and
# its `generate` feeds back only an output named `cache`. Checkpoints load this file as remote code, so it says so itself.
require_version(
    "transformers>=5.24.0.dev0",
    "This model names its key-value cache `cache`, as Transformers does from 5.24. Run `pip install -U transformers`.",
)


def num_videos_of(video_num_frames: torch.LongTensor | None) -> int | None:
    """How many videos `video_num_frames` describes; None when it is missing, which `get_video_features` refuses."""
    return None if video_num_frames is None else len(video_num_frames)


@dataclass
class VidCompVideoFeatures(BaseModelOutputWithPooling):
    r"""
    pooler_output (`torch.FloatTensor` of shape `(total_tokens, text_hidden_size)`):
        The projected tokens of all videos, concatenated in video order, ready to replace the placeholders.
    token_counts (`torch.LongTensor` of shape `(num_videos,)`):
        How many tokens each video became.
    token_frame_index (`torch.LongTensor` of shape `(total_tokens,)`):
        For each token, the index of its source frame among the frames given to the model for that video; -1 for
        the video newline token (`config.video_newline`), which comes from no frame.
    token_timestamps (`torch.FloatTensor` of shape `(total_tokens,)`):
        For each token, the time in seconds of its source frame (the video's last kept frame for the newline).
    keep_mask (`torch.BoolTensor` of shape `(total_frames,)`):
        Which input frames the sampler kept.
    scene_ids (`torch.LongTensor` of shape `(total_frames,)`, *optional*):
        The sampler's scene of each kept frame (-1 for dropped frames), for methods that have scenes.
    token_positions (`torch.LongTensor` of shape `(total_tokens, 3)`, *optional*):
        For LLMs with multimodal rotary positions (Qwen2.5-VL, Qwen3-VL): each token's (temporal, row, column)
        position relative to its video's start (see `positions_vidcomp.py`).
    video_position_spans (`torch.LongTensor` of shape `(num_videos,)`, *optional*):
        With `token_positions`: how far the text after each video moves on from the video's start.
    deepstack_features (`list[torch.FloatTensor]`, *optional*):
        Qwen3-VL: per DeepStack level, the features of the kept tokens, shape `(total_tokens, text_hidden_size)`,
        added to the LLM's hidden states at its first layers.
    """

    token_counts: torch.LongTensor | None = None
    token_frame_index: torch.LongTensor | None = None
    token_timestamps: torch.FloatTensor | None = None
    keep_mask: torch.BoolTensor | None = None
    scene_ids: torch.LongTensor | None = None
    token_positions: torch.LongTensor | None = None
    video_position_spans: torch.LongTensor | None = None
    deepstack_features: list[torch.FloatTensor] | None = None


@dataclass
class ExpandedTokenSources:
    r"""
    Where each position of an expanded sequence came from; every field has shape `(batch_size, expanded_length)`.

    Args:
        text_position (`torch.LongTensor`):
            The position in the caller's `input_ids` of a text token; -1 for video tokens and padding.
        video_index (`torch.LongTensor`):
            Which video of the batch (in placeholder order) a video token belongs to; -1 elsewhere.
        video_token_index (`torch.LongTensor`):
            Which of its video's tokens it is (the row of `video_outputs.pooler_output` within that video); -1 elsewhere.
    """

    text_position: torch.LongTensor
    video_index: torch.LongTensor
    video_token_index: torch.LongTensor


def encoded_videos(
    pixel_values_videos: torch.FloatTensor | None, mm_encoder_outputs: dict[str, VidCompVideoFeatures] | None
) -> VidCompVideoFeatures | None:
    """The videos given already encoded, if any; refused next to pixels, which would be encoded again."""
    features = (mm_encoder_outputs or {}).get("video")
    if pixel_values_videos is not None and features is not None:
        raise ValueError("Pass either pixel_values_videos or mm_encoder_outputs['video'], not both.")
    return features


@dataclass
class VidCompModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    r"""
    video_outputs (`VidCompVideoFeatures`, *optional*):
        The videos' tokens (`pooler_output`), how many each became (`token_counts`) and where they came from.
    attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
        The attention mask after each video placeholder was expanded to the video's tokens.
    labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
        The labels after expansion; every video token is -100.
    """

    attention_mask: torch.LongTensor | None = None
    labels: torch.LongTensor | None = None


@dataclass
class VidCompCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    r"""
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Scores over the expanded sequence, in which each video occupies its own token count.
    video_outputs (`VidCompVideoFeatures`, *optional*):
        The videos' tokens (`pooler_output`), how many each became (`token_counts`) and where they came from.
    labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
        The labels aligned with `logits`.
    """

    labels: torch.LongTensor | None = None


class VidCompMultiModalProjector(nn.Module):
    """Two linear layers with an activation between them, from vision width to LLM embeddings."""

    def __init__(self, config: VidCompConfig, input_dim: int):
        super().__init__()
        text_hidden_size = config.text_config.hidden_size
        bias = config.multimodal_projector_bias
        self.linear_1 = nn.Linear(input_dim, text_hidden_size, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_hidden_size, text_hidden_size, bias=bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(tokens)))


class VidCompPreTrainedModel(PreTrainedModel):
    config: VidCompConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # token counts depend on the data

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VidCompModel) and module.video_newline is not None:
            nn.init.normal_(module.video_newline, std=self.config.text_config.hidden_size**-0.5)


class VidCompModel(VidCompPreTrainedModel):
    def __init__(self, config: VidCompConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.sampler = build_sampler(config.sampler_config)
        self.compressor = build_compressor(config.compressor_config)
        # Qwen2.5-VL / Qwen3-VL towers: frames go in as temporal patches, merged LLM-width tokens come out.
        self.qwen_family = qwen_family(config.vision_config)
        if self.qwen_family == "qwen3_vl" and config.video_segment_tokens is None:
            raise ValueError(
                "A Qwen3-VL model writes each temporal patch's time as text and needs config.video_segment_tokens, "
                "the token ids of that text's pieces; `vidcomp convert qwen3_vl` reads them from Qwen's tokenizer."
            )
        feature_dim = config.vision_config.hidden_size * len(config.vision_feature_layers)
        if self.qwen_family is not None:
            feature_dim = config.vision_config.out_hidden_size
        text_dim = config.text_config.hidden_size
        if self.qwen_family is not None:
            # Qwen's merger is its projector: it already brings the tokens to the LLM's width.
            if config.project_before_compression or self.compressor.output_dim(feature_dim) != text_dim:
                raise ValueError(
                    f"A Qwen vision encoder returns LLM-width tokens ({feature_dim}) from its own merger; it needs "
                    f"project_before_compression=False and a compressor that keeps that width "
                    f"({type(self.compressor).__name__} returns {self.compressor.output_dim(feature_dim)})."
                )
            self.multi_modal_projector = nn.Identity()
        elif config.project_before_compression and self.compressor.projection != "after":
            raise ValueError(
                f"{type(self.compressor).__name__} projects its own tokens after compressing them; "
                "set project_before_compression=False."
            )
        elif config.project_before_compression:
            self.multi_modal_projector = VidCompMultiModalProjector(config, feature_dim)
            if self.compressor.output_dim(text_dim) != text_dim:
                raise ValueError(
                    f"project_before_compression needs a compressor that keeps the LLM width ({text_dim}); "
                    f"{type(self.compressor).__name__} returns {self.compressor.output_dim(text_dim)}."
                )
        elif self.compressor.projection == "own":
            if self.compressor.output_dim(feature_dim) != text_dim:
                raise ValueError(
                    f"{type(self.compressor).__name__} projects its tokens to width "
                    f"{self.compressor.output_dim(feature_dim)} itself, but the LLM's hidden size is {text_dim}. "
                    "Set the compressor's output width to the LLM's hidden size."
                )
            self.multi_modal_projector = nn.Identity()
        else:
            self.multi_modal_projector = VidCompMultiModalProjector(config, self.compressor.output_dim(feature_dim))
        self.video_newline = nn.Parameter(torch.zeros(text_dim)) if config.video_newline else None
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def encode_frames(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        r"""
        Runs the vision tower over frames in batches of `config.vision_batch_size` and selects the feature layers.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_frames, 3, height, width)`)
        Returns:
            `torch.FloatTensor` of shape `(num_frames, grid_h, grid_w, vision_hidden_size * num_feature_layers)`.
        """
        patch_size = self.config.vision_config.patch_size
        grid_h, grid_w = pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size
        layers = self.config.vision_feature_layers
        hidden = []
        for chunk in batches_with_progress(pixel_values, self.config.vision_batch_size, "encoding frames", self.training):
            # A list of indices makes Transformers keep only those hidden states, not one per layer.
            states = self.vision_tower(pixel_values=chunk, output_hidden_states=layers).hidden_states
            selected = torch.cat([states[layer] for layer in layers], dim=-1)
            if self.config.vision_feature_select_strategy == "default":
                selected = selected[:, 1:]
            if selected.shape[1] != grid_h * grid_w:
                raise ValueError(
                    f"The vision tower returns {selected.shape[1]} tokens per frame for a {grid_h}x{grid_w} patch "
                    f"grid. vision_feature_select_strategy='default' drops a CLS token (CLIP has one); 'full' keeps "
                    "all tokens (SigLIP has no CLS token). Set it to match the tower."
                )
            hidden.append(selected)
        return rearrange(torch.cat(hidden), "t (h w) d -> t h w d", h=grid_h)

    def get_video_features(
        self,
        pixel_values_videos: torch.FloatTensor,
        video_num_frames: torch.LongTensor,
        video_timestamps: torch.FloatTensor | None = None,
        instruction: InstructionCondition | None = None,
        video_token_budget: int | None = None,
        video_sizes: torch.LongTensor | None = None,
    ) -> VidCompVideoFeatures:
        r"""
        Samples, encodes and compresses a batch of videos into LLM-ready tokens.

        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(total_frames, 3, height, width)`):
                The normalised frames of all videos, concatenated.
            video_num_frames (`torch.LongTensor` of shape `(num_videos,)`):
                Frames per video.
            video_timestamps (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
                Time of each frame in seconds. Without it, frames are taken to be one second apart.
            instruction (`InstructionCondition`, *optional*): the question asked of each video.
            video_token_budget (`int`, *optional*): overrides `config.video_token_budget`.
            video_sizes (`torch.LongTensor` of shape `(num_videos, 2)`, *optional*):
                The (height, width) of each video's frames before the processor letterboxed them (`pad_to_square`).
        """
        if pixel_values_videos.ndim != 4 or pixel_values_videos.shape[1] != 3:
            raise InvalidVideoInputError(
                "pixel_values_videos must have shape (total_frames, 3, height, width), got "
                f"{tuple(pixel_values_videos.shape)}. Use VidCompProcessor to prepare videos."
            )
        if not pixel_values_videos.is_floating_point():
            raise InvalidVideoInputError(
                f"pixel_values_videos must be normalised floats, got {pixel_values_videos.dtype}. "
                "Use VidCompProcessor (or VidCompVideoProcessor) to rescale and normalise the frames."
            )
        if video_num_frames is None:
            raise InvalidVideoInputError("video_num_frames is required with pixel_values_videos.")
        video_num_frames = torch.as_tensor(video_num_frames, device=pixel_values_videos.device)
        known_times = video_timestamps is not None
        if not known_times:
            video_timestamps = torch.zeros(pixel_values_videos.shape[0], device=pixel_values_videos.device)
        if video_sizes is not None:
            video_sizes = torch.as_tensor(video_sizes, device=video_num_frames.device)
        frames = PackedFrames(pixel_values_videos, video_num_frames, video_timestamps, video_sizes)
        if not known_times:
            frames.timestamps = frames.position_in_video().float()
        frame_features = None
        if self.sampler.needs_frame_features:
            frame_features = self.frame_features(frames)
        sampled = self.sampler(frames, frame_features=frame_features, instruction=instruction)
        keep = sampled.keep_mask
        # For temporal patches (Qwen), each feature row's first frame among the kept frames; None: a row per frame.
        feature_frame, deepstack, patch_seconds = None, None, None
        if self.qwen_family is not None:
            patches = pair_frames(frames.select(keep), self.config.vision_config.temporal_patch_size)
            encoded = encode_temporal_patches(
                self.vision_tower, patches.frames.values, self.config.vision_batch_size, self.training
            )
            features = patches.frames.with_values(encoded.features)
            feature_frame, deepstack = patches.first_frame, encoded.deepstack_features
            patch_seconds = patches.frame_times.mean(-1)  # Qwen3-VL's time of a temporal patch
        elif frame_features is not None:
            features = frame_features.select(keep)
        else:
            kept = frames.select(keep)
            features = kept.with_values(self.encode_frames(kept.values))

        if self.config.project_before_compression:
            features = features.with_values(self.multi_modal_projector(features.values))
        budget = video_token_budget if video_token_budget is not None else self.config.video_token_budget
        compressed = self.compressor(
            features,
            auxiliary_features=sampled.auxiliary_features,
            instruction=instruction,
            token_budget=self.compressor_token_budget(budget),
            scene_ids=self.scenes_of(sampled.scene_ids, keep, feature_frame),
            **({"projector": self.multi_modal_projector} if self.compressor.projection == "inside" else {}),
        )
        # The compressor indexes frames among the kept ones; report them among the frames the caller gave.
        kept_frame_position = frames.position_in_video()[keep]
        kept_first = torch.cumsum(features.frame_counts, 0) - features.frame_counts
        token_video = torch.repeat_interleave(
            torch.arange(frames.num_videos, device=compressed.token_counts.device), compressed.token_counts
        )
        token_row = kept_first[token_video] + compressed.token_frame_index
        token_frame_index = kept_frame_position[token_row if feature_frame is None else feature_frame[token_row]]
        projected = compressed.tokens
        if not self.config.project_before_compression and self.compressor.projection == "after":
            projected = self.multi_modal_projector(compressed.tokens)
        token_counts, token_timestamps = compressed.token_counts, compressed.token_timestamps
        if self.video_newline is not None:
            projected, token_frame_index, token_timestamps, token_counts = self.append_video_newline(
                projected, token_frame_index, token_timestamps, token_counts
            )
        places = {}
        if self.qwen_family is not None:
            places = self.token_places(frames, features, compressed, token_video, token_row, deepstack)
        if self.qwen_family == "qwen3_vl":
            # Qwen3-VL reads each temporal patch after its time, as text: the text's embeddings join the video's tokens.
            timed = interleave_timestamps(
                projected, token_video, token_row, places["token_positions"], patch_seconds,
                max(features.values.shape[1:3]), frames.num_videos, self.config.video_segment_tokens,
                self.get_input_embeddings(),
            )  # fmt: skip
            projected, token_counts = timed.tokens, timed.token_counts
            token_frame_index, token_timestamps = token_frame_index[timed.source], token_timestamps[timed.source]
            places.update(token_positions=timed.token_positions, video_position_spans=timed.video_position_spans)
            if deepstack is not None:  # nothing is added where the text is
                visual = timed.is_visual[:, None]
                places["deepstack_features"] = [
                    level.new_zeros(visual.shape[0], level.shape[-1]).masked_scatter(visual, level)
                    for level in places["deepstack_features"]
                ]
        return VidCompVideoFeatures(
            last_hidden_state=compressed.tokens,
            pooler_output=projected,
            token_counts=token_counts,
            token_frame_index=token_frame_index,
            token_timestamps=token_timestamps,
            keep_mask=keep,
            scene_ids=sampled.scene_ids,
            **places,
        )

    @staticmethod
    def scenes_of(
        scene_ids: torch.LongTensor | None,
        keep: torch.BoolTensor,
        feature_frame: torch.LongTensor | None,
    ) -> torch.LongTensor | None:
        """The sampler's scene of each feature row: its kept frame's, or a temporal patch's first frame's."""
        if scene_ids is None:
            return None
        kept_scenes = scene_ids[keep]
        return kept_scenes if feature_frame is None else kept_scenes[feature_frame]

    def frame_features(self, frames: PackedFrames) -> PackedFrames:
        r"""
        Vision features of every frame, for samplers that choose by them (`needs_frame_features`): shape
        `(total_frames, grid_h, grid_w, dim)`. With a Qwen encoder each frame gets its temporal patch's merged tokens;
        the frames kept are paired and encoded again afterwards.
        """
        if self.qwen_family is None:
            return frames.with_values(self.encode_frames(frames.values))
        temporal_patch_size = self.config.vision_config.temporal_patch_size
        patches = pair_frames(frames, temporal_patch_size)
        encoded = encode_temporal_patches(
            self.vision_tower, patches.frames.values, self.config.vision_batch_size, self.training
        )
        counts = patches.frames.frame_counts.to(encoded.features.device)
        first_patch = (torch.cumsum(counts, 0) - counts)[frames.video_index()]
        return frames.with_values(encoded.features[first_patch + frames.position_in_video() // temporal_patch_size])

    def token_places(
        self,
        frames: PackedFrames,
        features: PackedFrames,
        compressed,
        token_video: torch.LongTensor,
        token_row: torch.LongTensor,
        deepstack: list[torch.FloatTensor] | None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        r"""
        Where each kept token sits for an LLM with multimodal rotary positions: `token_positions` `(total_tokens, 3)`
        (temporal position from the token's time since its video's first given frame, then its row and column in the
        merged grid), `video_position_spans` `(num_videos,)`, and Qwen3-VL's DeepStack features taken at each token's
        place (the cell a pooled or merged token reports).

        Args:
            features (`PackedFrames` with values of shape `(total_patches, grid_h, grid_w, dim)`): what was compressed.
            token_row (`torch.LongTensor` of shape `(total_tokens,)`): each token's row in `features.values`.
        """
        grid_positions = compressed.token_grid_positions
        if grid_positions is None:
            raise ValueError(
                f"{type(self.compressor).__name__} does not report its tokens' places in the frame grid "
                "(token_grid_positions), which a Qwen LLM's 3D rotary positions need. Use a compressor that does: "
                "spatial_pool, longvu, or a FiLA merger."
            )
        first_frame = torch.cumsum(frames.frame_counts, 0) - frames.frame_counts
        video_start = frames.timestamps[first_frame.to(frames.timestamps.device)]
        offsets = features.timestamps[token_row] - video_start[token_video]
        tokens_per_second = getattr(self.config.vision_config, "tokens_per_second", None)
        temporal = temporal_positions(self.qwen_family, offsets, tokens_per_second)
        grid_h, grid_w = features.values.shape[1:3]
        places = {
            "token_positions": torch.cat([temporal[:, None], grid_positions.to(temporal.device)], dim=-1),
            "video_position_spans": torch.full_like(frames.frame_counts, max(grid_h, grid_w)),
        }
        if deepstack is not None:
            rows, columns = grid_positions.unbind(-1)
            places["deepstack_features"] = [level[token_row, rows, columns] for level in deepstack]
        return places

    def compressor_token_budget(self, video_token_budget: int | None) -> int | None:
        """The part of a video's token budget left to the compressor: all of it, or all but the video newline."""
        if video_token_budget is None or self.video_newline is None:
            return video_token_budget
        if video_token_budget < 2:
            raise TokenBudgetError(
                f"A video token budget of {video_token_budget} leaves no room for frame tokens next to the video "
                "newline token. Raise the budget."
            )
        return video_token_budget - 1

    def append_video_newline(
        self,
        tokens: torch.FloatTensor,
        token_frame_index: torch.LongTensor,
        token_timestamps: torch.FloatTensor,
        token_counts: torch.LongTensor,
    ) -> tuple[torch.FloatTensor, torch.LongTensor, torch.FloatTensor, torch.LongTensor]:
        r"""
        Appends `video_newline` after each video's tokens, in one scatter for the batch.

        Args:
            tokens (`torch.FloatTensor` of shape `(total_tokens, text_hidden_size)`): projected, video after video.
            token_frame_index (`torch.LongTensor` of shape `(total_tokens,)`)
            token_timestamps (`torch.FloatTensor` of shape `(total_tokens,)`)
            token_counts (`torch.LongTensor` of shape `(num_videos,)`)
        Returns:
            The same four, with `total_tokens + num_videos` tokens and every count one larger.
        """
        new_counts = token_counts + 1
        is_newline = torch.zeros(int(new_counts.sum()), dtype=torch.bool, device=tokens.device)
        is_newline[torch.cumsum(new_counts, 0).to(tokens.device) - 1] = True
        out = tokens.new_empty(is_newline.shape[0], tokens.shape[-1])
        out[~is_newline] = tokens
        out[is_newline] = self.video_newline.to(tokens.dtype)
        frame_index = token_frame_index.new_full(is_newline.shape, -1)
        frame_index[~is_newline] = token_frame_index
        # The newline carries the time of its video's last token, so timestamps stay non-decreasing per video.
        last_token = (torch.cumsum(token_counts, 0) - 1).clamp(min=0).to(tokens.device)
        timestamps = token_timestamps.new_empty(is_newline.shape)
        timestamps[~is_newline] = token_timestamps
        timestamps[is_newline] = token_timestamps[last_token]
        return out, frame_index, timestamps, new_counts

    def video_position_ids(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None,
        video_features: VidCompVideoFeatures,
    ) -> torch.LongTensor:
        r"""
        The text and video positions of an expanded sequence for an LLM with multimodal rotary positions, in the
        layout Qwen's text models read: `(4, batch_size, sequence_length)`, the 1D text positions (for the attention
        mask) above the (temporal, height, width) ones.
        """
        rope = multimodal_position_ids(
            input_ids,
            attention_mask,
            self.config.video_token_id,
            video_features.token_positions,
            video_features.token_counts,
            video_features.video_position_spans,
        )
        text = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        if attention_mask is not None:
            text = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        return torch.cat([text.unsqueeze(0), rope])

    def instruction_condition(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        guide_input_ids: torch.LongTensor | None = None,
        guide_attention_mask: torch.LongTensor | None = None,
        num_videos: int | None = None,
    ) -> InstructionCondition:
        r"""
        The prompt text of the sample each video sits in, as LLM token embeddings of shape
        `(num_videos, sequence_length, text_hidden_size)`. Supervised answer tokens (labels other than -100) are
        masked out, so a compressor never sees the answer it is trained to produce. The processor's guide text
        (`guide_input_ids`, one row per video) is passed along for compressors with their own text encoder.

        Each video is one placeholder, or, in a prompt given already expanded (one placeholder per video token), one
        run of placeholders; `num_videos` tells the two apart, and None means one placeholder each.
        """
        if input_ids is None:
            raise ValueError("Videos need input_ids, whose placeholder tokens mark where each video goes.")
        is_video = input_ids == self.config.video_token_id
        text_mask = ~is_video
        if attention_mask is not None:
            text_mask &= attention_mask.bool()
        if labels is not None:
            text_mask &= labels == -100
        video_start = is_video
        if num_videos is not None and int(is_video.sum()) != num_videos:
            video_start = is_video.clone()
            video_start[:, 1:] &= ~is_video[:, :-1]
            if int(video_start.sum()) != num_videos:
                raise InvalidVideoInputError(
                    f"The text holds {int(is_video.sum())} video placeholder tokens in {int(video_start.sum())} runs "
                    f"for {num_videos} videos. Put one placeholder per video (the processor's chat template does), or "
                    "every token of every video, with text between the videos."
                )
        video_row = torch.nonzero(video_start)[:, 0]
        embeds = self.get_input_embeddings()(input_ids)
        return InstructionCondition(
            embeds=embeds[video_row],
            attention_mask=text_mask[video_row].long(),
            guide_input_ids=guide_input_ids,
            guide_attention_mask=guide_attention_mask,
            videos_in_prompt=video_start.sum(-1)[video_row],
        )

    def _expansion_gather(
        self, input_ids: torch.LongTensor, attention_mask: torch.LongTensor | None, token_counts: torch.LongTensor
    ) -> torch.LongTensor | None:
        r"""
        For each position of the expanded batch, the flat index (`row * sequence_length + column`) of the position of
        `input_ids` it copies, or -1 where the expansion pads a row. `None` when `input_ids` hold one placeholder per
        video token already. Rows are re-padded on the side the batch was padded on (left for generation, right
        otherwise).
        """
        is_video = input_ids == self.config.video_token_id
        num_placeholders, num_videos = int(is_video.sum()), token_counts.shape[0]
        total_tokens = int(token_counts.sum())
        if num_placeholders == total_tokens:
            return None
        if num_placeholders != num_videos:
            raise InvalidVideoInputError(
                f"The text holds {num_placeholders} video placeholder tokens for {num_videos} videos. Put one "
                f"placeholder per video (the processor's chat template does), or all {total_tokens} video tokens."
            )
        batch_size, length = input_ids.shape
        device = input_ids.device
        repeats = torch.ones_like(input_ids)
        repeats[is_video] = token_counts.to(device)
        new_lengths = repeats.sum(1)
        new_length = int(new_lengths.max())
        source = torch.repeat_interleave(torch.arange(batch_size * length, device=device), repeats.flatten())
        row = source // length
        column = torch.arange(source.shape[0], device=device) - (torch.cumsum(new_lengths, 0) - new_lengths)[row]
        if attention_mask is not None and bool((attention_mask[:, 0] == 0).any()):
            column += (new_length - new_lengths)[row]
        gather = torch.full((batch_size, new_length), -1, dtype=torch.long, device=device)
        gather[row, column] = source
        return gather

    def expand_video_placeholders(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None,
        labels: torch.LongTensor | None,
        token_counts: torch.LongTensor,
    ) -> tuple[torch.LongTensor, torch.LongTensor | None, torch.LongTensor | None]:
        r"""
        Replaces each video's single placeholder with `token_counts[i]` placeholders, in one gather for the whole
        batch. Rows become longer by different amounts, so they are re-padded on the side the batch was padded on
        (left for generation, right otherwise). Inputs that already hold one placeholder per video token are
        returned unchanged.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`)
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*)
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*)
            token_counts (`torch.LongTensor` of shape `(num_videos,)`): tokens per video, in placeholder order.
        """
        gather = self._expansion_gather(input_ids, attention_mask, token_counts)
        if gather is None:
            return input_ids, attention_mask, labels
        is_padding = gather < 0

        def expand(values: torch.Tensor, pad_value: int) -> torch.Tensor:
            return values.flatten()[gather.clamp(min=0)].masked_fill(is_padding, pad_value)

        pad_token_id = self.config.text_config.pad_token_id
        new_input_ids = expand(input_ids, pad_token_id if pad_token_id is not None else 0)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        new_attention_mask = expand(attention_mask, 0)
        new_labels = None
        if labels is not None:
            new_labels = expand(labels, -100).masked_fill(new_input_ids == self.config.video_token_id, -100)
        return new_input_ids, new_attention_mask, new_labels

    def expanded_token_sources(
        self,
        input_ids: torch.LongTensor,
        token_counts: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
    ) -> ExpandedTokenSources:
        r"""
        Maps each position of the expanded sequence (the one `forward`'s logits, labels and hidden states cover) back
        to the caller's prompt: which text position it is, or which video and which of that video's tokens.

        ```python
        >>> out = model(**inputs)
        >>> sources = model.expanded_token_sources(inputs["input_ids"], out.video_outputs.token_counts,
        ...                                        inputs["attention_mask"])
        >>> text_logits = out.logits[sources.text_position >= 0]  # the rows of the prompt's own tokens
        >>> first_video_logits = out.logits[sources.video_index == 0]
        ```

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                The prompt as given to `forward`: one placeholder per video, or already expanded.
            token_counts (`torch.LongTensor` of shape `(num_videos,)`):
                Tokens per video, `outputs.video_outputs.token_counts`.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                The prompt's mask; it tells the side rows are padded on, as in `forward`.
        """
        batch_size, length = input_ids.shape
        gather = self._expansion_gather(input_ids, attention_mask, token_counts)
        if gather is None:
            gather = torch.arange(batch_size * length, device=input_ids.device).view(batch_size, length)
        expanded_ids = input_ids.flatten()[gather.clamp(min=0)].masked_fill(gather < 0, -1)
        is_video = expanded_ids == self.config.video_token_id
        counts = token_counts.to(input_ids.device)
        video_ends = torch.cumsum(counts, 0)
        video_order = torch.cumsum(is_video.flatten(), 0).view_as(is_video) - 1  # j-th video token of the batch
        video_index = torch.searchsorted(video_ends, video_order, right=True).clamp(max=max(len(counts) - 1, 0))
        video_token_index = video_order - (video_ends - counts)[video_index] if len(counts) else video_order
        is_text = (gather >= 0) & ~is_video
        if attention_mask is not None:
            is_text &= attention_mask.flatten()[gather.clamp(min=0)].bool()
        return ExpandedTokenSources(
            text_position=torch.where(is_text, gather % length, -1),
            video_index=torch.where(is_video, video_index, -1),
            video_token_index=torch.where(is_video, video_token_index, -1),
        )

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        video_timestamps: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        video_token_budget: int | None = None,
        guide_input_ids: torch.LongTensor | None = None,
        guide_attention_mask: torch.LongTensor | None = None,
        video_sizes: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VidCompModelOutputWithPast:
        r"""
        video_num_frames (`torch.LongTensor` of shape `(num_videos,)`):
            Frames per video in `pixel_values_videos`.
        video_timestamps (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
            Time of each frame in seconds.
        video_sizes (`torch.LongTensor` of shape `(num_videos, 2)`, *optional*):
            The (height, width) of each video's frames before letterboxing, from the processor (`pad_to_square`).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Only expanded alongside the placeholders (video tokens get -100) and returned; the loss lives in the head.
        mm_encoder_outputs (`dict[str, VidCompVideoFeatures]`, *optional*):
            Videos already encoded by [`~VidCompModel.get_video_features`], under the key `"video"`.
        video_token_budget (`int`, *optional*):
            The most tokens one video may take; overrides `config.video_token_budget`.
        guide_input_ids, guide_attention_mask (`torch.LongTensor` of shape `(num_videos, guide_length)`, *optional*):
            The guide text per video in the compressor's text-encoder vocabulary (HICom), from the processor.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        video_features = encoded_videos(pixel_values_videos, mm_encoder_outputs)
        if pixel_values_videos is not None:
            video_features = self.get_video_features(
                pixel_values_videos,
                video_num_frames,
                video_timestamps,
                instruction=self.instruction_condition(
                    input_ids,
                    attention_mask,
                    labels,
                    guide_input_ids,
                    guide_attention_mask,
                    num_videos=num_videos_of(video_num_frames),
                ),
                video_token_budget=video_token_budget,
                video_sizes=video_sizes,
            )
        # Features without counts are a slice of the rows, for the prompt's chunk in `generate`'s chunked prefill: that
        # chunk is expanded already.
        if video_features is not None and video_features.token_counts is not None:
            input_ids, expanded_mask, labels = self.expand_video_placeholders(
                input_ids, attention_mask, labels, video_features.token_counts
            )
            if position_ids is None and video_features.token_positions is not None:
                position_ids = self.video_position_ids(input_ids, expanded_mask, video_features)
            elif expanded_mask is not attention_mask and position_ids is None:
                position_ids = (expanded_mask.cumsum(-1) - 1).clamp(min=0)
            attention_mask = expanded_mask

        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if video_features is not None:
            video_mask = input_ids == self.config.video_token_id
            tokens = video_features.pooler_output.reshape(-1, inputs_embeds.shape[-1])
            if int(video_mask.sum()) != tokens.shape[0]:
                raise InvalidVideoInputError(
                    f"The text holds {int(video_mask.sum())} video tokens for {tokens.shape[0]} rows of video features."
                )
            inputs_embeds = inputs_embeds.masked_scatter(
                video_mask.unsqueeze(-1).expand_as(inputs_embeds), tokens.to(inputs_embeds.device, inputs_embeds.dtype)
            )
            if video_features.deepstack_features is not None:  # Qwen3-VL adds them at its first layers
                kwargs.update(visual_pos_masks=video_mask, deepstack_visual_embeds=video_features.deepstack_features)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return VidCompModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=attention_mask,
            video_outputs=video_features,
            labels=labels,
        )


class PromptAsGivenStreamer(BaseStreamer):
    r"""
    Passes a streamer the caller's prompt in place of the expanded one `generate` runs on (its first `put`), then
    every new token as it comes.
    """

    def __init__(self, streamer: BaseStreamer, prompt_ids: torch.LongTensor):
        self.streamer = streamer
        self.prompt_ids = prompt_ids

    def put(self, value: torch.LongTensor) -> None:
        if self.prompt_ids is not None:
            value, self.prompt_ids = self.prompt_ids.cpu(), None
        self.streamer.put(value)

    def end(self) -> None:
        self.streamer.end()


class VidCompForConditionalGeneration(VidCompPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: VidCompConfig):
        super().__init__(config)
        self.model = VidCompModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_video_features(self, *args, **kwargs) -> VidCompVideoFeatures:
        return self.model.get_video_features(*args, **kwargs)

    def expanded_token_sources(self, *args, **kwargs) -> ExpandedTokenSources:
        return self.model.expanded_token_sources(*args, **kwargs)

    @classmethod
    def from_pretrained_parts(
        cls,
        vision_tower: PartSource,
        language_model: PartSource,
        sampler: PartSource | PreTrainedConfig | dict | None = None,
        compressor: PartSource | PreTrainedConfig | dict | None = None,
        projector: str | os.PathLike | nn.Module | None = None,
        video_token: str = "<video>",
        video_token_id: int | None = None,
        freeze: bool = False,
        **config_kwargs,
    ) -> "VidCompForConditionalGeneration":
        r"""
        Assembles a model from pretrained parts, each a local folder, a Hub id or an already loaded model.

        ```python
        >>> model = VidCompForConditionalGeneration.from_pretrained_parts(
        ...     vision_tower="google/siglip-so400m-patch14-384",
        ...     language_model="Qwen/Qwen2-7B-Instruct",
        ...     compressor={"model_type": "vidcomp_spatial_pool_compressor", "stride": 2},
        ...     freeze=True,  # only the parts not loaded here (sampler, compressor, projector) will train
        ... )
        >>> processor = VidCompProcessor.from_pretrained_parts(
        ...     vision_tower="google/siglip-so400m-patch14-384", language_model="Qwen/Qwen2-7B-Instruct"
        ... )
        ```

        Args:
            vision_tower: a vision model, or the vision half of a two-tower checkpoint. SigLIP towers work as they
                are; a tower with a CLS token (CLIP) needs `vision_feature_select_strategy="default"`.
            language_model: a causal LM with its head; its tokenizer gives the `video_token` id, and its generation
                config (stop tokens) is kept.
            sampler, compressor: a registered `model_type`, a JSON or dict config, or a config object for a fresh
                component; or a folder, Hub id or loaded component with weights.
            projector: weights for the projector (a module, or a safetensors file); fresh without it.
            video_token: the placeholder token, added to the tokenizer's vocabulary (and the embeddings) if absent.
            video_token_id: its id, when `language_model` is a loaded model without a tokenizer to ask.
            freeze: freeze every loaded part, so fine-tuning trains only the new ones.
            config_kwargs: any other `VidCompConfig` argument (`video_token_budget`, `vision_feature_layer`, ...).

        The parts' origins are recorded in `config.parts`.
        """
        vision = load_vision_tower(vision_tower)
        llm = load_language_model(language_model)
        vocab_size = llm.get_input_embeddings().num_embeddings
        if video_token_id is None:
            video_token_id, tokenizer_size = video_token_id_for(language_model, video_token)
            if tokenizer_size > vocab_size:
                llm.resize_token_embeddings(tokenizer_size)
        sampler_config, sampler_module = load_component(sampler, "sampler")
        compressor_config, compressor_module = load_component(compressor, "compressor")
        parts = {"vision_tower": part_name(vision_tower), "language_model": part_name(language_model)}
        if sampler_module is not None:
            parts["sampler"] = part_name(sampler)
        if compressor_module is not None:
            parts["compressor"] = part_name(compressor)
        if projector is not None:
            parts["projector"] = part_name(projector)
        config = VidCompConfig(
            vision_config=vision.config.to_dict(),
            text_config=llm.config.to_dict(),
            sampler_config=sampler_config,
            compressor_config=compressor_config,
            video_token_id=video_token_id,
            parts=parts,
            tie_word_embeddings=llm.config.tie_word_embeddings,
            **config_kwargs,
        )
        # Build the skeleton without memory, then put the loaded parts in place and initialise only the new ones.
        with torch.device("meta"):
            model = cls(config)
        model.model.vision_tower = vision
        model.model.language_model = llm.base_model
        model.lm_head = llm.get_output_embeddings()
        model.model.sampler = sampler_module or build_sampler(config.sampler_config)
        model.model.compressor = compressor_module or build_compressor(config.compressor_config)
        for module in model.modules():
            if any(t.is_meta for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))):
                module.to_empty(device="cpu", recurse=False)
                model._init_weights(module)
        if projector is not None:
            try:
                model.model.multi_modal_projector.load_state_dict(load_projector_state(projector))
            except RuntimeError as error:  # missing, unexpected or mis-shaped projector tensors
                raise PartError(f"projector {part_name(projector)!r} does not fit this model: {error}") from error
        model.tie_weights()
        model.to(llm.dtype)
        model.generation_config = llm.generation_config
        if freeze:
            for name in part_module_names(parts):
                model.get_submodule(name).requires_grad_(False)
        return model.eval()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        video_timestamps: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        video_token_budget: int | None = None,
        guide_input_ids: torch.LongTensor | None = None,
        guide_attention_mask: torch.LongTensor | None = None,
        video_sizes: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> VidCompCausalLMOutputWithPast:
        r"""
        video_num_frames (`torch.LongTensor` of shape `(num_videos,)`):
            Frames per video in `pixel_values_videos`.
        video_timestamps (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
            Time of each frame in seconds.
        video_sizes (`torch.LongTensor` of shape `(num_videos, 2)`, *optional*):
            The (height, width) of each video's frames before letterboxing, from the processor (`pad_to_square`).
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token ids to predict, -100 where no loss is taken. Each video placeholder is expanded with -100, so the
            labels may be given for the unexpanded text the processor produced.
        mm_encoder_outputs (`dict[str, VidCompVideoFeatures]`, *optional*):
            Videos already encoded by [`~VidCompModel.get_video_features`], under the key `"video"`.
        video_token_budget (`int`, *optional*):
            The most tokens one video may take; overrides `config.video_token_budget`.
        skip_logits (`bool`, *optional*):
            Take the loss from the supervised positions' logits alone and return `logits=None`. Defaults to training
            with labels, as Liger-Kernel's fused cross-entropy does: a QA example supervises a few answer tokens, and
            the LM head over every position (49k vocabulary for SmolLM2) was a quarter of a CPU training step.

        Returns:
            `logits` of shape `(batch_size, expanded_length, vocab_size)` and `labels` of shape
            `(batch_size, expanded_length)` cover the **expanded** sequence, in which each video's placeholder stands
            for its `video_outputs.token_counts[i]` tokens (rows re-padded on the batch's padding side), because that
            is the sequence the LLM reads. [`~VidCompModel.expanded_token_sources`] maps each row back: the position
            in `input_ids` of a text token, or the video and the video's token.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            video_num_frames=video_num_frames,
            video_timestamps=video_timestamps,
            video_sizes=video_sizes,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            video_token_budget=video_token_budget,
            guide_input_ids=guide_input_ids,
            guide_attention_mask=guide_attention_mask,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        vocab_size = self.config.text_config.vocab_size
        if skip_logits is None:
            skip_logits = self.training and labels is not None
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True returns only the loss, which needs `labels`.")
        logits = loss = None
        if skip_logits:
            shift_labels = nn.functional.pad(outputs.labels, (0, 1), value=-100)[:, 1:]
            supervised = shift_labels != -100
            loss = self.loss_function(
                logits=self.lm_head(hidden_states[supervised]), labels=None, vocab_size=vocab_size,
                shift_labels=shift_labels[supervised], **kwargs,
            )
        else:
            slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, slice_indices, :])
            if labels is not None:
                loss = self.loss_function(logits=logits, labels=outputs.labels, vocab_size=vocab_size, **kwargs)
        return VidCompCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_outputs=outputs.video_outputs,
            labels=outputs.labels,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_num_frames: torch.LongTensor | None = None,
        video_timestamps: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        video_token_budget: int | None = None,
        guide_input_ids: torch.LongTensor | None = None,
        guide_attention_mask: torch.LongTensor | None = None,
        video_sizes: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        [`GenerationMixin.generate`], with each video encoded once before prefill, or given encoded in
        `mm_encoder_outputs["video"]`.

        Returns what every Transformers model returns: each row of `input_ids` as given, followed by the new tokens,
        so `out[:, input_ids.shape[1]:]` are the new tokens. Internally the LLM reads each video's placeholder
        expanded to the video's tokens; that expanded prompt and its cache stay internal. With
        `return_dict_in_generate=True`, `sequences` follows the same rule and `scores` / `logits` hold one entry per
        new token. Streamers see the prompt as given, so `TextStreamer(tokenizer, skip_prompt=True)` prints only the
        new text. `max_length` and `min_length` count the prompt as given, like the returned sequences;
        `max_new_tokens` and `min_new_tokens` count new tokens only.
        """
        video_features = encoded_videos(pixel_values_videos, kwargs.get("mm_encoder_outputs"))
        if pixel_values_videos is not None:
            video_features = self.model.get_video_features(
                pixel_values_videos,
                video_num_frames,
                video_timestamps,
                instruction=self.model.instruction_condition(
                    input_ids,
                    attention_mask,
                    guide_input_ids=guide_input_ids,
                    guide_attention_mask=guide_attention_mask,
                    num_videos=num_videos_of(video_num_frames),
                ),
                video_token_budget=video_token_budget,
                video_sizes=video_sizes,
            )
            kwargs["mm_encoder_outputs"] = {**(kwargs.get("mm_encoder_outputs") or {}), "video": video_features}
        if video_features is None or input_ids is None:
            return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

        prompt_ids = input_ids
        input_ids, attention_mask, _ = self.model.expand_video_placeholders(
            input_ids, attention_mask, None, video_features.token_counts
        )
        added_length = input_ids.shape[1] - prompt_ids.shape[1]
        generation_config = kwargs.get("generation_config")

        def setting(name: str) -> int | None:  # in generate's order of precedence
            values = (kwargs.get(name), getattr(generation_config, name, None), getattr(self.generation_config, name))
            return next((value for value in values if value is not None), None)

        for length, new_tokens in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
            if setting(length) and setting(new_tokens) is None:  # the caller counts the prompt as given
                kwargs[length] = setting(length) + added_length
        if kwargs.get("streamer") is not None:
            kwargs["streamer"] = PromptAsGivenStreamer(kwargs["streamer"], prompt_ids)

        output = super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        copies = sequences.shape[0] // prompt_ids.shape[0]  # beams and returned sequences, row by row
        sequences = torch.cat(
            [prompt_ids.repeat_interleave(copies, 0).to(sequences.device), sequences[:, input_ids.shape[1] :]], 1
        )
        if isinstance(output, torch.Tensor):
            return sequences
        output.sequences = sequences
        return output

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        # An LLM with multimodal rotary positions reads the videos' token places: (4, batch, length) ids, text row
        # first, which generation then extends by one per new token, as for Qwen's own models.
        text_positions = super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)
        features = (model_kwargs.get("mm_encoder_outputs") or {}).get("video")
        if features is None or features.token_positions is None:
            return text_positions
        input_ids = model_kwargs.get("input_ids", inputs_tensor)
        return self.model.video_position_ids(input_ids, model_kwargs.get("attention_mask"), features)

    def _expand_multimodal_outputs(
        self,
        input_ids: torch.LongTensor,
        mm_encoder_output: dict[str, VidCompVideoFeatures],
        expand_size: int = 1,
        inputs_embeds: torch.FloatTensor | None = None,
    ) -> dict[str, VidCompVideoFeatures]:
        r"""
        Gives each of the `expand_size` copies of a prompt (beam search, several returned sequences) its own copy of
        the prompt's videos, in the order `generate` repeats the rows: row 0 `expand_size` times, then row 1.
        Transformers' version expects one tensor per video; ours are concatenated, video after video. The copies
        carry what the LLM reads (tokens, their counts, frames and times); the per-frame sampler fields stay with
        the features `generate` encoded.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                The prompts, each video already expanded to its tokens.
        """
        features = mm_encoder_output.get("video")
        if features is None or expand_size == 1:
            return mm_encoder_output
        counts = features.token_counts
        row_ends = torch.cumsum((input_ids == self.config.video_token_id).sum(-1), 0).to(counts.device)
        video_row = torch.searchsorted(row_ends, torch.cumsum(counts, 0))
        num_videos = counts.shape[0]
        video = torch.arange(num_videos, device=counts.device).repeat(expand_size)
        copy = torch.arange(expand_size, device=counts.device).repeat_interleave(num_videos)
        order = video[torch.argsort((video_row[video] * expand_size + copy) * num_videos + video)].tolist()

        def in_order(per_token: torch.Tensor) -> torch.Tensor:
            per_video = per_token.split(counts.tolist())
            return torch.cat([per_video[v] for v in order])

        expanded = VidCompVideoFeatures(
            pooler_output=in_order(features.pooler_output),
            token_counts=counts[order],
            token_frame_index=in_order(features.token_frame_index),
            token_timestamps=in_order(features.token_timestamps),
        )
        if features.token_positions is not None:
            expanded.token_positions = in_order(features.token_positions)
            expanded.video_position_spans = features.video_position_spans[order]
        if features.deepstack_features is not None:
            expanded.deepstack_features = [in_order(level) for level in features.deepstack_features]
        return {**mm_encoder_output, "video": expanded}


__all__ = ["VidCompForConditionalGeneration", "VidCompModel", "VidCompPreTrainedModel", "VidCompVideoFeatures"]
