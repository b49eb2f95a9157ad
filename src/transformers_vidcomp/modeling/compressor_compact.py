r"""
The spatiotemporal convolutional compressor of "Learning Compact Video Representations for Efficient Long-form
Video Understanding in Large Multimodal Models" (arXiv:2602.17869, supplement §1.3): the encoder of a video
feature autoencoder, which turns the vision tower's `(T, H, W, d)` features of a video into
`ceil(T/4) x ceil(H/4) x ceil(W/4)` tokens of width `d`, a 64x reduction.

Architecture, as the supplement describes it and as we read it where it is silent:

- cascaded *residual blocks*, each holding two *convolutional blocks*; the 4x4x4 configuration has three residual
  blocks, the first two of which downsample;
- a convolutional block is a 2D spatial convolution `d -> d/4` (a bottleneck), then a 1D temporal convolution
  `d/4 -> d`, then SiLU. No normalisation layer is mentioned, and none is used;
- downsampling is "a convolutional stride of 2 in the first convolutional block". Two such stages must give 4x in
  T, H *and* W, so both of that block's convolutions have stride 2: the spatial one in H and W, the temporal one in
  T. The residual shortcut of a downsampling block takes the input at the strided positions `(2i, 2j, 2k)` (where
  the strided windows are centred), so it needs no weights;
- kernels are 3 (spatial 3x3, temporal 3) by default, the usual choice of VQGAN and MAGVIT-v2, whose designs the
  paper follows. The paper gives no kernel sizes: see `CompactCompressorConfig` for the parameter count they imply.

Padding rule: every convolution zero-pads `(k - 1) // 2` positions before and `k - 1 - (k - 1) // 2` after each
axis it convolves, so a stride-1 convolution keeps the size and a stride-2 one gives `ceil(n / 2)`, for any
`n >= 1`. Two stages give `ceil(ceil(n / 2) / 2) = ceil(n / 4)`: a partial group of frames or patches at the end
counts as a full one, its missing positions read as zeros.

Batching: the convolutions run on one `(rows, d, length, H, W)` tensor holding every video of the batch
([`CompactLayout`]). Each video sits at its own place in a row, starting at a multiple of 4 frames so the strided
windows fall where they would on the video alone; everything around it is zero. After every convolution the
positions outside each video (at that level's resolution) are set back to zero, so each video sees exactly the zero
padding a convolution over it alone would see, and the batched result equals the per-video one. Two layouts, and
the one with fewer frames to compute is used:

- one row per video, padded to the longest video (equal lengths: no waste);
- all videos in one row, one after the other, with `temporal_kernel_size // 2` empty groups of 4 frames between
  neighbours, as many as a temporal convolution reaches past a video's end (unequal lengths: no padding to the
  longest).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as init

from .components_vidcomp import (
    CompressorOutput,
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    VidCompCompressor,
    check_token_budget,
    register_compressor,
    uniform_keep_mask,
)


@strict
class CompactCompressorConfig(PreTrainedConfig):
    r"""
    hidden_size (`int`, *optional*, defaults to 1152):
        Width `d` of the vision features, which is also the width of the tokens. ViT-G/14, the paper's encoder,
        has 1408; SigLIP-so400m 1152.
    num_residual_blocks (`int`, *optional*, defaults to 3):
        Cascaded residual blocks, each of two convolutional blocks.
    num_downsampling_blocks (`int`, *optional*, defaults to 2):
        How many of the first residual blocks halve T, H and W. Tokens per video are
        `ceil(T / f) * ceil(H / f) * ceil(W / f)` with `f = 2 ** num_downsampling_blocks`; 2 is the paper's 4x4x4.
    bottleneck_ratio (`int`, *optional*, defaults to 4):
        The spatial convolution maps `d` to `d / bottleneck_ratio` features, the temporal one maps them back to `d`.
    spatial_kernel_size (`int`, *optional*, defaults to 3):
        Height and width of the spatial convolution's kernel.
    temporal_kernel_size (`int`, *optional*, defaults to 3):
        Length of the temporal convolution's kernel.

    A convolutional block has `d * (d / r) * (ks**2 + kt) + d / r + d` parameters (weights and biases), the
    encoder `2 * num_residual_blocks` of them. At `d = 1408` with the defaults that is 5,949,152 per block,
    35,694,912 for the encoder and 71,389,824 for encoder and symmetric decoder together. The paper reports about
    65M for "the overall structure"; with `temporal_kernel_size=2` the encoder and decoder have 65,442,432, the
    reading the `avs-compact-paper` preset follows.
    """

    model_type = "vidcomp_compact_compressor"

    hidden_size: int = 1152
    num_residual_blocks: int = 3
    num_downsampling_blocks: int = 2
    bottleneck_ratio: int = 4
    spatial_kernel_size: int = 3
    temporal_kernel_size: int = 3

    def __post_init__(self, **kwargs):
        if self.bottleneck_ratio < 1 or self.hidden_size < 1 or self.hidden_size % self.bottleneck_ratio:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a positive multiple of bottleneck_ratio "
                f"({self.bottleneck_ratio}): the spatial convolutions output hidden_size / bottleneck_ratio features."
            )
        if self.num_residual_blocks < 1:
            raise ValueError(f"num_residual_blocks must be at least 1, got {self.num_residual_blocks}.")
        if not 0 <= self.num_downsampling_blocks <= self.num_residual_blocks:
            raise ValueError(
                f"num_downsampling_blocks must lie in [0, num_residual_blocks={self.num_residual_blocks}], got "
                f"{self.num_downsampling_blocks}."
            )
        if self.spatial_kernel_size < 1 or self.temporal_kernel_size < 1:
            raise ValueError(
                f"Kernel sizes must be at least 1, got spatial {self.spatial_kernel_size} and temporal "
                f"{self.temporal_kernel_size}."
            )
        super().__post_init__(**kwargs)

    @property
    def reduction(self) -> int:
        """The factor by which T, H and W shrink (rounding up): 4 for the paper's 4x4x4 configuration."""
        return 2**self.num_downsampling_blocks

    def conv_block_parameters(self) -> int:
        """Parameters of one convolutional block, from the formula in the class docstring."""
        d, bottleneck = self.hidden_size, self.hidden_size // self.bottleneck_ratio
        return d * bottleneck * (self.spatial_kernel_size**2 + self.temporal_kernel_size) + bottleneck + d


def same_padding(kernel_size: int) -> tuple[int, int]:
    """Zeros before and after an axis, so that stride 1 keeps its size n and stride 2 gives ceil(n / 2)."""
    before = (kernel_size - 1) // 2
    return before, kernel_size - 1 - before


def reduced_size(size: int | torch.Tensor, levels: int) -> int | torch.Tensor:
    """`size` after `levels` halvings that round up: `ceil(size / 2**levels)`."""
    return (size + 2**levels - 1) // 2**levels


@dataclass
class CompactLayout:
    r"""
    Where each video's frames sit in the `(num_rows, dim, row_length, height, width)` tensor the convolutions run on.

    Args:
        lengths (`torch.LongTensor` of shape `(num_videos,)`): frames of each video.
        row (`torch.LongTensor` of shape `(num_videos,)`): the row holding each video.
        offset (`torch.LongTensor` of shape `(num_videos,)`): position of each video's first frame in its row, a
            multiple of the compressor's reduction.
        num_rows (`int`), row_length (`int`): the tensor's size; `row_length` is a multiple of the reduction.
    """

    lengths: torch.LongTensor
    row: torch.LongTensor
    offset: torch.LongTensor
    num_rows: int
    row_length: int

    @classmethod
    def plan(cls, lengths: torch.LongTensor, reduction: int, gap: int) -> "CompactLayout":
        r"""
        The cheaper of one padded row per video and one row of all videos with `gap` empty groups of `reduction`
        frames between neighbours (see the module docstring).
        """
        slots = (lengths + reduction - 1) // reduction * reduction
        strides = slots + gap * reduction
        packed_length = int(strides.sum()) - gap * reduction
        longest = int(slots.max())
        if packed_length < lengths.numel() * longest:
            return cls(lengths, torch.zeros_like(lengths), torch.cumsum(strides, 0) - strides, 1, packed_length)
        rows = torch.arange(lengths.numel(), device=lengths.device)
        return cls(lengths, rows, torch.zeros_like(lengths), lengths.numel(), longest)

    def mask(self, level: int, dtype: torch.dtype) -> torch.Tensor:
        r"""`(num_rows, 1, row_length / 2**level, 1, 1)`: 1 where a video's frames (or groups) are at `level`."""
        length = self.row_length >> level
        start = self.row * (length + 1) + (self.offset >> level)
        # +1 where a video starts, -1 where it ends; the running sum is 1 inside videos. The extra column per row
        # takes the -1 of a video that ends with its row.
        edges = torch.zeros(self.num_rows * (length + 1), device=self.lengths.device, dtype=torch.long)
        edges.index_add_(0, start, torch.ones_like(start))
        edges.index_add_(0, start + reduced_size(self.lengths, level), -torch.ones_like(start))
        inside = torch.cumsum(edges, 0).view(self.num_rows, length + 1)[:, :length]
        return inside[:, None, :, None, None].to(dtype)

    def place(self, values: torch.Tensor, video: torch.LongTensor, position: torch.LongTensor) -> torch.Tensor:
        r"""
        Args:
            values (`torch.Tensor` of shape `(n, height, width, dim)`): frames, e.g. packed features.
            video, position (`torch.LongTensor` of shape `(n,)`): each frame's video and index within it.
        Returns:
            `torch.Tensor` of shape `(num_rows, dim, row_length, height, width)`, zero outside the videos.
        """
        grid = values.new_zeros(self.num_rows, self.row_length, *values.shape[1:])
        grid[self.row[video], self.offset[video] + position] = values
        return rearrange(grid, "r t h w d -> r d t h w")

    def take(
        self, hidden: torch.Tensor, video: torch.LongTensor, position: torch.LongTensor, level: int = 0
    ) -> torch.Tensor:
        r"""
        The inverse of [`place`] at any level: frames (or groups) `position` of videos `video`.

        Args:
            hidden (`torch.Tensor` of shape `(num_rows, dim, row_length / 2**level, height, width)`)
        Returns:
            `torch.Tensor` of shape `(n, height, width, dim)`.
        """
        return rearrange(hidden, "r d t h w -> r t h w d")[self.row[video], (self.offset[video] >> level) + position]


class CompactConvBlock(nn.Module):
    r"""
    A 2D spatial convolution `dim -> dim / ratio`, then a 1D temporal convolution back to `dim`, then SiLU; both
    with stride `stride` along the axes they convolve.
    """

    def __init__(self, config: CompactCompressorConfig, stride: int = 1):
        super().__init__()
        dim, ks, kt = config.hidden_size, config.spatial_kernel_size, config.temporal_kernel_size
        bottleneck = dim // config.bottleneck_ratio
        # Conv3d with a flat kernel keeps the (B, C, T, H, W) layout: no reshape between the two convolutions.
        self.spatial = nn.Conv3d(dim, bottleneck, (1, ks, ks), stride=(1, stride, stride))
        self.temporal = nn.Conv3d(bottleneck, dim, (kt, 1, 1), stride=(stride, 1, 1))
        self.spatial_padding = (*same_padding(ks), *same_padding(ks), 0, 0)
        self.temporal_padding = (0, 0, 0, 0, *same_padding(kt))

    def forward(self, hidden: torch.Tensor, input_mask: torch.Tensor, output_mask: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            hidden (`torch.Tensor` of shape `(num_rows, dim, frames, height, width)`): zero outside the videos.
            input_mask (`torch.Tensor` of shape `(num_rows, 1, frames, 1, 1)`): 1 on the videos' input frames.
            output_mask (`torch.Tensor` of shape `(num_rows, 1, out_frames, 1, 1)`): 1 on their output frames.
        Returns:
            `torch.Tensor` of shape `(num_rows, dim, out_frames, out_height, out_width)`, zero outside the videos.
        """
        # Re-zero the frames outside the videos after each convolution (its bias makes them non-zero), so that the
        # next one reads zeros past a video's ends, as it would on that video alone.
        hidden = self.spatial(F.pad(hidden, self.spatial_padding)) * input_mask
        hidden = self.temporal(F.pad(hidden, self.temporal_padding))
        return F.silu(hidden) * output_mask


class CompactResidualBlock(nn.Module):
    r"""
    Two convolutional blocks with an identity shortcut around them. `resample` makes it an encoder block that
    halves T, H and W (stride 2 in the first convolutional block; the shortcut keeps the strided positions), or a
    decoder block that doubles them first, VQGAN-style: nearest-neighbour upsampling, then the convolutions.
    """

    def __init__(self, config: CompactCompressorConfig, resample: Literal["down", "up"] | None = None):
        super().__init__()
        self.resample = resample
        self.conv_blocks = nn.ModuleList(
            [CompactConvBlock(config, stride=2 if resample == "down" else 1), CompactConvBlock(config)]
        )

    def forward(
        self, hidden: torch.Tensor, input_mask: torch.Tensor, output_mask: torch.Tensor, size: torch.Size
    ) -> torch.Tensor:
        r"""
        Args:
            hidden (`torch.Tensor` of shape `(num_rows, dim, frames, height, width)`): zero outside the videos.
            input_mask, output_mask: 1 on the videos' frames at the input's and the output's temporal resolution.
            size (`torch.Size`): `(out_frames, out_height, out_width)`; an upsampling block crops its doubled
                input to it, which undoes the rounding up of the matching downsampling block.
        """
        if self.resample == "up":
            hidden = F.interpolate(hidden, scale_factor=2, mode="nearest")
            hidden = hidden[..., : size[0], : size[1], : size[2]] * output_mask
            input_mask = output_mask
        shortcut = hidden[..., ::2, ::2, ::2] if self.resample == "down" else hidden
        hidden = self.conv_blocks[0](hidden, input_mask, output_mask)
        return shortcut + self.conv_blocks[1](hidden, output_mask, output_mask)


@torch.no_grad()
def init_compact_weights(module: nn.Module) -> None:
    r"""
    Initialises the convolutions of the compressor and of the autoencoder's decoder with std `fan_in ** -0.5`,
    which keeps each convolution's output at its input's scale at every width; a fixed std of 0.02 would blow
    activations up at d=1408 (fan-in 12672) and nearly silence them at tiny widths.
    """
    if isinstance(module, nn.Conv3d):
        init.normal_(module.weight, std=module.weight[0].numel() ** -0.5)
        init.zeros_(module.bias)


@register_compressor
class CompactCompressor(VidCompCompressor):
    r"""
    Compresses each video's `(T, H, W, d)` features into `ceil(T/4) * ceil(H/4) * ceil(W/4)` tokens of width `d`
    (for the default two downsampling blocks). Tokens are emitted by temporal group, row by row; a group's tokens
    carry the index and time of its first frame.

    Under a token budget it keeps an evenly spread subset of each video's temporal groups (the same rule as the
    other compressors), after encoding the whole video, so every kept token sees the same neighbours as without a
    budget. A budget smaller than one group's `ceil(H/4) * ceil(W/4)` tokens is refused.
    """

    config: CompactCompressorConfig

    def __init__(self, config: CompactCompressorConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(
            [
                CompactResidualBlock(config, resample="down" if i < config.num_downsampling_blocks else None)
                for i in range(config.num_residual_blocks)
            ]
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        init_compact_weights(module)

    def level_sizes(self, num_frames: int, height: int, width: int) -> list[torch.Size]:
        """`(frames, height, width)` after each downsampling level, from the input (level 0) to the tokens."""
        return [
            torch.Size([reduced_size(n, level) for n in (num_frames, height, width)])
            for level in range(self.config.num_downsampling_blocks + 1)
        ]

    def layout(self, frame_counts: torch.LongTensor) -> CompactLayout:
        """Where each video goes in the tensor the convolutions run on (see [`CompactLayout.plan`])."""
        gap = max(same_padding(self.config.temporal_kernel_size))
        return CompactLayout.plan(frame_counts, self.config.reduction, gap)

    def encode(self, hidden: torch.Tensor, layout: CompactLayout) -> torch.Tensor:
        r"""
        Args:
            hidden (`torch.Tensor` of shape `(num_rows, dim, row_length, height, width)`):
                Videos placed by `layout` ([`CompactLayout.place`]), zero elsewhere.
        Returns:
            `torch.Tensor` of shape `(num_rows, dim, row_length / 4, ceil(height / 4), ceil(width / 4))`, each
            video's `ceil(frames / 4)` groups where `layout` puts them at the last level, zero elsewhere.
        """
        sizes = self.level_sizes(*hidden.shape[2:])
        masks = [layout.mask(level, hidden.dtype) for level in range(len(sizes))]
        level = 0
        for block in self.blocks:
            next_level = level + (block.resample == "down")
            hidden = block(hidden, masks[level], masks[next_level], sizes[next_level])
            level = next_level
        return hidden

    def tokens_per_group(self, grid_h: int, grid_w: int, token_budget: int | None = None) -> int:
        """Tokens of one temporal group; a `TokenBudgetError` if `token_budget` cannot hold even one."""
        _, group_h, group_w = self.level_sizes(1, grid_h, grid_w)[-1]
        tokens = group_h * group_w
        check_token_budget(
            token_budget,
            tokens,
            f"temporal group ({self.config.reduction} frames of {grid_h}x{grid_w} patches, compressed to "
            f"{group_h}x{group_w} tokens)",
            "Raise the budget.",
        )
        return tokens

    def max_tokens(
        self,
        num_frames: int,
        grid_h: int,
        grid_w: int,
        token_budget: int | None = None,
        num_scenes: int | None = None,
    ) -> int:
        tokens_per_group = self.tokens_per_group(grid_h, grid_w, token_budget)
        groups = math.ceil(num_frames / self.config.reduction)
        if token_budget is not None:
            groups = min(groups, token_budget // tokens_per_group)
        return groups * tokens_per_group

    def check_features(self, features: PackedFrames) -> None:
        """Refuses features that are not `(total_frames, grid_h, grid_w, hidden_size)`."""
        shape = tuple(features.values.shape)
        if len(shape) != 4 or shape[-1] != self.config.hidden_size:
            raise InvalidVideoInputError(
                f"The compact compressor expects features of shape (total_frames, grid_h, grid_w, "
                f"{self.config.hidden_size}), got {shape}. Set the compressor's hidden_size to the vision "
                "tower's feature width (times the number of feature layers)."
            )

    def forward(
        self,
        features: PackedFrames,
        auxiliary_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
        token_budget: int | None = None,
        scene_ids: torch.LongTensor | None = None,
    ) -> CompressorOutput:
        self.check_features(features)
        _, grid_h, grid_w, _ = features.values.shape
        tokens_per_group = self.tokens_per_group(grid_h, grid_w, token_budget)
        device = features.values.device
        lengths = features.frame_counts.to(device)
        layout = self.layout(lengths)
        hidden = layout.place(features.values.to(self.dtype), features.video_index(), features.position_in_video())
        latent = self.encode(hidden, layout)

        # One entry per temporal group of every video; under a budget, an even subset of each video's groups.
        levels = self.config.num_downsampling_blocks
        groups = reduced_size(lengths, levels)
        group_video = torch.repeat_interleave(torch.arange(features.num_videos, device=device), groups)
        group = torch.arange(group_video.shape[0], device=device) - (torch.cumsum(groups, 0) - groups)[group_video]
        if token_budget is not None:
            allowed = torch.full_like(group, token_budget // tokens_per_group)
            keep = uniform_keep_mask(group, groups[group_video], allowed)
            group_video, group = group_video[keep], group[keep]
        tokens = layout.take(latent, group_video, group, level=levels)
        first_frame = group * self.config.reduction
        frame_row = (torch.cumsum(lengths, 0) - lengths)[group_video] + first_frame
        kept_groups = torch.zeros_like(lengths).index_add_(0, group_video, torch.ones_like(group_video))
        return CompressorOutput(
            tokens=rearrange(tokens, "g h w d -> (g h w) d"),
            token_counts=(kept_groups * tokens_per_group).to(features.frame_counts),
            token_frame_index=first_frame.repeat_interleave(tokens_per_group),
            token_timestamps=features.timestamps.to(device)[frame_row].repeat_interleave(tokens_per_group),
        )


__all__ = ["CompactCompressor", "CompactCompressorConfig", "CompactLayout"]
