r"""The one interface every frame sampler and every video-token compressor implements.

Videos in a batch have different lengths, so frames travel *packed*: all frames of all videos are concatenated
along the first axis and a `frame_counts` vector says how many belong to each video. This avoids padding whole
videos and keeps every method vectorised over the batch.

A method is a `PreTrainedModel` with its own `PreTrainedConfig` and `model_type`. Registering it with
[`register_sampler`] or [`register_compressor`] is all the composite model needs: it builds components from their
config alone and never asks which method it holds.
"""


from dataclasses import dataclass
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import SAFE_WEIGHTS_NAME, ModelOutput, logging


class InvalidVideoInputError(ValueError):
    """A video tensor, its frame counts or its timestamps do not have the shape or dtype a component needs."""


class TokenBudgetError(ValueError):
    """A token budget cannot be met: it is not positive, or it is smaller than what one frame needs."""


@dataclass
class PackedFrames:
    r"""
    Frames (or per-frame features) of several videos of different lengths, concatenated along the first axis.

    Args:
        values (`torch.Tensor` of shape `(total_frames, ...)`):
            Pixels `(total_frames, channels, height, width)` or features `(total_frames, height, width, dim)`.
        frame_counts (`torch.LongTensor` of shape `(num_videos,)`):
            How many consecutive rows of `values` belong to each video. Every video has at least one frame.
        timestamps (`torch.FloatTensor` of shape `(total_frames,)`):
            Time of each frame in seconds from the start of its video, increasing within a video.
        video_sizes (`torch.LongTensor` of shape `(num_videos, 2)`, *optional*):
            Height and width of each video's picture inside its frames, when the processor letterboxed them onto a
            square canvas (`pad_to_square`); None when the picture fills the frames.
    """

    values: torch.Tensor
    frame_counts: torch.LongTensor
    timestamps: torch.FloatTensor
    video_sizes: torch.LongTensor | None = None

    def __post_init__(self):
        if self.frame_counts.ndim != 1 or self.frame_counts.dtype not in (torch.int32, torch.int64):
            raise InvalidVideoInputError(
                f"frame_counts must be a 1-D integer tensor with one entry per video, got shape "
                f"{tuple(self.frame_counts.shape)} and dtype {self.frame_counts.dtype}."
            )
        if self.frame_counts.numel() == 0:
            raise InvalidVideoInputError("The batch holds no video: frame_counts is empty.")
        if bool((self.frame_counts < 1).any()):
            empty = torch.nonzero(self.frame_counts < 1).flatten().tolist()
            raise InvalidVideoInputError(
                f"Video(s) {empty} have no frames. Decode at least one frame per video before calling the model."
            )
        total = int(self.frame_counts.sum())
        if self.values.shape[0] != total:
            raise InvalidVideoInputError(
                f"frame_counts adds up to {total} frames but the tensor holds {self.values.shape[0]} rows. "
                "Pass the frames of all videos concatenated along the first axis."
            )
        if self.timestamps.shape != (total,):
            raise InvalidVideoInputError(
                f"timestamps must have shape ({total},), one time per frame, got {tuple(self.timestamps.shape)}."
            )
        if not self.timestamps.is_floating_point():
            self.timestamps = self.timestamps.float()
        if self.video_sizes is not None and (
            self.video_sizes.shape != (self.num_videos, 2)
            or self.video_sizes.is_floating_point()
            or bool((self.video_sizes < 1).any())
        ):
            raise InvalidVideoInputError(
                f"video_sizes must be positive integers of shape ({self.num_videos}, 2), a (height, width) per video, "
                f"got {self.video_sizes.tolist()} ({self.video_sizes.dtype})."
            )

    @property
    def num_videos(self) -> int:
        return self.frame_counts.shape[0]

    def video_index(self) -> torch.LongTensor:
        r"""Which video each frame belongs to, shape `(total_frames,)`."""
        return torch.repeat_interleave(
            torch.arange(self.num_videos, device=self.frame_counts.device), self.frame_counts
        ).to(self.values.device)

    def position_in_video(self) -> torch.LongTensor:
        r"""Index of each frame within its own video, shape `(total_frames,)`."""
        return self.rank_within_video(torch.ones(self.values.shape[0], dtype=torch.bool, device=self.values.device))

    def count_per_video(self, mask: torch.BoolTensor) -> torch.LongTensor:
        r"""How many frames of each video `mask` (shape `(total_frames,)`) selects, shape `(num_videos,)`."""
        return torch.zeros_like(self.frame_counts).index_add_(
            0, self.video_index().to(self.frame_counts.device), mask.to(self.frame_counts).long()
        )

    def rank_within_video(self, mask: torch.BoolTensor) -> torch.LongTensor:
        r"""For each frame, how many frames of its video before it `mask` selects, shape `(total_frames,)`."""
        selected = mask.long()
        before = torch.cumsum(selected, 0) - selected
        counts = self.frame_counts.to(mask.device)
        first_frame = torch.cumsum(counts, 0) - counts
        return before - before[first_frame][self.video_index()]

    def select(self, keep: torch.BoolTensor) -> "PackedFrames":
        r"""The frames where `keep` (shape `(total_frames,)`) is true, still grouped by video."""
        return PackedFrames(self.values[keep], self.count_per_video(keep), self.timestamps[keep], self.video_sizes)

    def with_values(self, values: torch.Tensor) -> "PackedFrames":
        r"""The same frames and times carrying new per-frame values (for example, encoder features)."""
        return PackedFrames(values, self.frame_counts, self.timestamps, self.video_sizes)

    def split(self) -> tuple[torch.Tensor, ...]:
        return torch.split(self.values, self.frame_counts.tolist())


@dataclass
class InstructionCondition:
    r"""
    The instruction each video is asked about, for methods that condition on it.

    Args:
        embeds (`torch.FloatTensor` of shape `(num_videos, text_length, text_dim)`):
            Token embeddings of the instruction, right-padded.
        attention_mask (`torch.LongTensor` of shape `(num_videos, text_length)`):
            1 for real instruction tokens, 0 for padding.
        guide_input_ids (`torch.LongTensor` of shape `(num_videos, guide_length)`, *optional*):
            The guide text (the question without answer options) in a method's own text encoder's vocabulary, for
            methods that encode the instruction themselves (HICom); written by a processor with a guide tokenizer.
        guide_attention_mask (`torch.LongTensor` of shape `(num_videos, guide_length)`, *optional*):
            1 for real guide tokens, 0 for padding; all zeros for a video whose guide text is empty.
        videos_in_prompt (`torch.LongTensor` of shape `(num_videos,)`, *optional*):
            How many videos share each video's prompt; None means one each. Videos of one prompt share its context.
    """

    embeds: torch.FloatTensor
    attention_mask: torch.LongTensor
    guide_input_ids: torch.LongTensor | None = None
    guide_attention_mask: torch.LongTensor | None = None
    videos_in_prompt: torch.LongTensor | None = None


@dataclass
class SamplerOutput(ModelOutput):
    r"""
    keep_mask (`torch.BoolTensor` of shape `(total_frames,)`):
        Which input frames to keep. Every video keeps at least one frame.
    scene_ids (`torch.LongTensor` of shape `(total_frames,)`, *optional*):
        The scene of each kept frame, numbered from 0 within its video, and -1 for dropped frames. Only methods that
        group frames into scenes fill it.
    auxiliary_features (`PackedFrames`, *optional*):
        Features the sampler computed for the kept frames that a compressor may reuse (for example DINOv2 patches).
    """

    keep_mask: torch.BoolTensor | None = None
    scene_ids: torch.LongTensor | None = None
    auxiliary_features: PackedFrames | None = None


@dataclass
class CompressorOutput(ModelOutput):
    r"""
    tokens (`torch.FloatTensor` of shape `(total_tokens, dim)`):
        The LLM-bound tokens of all videos, concatenated in video order.
    token_counts (`torch.LongTensor` of shape `(num_videos,)`):
        How many consecutive rows of `tokens` belong to each video. It may differ between videos.
    token_frame_index (`torch.LongTensor` of shape `(total_tokens,)`):
        For each token, the index (within its video's input frames) of the frame it mostly derives from.
    token_timestamps (`torch.FloatTensor` of shape `(total_tokens,)`):
        For each token, the time in seconds of that frame.
    token_grid_positions (`torch.LongTensor` of shape `(total_tokens, 2)`, *optional*):
        For each token, its (row, column) in its frame's `grid_h x grid_w` input grid: a kept token's own cell, a
        pooled token's window's first (top-left) cell, a merged token's cell of origin. LLMs with multimodal rotary
        positions (Qwen2.5-VL, Qwen3-VL) place tokens by it; a compressor without it cannot feed them.
    statistics (`dict[str, int]`, *optional*):
        Counts a method reports about what it did to the whole batch (e.g. "tokens pruned by STC"), for demos and logs.
    """

    tokens: torch.FloatTensor | None = None
    token_counts: torch.LongTensor | None = None
    token_frame_index: torch.LongTensor | None = None
    token_timestamps: torch.FloatTensor | None = None
    token_grid_positions: torch.LongTensor | None = None
    statistics: dict[str, int] | None = None


def batches_with_progress(
    tensor: torch.Tensor, batch_size: int, description: str, training: bool
) -> Iterator[torch.Tensor]:
    r"""
    `tensor.split(batch_size)`, with a progress bar when an encoder runs over many batches of a long video: at
    inference, on a terminal, and only from four batches (never inside training steps).
    """
    batches = tensor.split(batch_size)
    quiet = training or len(batches) < 4 or None
    return logging.tqdm(batches, desc=description, unit="batch", leave=False, disable=quiet)


def uniform_keep_mask(
    position: torch.LongTensor, length: torch.LongTensor, keep: torch.LongTensor, include_last: bool = False
) -> torch.BoolTensor:
    r"""
    Keeps `keep` of `length` positions at indices `floor(j * length / keep)`, the rule of `np.linspace`-style
    uniform sampling used by Transformers' `default_sample_indices_fn`, evaluated for every frame at once. With
    `include_last`, at `floor(j * (length - 1) / (keep - 1))` instead: spread from the first position to the last, as
    LLaVA-OneVision's loader does with `np.linspace(0, length - 1, keep, dtype=int)` (in exact integer arithmetic,
    where numpy's float steps sometimes land a hair below a whole index and floor to the one before).

    Args:
        position (`torch.LongTensor` of shape `(total_frames,)`): index of each frame within its video.
        length (`torch.LongTensor` of shape `(total_frames,)`): length of that frame's video.
        keep (`torch.LongTensor` of shape `(total_frames,)`): how many frames that video keeps, 1 <= keep.
        include_last (`bool`, *optional*, defaults to `False`): whether the last position is always kept.
    """
    keep = torch.minimum(keep, length)
    if include_last:
        # The same rule over the gaps: `keep - 1` steps across `length - 1` positions; one kept frame is the first.
        span, steps = (length - 1).clamp(min=1), keep - 1
        j = (position * steps + span - 1) // span
        return ((j <= steps) & (j * span < (position + 1) * steps)) | ((steps == 0) & (position == 0))
    # Position p is chosen iff some j < keep has floor(j * length / keep) == p, i.e. j = ceil(p * keep / length).
    j = (position * keep + length - 1) // length
    return (j < keep) & (j * length < (position + 1) * keep)


def grid_cells(grid_h: int, grid_w: int, stride: int = 1, device: torch.device | None = None) -> torch.LongTensor:
    r"""
    The (row, column) of every cell of a `grid_h x grid_w` grid in row-major order, shape `(grid_h * grid_w, 2)`,
    scaled by `stride`: the first cell of each `stride x stride` window of the grid the windows were pooled from.
    """
    rows, columns = torch.meshgrid(
        torch.arange(grid_h, device=device), torch.arange(grid_w, device=device), indexing="ij"
    )
    return torch.stack([rows.flatten(), columns.flatten()], dim=-1) * stride


class ComponentConfigSpec(SubConfigSpec):
    """A sub-config spec that resolves `model_type` through a component registry instead of `AutoConfig`.

    This keeps a saved `VidCompConfig` loadable as remote code, where our model types are not known to `AutoConfig`.
    """

    def __init__(self, registry: dict[str, type[PreTrainedModel]], kind: str, model_type: str):
        self.registry = registry
        self.kind = kind
        super().__init__(config_class=AutoConfig, model_type=model_type)

    def get_config_class(self, model_type: str | None = None):
        if model_type not in self.registry:
            raise ValueError(
                f"Unknown {self.kind} {model_type!r}. Registered {self.kind}s: {', '.join(sorted(self.registry))}."
            )
        return self.registry[model_type].config_class


SAMPLER_REGISTRY: dict[str, type["VidCompSampler"]] = {}
COMPRESSOR_REGISTRY: dict[str, type["VidCompCompressor"]] = {}


def register_sampler(cls: type["VidCompSampler"]) -> type["VidCompSampler"]:
    """Class decorator: makes a sampler buildable from its config's `model_type`."""
    SAMPLER_REGISTRY[cls.config_class.model_type] = cls
    return cls


def register_compressor(cls: type["VidCompCompressor"]) -> type["VidCompCompressor"]:
    """Class decorator: makes a compressor buildable from its config's `model_type`."""
    COMPRESSOR_REGISTRY[cls.config_class.model_type] = cls
    return cls


class VidCompComponent(PreTrainedModel):
    """Shared plumbing of samplers and compressors: both are standalone, saveable `PreTrainedModel`s."""

    base_model_prefix = "component"
    main_input_name = "frames"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @property
    def dtype(self) -> torch.dtype:
        # Weightless methods (uniform sampling, pooling) still save and load like any other model.
        tensors = (*self.parameters(), *self.buffers())
        return next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())

    @property
    def device(self) -> torch.device:
        return next((t.device for t in (*self.parameters(), *self.buffers())), torch.device("cpu"))

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        # An empty weights file keeps `from_pretrained` working for methods without weights.
        weights = os.path.join(save_directory, SAFE_WEIGHTS_NAME)
        if not self.state_dict() and not os.path.exists(weights):
            save_file({}, weights, metadata={"format": "pt"})


class VidCompSampler(VidCompComponent):
    r"""
    Base class of frame samplers.

    A sampler decides which decoded frames reach the vision tower and the compressor. Samplers that score frames by
    their vision-tower features set `needs_frame_features = True`; the composite model then encodes every frame
    first and reuses those features, instead of encoding only the kept frames.
    """

    needs_frame_features: ClassVar[bool] = False
    # True for samplers whose scenes end at a chosen representative frame (FiLA's K-Means), which displays mark.
    scene_ends_at_representative: ClassVar[bool] = False
    # True for samplers that choose frames while the video is decoded, through `plan(thumbnails, timestamps)`; the
    # processor then decodes only the chosen frames at full resolution (the adaptive video sampler).
    selects_frames_at_decode: ClassVar[bool] = False

    def max_kept_frames(self, num_frames: int) -> int:
        """The most frames this sampler keeps of a video of `num_frames` frames, whatever their content."""
        raise NotImplementedError

    def max_scenes(self, num_frames: int) -> int | None:
        """The most scenes it groups a video of `num_frames` frames into; `None` for samplers without scenes."""
        return None

    def forward(
        self,
        frames: PackedFrames,
        frame_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
    ) -> SamplerOutput:
        r"""
        Args:
            frames (`PackedFrames` with values of shape `(total_frames, 3, height, width)`):
                Normalised pixels with their timestamps.
            frame_features (`PackedFrames` with values of shape `(total_frames, grid_h, grid_w, dim)`, *optional*):
                Vision-tower features of every frame; given when `needs_frame_features` is true.
            instruction (`InstructionCondition`, *optional*): the question asked of each video.
        """
        raise NotImplementedError


class VidCompCompressor(VidCompComponent):
    r"""
    Base class of video-token compressors.

    A compressor turns the features of the kept frames into the tokens the LLM reads. The number of tokens may
    depend on the data and may differ between videos, but never exceeds `token_budget` when one is given.

    `projection` says where the tokens reach the LLM's width:

    - `"after"`: the composite model's projector runs on the compressor's tokens.
    - `"inside"`: the compressor decides on projected tokens (LongVU ranks frames against the LLM-embedded
      instruction), so the composite passes its projector as `projector=` to `forward`, which returns LLM-width
      tokens.
    - `"own"`: the compressor ends in readouts of its own to the LLM width (HICom), and the composite has no
      projector.
    """

    projection: ClassVar[Literal["after", "inside", "own"]] = "after"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.projection not in ("after", "inside", "own"):
            raise TypeError(f"{cls.__name__}.projection must be 'after', 'inside' or 'own', not {cls.projection!r}.")

    def output_dim(self, input_dim: int) -> int:
        """Width of the tokens this compressor returns for features of width `input_dim`."""
        return input_dim

    def max_tokens(
        self,
        num_frames: int,
        grid_h: int,
        grid_w: int,
        token_budget: int | None = None,
        num_scenes: int | None = None,
    ) -> int:
        r"""
        The most tokens this compressor returns for one video of `num_frames` frames of `grid_h x grid_w` patches,
        whatever their content, under `token_budget`; `num_scenes` is the sampler's `max_scenes` when it groups
        frames into scenes. Model cards and budget planning rely on it.
        """
        raise NotImplementedError

    def forward(
        self,
        features: PackedFrames,
        auxiliary_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
        token_budget: int | None = None,
        scene_ids: torch.LongTensor | None = None,
    ) -> CompressorOutput:
        r"""
        Args:
            features (`PackedFrames` with values of shape `(total_frames, grid_h, grid_w, dim)`):
                Vision-tower features of the kept frames, with their timestamps.
            auxiliary_features (`PackedFrames`, *optional*):
                Extra per-frame features from the sampler (for example DINOv2), aligned with `features`.
            instruction (`InstructionCondition`, *optional*): the question asked of each video.
            token_budget (`int`, *optional*): the most tokens any one video may produce.
            scene_ids (`torch.LongTensor` of shape `(total_frames,)`, *optional*):
                The sampler's scene of each kept frame, numbered from 0 within its video and non-decreasing in time.
        """
        raise NotImplementedError


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Softmax attention with the softmax in fp32, the fallback of `ALL_ATTENTION_FUNCTIONS` for every method.

    Args:
        query (`torch.Tensor` of shape `(batch, heads, q_len, head_dim)`)
        key, value (`torch.Tensor` of shape `(batch, heads, kv_len, head_dim)`)
        attention_mask (`torch.Tensor` of shape `(batch, 1 or heads, q_len, kv_len)`, *optional*): additive bias.
    Returns:
        The output `(batch, q_len, heads, head_dim)` and the weights `(batch, heads, q_len, kv_len)`.
    """
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def attention_interface(config: PreTrainedConfig) -> Callable:
    """The attention function `config._attn_implementation` selects, or `eager_attention_forward`."""
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


def context_left_for_video(
    instruction: InstructionCondition | None, num_videos: int, context_length: int, reserved_tokens: int
) -> torch.LongTensor:
    r"""
    The tokens of an LLM context of `context_length` that each video's prompt leaves for the video's own tokens,
    shape `(num_videos,)`: `context_length - text_length - reserved_tokens`, where `text_length` counts the prompt's
    text tokens (the instruction's, without video placeholders) and `reserved_tokens` are kept free for the answer.
    This is LongVU's `max_visual_len` as its mixing and STC compute it. The release takes one video per prompt; the
    videos of a prompt with several split what it leaves evenly (rounded down), so together they still fit.
    """
    if instruction is None:
        return torch.full((num_videos,), context_length - reserved_tokens, dtype=torch.long)
    left = context_length - instruction.attention_mask.sum(-1).long() - reserved_tokens
    if instruction.videos_in_prompt is None:
        return left
    return torch.div(left, instruction.videos_in_prompt.to(left.device), rounding_mode="floor")


def check_token_budget(
    token_budget: int | None,
    tokens_per_unit: int | None = None,
    unit: str = "frame",
    advice: str = "Raise the budget.",
) -> None:
    r"""
    Refuses a budget that is not a positive number of tokens, or that cannot hold even one of the compressor's
    smallest units (a pooled frame, a merged scene) of `tokens_per_unit` tokens.
    """
    if token_budget is not None and (isinstance(token_budget, bool) or int(token_budget) < 1):
        raise TokenBudgetError(
            f"token_budget must be a positive number of tokens per video, got {token_budget!r}. "
            "Use None for no limit."
        )
    if token_budget is not None and tokens_per_unit is not None and token_budget < tokens_per_unit:
        raise TokenBudgetError(
            f"A budget of {token_budget} tokens cannot hold one {unit}, which takes {tokens_per_unit} tokens. {advice}"
        )


__all__ = [
    "COMPRESSOR_REGISTRY",
    "SAMPLER_REGISTRY",
    "ComponentConfigSpec",
    "CompressorOutput",
    "InstructionCondition",
    "InvalidVideoInputError",
    "PackedFrames",
    "SamplerOutput",
    "TokenBudgetError",
    "VidCompCompressor",
    "VidCompSampler",
    "attention_interface",
    "check_token_budget",
    "context_left_for_video",
    "eager_attention_forward",
    "grid_cells",
    "register_compressor",
    "register_sampler",
    "uniform_keep_mask",
]
