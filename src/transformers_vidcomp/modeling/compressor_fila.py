r"""
FiLA-Video scene merging (arXiv:2504.20384, §3.2 and Appendix C): each scene of shape (m, N, D) becomes N tokens.

- `fila_weighted_fusion` (the paper's method, Eq. 7-8): a learnable W of shape (k, N, D), initialised to 1/k;
  the scene's frames are summed with it, element-wise.
- `fila_temporal_average`: the mean over the scene's frames.
- `fila_attention_pooling` (Appendix C.1): the middle frame's tokens query the same position in every frame;
  softmax over frames weighs the sum. Projections are Xavier-initialised.
- `fila_bipartite_merge` (Appendix C.2): ToMe bipartite soft matching over the scene's m x N tokens, merging the
  most similar pairs (size-weighted averages) until N tokens remain.

Scenes come from the sampler (`scene_ids`, e.g. FiLA's K-Means selection). Without them, every `scene_size`
consecutive frames form a scene: the paper's stage-4 multi-rate training, 96 uniform frames merged 3 to 1.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedConfig

from .components_vidcomp import (
    CompressorOutput,
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    VidCompCompressor,
    check_token_budget,
    grid_cells,
    register_compressor,
    uniform_keep_mask,
)


@strict
class FilaMergeConfig(PreTrainedConfig):
    r"""
    scene_size (`int`, *optional*, defaults to 3):
        Frames per scene when the sampler gives no scenes (consecutive frames are grouped), and the scene length
        the weighted fusion's W is shaped for.
    """

    scene_size: int = 3

    def __post_init__(self, **kwargs):
        if self.scene_size < 1:
            raise ValueError(f"scene_size must be at least 1, got {self.scene_size}.")
        super().__post_init__(**kwargs)


class FilaSceneMerger(VidCompCompressor):
    r"""
    The scene bookkeeping every FiLA merging method shares: grouping frames into scenes, keeping an even subset of
    scenes under a token budget, and emitting each scene's N tokens stamped with its representative frame (its
    last frame: a K-Means scene ends at its representative). Subclasses implement `merge`.
    """

    def merge(self, scenes: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            scenes (`torch.Tensor` of shape `(num_scenes, scene_length, num_patches, dim)`): scenes of equal length.
        Returns:
            `torch.Tensor` of shape `(num_scenes, num_patches, dim)`.
        """
        raise NotImplementedError

    def merge_with_places(self, scenes: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        r"""
        `merge`, and for each merged token the patch (index into the frame's `num_patches`) it sits at, shape
        `(num_scenes, num_patches)`: its own patch, for methods that fuse each patch across the scene's frames.
        """
        num_scenes, _, num_patches, _ = scenes.shape
        places = torch.arange(num_patches, device=scenes.device).expand(num_scenes, -1)
        return self.merge(scenes), places

    def max_tokens(
        self,
        num_frames: int,
        grid_h: int,
        grid_w: int,
        token_budget: int | None = None,
        num_scenes: int | None = None,
    ) -> int:
        tokens_per_scene = self.tokens_per_scene(grid_h * grid_w, token_budget)
        scenes = num_scenes if num_scenes is not None else math.ceil(num_frames / self.config.scene_size)
        if token_budget is not None:
            scenes = min(scenes, token_budget // tokens_per_scene)
        return scenes * tokens_per_scene

    def tokens_per_scene(self, num_patches: int, token_budget: int | None) -> int:
        check_token_budget(token_budget, num_patches, "scene (merged to one frame's tokens)")
        return num_patches

    def forward(
        self,
        features: PackedFrames,
        auxiliary_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
        token_budget: int | None = None,
        scene_ids: torch.LongTensor | None = None,
    ) -> CompressorOutput:
        values = features.values
        total_frames, grid_h, grid_w, dim = values.shape
        num_patches = self.tokens_per_scene(grid_h * grid_w, token_budget)
        device = values.device
        video = features.video_index().to(device)
        position = features.position_in_video().to(device)
        if scene_ids is None:
            scene_ids = position // self.config.scene_size
        scene_ids = scene_ids.to(device)
        # Number scenes across the batch: a scene starts where the scene id or the video changes.
        starts = torch.ones(total_frames, dtype=torch.bool, device=device)
        starts[1:] = (scene_ids[1:] != scene_ids[:-1]) | (video[1:] != video[:-1])
        scene = torch.cumsum(starts.long(), 0) - 1
        num_scenes = int(scene[-1]) + 1
        first_frame = torch.nonzero(starts).squeeze(1)
        length = torch.bincount(scene, minlength=num_scenes)
        scene_video = video[first_frame]
        if token_budget is not None:
            per_video = torch.bincount(scene_video, minlength=features.num_videos)
            rank = torch.arange(num_scenes, device=device) - (torch.cumsum(per_video, 0) - per_video)[scene_video]
            kept = uniform_keep_mask(
                rank, per_video[scene_video], torch.full_like(rank, token_budget // num_patches)
            )
            first_frame, length, scene_video = first_frame[kept], length[kept], scene_video[kept]
        patches = rearrange(values, "t h w d -> t (h w) d")
        merged = values.new_empty(first_frame.shape[0], num_patches, dim)
        patch_index = torch.empty(first_frame.shape[0], num_patches, dtype=torch.long, device=device)
        for scene_length in torch.unique(length).tolist():
            group = torch.nonzero(length == scene_length).squeeze(1)
            frames = first_frame[group, None] + torch.arange(scene_length, device=device)
            merged[group], patch_index[group] = self.merge_with_places(patches[frames])
        last_frame = first_frame + length - 1
        token_counts = torch.bincount(scene_video, minlength=features.num_videos) * num_patches
        return CompressorOutput(
            tokens=rearrange(merged, "s n d -> (s n) d"),
            token_counts=token_counts.to(features.frame_counts.device),
            token_frame_index=position[last_frame].repeat_interleave(num_patches),
            token_timestamps=features.timestamps.to(device)[last_frame].repeat_interleave(num_patches),
            token_grid_positions=grid_cells(grid_h, grid_w, device=device)[patch_index.flatten()],
        )


@strict
class FilaWeightedFusionConfig(FilaMergeConfig):
    r"""
    scene_size (`int`, *optional*, defaults to 3):
        k, the scene length W is shaped for.
    num_patches (`int`, *optional*, defaults to 729):
        N, patches per frame (27 x 27 for SigLIP-so400m at 384 px).
    hidden_size (`int`, *optional*, defaults to 1152):
        D, the vision feature width.
    """

    model_type = "vidcomp_fila_weighted_fusion"

    num_patches: int = 729
    hidden_size: int = 1152


@register_compressor
class FilaWeightedFusionCompressor(FilaSceneMerger):
    r"""
    FiLA-Video's weighted fusion (Eq. 7-8): `out = sum_i F_i * W_i`, with W of shape (k, N, D) initialised to 1/k.

    A scene of m != k frames (a short gap in K-Means selection, or a different `scene_size`) uses W resampled
    along time to m rows (linear, ends aligned, so a scene's last frame, its representative, always meets W's
    last row), rescaled so that every (patch, channel) keeps the total weight it has over W's k rows: a one-frame
    scene gets W's column sums, and an untrained W still averages, whatever m.
    """

    config: FilaWeightedFusionConfig

    def __init__(self, config: FilaWeightedFusionConfig):
        super().__init__(config)
        self.weight = nn.Parameter(torch.empty(config.scene_size, config.num_patches, config.hidden_size))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is self:
            nn.init.constant_(self.weight, 1.0 / self.config.scene_size)

    def weights_for(self, scene_length: int) -> torch.Tensor:
        """W for scenes of `scene_length` frames, shape `(scene_length, N, D)`."""
        k = self.config.scene_size
        if scene_length == k:
            return self.weight
        total = self.weight.sum(0, keepdim=True)
        if scene_length == 1:
            return total
        resampled = F.interpolate(
            rearrange(self.weight, "k n d -> 1 (n d) k"), size=scene_length, mode="linear", align_corners=True
        )
        resampled = rearrange(resampled, "1 (n d) m -> m n d", n=self.config.num_patches)
        resampled_total = resampled.sum(0, keepdim=True)
        # Where the resampled weights sum to ~0 (a trained W can), fall back to scaling by k / m.
        safe = resampled_total.abs() > 1e-6
        scale = torch.where(safe, total / torch.where(safe, resampled_total, 1.0), k / scene_length)
        return resampled * scale

    def merge(self, scenes: torch.Tensor) -> torch.Tensor:
        _, scene_length, num_patches, dim = scenes.shape
        if (num_patches, dim) != (self.config.num_patches, self.config.hidden_size):
            raise InvalidVideoInputError(
                f"Weighted fusion was built for {self.config.num_patches} patches of width "
                f"{self.config.hidden_size} (num_patches, hidden_size in its config), but the frames have "
                f"{num_patches} of width {dim}. Set them to the vision tower's grid and width."
            )
        return (scenes * self.weights_for(scene_length).to(scenes.dtype)).sum(1)


@strict
class FilaTemporalAverageConfig(FilaMergeConfig):
    model_type = "vidcomp_fila_temporal_average"


@register_compressor
class FilaTemporalAverageCompressor(FilaSceneMerger):
    r"""The mean of each scene's frames, token by token (the paper's temporal-averaging ablation). No weights."""

    config: FilaTemporalAverageConfig

    def __init__(self, config: FilaTemporalAverageConfig):
        super().__init__(config)
        self.post_init()

    def merge(self, scenes: torch.Tensor) -> torch.Tensor:
        return scenes.mean(1)


@strict
class FilaAttentionPoolingConfig(FilaMergeConfig):
    r"""
    hidden_size (`int`, *optional*, defaults to 1152):
        D, the vision feature width.
    key_size (`int`, *optional*):
        d_k, the width queries and keys are projected to; D by default.
    """

    model_type = "vidcomp_fila_attention_pooling"

    hidden_size: int = 1152
    key_size: int | None = None


@register_compressor
class FilaAttentionPoolingCompressor(FilaSceneMerger):
    r"""
    Attention pooling (Appendix C.1). The middle frame's tokens are the queries, `Q = F_mid W_Q`; each frame's
    tokens are keys, `K_m = F_m W_K`. We read the paper's "scores as weights for each token" per position: token
    j of frame m weighs `softmax_m(q_j . k_mj / sqrt(d_k))`, and the scene becomes `sum_m a_mj F_mj`.
    """

    config: FilaAttentionPoolingConfig

    def __init__(self, config: FilaAttentionPoolingConfig):
        super().__init__(config)
        key_size = config.key_size or config.hidden_size
        self.query = nn.Linear(config.hidden_size, key_size, bias=False)
        self.key = nn.Linear(config.hidden_size, key_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)

    def merge(self, scenes: torch.Tensor) -> torch.Tensor:
        projected = scenes.to(self.query.weight.dtype)  # bf16 features meet fp32 projections, and vice versa
        middle = projected[:, (scenes.shape[1] - 1) // 2]
        queries, keys = self.query(middle), self.key(projected)
        scores = torch.einsum("snk,smnk->smn", queries, keys) / math.sqrt(queries.shape[-1])
        return torch.einsum("smn,smnd->snd", scores.softmax(dim=1).to(scenes.dtype), scenes)


@strict
class FilaBipartiteMergeConfig(FilaMergeConfig):
    model_type = "vidcomp_fila_bipartite_merge"


@register_compressor
class FilaBipartiteMergeCompressor(FilaSceneMerger):
    r"""
    Bipartite soft matching merge (Appendix C.2, Algorithm 1; ToMe). A scene's m x N tokens alternate into sets A
    and B; each A token's most similar B token (cosine) is its edge; the A ends of the most similar edges merge
    into their B partners as size-weighted averages. Rounds repeat until N tokens remain, which are returned in
    the order of their earliest source token (so an unmerged scene keeps its layout). No weights.
    """

    config: FilaBipartiteMergeConfig

    def __init__(self, config: FilaBipartiteMergeConfig):
        super().__init__(config)
        self.post_init()

    def merge(self, scenes: torch.Tensor) -> torch.Tensor:
        return self.merge_with_places(scenes)[0]

    def merge_with_places(self, scenes: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        # A merged token sits at the patch of its earliest source token, the order it is returned in.
        num_scenes, scene_length, num_patches, dim = scenes.shape
        weighted = rearrange(scenes, "s m n d -> s (m n) d").float()  # token sums, each of size 1 so far
        size = weighted.new_ones(num_scenes, weighted.shape[1])
        origin = torch.arange(weighted.shape[1], device=scenes.device).expand(num_scenes, -1)
        rows = torch.arange(num_scenes, device=scenes.device)[:, None]
        while weighted.shape[1] > num_patches:
            tokens = weighted / size[..., None]
            metric = F.normalize(tokens, dim=-1)
            a, b = metric[:, ::2], metric[:, 1::2]
            merges = min(weighted.shape[1] - num_patches, a.shape[1])
            best, partner = (a @ b.transpose(1, 2)).max(-1)
            order = best.argsort(dim=1, descending=True)
            merged, unmerged = order[:, :merges], order[:, merges:]
            sum_a, sum_b = weighted[:, ::2], weighted[:, 1::2].clone()
            size_a, size_b = size[:, ::2], size[:, 1::2].clone()
            origin_a, origin_b = origin[:, ::2], origin[:, 1::2].clone()
            destination = partner.gather(1, merged)
            target = (rows.expand_as(destination), destination)
            sum_b.index_put_(target, sum_a[rows, merged], accumulate=True)
            size_b.index_put_(target, size_a[rows, merged], accumulate=True)
            origin_b = origin_b.scatter_reduce(1, destination, origin_a.gather(1, merged), reduce="amin")
            weighted = torch.cat([sum_a[rows, unmerged], sum_b], dim=1)
            size = torch.cat([size_a[rows, unmerged], size_b], dim=1)
            origin = torch.cat([origin_a[rows, unmerged], origin_b], dim=1)
        order = origin.argsort(dim=1)
        merged = (weighted / size[..., None]).gather(1, order[..., None].expand_as(weighted)).to(scenes.dtype)
        return merged, origin.gather(1, order) % num_patches


__all__ = [
    "FilaAttentionPoolingCompressor",
    "FilaAttentionPoolingConfig",
    "FilaBipartiteMergeCompressor",
    "FilaBipartiteMergeConfig",
    "FilaTemporalAverageCompressor",
    "FilaTemporalAverageConfig",
    "FilaWeightedFusionCompressor",
    "FilaWeightedFusionConfig",
]
