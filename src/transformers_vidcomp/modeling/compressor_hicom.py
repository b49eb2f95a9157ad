r"""
HICom, "Hybrid-Level Instruction Injection for Video Token Compression in Multi-modal Large Language Models" (Liu et
al.): instruction-conditioned compression of video tokens at a local and a global level.

A video's features `(T, H, W, D)` become two kinds of tokens, local first, then global:

- **local** (§3.1, Eq. 1): the grid is cut into groups of `(group_t, group_h, group_w)` patches, default (4, 3, 3).
  Each group's query is the features sampled at the group's centre (the released code's trilinear downsampling
  to `ceil(T/α_T) x ceil(H/α_H) x ceil(W/α_W)`), with the instruction injected; it attends (one head, no
  projections, scale `1/sqrt(D)`) to the keys of its group, and the result goes through a two-layer MLP readout.
  32 frames of 27x27 give 8 x 9 x 9 = 648 tokens.
- **global** (Eq. 2): `num_global_queries` learnable queries, default 32, with the instruction injected, attend
  (multi-head) to every patch of the video, whose keys carry a 3D sinusoidal position embedding; `readout(query +
  attention)`. 648 + 32 = 680 tokens for 32 frames.

**Partial groups.** Every `T, H, W >= 1` works. An axis of length `n` is cut into `ceil(n / α)` consecutive blocks
of `α` patches; the last block keeps the remainder (`n - α * (ceil(n / α) - 1)` patches), and its group attends
only to the patches it really has (the attention masks everything else; no patch is repeated or invented). A video
shorter than `group_t` frames makes one temporal group of all its frames; its query is sampled at its centre. (The released code instead shifts the last windows
back so that they overlap their neighbour, and crashes when that cannot be done, e.g. T in {5, 6, 9}; at sizes
that divide, both agree exactly.)

**Injection** (Eq. 3-4), per branch: `none` (the query as it is), `direct` (the pooled text embedding replaces the
query), `coarse` (adaptive LayerNorm, `LN(q * (1 + scale) + shift)` with `scale, shift` regressed from the pooled
text, as released; the paper writes `LN(q) * scale + shift`), `fine` (`LN(q + MHA(q, text tokens))`). The pooled
text goes through a two-layer MLP first only when its width differs from the features' (as released: for SigLIP
both are 1152 and the MLP the paper mentions is the identity). The paper's design, the default, is `direct` for
local and `coarse` for global.

**Keys.** `key_source="features"`: the keys are the features themselves. `key_source="vision_head"` (released):
the composite model gives `vision_feature_layer=[-2, -1]`, i.e. features of width 2D; the first half (SigLIP's
`hidden_states[-2]`) is the values and the query source, and the keys are computed from the second half (the last
encoder layer) as SigLIP's `last_hidden_state + head.mlp(head.layernorm(last_hidden_state))`, with
`last_hidden_state = post_layernorm(hidden_states[-1])`: the MAP head's MLP without its attention. The compressor
holds its own copy of those three SigLIP layers (`key_head`).

**Position embedding.** `position_embedding="split"` (paper, appendix): channels 3/8 time, 3/8 height, 2/8 width,
each a 1D sin/cos encoding, concatenated. `"summed"` (released): three full-width encodings with the same
frequencies, summed. Both are sums of three per-axis tables, so the embedding is never materialised: its dot
product with the (key-projected) queries is three small matrix products, added as an attention bias per axis. The
released code also adds the embedding to the values; `position_in_value=True` reproduces that, through the
attention weights' marginals over time, height and width.

[`HIComCompressorConfig.reference`] reproduces the released `local43_global32_coarse` checkpoint with
`--use_guide direct`: the `_coarse` suffix is never parsed, so both branches use `direct`, the global queries are
the pooled text repeated (the learnable `query` is unused and the 32 global tokens are identical).
"""

import warnings
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel, SiglipTextConfig, SiglipTextModel
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec

from .components_vidcomp import (
    CompressorOutput,
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    VidCompCompressor,
    attention_interface,
    check_token_budget,
    eager_attention_forward,
    register_compressor,
    uniform_keep_mask,
)


Injection = Literal["none", "direct", "coarse", "fine"]


@strict
class HIComGuideTextConfig(SiglipTextConfig):
    r"""
    SigLIP's text config with special-token defaults inside its 32,000-token vocabulary: no BOS, EOS 1 (so400m's
    settings). `SiglipTextConfig` defaults to CLIP's 49406 and 49407, so every default instance Transformers builds of
    it (to diff a nested config when it is printed or saved, on every load of a HICom checkpoint) warned that they
    lie outside the vocabulary. A guide config is only ever built with explicit token ids, so nothing else changes.
    """

    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = 1


@strict
class HIComCompressorConfig(PreTrainedConfig):
    r"""
    hidden_size (`int`, *optional*, defaults to 1152):
        D, the width of the vision features (values, keys and queries).
    output_hidden_size (`int`, *optional*, defaults to 3584):
        Width of the tokens: the LLM's hidden size. HICom projects its local and global tokens with two separate
        MLP readouts, so the composite model adds no projector after it.
    group_t, group_h, group_w (`int`, *optional*, default to 4, 3, 3):
        The local downsampling ratio (α_T, α_H, α_W): patches per group along time, height and width.
    num_global_queries (`int`, *optional*, defaults to 32):
        Learnable queries of the global branch; 0 drops the global branch.
    local_injection (`str`, *optional*, defaults to `"direct"`):
        How the instruction enters the local queries: `"none"`, `"direct"`, `"coarse"` or `"fine"`.
    global_injection (`str`, *optional*, defaults to `"coarse"`):
        The same for the global queries. `"direct"` makes all global queries the pooled text (released behaviour).
    num_attention_heads (`int`, *optional*, defaults to 9):
        Heads of the global attention and of fine injection (the released code uses `hidden_size // 128`).
    position_embedding (`str`, *optional*, defaults to `"split"`):
        `"split"`: the paper's 3/8 time, 3/8 height, 2/8 width channel split; `"summed"`: the released code's three
        full-width encodings summed.
    position_in_value (`bool`, *optional*, defaults to `False`):
        Also add the position embedding to the global values (released code); the paper adds it to the keys only.
    key_source (`str`, *optional*, defaults to `"features"`):
        `"features"`: local keys are the features. `"vision_head"`: features carry two vision layers (`[-2, -1]`)
        and the keys come from the last one through SigLIP's post-LayerNorm and head MLP (released code).
    vision_intermediate_size (`int`, *optional*, defaults to 4304):
        Width of SigLIP's head MLP, for `key_source="vision_head"`.
    vision_hidden_act (`str`, *optional*, defaults to `"gelu_pytorch_tanh"`):
        Activation of SigLIP's head MLP.
    vision_layer_norm_eps (`float`, *optional*, defaults to 1e-6):
        Epsilon of SigLIP's post-LayerNorm and head LayerNorm.
    guide_config (`dict` or `PreTrainedConfig`, *optional*):
        The text guide encoder (see `build_guide_encoder`); defaults to SigLIP so400m-patch14-384's text tower. Its
        pooled output feeds direct and coarse injection, its tokens (through its `head`) fine injection. Only built
        when some branch injects.
    """

    model_type = "vidcomp_hicom_compressor"
    # SigLIP so400m-patch14-384's text tower, the paper's guide encoder.
    sub_configs_defaults = {
        "guide_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="siglip_text_model",
            init_kwargs=dict(
                hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                max_position_embeddings=64, projection_size=1152, bos_token_id=None, eos_token_id=1, pad_token_id=1,
            ),
        )
    }

    hidden_size: int = 1152
    output_hidden_size: int = 3584
    group_t: int = 4
    group_h: int = 3
    group_w: int = 3
    num_global_queries: int = 32
    local_injection: Injection = "direct"
    global_injection: Injection = "coarse"
    num_attention_heads: int = 9
    position_embedding: Literal["split", "summed"] = "split"
    position_in_value: bool = False
    key_source: Literal["features", "vision_head"] = "features"
    vision_intermediate_size: int = 4304
    vision_hidden_act: str = "gelu_pytorch_tanh"
    vision_layer_norm_eps: float = 1e-6
    guide_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        for name in ("hidden_size", "output_hidden_size", "group_t", "group_h", "group_w", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.num_global_queries < 0:
            raise ValueError(f"num_global_queries must be 0 (no global branch) or more, got {self.num_global_queries}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_attention_heads {self.num_attention_heads}."
            )
        if self.position_embedding == "split" and self.hidden_size < 8:
            raise ValueError("The split position embedding needs hidden_size >= 8 (3/8, 3/8, 2/8 of the channels).")
        super().__post_init__(**kwargs)
        if type(self.guide_config) is SiglipTextConfig:
            self.guide_config = HIComGuideTextConfig.from_dict(self.guide_config.to_dict())

    @property
    def uses_guide(self) -> bool:
        """Whether any branch injects the instruction, so that the guide text encoder is needed."""
        return self.local_injection != "none" or (self.num_global_queries > 0 and self.global_injection != "none")

    @classmethod
    def reference(cls, **kwargs) -> "HIComCompressorConfig":
        r"""
        The released `lntzm/HICom_*_directg_local43_global32` behaviour: both branches `direct` (the global queries
        go unused), summed position embedding added to keys and values, keys from SigLIP's head MLP. Use it with
        `vision_feature_layer=[-2, -1]` in the composite model and converted weights.
        """
        settings = dict(
            local_injection="direct",
            global_injection="direct",
            position_embedding="summed",
            position_in_value=True,
            key_source="vision_head",
        )
        return cls(**{**settings, **kwargs})


def mlp(input_size: int, output_size: int) -> nn.Sequential:
    """The released `build_mlp(2, ...)`: Linear, GELU, Linear (state-dict keys `0.*` and `2.*`)."""
    return nn.Sequential(nn.Linear(input_size, output_size), nn.GELU(), nn.Linear(output_size, output_size))


def additive_mask(keep: torch.BoolTensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where `keep`, the dtype's most negative value elsewhere: an additive attention bias."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def sinusoid_table(length: int, dim: int, device: torch.device) -> torch.Tensor:
    r"""
    The released `get_angles` encoding of positions `0..length-1` over `dim` channels: channel `i` has angle
    `pos / 10000^(2 * (i // 2) / dim)`, sine on even channels, cosine on odd ones. Computed in float64 like the
    original. Shape `(length, dim)`.
    """
    position = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    channel = torch.arange(dim, device=device)
    angle = position / torch.pow(10000.0, (2 * (channel // 2)).double() / dim)
    return torch.where(channel % 2 == 0, torch.sin(angle), torch.cos(angle))


def position_tables(
    layout: Literal["split", "summed"], t: int, h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""
    The 3D position embedding of a `(t, h, w)` grid as three per-axis tables whose broadcast sum
    `pt[:, None, None] + ph[None, :, None] + pw[None, None, :]` is the embedding, computed for this size only.

    - `"split"`: `pt` fills the first 3/8 of the channels (zeros elsewhere), `ph` the next 3/8, `pw` the rest, so the
      sum is their concatenation (paper, appendix, as CogVideoX);
    - `"summed"`: three full-width encodings (released `get_3d_position_embedding`).

    Returns:
        Tables of shapes `(t, dim)`, `(h, dim)`, `(w, dim)`.
    """
    if layout == "summed":
        tables = [sinusoid_table(n, dim, device) for n in (t, h, w)]
    else:
        dim_t = dim_h = 3 * dim // 8
        widths = (dim_t, dim_h, dim - dim_t - dim_h)
        starts = (0, dim_t, dim_t + dim_h)
        tables = []
        for n, start, width in zip((t, h, w), starts, widths):
            table = torch.zeros(n, dim, dtype=torch.float64, device=device)
            table[:, start : start + width] = sinusoid_table(n, width, device)
            tables.append(table)
    return tuple(table.to(dtype) for table in tables)


@dataclass
class GuideFeatures:
    r"""
    The instruction, encoded once per forward for both branches.

    Args:
        pooled (`torch.FloatTensor` of shape `(num_videos, text_dim)`): the text encoder's pooled output.
        tokens (`torch.FloatTensor` of shape `(num_videos, text_length, text_dim)`, *optional*):
            Token outputs through the encoder's head, for fine injection.
        has_text (`torch.BoolTensor` of shape `(num_videos,)`): False where the instruction was empty; those videos
            are compressed unconditionally.
    """

    pooled: torch.FloatTensor
    tokens: torch.FloatTensor | None
    has_text: torch.BoolTensor


class HIComAttention(nn.Module):
    r"""Multi-head attention with biased q/k/v/out projections (the released `MultiheadAttention`)."""

    is_causal = False

    def __init__(self, config: HIComCompressorConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = dim // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, query: torch.Tensor, key_value: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""
        Args:
            query (`torch.Tensor` of shape `(batch, q_len, dim)`)
            key_value (`torch.Tensor` of shape `(batch, kv_len, dim)`)
            attention_mask (`torch.Tensor` of shape `(batch, 1, q_len, kv_len)`, *optional*): additive bias.
        Returns:
            `torch.Tensor` of shape `(batch, q_len, dim)`.
        """
        split = "b l (n e) -> b n l e"
        q = rearrange(self.q_proj(query), split, n=self.num_heads)
        k = rearrange(self.k_proj(key_value), split, n=self.num_heads)
        v = rearrange(self.v_proj(key_value), split, n=self.num_heads)
        out, _ = attention_interface(self.config)(self, q, k, v, attention_mask, scaling=self.scaling, dropout=0.0)
        return self.out_proj(rearrange(out, "b l n e -> b l (n e)"))


class HIComGuideInjector(nn.Module):
    r"""Injects the instruction into queries: `direct`, `coarse` or `fine` (Eq. 3-4); `none` has no injector."""

    def __init__(self, config: HIComCompressorConfig, injection: Injection):
        super().__init__()
        dim = config.hidden_size
        self.injection = injection
        text_dim = config.guide_config.projection_size
        # The released `text2qk_proj`: only when the text width differs from the features'.
        self.text_projection = mlp(text_dim, dim) if text_dim != dim else nn.Identity()
        if injection == "coarse":
            self.coarse_proj = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, 2 * dim))
            self.coarse_norm = nn.LayerNorm(dim, eps=1e-6)
        elif injection == "fine":
            self.fine_proj = HIComAttention(config)
            self.fine_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, query: torch.Tensor, guide: GuideFeatures) -> torch.Tensor:
        r"""
        Args:
            query (`torch.Tensor` of shape `(num_videos, num_queries, dim)`)
        Returns:
            The injected queries, same shape; videos without text keep their query.
        """
        if self.injection == "fine":
            injected = self.fine_norm(query + self.fine_proj(query, self.text_projection(guide.tokens)))
        else:
            text = self.text_projection(guide.pooled)[:, None]
            if self.injection == "direct":
                injected = text.expand_as(query)
            else:
                scale, shift = self.coarse_proj(text).chunk(2, dim=-1)
                injected = self.coarse_norm(query * (1 + scale) + shift)
        return torch.where(guide.has_text[:, None, None], injected, query)


class HIComSiglipMLP(nn.Module):
    """SigLIP's MLP (`fc1`, activation, `fc2`), with its state-dict keys."""

    def __init__(self, dim: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, intermediate_size)
        self.activation_fn = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class HIComKeyHead(nn.Module):
    r"""
    SigLIP's `post_layernorm` and the head's `layernorm` and `mlp`, giving the released local keys
    `x + mlp(layernorm(x))` with `x = post_layernorm(last encoder layer)`.
    """

    def __init__(self, config: HIComCompressorConfig):
        super().__init__()
        dim, eps = config.hidden_size, config.vision_layer_norm_eps
        self.post_layernorm = nn.LayerNorm(dim, eps=eps)
        self.layernorm = nn.LayerNorm(dim, eps=eps)
        self.mlp = HIComSiglipMLP(dim, config.vision_intermediate_size, config.vision_hidden_act)

    def forward(self, last_layer: torch.Tensor) -> torch.Tensor:
        x = self.post_layernorm(last_layer)
        return x + self.mlp(self.layernorm(x))


def temporal_groups(frame_counts: torch.LongTensor, group_t: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    r"""
    The temporal groups of packed videos, `ceil(T / group_t)` per video.

    Returns:
        Per group, its video `(total_groups_t,)` and its index within the video `(total_groups_t,)`.
    """
    groups = (frame_counts + group_t - 1) // group_t
    video = torch.repeat_interleave(torch.arange(frame_counts.shape[0], device=frame_counts.device), groups)
    return video, torch.arange(video.shape[0], device=video.device) - (torch.cumsum(groups, 0) - groups)[video]


def temporal_lerp(values: torch.Tensor, frame_counts: torch.LongTensor, group_t: int) -> torch.Tensor:
    r"""
    PyTorch's linear interpolation (`align_corners=False`) of each video's frames down to `ceil(T / group_t)`
    samples, for all videos at once.

    Args:
        values (`torch.Tensor` of shape `(total_frames, ...)`): packed per-frame values.
        frame_counts (`torch.LongTensor` of shape `(num_videos,)`)
    Returns:
        The samples `(total_groups_t, ...)`, in the order of `temporal_groups`.
    """
    counts = frame_counts.to(values.device)
    video, index = temporal_groups(counts, group_t)
    groups = (counts + group_t - 1) // group_t
    length = counts[video]
    # As upsample_linear1d: scale = in / out in float32, source = scale * (i + 0.5) - 0.5, clamped at 0.
    scale = length.float() / groups[video].float()
    source = (scale * (index.float() + 0.5) - 0.5).clamp(min=0)
    low = source.long()
    weight = source - low
    high = low + (low < length - 1).long()
    first = (torch.cumsum(counts, 0) - counts)[video]
    shape = (-1,) + (1,) * (values.ndim - 1)
    weight = weight.to(values.dtype).view(shape)
    return (1 - weight) * values[first + low] + weight * values[first + high]


def grouped_local_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    frame_band: torch.LongTensor,
    frame_slot: torch.LongTensor,
    group_shape: tuple[int, int, int],
    scaling: float,
) -> torch.Tensor:
    r"""
    Each group's query attends to its own group's patches only, `softmax(q kᵀ * scaling) v` over the group, with
    about `grid_w / group_w` times the minimal arithmetic and no copy of the keys or values.

    A frame is cut into row strips of `group_h` rows (a view of the features); a strip's patches meet only the
    `ceil(W / group_w)` queries of their row of groups in their temporal band, and each patch keeps the score of its
    own column's query. The softmax runs over each group's patches of all its frames (scores are few: one per patch),
    and each strip adds its patches' weighted sum to its groups' outputs.

    Args:
        query (`torch.Tensor` of shape `(bands, nh * nw, D)`): per temporal band (one temporal group of a video), the
            queries of its `nh x nw` groups.
        keys, values (`torch.Tensor` of shape `(total_frames, H, W, D)`): `H` must be a multiple of `group_h`.
        frame_band (`torch.LongTensor` of shape `(total_frames,)`): the band of each frame.
        frame_slot (`torch.LongTensor` of shape `(total_frames,)`): the frame's place in its band, `0..group_t-1`.
        group_shape (`tuple[int, int, int]`): `(group_t, group_h, group_w)`.
        scaling (`float`): the factor of `q kᵀ`.
    Returns:
        `torch.Tensor` of shape `(bands, nh * nw, D)`.
    """
    total_frames, height, width, dim = values.shape
    gt, gh, gw = group_shape
    bands, nh, nw = query.shape[0], height // gh, -(-width // gw)
    strip = "f (i y) w d -> (f i) (y w) d"
    key_strips = rearrange(keys, strip, y=gh)
    value_strips = rearrange(values, strip, y=gh)
    row_queries = rearrange(query.view(bands, nh, nw, dim)[frame_band], "f i j d -> (f i) d j")
    scores = rearrange(torch.bmm(key_strips, row_queries), "(f i) (y w) j -> f i y w j", i=nh, y=gh)
    column = torch.arange(width, device=values.device) // gw
    scores = scores.gather(-1, column.view(1, 1, 1, width, 1).expand(*scores.shape[:-1], 1))[..., 0] * scaling

    # Groups' scores side by side, missing frames and columns of partial groups at -inf: (bands, nh, nw, patches).
    padded = scores.new_full((bands, gt, nh, gh, nw * gw), float("-inf"))
    padded[frame_band, frame_slot, :, :, :width] = scores
    grouped = rearrange(padded, "b a i y (j z) -> b i j (a y z)", z=gw)
    weights = grouped.softmax(-1, dtype=torch.float32).to(values.dtype)
    weights = rearrange(weights, "b i j (a y z) -> b a i y (j z)", a=gt, y=gh)
    weights = weights[frame_band, frame_slot, :, :, :width]  # (total_frames, nh, gh, W)

    # Each strip's weights, one row per query of its row of groups (zero outside the query's group).
    own = column[None, :] == torch.arange(nw, device=values.device)[:, None]  # (nw, W)
    strip_weights = rearrange(weights[:, :, None] * own[:, None, :].to(weights.dtype), "f i j y w -> (f i) j (y w)")
    partial = rearrange(torch.bmm(strip_weights, value_strips), "(f i) j d -> f (i j) d", i=nh)
    return query.new_zeros(query.shape).index_add(0, frame_band, partial)


# Patches per step of the streaming global attention. At 128 frames of 27 x 27 x 1152 on two cores, the global
# attention took 0.70 s with 8192 (0.67 s with 4096, whose features stay in the last-level cache between the two
# matrix products; 0.79 s with 16384) against 0.93-0.98 s for SDPA's kernel. Fewer steps suffer less when another
# process shares the cores (each step ends in a few thread barriers): 8192 is the compromise.
STREAM_PATCHES = 8192


def registered_kernel(config: PreTrainedConfig, return_attention: bool) -> Callable | None:
    r"""
    The attention function a branch hands its dense formulation to, or `None` when HICom computes the attention
    itself.

    Both branches' attention has structure no generic kernel sees: local queries attend to small disjoint groups,
    global queries to every patch with a position bias that is a sum of three per-axis terms. For PyTorch's own
    implementations (`eager`, `sdpa`) each branch computes the same softmax attention exactly with that structure
    (`grouped_local_attention`, `streaming_global_attention`). Any other implementation registered in
    `ALL_ATTENTION_FUNCTIONS` and selected by `config._attn_implementation` gets the dense call (band queries
    masked to their groups; global queries with the full position bias), and so does `return_attention`, through
    `eager_attention_forward`, for its weights.
    """
    if return_attention:
        return eager_attention_forward
    if config._attn_implementation in (None, "eager", "sdpa"):
        return None
    return attention_interface(config)


def streaming_global_attention(
    query: torch.Tensor,
    frames: torch.Tensor,
    bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    scaling: float,
    value_tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    r"""
    Softmax attention of a few queries over every patch of each video, `softmax(q xᵀ * scaling + bias) (x + p)`,
    streamed over steps of whole frames with an online softmax (running maximum and sum, rescaled as each step
    raises the maximum). Neither the scores of all patches nor the bias is ever held at full size: the bias is the
    per-axis sum `bias_t[t] + bias_h[h] + bias_w[w]`, added step by step. Each step is two matrix products over
    about `STREAM_PATCHES` patches.

    Args:
        query (`torch.Tensor` of shape `(videos, rows, D)`): the (key-projected) queries of all heads.
        frames (`torch.Tensor` of shape `(videos, T, H, W, D)`): keys and values.
        bias (three `torch.Tensor` of shapes `(videos, rows, T)`, `(videos, rows, H)`, `(videos, rows, W)`): the
            additive score terms per axis; padding frames carry the dtype's minimum in `bias_t`.
        scaling (`float`): the factor of `q xᵀ`.
        value_tables (three `torch.Tensor` of shapes `(T, D)`, `(H, D)`, `(W, D)`, *optional*): a position embedding
            `p = p_t + p_h + p_w` also added to the values (released code); its weighted sum is taken per axis from
            the weights' marginals.
    Returns:
        `torch.Tensor` of shape `(videos, rows, D)`.
    """
    num_videos, length, height, width, dim = frames.shape
    bias_t, bias_h, bias_w = bias
    rows = query.shape[1]
    bias_hw = (bias_h[..., :, None] + bias_w[..., None, :])[:, :, None]  # (videos, rows, 1, H, W)
    # The softmax statistics and sums are kept in float32 whatever the features' dtype, as eager attention does.
    stats = dict(dtype=torch.float32, device=query.device)
    running_max = torch.full((num_videos, rows, 1), float("-inf"), **stats)
    total = torch.zeros(num_videos, rows, 1, **stats)
    out = torch.zeros(num_videos, rows, dim, **stats)
    if value_tables is not None:
        marginals = [torch.zeros(num_videos, rows, n, **stats) for n in (length, height, width)]
    step = max(1, STREAM_PATCHES // (height * width))
    for start in range(0, length, step):
        chunk = rearrange(frames[:, start : start + step], "v t h w d -> v (t h w) d")
        chunk_bias = rearrange(bias_t[..., start : start + step, None, None] + bias_hw, "v r t h w -> v r (t h w)")
        scores = torch.baddbmm(chunk_bias, query, chunk.transpose(1, 2), alpha=scaling).float()
        new_max = torch.maximum(running_max, scores.amax(-1, keepdim=True))
        # Rows whose patches so far are all masked keep a maximum of -inf; shift them by 0 instead (exp(-inf) = 0).
        shift = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
        rescale = torch.exp(running_max - shift)
        weights = torch.exp(scores - shift)
        total = total * rescale + weights.sum(-1, keepdim=True)
        out = torch.baddbmm(out * rescale, weights, chunk.float())
        if value_tables is not None:
            grid = rearrange(weights, "v r (t h w) -> v r t h w", h=height, w=width)
            marginal_t = F.pad(grid.sum((-2, -1)), (start, length - start - grid.shape[2]))
            marginals = [
                marginal * rescale + chunk_marginal
                for marginal, chunk_marginal in zip(marginals, (marginal_t, grid.sum((-3, -1)), grid.sum((-3, -2))))
            ]
        running_max = new_max
    if value_tables is not None:
        out = out + sum(marginal @ table.float() for marginal, table in zip(marginals, value_tables))
    return (out / total).to(query.dtype)


class HIComLocalCompressor(nn.Module):
    r"""
    The local branch: one token per `(group_t, group_h, group_w)` group, in `(t, h, w)` order per video.

    All groups are computed at once, never copying the features into groups (which would double the memory of a
    long video). With PyTorch's own attention (`eager`, `sdpa`) and a height that `group_h` divides,
    `grouped_local_attention` attends within each group through row strips of the features, at
    `ceil(W/α_W)` times the minimal arithmetic. Otherwise (another kernel registered in `ALL_ATTENTION_FUNCTIONS`,
    other heights, or `return_attention`), one dense attention call (`band_attention`) runs over temporal bands
    with each query masked to its group, at `ceil(H/α_H) * ceil(W/α_W)` times the minimal arithmetic: at 128
    frames of 27 x 27 x 1152, 35 GFLOP against 1.9 for the strips.
    """

    is_causal = False

    def __init__(self, config: HIComCompressorConfig):
        super().__init__()
        self.config = config
        self.guide_injector = (
            HIComGuideInjector(config, config.local_injection) if config.local_injection != "none" else None
        )
        self.readout = mlp(config.hidden_size, config.output_hidden_size)

    def grid(self, grid_h: int, grid_w: int) -> tuple[int, int]:
        return -(-grid_h // self.config.group_h), -(-grid_w // self.config.group_w)

    def forward(
        self,
        values: PackedFrames,
        keys: torch.Tensor,
        guide: GuideFeatures | None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.LongTensor, torch.LongTensor, torch.Tensor | None]:
        r"""
        Args:
            values (`PackedFrames` with values of shape `(total_frames, H, W, D)`)
            keys (`torch.Tensor` of shape `(total_frames, H, W, D)`): may be `values.values` itself.
            guide (`GuideFeatures`, *optional*): the instruction; `None` compresses unconditionally.
            return_attention: also return each patch's attention weight within its group.
        Returns:
            Tokens `(total_groups, output_hidden_size)`, groups per video `(num_videos,)`, the first frame (within
            its video) of each group's frames `(total_groups,)`, and with `return_attention` the weights
            `(total_frames, H, W)` (each group's weights sum to 1).
        """
        x = values.values
        total_frames, height, width, dim = x.shape
        gt, gh, gw = self.config.group_t, self.config.group_h, self.config.group_w
        nh, nw = self.grid(height, width)
        device = x.device

        counts = values.frame_counts.to(device)
        group_video, group_t_index = temporal_groups(counts, gt)
        groups_t = group_video.shape[0]
        query = self.queries(x, counts, group_video, group_t_index, guide)

        # Per frame: its temporal band (one temporal group of its video) and its place in the band.
        video_start = torch.cumsum(counts, 0) - counts
        frames = (video_start[group_video] + group_t_index * gt)[:, None] + torch.arange(gt, device=device)
        frame_ok = frames < (video_start + counts)[group_video][:, None]  # (bands, gt)
        kernel = registered_kernel(self.config, return_attention)
        weights = None
        if kernel is None and height % gh == 0:
            frame_band = torch.arange(groups_t, device=device).repeat_interleave(frame_ok.sum(-1))
            frame_slot = torch.arange(gt, device=device).expand(groups_t, gt)[frame_ok]
            out = grouped_local_attention(query, keys, x, frame_band, frame_slot, (gt, gh, gw), dim**-0.5)
        else:
            out, weights = self.band_attention(kernel or eager_attention_forward, query, keys, x, frames, frame_ok)
        tokens = self.readout(rearrange(out, "b q d -> (b q) d"))

        groups_per_video = torch.bincount(group_video, minlength=values.num_videos) * nh * nw
        group_first_frame = (group_t_index * gt).repeat_interleave(nh * nw)
        patch_weights = None
        if return_attention:
            # A patch's weight comes from its own group's query only; the other queries give it exactly 0.
            weights = rearrange(weights.sum(2), "b 1 (a h w) -> b a h w", a=gt, h=height)
            patch_weights = x.new_zeros(total_frames, height, width)
            patch_weights[frames[frame_ok]] = weights[frame_ok].to(x.dtype)
        return tokens, groups_per_video, group_first_frame, patch_weights

    def queries(
        self,
        x: torch.Tensor,
        counts: torch.LongTensor,
        group_video: torch.LongTensor,
        group_t_index: torch.LongTensor,
        guide: GuideFeatures | None,
    ) -> torch.Tensor:
        r"""
        The groups' queries `(bands, nh * nw, D)`: the released trilinear downsampling of `x` `(total_frames, H, W,
        D)`, done as bilinear over (H, W), then linear over each video's frames (videos differ in length, so time is
        interpolated by gathers instead of F.interpolate); then the instruction is injected.
        """
        nh, nw = self.grid(x.shape[1], x.shape[2])
        if self.config.local_injection == "direct" and guide is not None and bool(guide.has_text.all()):
            # Every query becomes its video's text: the downsampling would be thrown away.
            text = self.guide_injector(x.new_zeros(()).expand(guide.pooled.shape[0], 1, x.shape[-1]), guide)
            return text[group_video].expand(-1, nh * nw, -1)
        spatial = F.interpolate(rearrange(x, "t h w d -> t d h w"), size=(nh, nw), mode="bilinear")
        query = rearrange(temporal_lerp(spatial, counts, self.config.group_t), "g d h w -> g (h w) d")
        if self.guide_injector is not None and guide is not None:
            query = self.inject(query, group_video, group_t_index, guide)
        return query

    def band_attention(
        self,
        attention: Callable,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        frames: torch.LongTensor,
        frame_ok: torch.BoolTensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""
        The dense formulation, one call of `attention` (an `ALL_ATTENTION_FUNCTIONS` signature): its batch is the
        temporal bands (the `group_t` frames of one temporal group, all H x W patches), and each of a band's
        `nh * nw` queries is masked to its own group's patches. When every video's length divides by `group_t`, the
        bands are a view of the packed features (otherwise they are gathered, padded and masked). This spends
        `nh * nw` times the minimal arithmetic to never copy the features into groups.

        Args:
            query (`torch.Tensor` of shape `(bands, nh * nw, D)`)
            keys, values (`torch.Tensor` of shape `(total_frames, H, W, D)`)
            frames (`torch.LongTensor` of shape `(bands, group_t)`): each band's frames; `frame_ok` marks real ones.
        Returns:
            The output `(bands, nh * nw, D)` and the function's weights `(bands, 1, nh * nw, group_t * H * W)`.
        """
        total_frames, height, width, dim = values.shape
        gt, gh, gw = self.config.group_t, self.config.group_h, self.config.group_w
        nh, nw = self.grid(height, width)
        bands, device = query.shape[0], values.device
        if bool(frame_ok.all()):
            band_values = values.view(bands, gt * height * width, dim)
            band_keys = band_values if keys is values else keys.reshape(bands, gt * height * width, dim)
        else:
            frames = torch.where(frame_ok, frames, 0)
            band_values = rearrange(values[frames], "b a h w d -> b (a h w) d")
            band_keys = band_values if keys is values else rearrange(keys[frames], "b a h w d -> b (a h w) d")
        row_group = torch.arange(height, device=device) // gh
        col_group = torch.arange(width, device=device) // gw
        query_group = torch.arange(nh * nw, device=device)
        member = query_group[:, None, None] == (row_group[:, None] * nw + col_group[None, :])  # (nh * nw, H, W)
        member = member[None, :, None] & frame_ok[:, None, :, None, None]  # (bands, nh * nw, gt, H, W)
        if bool(frame_ok.all()):
            member = member[:1]
        mask = additive_mask(rearrange(member, "b q a h w -> b 1 q (a h w)"), query.dtype)
        out, weights = attention(
            self, query[:, None], band_keys[:, None], band_values[:, None], mask, scaling=dim**-0.5, dropout=0.0
        )
        return out[:, :, 0], weights

    def inject(
        self, query: torch.Tensor, group_video: torch.LongTensor, group_t_index: torch.LongTensor, guide: GuideFeatures
    ) -> torch.Tensor:
        r"""Injects per video: `query` `(groups_t, nh * nw, D)` is laid out as `(num_videos, groups, D)` and back."""
        groups_t, per_slab, dim = query.shape
        num_videos = guide.pooled.shape[0]
        longest = int(group_t_index.max()) + 1
        padded = query.new_zeros(num_videos, longest, per_slab, dim)
        padded[group_video, group_t_index] = query
        injected = self.guide_injector(rearrange(padded, "v t n d -> v (t n) d"), guide)
        return rearrange(injected, "v (t n) d -> v t n d", n=per_slab)[group_video, group_t_index]


class HIComGlobalCompressor(nn.Module):
    r"""
    The global branch: `num_global_queries` learnable queries attend to all patches of a video, whose keys carry the
    3D position embedding.

    The attention is computed without materialising the per-patch keys `k_proj(x + pos)`, values `v_proj(x)` or the
    position embedding, which are each as large as the video's features. Per head `h`, the score
    `q_h . (W_k,h (x + p) + b_k,h)` equals `(W_k,hᵀ q_h) . x + (W_k,hᵀ q_h) . p` plus a constant that softmax
    ignores, and `sum a (W_v,h x + b_v,h) = W_v,h (sum a x) + b_v,h`. So the attention runs with the key-projected
    queries (all heads' queries stacked, width D) against the features themselves as keys and values, the position
    term as an additive bias from the three per-axis tables, and the value projection applied to the small result.
    With PyTorch's own attention (`eager`, `sdpa`), `streaming_global_attention` computes it in steps of frames with
    an online softmax, never holding the bias or the scores of all patches; another kernel registered in
    `ALL_ATTENTION_FUNCTIONS` (and `return_attention`) gets one dense call with the full `(queries, patches)` bias.
    """

    is_causal = False

    def __init__(self, config: HIComCompressorConfig):
        super().__init__()
        self.config = config
        self.query = nn.Parameter(torch.zeros(config.num_global_queries, config.hidden_size))
        self.guide_injector = (
            HIComGuideInjector(config, config.global_injection) if config.global_injection != "none" else None
        )
        self.attn_layer = HIComAttention(config)
        self.readout = mlp(config.hidden_size, config.output_hidden_size)

    def forward(
        self, values: PackedFrames, guide: GuideFeatures | None, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""
        Args:
            values (`PackedFrames` with values of shape `(total_frames, H, W, D)`)
            guide (`GuideFeatures`, *optional*)
            return_attention: also return each patch's attention weight, averaged over heads and queries.
        Returns:
            Tokens `(num_videos * num_global_queries, output_hidden_size)` and with `return_attention` the weights
            `(total_frames, H, W)` (summing to 1 per video).
        """
        x = values.values
        total_frames, height, width, dim = x.shape
        counts = values.frame_counts.to(x.device)
        num_videos, longest = counts.shape[0], int(counts.max())
        attn = self.attn_layer
        heads, head_dim = attn.num_heads, attn.head_dim

        query = self.query.to(x.dtype)[None].expand(num_videos, -1, -1)
        if self.guide_injector is not None and guide is not None:
            query = self.guide_injector(query, guide)

        # Videos of equal length are a view of the packed features; otherwise they are padded to the longest.
        if bool((counts == longest).all()):
            frames = x.view(num_videos, longest, height, width, dim)
        else:
            frames = x.new_zeros(num_videos, longest, height, width, dim)
            frames[values.video_index(), values.position_in_video()] = x
        pos_t, pos_h, pos_w = position_tables(
            self.config.position_embedding, longest, height, width, dim, x.device, x.dtype
        )

        q = rearrange(attn.q_proj(query), "v q (n e) -> v n q e", n=heads)
        w_k = rearrange(attn.k_proj.weight, "(n e) d -> n e d", n=heads)
        q_k = torch.einsum("vnqe,ned->vnqd", q, w_k)  # key-projected queries, (videos, heads, queries, D)
        q_k = rearrange(q_k, "v n q d -> v (n q) d")
        # The position term of each score, per axis: (videos, heads * queries, T), (.., H), (.., W).
        bias_t, bias_h, bias_w = ((q_k @ table.T) * attn.scaling for table in (pos_t, pos_h, pos_w))
        frame_ok = torch.arange(longest, device=x.device)[None, :] < counts[:, None]
        bias_t = bias_t.masked_fill(~frame_ok[:, None, :], torch.finfo(bias_t.dtype).min)
        value_tables = (pos_t, pos_h, pos_w) if self.config.position_in_value else None
        kernel = registered_kernel(self.config, return_attention)
        weights = None
        if kernel is None:
            out = streaming_global_attention(q_k, frames, (bias_t, bias_h, bias_w), attn.scaling, value_tables)
        else:
            # The dense call: the bias is as large as the scores, built once, at full size, by the last addition.
            bias = (bias_t[..., :, None] + bias_h[..., None, :])[..., None] + bias_w[..., None, None, :]
            bias = rearrange(bias, "v r t h w -> v 1 r (t h w)")
            patches = rearrange(frames, "v t h w d -> v 1 (t h w) d")
            value_patches = patches
            if value_tables is not None:
                position = pos_t[:, None, None] + pos_h[None, :, None] + pos_w[None, None, :]
                value_patches = rearrange(frames + position, "v t h w d -> v 1 (t h w) d")
            out, weights = kernel(self, q_k[:, None], patches, value_patches, bias, scaling=attn.scaling)
            out = out[:, :, 0]
        w_v = rearrange(attn.v_proj.weight, "(n e) d -> n e d", n=heads)
        out = rearrange(out, "v (n q) d -> v q n d", n=heads)
        out = torch.einsum("vqnd,ned->vqne", out, w_v) + attn.v_proj.bias.view(heads, head_dim)
        out = attn.out_proj(rearrange(out, "v q n e -> v q (n e)"))
        tokens = self.readout(query + out)

        patch_weights = None
        if return_attention:
            weights = rearrange(weights.mean(2), "v 1 (t h w) -> v t h w", h=height, w=width)
            patch_weights = weights[values.video_index(), values.position_in_video()].to(x.dtype)
        return rearrange(tokens, "v q d -> (v q) d"), patch_weights


def build_guide_encoder(config: PreTrainedConfig) -> PreTrainedModel:
    r"""
    The text guide encoder from its config: `AutoModel` does not map SigLIP's text-only config (only the two-tower
    `siglip`), so `siglip_text_model` builds `SiglipTextModel`; any other text config goes through
    `AutoModel.from_config`.
    """
    if config.model_type == "siglip_text_model":
        return SiglipTextModel._from_config(config)
    return AutoModel.from_config(config)


@dataclass
class HIComAttentionMaps:
    r"""
    Where each branch looked, for visualisation (the paper's Figure 6).

    Args:
        local (`torch.FloatTensor` of shape `(total_frames, H, W)`): each patch's weight within its group.
        global_ (`torch.FloatTensor` of shape `(total_frames, H, W)`, *optional*): each patch's global weight,
            averaged over heads and queries; `None` without a global branch.
    """

    local: torch.FloatTensor
    global_: torch.FloatTensor | None


@dataclass
class HIComCompressorOutput(CompressorOutput):
    r"""
    attention_maps (`HIComAttentionMaps`, *optional*):
        Where the local and global attention looked, when the forward was called with `return_attention=True`.
    """

    attention_maps: HIComAttentionMaps | None = None


@register_compressor
class HIComCompressor(VidCompCompressor):
    r"""
    HICom's hybrid-level conditional compression: local grouped attention tokens, then global learnable-query tokens,
    both projected to the LLM width by their own readouts (`output_dim` is `output_hidden_size`, so the composite
    model adds no projector). The instruction comes from the guide text (`InstructionCondition.guide_input_ids`,
    written by the processor), encoded by the SigLIP text encoder `guide_encoder`.
    """

    config: HIComCompressorConfig
    projection = "own"
    _supports_flash_attn = False  # the global branch needs an additive bias
    _supports_flex_attn = False

    def __init__(self, config: HIComCompressorConfig):
        super().__init__(config)
        self.guide_encoder = build_guide_encoder(config.guide_config) if config.uses_guide else None
        self.key_head = HIComKeyHead(config) if config.key_source == "vision_head" else None
        self.local_compressor = HIComLocalCompressor(config)
        self.global_compressor = HIComGlobalCompressor(config) if config.num_global_queries > 0 else None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The released initialisation: truncated normal (std 0.02) linear weights, zero biases, unit LayerNorms.
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, HIComGlobalCompressor):
            # Distinct learnable queries (the released zeros make all global tokens equal without text).
            nn.init.trunc_normal_(module.query, std=0.02)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def output_dim(self, input_dim: int) -> int:
        return self.config.output_hidden_size

    def tokens_per_group_slab(self, grid_h: int, grid_w: int) -> int:
        """Local tokens of one temporal group of frames."""
        nh, nw = self.local_compressor.grid(grid_h, grid_w)
        return nh * nw

    def kept_frames(self, num_frames: int, grid_h: int, grid_w: int, token_budget: int | None) -> int:
        r"""
        Frames kept of a video of `num_frames` under `token_budget`: all of them, or as many whole temporal groups
        as fit next to the global tokens; a `TokenBudgetError` when not even one group fits.
        """
        slab = self.tokens_per_group_slab(grid_h, grid_w)
        num_global = self.config.num_global_queries
        check_token_budget(
            token_budget,
            slab + num_global,
            f"group of {self.config.group_t} frames ({slab} local tokens) next to the {num_global} global tokens",
            "Raise the budget or the group sizes.",
        )
        if token_budget is None:
            return num_frames
        return min(num_frames, (token_budget - num_global) // slab * self.config.group_t)

    def max_tokens(
        self,
        num_frames: int,
        grid_h: int,
        grid_w: int,
        token_budget: int | None = None,
        num_scenes: int | None = None,
    ) -> int:
        frames = self.kept_frames(num_frames, grid_h, grid_w, token_budget)
        groups_t = -(-frames // self.config.group_t)
        return groups_t * self.tokens_per_group_slab(grid_h, grid_w) + self.config.num_global_queries

    def encode_guide(self, instruction: InstructionCondition | None, num_videos: int) -> GuideFeatures | None:
        r"""
        Encodes the guide text with `guide_encoder`. As in SigLIP's training (and the released code), the text is
        encoded padded to its tokenizer's length without an attention mask: the pooled output is the last position.
        Returns `None`, with a warning, when there is no guide text at all.
        """
        if not self.config.uses_guide:
            return None
        if instruction is None or instruction.guide_input_ids is None:
            warnings.warn(
                "HICom got no guide text (InstructionCondition.guide_input_ids), so it compresses unconditionally. "
                "Use a VidCompProcessor with a guide tokenizer to condition on the question.",
                stacklevel=3,
            )
            return None
        input_ids = instruction.guide_input_ids
        if input_ids.shape[0] != num_videos:
            raise InvalidVideoInputError(
                f"guide_input_ids has {input_ids.shape[0]} rows for {num_videos} videos; give one guide text per video."
            )
        mask = instruction.guide_attention_mask
        has_text = mask.bool().any(-1) if mask is not None else torch.ones(num_videos, dtype=torch.bool)
        if not bool(has_text.all()):
            empty = torch.nonzero(~has_text).flatten().tolist()
            warnings.warn(
                f"The guide text of video(s) {empty} is empty, so they are compressed unconditionally.", stacklevel=3
            )
        output = self.guide_encoder(input_ids=input_ids.to(self.device))
        tokens = None
        if "fine" in (self.config.local_injection, self.config.global_injection):
            tokens = self.guide_encoder.head(output.last_hidden_state)
        return GuideFeatures(output.pooler_output, tokens, has_text.to(output.pooler_output.device))

    def split_features(self, features: PackedFrames) -> tuple[PackedFrames, torch.Tensor]:
        """Values and local keys from the features, checking their width."""
        dim = self.config.hidden_size
        width = features.values.shape[-1]
        expected = 2 * dim if self.key_head is not None else dim
        if features.values.ndim != 4 or width != expected:
            layers = (
                "two vision layers (vision_feature_layer=[-2, -1]): the values, then the last layer for the keys"
                if self.key_head is not None
                else "one vision layer"
            )
            raise InvalidVideoInputError(
                f"HICom expects features of shape (frames, grid_h, grid_w, {expected}): {layers} of width "
                f"hidden_size={dim}. Got shape {tuple(features.values.shape)}. Match hidden_size and "
                "key_source in the compressor config to the vision tower and vision_feature_layer."
            )
        if self.key_head is None:
            return features, features.values
        values, last_layer = features.values.split(dim, dim=-1)
        return features.with_values(values), self.key_head(last_layer)

    def forward(
        self,
        features: PackedFrames,
        auxiliary_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
        token_budget: int | None = None,
        scene_ids: torch.LongTensor | None = None,
        return_attention: bool = False,
    ) -> CompressorOutput:
        r"""
        return_attention (`bool`, *optional*, defaults to `False`):
            Computes the attention with the eager function and returns [`HIComAttentionMaps`] (patch weights of
            the kept frames) in `attention_maps`, for visualisation.
        """
        _, grid_h, grid_w, _ = features.values.shape
        values, keys = self.split_features(features)
        frame_position = values.position_in_video()
        if token_budget is not None:
            length = values.frame_counts.to(frame_position.device)[values.video_index()]
            most = self.kept_frames(int(values.frame_counts.max()), grid_h, grid_w, token_budget)
            keep = uniform_keep_mask(frame_position, length, length.clamp(max=most))
            values, keys, frame_position = values.select(keep), keys[keep], frame_position[keep]
        guide = self.encode_guide(instruction, values.num_videos)

        # Global first: its attention bias (queries x patches) is then not held next to the local tokens.
        num_global = self.config.num_global_queries
        global_map = None
        if self.global_compressor is not None:
            global_tokens, global_map = self.global_compressor(values, guide, return_attention)
        local, local_counts, group_first, local_map = self.local_compressor(values, keys, guide, return_attention)

        # Interleave per video: its local tokens, then its global tokens.
        counts = local_counts + num_global
        device = local.device
        is_global = torch.zeros(int(counts.sum()), dtype=torch.bool, device=device)
        if num_global:
            ends = torch.cumsum(counts, 0)
            is_global[(ends[:, None] - num_global + torch.arange(num_global, device=device)).flatten()] = True
        tokens = local.new_empty(is_global.shape[0], local.shape[-1])
        tokens[~is_global] = local
        # Local tokens derive from their group's first frame, global tokens from the whole video: its last frame.
        first_frame = (torch.cumsum(values.frame_counts, 0) - values.frame_counts).to(device)
        video_of_group = torch.repeat_interleave(torch.arange(values.num_videos, device=device), local_counts)
        kept_index = first_frame[video_of_group] + group_first
        last_frame = first_frame + values.frame_counts.to(device) - 1
        frame_index = torch.empty(is_global.shape[0], dtype=torch.long, device=device)
        frame_index[~is_global] = kept_index
        if num_global:
            tokens[is_global] = global_tokens
            frame_index[is_global] = last_frame.repeat_interleave(num_global)
        return HIComCompressorOutput(
            tokens=tokens,
            token_counts=counts.to(values.frame_counts.device),
            token_frame_index=frame_position.to(device)[frame_index],
            token_timestamps=values.timestamps.to(device)[frame_index],
            attention_maps=HIComAttentionMaps(local_map, global_map) if return_attention else None,
        )


__all__ = [
    "HIComAttentionMaps",
    "HIComCompressor",
    "HIComCompressorConfig",
    "HIComCompressorOutput",
    "HIComGuideTextConfig",
    "position_tables",
]
