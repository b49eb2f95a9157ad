r"""
LongVU's compressor (arXiv:2410.17434, §3.1-3.3 and Appendix B), in the order the released code runs it:

1. **Spatial Vision Aggregator** (Cambrian's SVA, `longvu/vision_sampler.py`): SigLIP features of the kept frames
   and the sampler's DINOv2 features are each resized to a `query_side * kv_window` grid (24 x 24), projected to
   `sva_hidden_size` (Linear, GELU, Linear, LayerNorm per tower) and fused into `query_side ** 2` (144) tokens per
   frame. A learned query, the same for every position, goes through `num_layers` (3) layers; each query attends only
   to its own `kv_window x kv_window` (2 x 2) window of each tower (8 keys), with a per-tower position embedding, and
   is conditioned on the frame's mean projected SigLIP feature through `proj_context`. The module names match the
   released state dict, so converted weights load as they are.
2. **Projection** to the LLM width by the composite model's projector (the release's `mm_projector`). The relevance
   score and STC are defined on projected tokens, so the composite hands its projector to this compressor
   (`projection = "inside"`) instead of projecting afterwards. Every frame is projected at the low resolution (the
   relevance needs it), but only the frames that keep the high resolution are projected at it; the release projects
   both resolutions of every frame.
3. **Frame position encoding** (Eq. 3, off by default): `PE(t, 2i) = sin(t / 10000^(2i/d))`,
   `PE(t, 2i+1) = cos(t / 10000^(2i/d))` added to every token of a frame, with t its timestamp in seconds (frame
   indices at the release's 1 fps). The release computes `cos(sin(x))` for odd channels; this is the formula.
4. **Query-guided resolution mixing** (Eq. 1), per video of N frames and budget L (tokens per video: the
   composite's `token_budget`, or with `context_length` what the video's prompt and `reserved_tokens` answer tokens
   leave of the LLM context, as the release sizes it, when that is smaller):
   - all frames high (`query_side ** 2` tokens) when `N * high <= L`;
   - mixed when `N * low <= L < N * high`: the `k = floor((L - N * low) / (high - low))` frames most relevant to
     the instruction stay high and the rest go to `lowres_side ** 2` (64) tokens, by bilinear interpolation
     (`lowres_mode="bilinear"`, the release, `align_corners=False`, fp32) or average pooling (`"pool"`, the paper);
   - overflow when `N * low > L`: every frame at `overflow_resolution` (`"low"`, the paper's "pool all frames";
     `"high"` reproduces the release, whose 8 x 8 branch for this case never runs, unless one high-resolution frame
     exceeds the budget), then STC.

   The regimes are chosen by these token counts. The release chooses them first by frame counts that ignore the
   newlines and the crop (all high below `(L - 1) // 144` frames, all high again above `(L - 1) // 64`), then
   trims with STC: for N between `L / 156` and `(L - 1) // 144` it keeps every frame high and prunes, where this
   mixes; for N between `L / 72` and `(L - 1) // 64` it prunes low-resolution frames, where this prunes
   high-resolution ones. Outside those bands the choices agree.

   The relevance of a frame is the paper's `1/(HW Lq) sum_{h,w,l} F(V) Q^T` on its projected low-resolution
   tokens, which equals the dot product of the frame's mean token with the mean instruction embedding
   (`relevance="dot"`, the release's raw dot product). Token norms (up to ~300 for visual tokens against ~1 for text
   embeddings, issue #48 of the release) let the frames with the largest features win whatever the question;
   `relevance="cosine"` averages cosine similarities instead (the mean normalised token against the mean normalised
   text embedding). Instruction tokens are the prompt the composite gives (`InstructionCondition`, answer tokens
   masked), where the release takes only the text after the video. Without an instruction, the `k` high-resolution
   frames are spread evenly in time.
5. **Spatial token compression** (Eq. 2), for overflowing videos only: within windows of `stc_window` (8) frames
   the first frame keeps all its tokens, and a later frame's token is dropped when its cosine similarity to the
   anchor's token at the same position exceeds `stc_threshold` (paper 0.8, release 0.7).

   **Budget guarantee.** The release can still overflow (issue #22) and then cuts tokens from the end of each window
   and truncates the video. Here, if a video still exceeds L after step 5: when its anchor frames fit, the
   remaining non-anchor tokens with the *highest* similarity to their anchor (the most redundant) are dropped until
   exactly L tokens remain (earliest kept on ties); when even the anchor frames do not fit, only the anchors of
   `floor(L / tokens_per_frame)` windows spread evenly in time are kept. So a video never yields more than L tokens,
   and a budget below one low-resolution frame is a `TokenBudgetError`.

**Row newlines.** The release appends a learned `image_newline` (LLM-width) token after every row of every frame,
so a frame takes 12 x 13 = 156 or 8 x 9 = 72 tokens, and Eq. 1's k uses those counts. `newline_size` (the LLM's
width) turns this on, as converted checkpoints need; the newline is appended after projection, before the frame
encoding, the relevance score and STC, as in the release (identical in every frame, it is always pruned from a
window's later frames).

**Letterboxed frames.** With the processor's `pad_to_square` (the release's `expand2square`), each video's picture
size (`PackedFrames.video_sizes`) says where the padding lies, and the release's rule (`letterbox_band`, its
`unmask_attention_mask` and `unpad_image`) decides which cells are picture: SVA queries do not attend padding keys (a
query whose window is all padding attends all of it), and the padded rows (or columns) of the 12 x 12 and 8 x 8 token
grids are cropped before the newlines, so a landscape frame takes fewer tokens; Eq. 1's k, the relevance mean, STC and
the budget count the cropped frames. `swap_video_sizes` reproduces the release's reading of (height, width) as
(width, height), which the released weights were trained with.
"""

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig

from .components_vidcomp import (
    CompressorOutput,
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    VidCompCompressor,
    attention_interface,
    TokenBudgetError,
    check_token_budget,
    context_left_for_video,
    register_compressor,
    uniform_keep_mask,
)


@strict
class LongVUCompressorConfig(PreTrainedConfig):
    r"""
    vision_hidden_size (`int`, *optional*, defaults to 1152): width of the main tower's (SigLIP) features.
    dino_hidden_size (`int`, *optional*, defaults to 1536): width of the sampler's DINOv2 features.
    sva_hidden_size (`int`, *optional*, defaults to 1024): width of the SVA and of the tokens before projection.
    num_attention_heads (`int`, *optional*, defaults to 16): heads of the SVA cross-attention.
    num_layers (`int`, *optional*, defaults to 3): SVA layers (the release's `connector_depth`).
    query_side (`int`, *optional*, defaults to 12): the SVA's query grid side; `query_side ** 2` high-res tokens.
    kv_window (`int`, *optional*, defaults to 2): each query attends a `kv_window ** 2` window of each tower.
    lowres_side (`int`, *optional*, defaults to 8): the low-resolution grid side.
    lowres_mode (`str`, *optional*, defaults to `"bilinear"`): `"bilinear"` (release) or `"pool"` (paper).
    relevance (`str`, *optional*, defaults to `"dot"`): `"dot"` (release) or `"cosine"`; see the module docstring.
    overflow_resolution (`str`, *optional*, defaults to `"low"`):
        Resolution of every frame of a video that does not fit the budget even at low resolution: `"low"` (paper) or
        `"high"` (release).
    stc_window (`int`, *optional*, defaults to 8): K, the frames per spatial-token-compression window.
    stc_threshold (`float`, *optional*, defaults to 0.8): θ; the paper's 0.8, the release's `drop_threshold` 0.7.
    frame_position_encoding (`bool`, *optional*, defaults to `False`): add Eq. 3's sinusoidal frame encoding.
    newline_size (`int`, *optional*):
        The LLM's width, to append a learned newline token after every row of every frame (the release's
        `image_newline`); no newlines without it. Needs the composite's projector (`projection = "inside"`).
    layer_norm_eps (`float`, *optional*, defaults to 1e-5): epsilon of the SVA's layer norms.
    initializer_range (`float`, *optional*, defaults to 0.02): std of the linear layers' initial weights.
    sva_batch_size (`int`, *optional*, defaults to 64):
        Frames per SVA call, which bounds its working memory (both towers resized to `query_side * kv_window` grids)
        on long videos.
    swap_video_sizes (`bool`, *optional*, defaults to `False`):
        Read each letterboxed video's (height, width) as (width, height) when masking and cropping its padding, as the
        release does: its README, app, evaluations and video training pass `frame.shape[:2]` where `unpad_image` and
        `unmask_attention_mask` expect (width, height), so a landscape video loses columns instead of its padded rows.
        `vidcomp convert longvu` sets it, since the released weights were trained that way.
    context_length (`int`, *optional*):
        The LLM context each video must fit with its prompt. Each video's budget `L` is then what its prompt leaves,
        `context_length - text_length - reserved_tokens` (the release's `max_visual_len`, with `text_length` the
        prompt's tokens other than the video's), divided evenly among the prompt's videos when it has several, or
        `token_budget` when that is smaller. Without it, `L` is `token_budget`.
    reserved_tokens (`int`, *optional*, defaults to 16):
        With `context_length`: tokens kept free for the answer (the release's `inference_max_length`).
    """

    model_type = "vidcomp_longvu_compressor"

    vision_hidden_size: int = 1152
    dino_hidden_size: int = 1536
    sva_hidden_size: int = 1024
    num_attention_heads: int = 16
    num_layers: int = 3
    query_side: int = 12
    kv_window: int = 2
    lowres_side: int = 8
    lowres_mode: Literal["bilinear", "pool"] = "bilinear"
    relevance: Literal["dot", "cosine"] = "dot"
    overflow_resolution: Literal["low", "high"] = "low"
    stc_window: int = 8
    stc_threshold: float = 0.8
    frame_position_encoding: bool = False
    newline_size: int | None = None
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    sva_batch_size: int = 64
    swap_video_sizes: bool = False
    context_length: int | None = None
    reserved_tokens: int = 16

    def __post_init__(self, **kwargs):
        for name in (
            "vision_hidden_size", "dino_hidden_size", "sva_hidden_size", "num_attention_heads", "num_layers",
            "query_side", "kv_window", "lowres_side", "stc_window", "sva_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.sva_hidden_size % self.num_attention_heads:
            raise ValueError(
                f"sva_hidden_size ({self.sva_hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.lowres_side >= self.query_side:
            raise ValueError(
                f"lowres_side ({self.lowres_side}) must be smaller than query_side ({self.query_side}): the low "
                "resolution has fewer tokens than the high one."
            )
        if self.context_length is not None and self.context_length < 1:
            raise ValueError(f"context_length must be at least 1 or None, got {self.context_length}.")
        if self.reserved_tokens < 0:
            raise ValueError(f"reserved_tokens must not be negative, got {self.reserved_tokens}.")
        if self.newline_size is not None and self.newline_size < 1:
            raise ValueError(f"newline_size must be at least 1 or None, got {self.newline_size}.")
        if not -1.0 <= self.stc_threshold <= 1.0:
            raise ValueError(f"stc_threshold is a cosine similarity and must lie in [-1, 1], got {self.stc_threshold}.")
        super().__post_init__(**kwargs)


class LongVUMLP(nn.Module):
    """The release's bias-free `MLP`: Linear, GELU, Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_dim, bias=False)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_dim, out_dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(hidden_states)))


class LongVUMultiKVCrossAttention(nn.Module):
    r"""
    The release's `MultiKVCrossAttention`: one query per position attends the keys of every tower at once (the
    towers' keys are concatenated), each tower with its own LayerNorm + bias-free key and value projections.
    """

    is_causal = False

    def __init__(self, config: LongVUCompressorConfig, num_towers: int = 2):
        super().__init__()
        self.config = config
        dim = config.sva_hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = dim // self.num_heads
        self.num_towers = num_towers
        self.q_proj = nn.Sequential(nn.LayerNorm(dim, eps=config.layer_norm_eps), nn.Linear(dim, dim, bias=False))
        for tower in range(num_towers):
            for kind in ("k", "v"):
                norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
                self.add_module(f"{kind}_proj_{tower}", nn.Sequential(norm, nn.Linear(dim, dim, bias=False)))
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self, queries: torch.Tensor, towers: list[torch.Tensor], key_mask: torch.BoolTensor | None = None
    ) -> torch.Tensor:
        r"""
        Args:
            queries (`torch.Tensor` of shape `(positions, 1, dim)`)
            towers (list of `torch.Tensor` of shape `(positions, window_tokens, dim)`), one per tower.
            key_mask (`torch.BoolTensor` of shape `(positions, num_towers * window_tokens)`, *optional*):
                False for the keys a query may not attend (letterbox padding).
        Returns:
            `torch.Tensor` of shape `(positions, 1, dim)`.
        """
        split = "n l (h d) -> n h l d"
        query = rearrange(self.q_proj(queries), split, h=self.num_heads)
        key = torch.cat([getattr(self, f"k_proj_{i}")(t) for i, t in enumerate(towers)], dim=1)
        value = torch.cat([getattr(self, f"v_proj_{i}")(t) for i, t in enumerate(towers)], dim=1)
        key, value = rearrange(key, split, h=self.num_heads), rearrange(value, split, h=self.num_heads)
        mask = None
        if key_mask is not None:
            mask = torch.zeros(key_mask.shape, dtype=query.dtype, device=query.device)
            mask = mask.masked_fill(~key_mask, torch.finfo(query.dtype).min)[:, None, None, :]
        attention = attention_interface(self.config)
        output, _ = attention(self, query, key, value, mask, scaling=self.head_dim**-0.5, dropout=0.0)
        return self.o_proj(rearrange(output, "n l h d -> n l (h d)"))


class LongVUAggregatorLayer(nn.Module):
    r"""
    The release's `VisionCrossAttentionLayer`: `q = proj_in([q, proj_context(context)])`, then
    `q = proj_out(norm(q + cross_attn(q, towers + pos_embed))) + residual`.
    """

    def __init__(self, config: LongVUCompressorConfig, num_towers: int = 2):
        super().__init__()
        dim = config.sva_hidden_size
        self.proj_context = nn.Linear(dim, dim, bias=False)
        self.proj_in = nn.Linear(2 * dim, dim, bias=False)
        self.proj_out = LongVUMLP(dim, dim, dim)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.cross_attn = LongVUMultiKVCrossAttention(config, num_towers)
        for tower in range(num_towers):
            self.register_parameter(f"pos_embed_{tower}", nn.Parameter(torch.empty(config.kv_window**2, dim)))

    def forward(
        self,
        queries: torch.Tensor,
        context: torch.Tensor,
        towers: list[torch.Tensor],
        key_mask: torch.BoolTensor | None = None,
    ) -> torch.Tensor:
        r"""
        Args:
            queries (`torch.Tensor` of shape `(positions, 1, dim)`)
            context (`torch.Tensor` of shape `(positions, 1, dim)`): the frame's mean projected SigLIP feature.
            towers (list of `torch.Tensor` of shape `(positions, window_tokens, dim)`)
            key_mask (`torch.BoolTensor` of shape `(positions, num_towers * window_tokens)`, *optional*)
        """
        residual = queries
        queries = self.proj_in(torch.cat([queries, self.proj_context(context)], dim=-1))
        towers = [t + getattr(self, f"pos_embed_{i}").to(t.dtype) for i, t in enumerate(towers)]
        queries = self.norm(queries + self.cross_attn(queries, towers, key_mask))
        return self.proj_out(queries) + residual


class LongVUSpatialAggregator(nn.Module):
    r"""The release's `VisionTokenSampler` (`vision_sampler_0`): a stack of aggregator layers."""

    def __init__(self, config: LongVUCompressorConfig, num_towers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList([LongVUAggregatorLayer(config, num_towers) for _ in range(config.num_layers)])

    def forward(
        self,
        queries: torch.Tensor,
        context: torch.Tensor,
        towers: list[torch.Tensor],
        key_mask: torch.BoolTensor | None = None,
    ) -> torch.Tensor:
        for layer in self.layers:
            queries = layer(queries, context, towers, key_mask)
        return queries


def tower_projector(in_dim: int, dim: int, eps: float) -> nn.Sequential:
    """The release's `mm_projector_aux_i`: Linear, GELU, Linear, LayerNorm (indices 0, 2, 3 in the state dict)."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim, eps=eps))


def frame_position_encoding(timestamps: torch.Tensor, dim: int) -> torch.Tensor:
    r"""
    Eq. 3: `PE(t, 2i) = sin(t / 10000^(2i/d))`, `PE(t, 2i+1) = cos(t / 10000^(2i/d))`, shape `(frames, dim)`.
    """
    channel = torch.arange(dim, device=timestamps.device)
    inverse_frequency = 10000.0 ** (-(2 * (channel // 2)).double() / dim)
    angle = timestamps.double()[:, None] * inverse_frequency
    return torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def letterbox_band(picture_sizes: torch.LongTensor, side: int) -> torch.LongTensor:
    r"""
    The rows and columns of a `side x side` grid over a letterboxed frame that show the picture, by the release's rule
    (`unpad_image`, `unmask_attention_mask`): the picture's shorter side spans `int(short * side / long)` cells, and
    `(side - span) // 2` cells of padding go at each end. A band with nothing left in it is the whole grid, as the
    release then keeps the frame uncropped (and its masked queries attend everything).

    Args:
        picture_sizes (`torch.LongTensor` of shape `(num_videos, 2)`): the picture's (height, width).
    Returns:
        `torch.LongTensor` of shape `(num_videos, 4)`: first row, end row, first column, end column.
    """
    height, width = picture_sizes.double().unbind(-1)
    landscape = width / height > 1.0
    span = torch.where(landscape, (height * (side / width)).floor(), (width * (side / height)).floor())
    padding = torch.div(side - span, 2, rounding_mode="floor").long()
    padding = torch.where(side - 2 * padding > 0, padding, 0)
    rows = torch.where(landscape, padding, 0)
    columns = torch.where(landscape, 0, padding)
    return torch.stack([rows, side - rows, columns, side - columns], dim=-1)


def band_mask(band: torch.LongTensor, side: int, newline: bool = False) -> torch.BoolTensor:
    r"""
    `(num_videos, side, side + newline)`: True inside each video's band (from `letterbox_band`), and on the newline
    column of the band's rows, as the release appends a newline to each row it keeps.
    """
    index = torch.arange(side + int(newline), device=band.device)
    rows = (index[:side] >= band[:, 0:1]) & (index[:side] < band[:, 1:2])
    columns = (index >= band[:, 2:3]) & (index < band[:, 3:4]) | (index == side)
    return rows[:, :, None] & columns[:, None, :]


class PictureTokens(NamedTuple):
    r"""
    Per video, which of a frame's tokens show the picture rather than letterbox padding: `high` of shape
    `(num_videos, high_tokens)` and `low` of shape `(num_videos, low_tokens)`, in `grid_tokens` order.
    """

    high: torch.BoolTensor
    low: torch.BoolTensor


def resize_grid(grid: torch.Tensor, side: int, mode: str = "bilinear") -> torch.Tensor:
    r"""Resizes `(frames, h, w, dim)` to `(frames, side, side, dim)` in fp32: bilinear (`align_corners=False`) or
    average pooling (`"pool"`)."""
    if grid.shape[1:3] == (side, side):
        return grid
    channels_first = rearrange(grid.float(), "t h w d -> t d h w")
    if mode == "pool":
        resized = F.adaptive_avg_pool2d(channels_first, side)
    else:
        resized = F.interpolate(channels_first, size=(side, side), mode="bilinear", align_corners=False)
    return rearrange(resized, "t d h w -> t h w d").to(grid.dtype)


# Rows gathered from a grid per step: a few MB that stay in cache, where gathering an hour's rows at once would copy
# the grid once more (160 MB for the low-resolution frames at width 256), and that copy costs more than the work.
CHUNK_BYTES = 1 << 22


def frames_per_chunk(grid: torch.Tensor) -> int:
    r"""Frames of `grid` (shape `(frames, ...)`) per gathered chunk, counted in fp32."""
    return max(1, CHUNK_BYTES // max(1, math.prod(grid.shape[1:]) * 4))


def cosine_to_anchor(grid: torch.Tensor, anchor: torch.LongTensor) -> torch.Tensor:
    r"""
    Cosine similarity of every token to the token at the same position of its frame's anchor frame, in fp32, with
    `F.cosine_similarity`'s formula `x . y / max(|x| |y|, 1e-8)` and each token's norm computed once.

    The anchors' rows are gathered a chunk of frames at a time (`CHUNK_BYTES`).

    Args:
        grid (`torch.Tensor` of shape `(frames, tokens, dim)`)
        anchor (`torch.LongTensor` of shape `(frames,)`): the row of each frame's anchor frame.
    Returns:
        `torch.Tensor` of shape `(frames, tokens)`.
    """
    step = frames_per_chunk(grid)
    norm = grid.new_empty(grid.shape[:2], dtype=torch.float32)
    dot = torch.empty_like(norm)
    for start in range(0, grid.shape[0], step):
        rows = slice(start, start + step)
        chunk = grid[rows].float()
        norm[rows] = torch.linalg.vector_norm(chunk, dim=-1)
        dot[rows] = torch.linalg.vecdot(chunk, grid.index_select(0, anchor[rows]).float())
    return dot / (norm * norm[anchor]).clamp(min=1e-8)


def rank_within_groups(score: torch.Tensor, group: torch.LongTensor, descending: bool) -> torch.LongTensor:
    r"""
    Rank of each entry of `score` among the entries of its `group` (0 = best), earliest index first on ties.

    Args:
        score (`torch.Tensor` of shape `(n,)`), group (`torch.LongTensor` of shape `(n,)`): group numbers from 0.
    """
    order = torch.sort(score, descending=descending, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    counts = torch.bincount(group, minlength=int(group.max()) + 1 if group.numel() else 0)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.shape[0], device=score.device) - start[group[order]]
    return rank


def spatial_token_compression(
    grid: torch.Tensor,
    video: torch.LongTensor,
    position: torch.LongTensor,
    frame_counts: torch.LongTensor,
    video_budget: torch.LongTensor,
    window: int,
    threshold: float,
    shown: torch.BoolTensor | None = None,
) -> tuple[torch.BoolTensor, torch.BoolTensor]:
    r"""
    STC with the budget guarantee, over the frames of all overflowing videos at once.

    Args:
        grid (`torch.Tensor` of shape `(frames, tokens_per_frame, dim)`): the tokens of every frame of the
            overflowing videos, video after video, all at one resolution.
        video (`torch.LongTensor` of shape `(frames,)`): the video of each frame (an index into `frame_counts`).
        position (`torch.LongTensor` of shape `(frames,)`): each frame's index in its video.
        frame_counts (`torch.LongTensor` of shape `(num_videos,)`): frames per video.
        video_budget (`torch.LongTensor` of shape `(num_videos,)`): tokens per video.
        window (`int`): K, the frames per STC window; each window's first frame is its anchor.
        threshold (`float`): θ; a token more similar than this to its anchor's token at its place is pruned.
        shown (`torch.BoolTensor` of shape `(frames, tokens_per_frame)`, *optional*): the tokens that show the
            picture of a letterboxed frame; the others are never kept nor counted.
    Returns:
        The keep mask of the tokens and the mask of tokens STC's threshold pruned, both
        `(frames, tokens_per_frame)`.
    """
    frame = torch.arange(grid.shape[0], device=grid.device)
    anchor = frame - position % window
    is_anchor = (anchor == frame)[:, None].expand(-1, grid.shape[1])
    similarity = cosine_to_anchor(grid, anchor)
    shown = torch.ones_like(similarity, dtype=torch.bool) if shown is None else shown
    pruned = ~is_anchor & (similarity > threshold) & shown
    keep = ~pruned & shown

    kept = torch.zeros_like(frame_counts).index_add_(0, video, keep.sum(1).to(frame_counts))
    budget = video_budget.to(frame_counts)
    over = kept > budget
    if not bool(over.any()):
        return keep, pruned
    windows = -(-frame_counts // window)
    # Every frame of a video shows the same number of tokens.
    tokens_per_frame = torch.zeros_like(frame_counts).scatter_(0, video, shown.sum(1).to(frame_counts))
    anchors_fit = windows * tokens_per_frame <= budget
    token_video = video[:, None].expand(-1, grid.shape[1])
    # Anchors fit: drop the most redundant remaining tokens (highest similarity) until the budget is met.
    trim = (over & anchors_fit)[token_video] & keep & ~is_anchor
    if bool(trim.any()):
        candidate = torch.nonzero(trim.flatten()).flatten()
        candidate_video = token_video.flatten()[candidate]
        rank = rank_within_groups(similarity.flatten()[candidate], candidate_video, descending=False)
        allowance = budget - windows * tokens_per_frame
        keep.view(-1)[candidate] = rank < allowance[candidate_video]
    # Anchors alone overflow: keep only the anchors of evenly spread windows.
    sparse = over & ~anchors_fit
    if bool(sparse.any()):
        window = position // window
        chosen_window = uniform_keep_mask(window, windows[video], (budget // tokens_per_frame.clamp(min=1))[video])
        keep = torch.where(sparse[token_video], is_anchor & chosen_window[:, None] & shown, keep)
    return keep, pruned


@register_compressor
class LongVUCompressor(VidCompCompressor):
    r"""
    LongVU's SVA fusion, query-guided resolution mixing and spatial token compression; see the module docstring.

    `features` are the main tower's (SigLIP) features of the kept frames, `auxiliary_features` the sampler's DINOv2
    features of the same frames, `instruction` the LLM-embedded prompt. It returns projected (LLM-width) tokens.
    """

    config: LongVUCompressorConfig
    projection = "inside"

    def __init__(self, config: LongVUCompressorConfig):
        super().__init__(config)
        dim, eps = config.sva_hidden_size, config.layer_norm_eps
        self.siglip_projector = tower_projector(config.vision_hidden_size, dim, eps)
        self.dino_projector = tower_projector(config.dino_hidden_size, dim, eps)
        self.vision_query = nn.Parameter(torch.empty(1, dim))
        self.aggregator = LongVUSpatialAggregator(config)
        self.image_newline = nn.Parameter(torch.empty(config.newline_size)) if config.newline_size else None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # The release draws the query and the position embeddings from a standard normal.
        if module is self:
            nn.init.normal_(self.vision_query)
            if self.image_newline is not None:
                nn.init.normal_(self.image_newline, std=self.config.newline_size**-0.5)
        if isinstance(module, LongVUAggregatorLayer):
            for tower in range(module.cross_attn.num_towers):
                nn.init.normal_(getattr(module, f"pos_embed_{tower}"))

    @property
    def high_tokens(self) -> int:
        side = self.config.query_side
        return side * (side + int(self.image_newline is not None))

    @property
    def low_tokens(self) -> int:
        side = self.config.lowres_side
        return side * (side + int(self.image_newline is not None))

    def grid_tokens(self, grid: torch.Tensor) -> torch.Tensor:
        r"""
        `(frames, side, side, dim)` projected tokens as `(frames, tokens, dim)`, row after row, each row followed by
        the newline token when there is one.
        """
        if self.image_newline is None:
            return rearrange(grid, "t h w d -> t (h w) d")
        if grid.shape[-1] != self.image_newline.shape[0]:
            raise InvalidVideoInputError(
                f"Row newlines are {self.image_newline.shape[0]} wide (newline_size) but the projected tokens are "
                f"{grid.shape[-1]}: pass the projector that maps frames to the LLM's embeddings."
            )
        newline = self.image_newline.to(grid.dtype).expand(*grid.shape[:2], 1, -1)
        return rearrange(torch.cat([grid, newline], dim=2), "t h w d -> t (h w) d")

    def output_dim(self, input_dim: int) -> int:
        return self.config.sva_hidden_size

    def max_tokens(
        self,
        num_frames: int,
        grid_h: int,
        grid_w: int,
        token_budget: int | None = None,
        num_scenes: int | None = None,
    ) -> int:
        self.check_budget(token_budget)
        limits = [num_frames * self.high_tokens]
        if token_budget is not None:
            limits.append(token_budget)
        if self.config.context_length is not None:  # what an empty prompt leaves
            limits.append(self.config.context_length - self.config.reserved_tokens)
        return min(limits)

    def check_budget(self, token_budget: int | None) -> None:
        side = self.config.lowres_side
        check_token_budget(
            token_budget,
            self.low_tokens,
            f"frame at the low resolution ({side}x{side})",
            "Raise the budget or lower lowres_side.",
        )

    def overflows_at_high(
        self, video_budget: torch.LongTensor, picture: PictureTokens | None = None
    ) -> torch.BoolTensor:
        r"""Per video (shape `(num_videos,)`), whether its frames stay at the high resolution should it overflow:
        `overflow_resolution="high"` and one high-resolution frame fits its budget."""
        high_tokens = self.high_tokens if picture is None else picture.high.sum(-1).to(video_budget)
        return (video_budget >= high_tokens) & (self.config.overflow_resolution == "high")

    def picture_tokens(
        self, video_sizes: torch.LongTensor | None
    ) -> tuple[torch.BoolTensor | None, PictureTokens | None]:
        r"""
        For letterboxed videos, where their pictures lie, by the release's rule (`letterbox_band`): on the towers'
        `query_side * kv_window` grid (shape `(num_videos, grid, grid)`, for the SVA's key masks) and among a frame's
        tokens at each resolution (`PictureTokens`, for cropping). None for either when it masks nothing.

        Args:
            video_sizes (`torch.LongTensor` of shape `(num_videos, 2)`, *optional*): the pictures' (height, width).
        """
        if video_sizes is None:
            return None, None
        config = self.config
        # The release sizes the low-resolution crop from the frame size over query_side / lowres_side, truncated.
        low_sizes = (video_sizes.double() / (config.query_side / config.lowres_side)).floor().long().clamp(min=1)
        if config.swap_video_sizes:
            video_sizes, low_sizes = video_sizes.flip(-1), low_sizes.flip(-1)
        grid = config.query_side * config.kv_window
        newline = self.image_newline is not None
        picture = band_mask(letterbox_band(video_sizes, grid), grid)
        tokens = PictureTokens(
            high=band_mask(letterbox_band(video_sizes, config.query_side), config.query_side, newline).flatten(1),
            low=band_mask(letterbox_band(low_sizes, config.lowres_side), config.lowres_side, newline).flatten(1),
        )
        whole = bool(tokens.high.all()) and bool(tokens.low.all())
        return (None if bool(picture.all()) else picture), (None if whole else tokens)

    def video_budgets(
        self, num_videos: int, instruction: InstructionCondition | None, token_budget: int | None
    ) -> torch.LongTensor | None:
        r"""
        Each video's budget `L`, shape `(num_videos,)`: `token_budget`, or with `context_length` the video's share of
        what its prompt leaves of the context ([`context_left_for_video`]) when that is smaller; None when there is
        neither.
        """
        self.check_budget(token_budget)
        config = self.config
        budget = None if token_budget is None else torch.full((num_videos,), token_budget, dtype=torch.long)
        if config.context_length is None:
            return budget
        left = context_left_for_video(instruction, num_videos, config.context_length, config.reserved_tokens).cpu()
        if int(left.min()) < self.low_tokens:
            video = int(left.argmin())
            sharing = None if instruction is None else instruction.videos_in_prompt
            videos = "its video" if sharing is None or sharing[video] == 1 else f"each of its {int(sharing[video])} videos"
            raise TokenBudgetError(
                f"A prompt leaves {int(left[video])} tokens of the {config.context_length}-token context for {videos} "
                f"({config.reserved_tokens} are kept for the answer), fewer than one frame at the low resolution "
                f"({self.low_tokens}). Shorten the prompt, ask about fewer videos at once, or raise context_length."
            )
        return left if budget is None else torch.minimum(budget, left)

    def aggregate(
        self, siglip: torch.Tensor, dino: torch.Tensor, picture: torch.BoolTensor | None = None
    ) -> torch.Tensor:
        r"""
        The SVA: fuses both towers into `query_side x query_side` tokens per frame, `sva_batch_size` frames at a time.
        Shapes as in `aggregate_frames`.
        """
        size = self.config.sva_batch_size
        pictures = [None] * len(siglip.split(size)) if picture is None else picture.split(size)
        return torch.cat(
            [self.aggregate_frames(s, d, p) for s, d, p in zip(siglip.split(size), dino.split(size), pictures)]
        )

    def aggregate_frames(
        self, siglip: torch.Tensor, dino: torch.Tensor, picture: torch.BoolTensor | None = None
    ) -> torch.Tensor:
        r"""
        The SVA on a batch of frames.

        Args:
            siglip (`torch.Tensor` of shape `(frames, h, w, vision_hidden_size)`)
            dino (`torch.Tensor` of shape `(frames, h', w', dino_hidden_size)`)
            picture (`torch.BoolTensor` of shape `(frames, grid, grid)`, *optional*):
                On the towers' `query_side * kv_window` grid, False over letterbox padding, which no query attends
                (the release's `unmask_attention_mask`); a query whose whole window is padding attends all of it.
        Returns:
            `torch.Tensor` of shape `(frames, query_side, query_side, sva_hidden_size)`.
        """
        config = self.config
        grid = config.query_side * config.kv_window
        dtype = self.vision_query.dtype
        siglip = self.siglip_projector(resize_grid(siglip, grid).to(dtype))
        dino = self.dino_projector(resize_grid(dino, grid).to(dtype))
        context = repeat(siglip.mean(dim=(1, 2)), "t d -> (t q) 1 d", q=config.query_side**2)
        windows = "t (qh r1) (qw r2) d -> (t qh qw) (r1 r2) d"
        towers = [rearrange(t, windows, r1=config.kv_window, r2=config.kv_window) for t in (siglip, dino)]
        queries = self.vision_query[None].expand(towers[0].shape[0], 1, -1)
        key_mask = None
        if picture is not None:
            key_mask = rearrange(
                picture, "t (qh r1) (qw r2) -> (t qh qw) (r1 r2)", r1=config.kv_window, r2=config.kv_window
            )
            key_mask = (key_mask | ~key_mask.any(-1, keepdim=True)).repeat(1, len(towers))
        fused = self.aggregator(queries, context, towers, key_mask)
        return rearrange(fused, "(t qh qw) 1 d -> t qh qw d", qh=config.query_side, qw=config.query_side)

    def relevance(
        self,
        low: torch.Tensor,
        video: torch.LongTensor,
        instruction: InstructionCondition,
        picture: PictureTokens | None = None,
    ) -> torch.Tensor:
        r"""
        Eq. 1's score of each frame against its video's instruction, shape `(frames,)`.

        Args:
            low (`torch.Tensor` of shape `(frames, low_tokens, dim)`): projected low-resolution tokens.
            video (`torch.LongTensor` of shape `(frames,)`): the video of each frame.
            instruction (`InstructionCondition`): embeddings of shape `(num_videos, text_length, dim)`.
            picture (`PictureTokens`, *optional*): the tokens to average over (the picture's, not the padding's).
        """
        text = instruction.embeds.float()
        if text.shape[-1] != low.shape[-1]:
            raise InvalidVideoInputError(
                f"The instruction embeddings are {text.shape[-1]} wide but the projected frame tokens are "
                f"{low.shape[-1]}: relevance needs the projector that maps frames to the LLM's embeddings."
            )
        visual = low.float()
        if self.config.relevance == "cosine":
            text, visual = F.normalize(text, dim=-1), F.normalize(visual, dim=-1)
        mask = instruction.attention_mask.to(text)[..., None]
        text_mean = (text * mask).sum(1) / mask.sum(1).clamp(min=1)
        if picture is None:
            visual_mean = visual.mean(1)
        else:
            shown = picture.low[video].to(visual)[..., None]
            visual_mean = (visual * shown).sum(1) / shown.sum(1)
        return (visual_mean * text_mean.to(visual.device)[video]).sum(-1)

    def plan_resolution(
        self,
        features: PackedFrames,
        low: torch.Tensor,
        instruction: InstructionCondition | None,
        video_budget: torch.LongTensor | None,
        picture: PictureTokens | None = None,
    ) -> tuple[torch.BoolTensor, torch.BoolTensor]:
        r"""
        Which frames keep the high resolution, and which videos overflow the budget even at low resolution.

        Args:
            features (`PackedFrames`): the kept frames (their counts and positions are used).
            low (`torch.Tensor` of shape `(frames, low_tokens, dim)`): projected low-resolution tokens.
            video_budget (`torch.LongTensor` of shape `(num_videos,)`, *optional*): each video's budget, from
                [`~LongVUCompressor.video_budgets`]; None for no budget.
            picture (`PictureTokens`, *optional*): for letterboxed videos, the tokens that show the picture (the
                others are cropped); from [`~LongVUCompressor.picture_tokens`].
        Returns:
            `is_high` (shape `(frames,)`) and `overflow` (shape `(num_videos,)`).
        """
        counts = features.frame_counts.to(low.device)
        video = features.video_index()
        if video_budget is None:
            return torch.ones_like(video, dtype=torch.bool), torch.zeros_like(counts, dtype=torch.bool)
        budget = video_budget.to(counts)
        high_tokens, low_tokens = self.high_tokens, self.low_tokens
        if picture is not None:  # a letterboxed video's frames keep only their picture's tokens
            high_tokens, low_tokens = picture.high.sum(-1).to(counts), picture.low.sum(-1).to(counts)
        all_high = counts * high_tokens <= budget
        overflow = counts * low_tokens > budget
        spare = (budget - counts * low_tokens) // torch.as_tensor(high_tokens - low_tokens).clamp(min=1)
        num_high = torch.where(all_high, counts, spare)
        num_high = torch.where(overflow, torch.where(self.overflows_at_high(budget, picture), counts, 0), num_high)
        mixed = ~all_high & ~overflow & (num_high > 0)
        if not bool(mixed.any()):
            return num_high[video] > 0, overflow
        if instruction is None:
            position = features.position_in_video()
            chosen = uniform_keep_mask(position, counts[video], num_high[video].clamp(min=1)) & (num_high[video] > 0)
            return torch.where(mixed[video], chosen, num_high[video] > 0), overflow
        rank = rank_within_groups(self.relevance(low, video, instruction, picture), video, descending=True)
        return rank < num_high[video], overflow

    def spatial_token_compression(
        self,
        grid: torch.Tensor,
        video: torch.LongTensor,
        position: torch.LongTensor,
        frame_counts: torch.LongTensor,
        video_budget: torch.LongTensor,
        shown: torch.BoolTensor | None = None,
    ) -> tuple[torch.BoolTensor, torch.BoolTensor]:
        """[`spatial_token_compression`] with this compressor's window and threshold."""
        config = self.config
        return spatial_token_compression(
            grid, video, position, frame_counts, video_budget, config.stc_window, config.stc_threshold, shown
        )

    def forward(
        self,
        features: PackedFrames,
        auxiliary_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
        token_budget: int | None = None,
        scene_ids: torch.LongTensor | None = None,
        projector: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> CompressorOutput:
        r"""
        projector (`Callable`, *optional*):
            Maps `sva_hidden_size` tokens to the LLM's embeddings (the composite model's projector). Without it the
            tokens stay `sva_hidden_size` wide.
        """
        budget = self.video_budgets(features.num_videos, instruction, token_budget)
        if auxiliary_features is None:
            raise InvalidVideoInputError(
                "LongVUCompressor fuses SigLIP and DINOv2 features: pass the DINOv2 features as auxiliary_features "
                "(LongVUSampler provides them)."
            )
        if auxiliary_features.values.shape[0] != features.values.shape[0] or not torch.equal(
            auxiliary_features.frame_counts.cpu(), features.frame_counts.cpu()
        ):
            raise InvalidVideoInputError(
                f"The DINOv2 features hold {auxiliary_features.frame_counts.tolist()} frames per video but the SigLIP "
                f"features {features.frame_counts.tolist()}: both must describe the same kept frames. Pass the "
                "sampler's auxiliary_features with the features of the frames it kept."
            )
        config = self.config
        for name, values, expected in (
            ("main tower's", features.values, config.vision_hidden_size),
            ("DINOv2", auxiliary_features.values, config.dino_hidden_size),
        ):
            if values.ndim != 4 or values.shape[-1] != expected:
                raise InvalidVideoInputError(
                    f"LongVUCompressor expects the {name} features as (frames, height, width, {expected}), got "
                    f"{tuple(values.shape)}. Set vision_hidden_size / dino_hidden_size in its config to the widths of "
                    "the vision tower and of the sampler's DINOv2."
                )
        project = projector if projector is not None else nn.Identity()
        picture_grid, picture = self.picture_tokens(features.video_sizes)
        if picture_grid is not None:
            picture_grid = picture_grid[features.video_index().to(picture_grid.device)]
        fused = self.aggregate(features.values, auxiliary_features.values, picture_grid)
        low = self.grid_tokens(project(resize_grid(fused, config.lowres_side, config.lowres_mode)))
        encoding = None
        if config.frame_position_encoding:
            encoding = frame_position_encoding(features.timestamps, low.shape[-1]).to(low.dtype)[:, None]
            low = low + encoding
        is_high, overflow = self.plan_resolution(features, low, instruction, budget, picture)
        # Only the frames that keep the high resolution are projected at it: the projector is the costly part.
        high_frames = torch.nonzero(is_high).flatten()
        high = self.grid_tokens(project(fused.index_select(0, high_frames)))
        high = high if encoding is None else high + encoding.index_select(0, high_frames)
        return self.assemble(features, high, low, is_high, overflow, budget, picture)

    def assemble(
        self,
        features: PackedFrames,
        high: torch.Tensor,
        low: torch.Tensor,
        is_high: torch.BoolTensor,
        overflow: torch.BoolTensor,
        video_budget: torch.LongTensor | None,
        picture: PictureTokens | None = None,
    ) -> CompressorOutput:
        r"""
        Each frame's tokens at its resolution, frame after frame, after STC for the overflowing videos.

        Args:
            features (`PackedFrames`): the kept frames (their counts, positions and times are used).
            high (`torch.Tensor` of shape `(high_frames, high_tokens, dim)`): the high-resolution tokens of the
                frames `is_high` selects, in order (what `forward` projects), or of every frame (`high_frames` =
                `frames`; the two readings agree when every frame is high).
            low (`torch.Tensor` of shape `(frames, low_tokens, dim)`): every frame's low-resolution tokens.
            is_high (`torch.BoolTensor` of shape `(frames,)`), overflow (`torch.BoolTensor` of shape `(num_videos,)`):
                from [`~LongVUCompressor.plan_resolution`].
            video_budget (`torch.LongTensor` of shape `(num_videos,)`, *optional*): each video's budget, from
                [`~LongVUCompressor.video_budgets`]; None for no budget.
            picture (`PictureTokens`, *optional*): for letterboxed videos, the tokens that show the picture (the
                others are cropped); from [`~LongVUCompressor.picture_tokens`].
        """
        frame_video = features.video_index()
        position = features.position_in_video()
        overflow_frame = overflow[frame_video]
        # Which tokens of each frame's grid it shows, at each resolution: all of them unless letterboxed.
        shown = (None, None) if picture is None else (picture.high[frame_video], picture.low[frame_video])
        uncropped = torch.where(is_high, self.high_tokens, self.low_tokens)
        tokens_per_frame = uncropped if picture is None else torch.where(is_high, shown[0].sum(1), shown[1].sum(1))
        cropped_tokens = int((uncropped - tokens_per_frame).sum())
        # Each frame's row in `high`: `high` holds the frames `is_high` selects, or every frame.
        every_frame = torch.arange(is_high.shape[0], device=is_high.device)
        high_row = every_frame if high.shape[0] == is_high.shape[0] else torch.cumsum(is_high, 0) - 1
        pruned_tokens = cut_tokens = 0
        compressed_grids = []  # (frames, their grid, the kept-token mask) per resolution of overflowing videos
        if bool(overflow_frame.any()):
            # An overflowing video has all its frames at one resolution, which may differ between videos.
            at_high = self.overflows_at_high(video_budget.to(frame_video), picture)[frame_video]
            for source, source_row, chosen, source_shown in (
                (high, high_row, at_high, shown[0]), (low, every_frame, ~at_high, shown[1])
            ):
                compressed = torch.nonzero(chosen & overflow_frame).flatten()
                if not compressed.numel():
                    continue
                rows = source_row[compressed]
                grid = source if rows.shape[0] == source.shape[0] else source.index_select(0, rows)
                frame_shown = None if source_shown is None else source_shown[compressed]
                keep, pruned = self.spatial_token_compression(
                    grid, frame_video[compressed], position[compressed], features.frame_counts.to(grid.device),
                    video_budget, frame_shown,
                )
                pruned_tokens += int(pruned.sum())
                cut_tokens += int(tokens_per_frame[compressed].sum()) - int(keep.sum()) - int(pruned.sum())
                tokens_per_frame[compressed] = keep.sum(1)
                compressed_grids.append((compressed, grid, keep))
        frame_offset = torch.cumsum(tokens_per_frame, 0) - tokens_per_frame
        # Each frame's tokens come from one grid: whole frames first, then the kept tokens of compressed frames.
        # Without compressed or cropped frames every frame starts at a multiple of gcd(high, low) tokens, so whole
        # blocks of that many tokens are copied at once rather than token by token.
        whole_frames = picture is None and not bool(overflow_frame.any())
        block = math.gcd(self.high_tokens, self.low_tokens) if whole_frames else 1
        tokens = low.new_empty(int(tokens_per_frame.sum()), low.shape[-1])
        blocks = tokens.view(-1, block * tokens.shape[-1])
        for source, source_row, placed, source_shown in (
            (high, high_row, is_high, shown[0]), (low, every_frame, ~is_high, shown[1])
        ):
            slots = torch.arange(source.shape[1] // block, device=source.device)
            for frames in torch.nonzero(placed & ~overflow_frame).flatten().split(frames_per_chunk(source)):
                rows = source.index_select(0, source_row[frames])
                if source_shown is None:
                    destination = (frame_offset[frames, None] // block + slots).flatten()
                    blocks.index_copy_(0, destination, rows.view(-1, block * tokens.shape[-1]))
                else:
                    keep = source_shown[frames]
                    destination = frame_offset[frames, None] + torch.cumsum(keep, 1) - 1
                    tokens.index_copy_(0, destination[keep], rows[keep])
        for compressed, grid, keep in compressed_grids:
            destination = frame_offset[compressed, None] + torch.cumsum(keep, 1) - 1
            tokens.index_copy_(0, destination[keep], grid[keep])
        frame = torch.repeat_interleave(torch.arange(tokens_per_frame.shape[0], device=tokens.device), tokens_per_frame)
        token_counts = torch.zeros_like(features.frame_counts).index_add_(
            0, frame_video.to(features.frame_counts.device), tokens_per_frame.to(features.frame_counts)
        )
        return CompressorOutput(
            tokens=tokens,
            token_counts=token_counts,
            token_frame_index=position[frame],
            token_timestamps=features.timestamps[frame],
            statistics={
                "frames at high resolution": int(is_high.sum()),
                "frames at low resolution": int((~is_high).sum()),
                "tokens pruned by STC": pruned_tokens,
                "tokens cut to meet the budget": cut_tokens,
                "tokens cropped as letterbox padding": cropped_tokens,
            },
        )


__all__ = ["LongVUCompressor", "LongVUCompressorConfig", "spatial_token_compression"]
