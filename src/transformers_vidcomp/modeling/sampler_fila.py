r"""
FiLA-Video scene selection (arXiv:2504.20384, §3.1 and Appendix B): which frames form the scenes that the FiLA
merging compressors fuse.

- `fila_kmeans` (the paper's method): each frame is the mean of its patch tokens; K-Means (batched over videos, in
  torch) finds k scene centres; the frame nearest each centre represents its scene, in chronological order; each
  scene is completed with the r frames between the previous representative and its own that are most similar to
  it (or least similar, the paper's Table 2 ablation).
- `fila_bipartite` (Appendix B): the video is cut into k even segments; in each, bipartite soft matching (ToMe)
  merges away the most redundant frames (the A ends of the most similar A-B edges) until r + 1 remain.

No code was released: the defaults (k = 32 scenes, r = 2, k-means++ seeded with 0, 100 iterations, tolerance 1e-4)
are ours, and each choice the paper leaves open is documented where it is made. The paper starts K-Means from k
random frames (`init="random"`), as the `fila-paper` preset does.
"""

import math
from typing import Literal

import torch
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .components_vidcomp import (
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    SamplerOutput,
    VidCompSampler,
    register_sampler,
)


def frame_means_by_video(features: PackedFrames) -> tuple[torch.Tensor, torch.BoolTensor]:
    r"""
    The paper's representative feature of each frame (Eq. 1), the mean of its patch tokens, laid out per video.

    Returns:
        `points` of shape `(num_videos, max_frames, dim)` (zeros past a video's end) and `valid` of shape
        `(num_videos, max_frames)`.
    """
    means = features.values.mean(dim=(1, 2), dtype=torch.float32)
    if not torch.isfinite(means).all():
        raise InvalidVideoInputError(
            "Frame features contain NaN or infinite values, so scenes cannot be clustered. Check the vision tower's "
            "inputs (normalised pixels) and its dtype."
        )
    counts = features.frame_counts.to(means.device)
    max_frames = int(counts.max())
    video, position = features.video_index().to(means.device), features.position_in_video().to(means.device)
    points = means.new_zeros(features.num_videos, max_frames, means.shape[-1])
    points[video, position] = means
    valid = torch.arange(max_frames, device=means.device)[None, :] < counts[:, None]
    return points, valid


def squared_norms(points: torch.Tensor) -> torch.Tensor:
    """`||p||^2` of every row; einsum is one fused reduction, several times faster than `square().sum()`."""
    return torch.einsum("bnd,bnd->bn", points, points)


def squared_distances(
    points: torch.Tensor, centers: torch.Tensor, point_norms: torch.Tensor | None = None
) -> torch.Tensor:
    r"""
    `||p - c||^2` for every point and centre, as one batched matrix product (much faster than `torch.cdist` for
    thousands of 1152-wide frames), clamped at 0 against rounding.

    Args:
        points (`torch.Tensor` of shape `(batch, n, dim)`), centers (`torch.Tensor` of shape `(batch, k, dim)`)
        point_norms (`torch.Tensor` of shape `(batch, n)`, *optional*): `squared_norms(points)`, if already known.
    Returns:
        `torch.Tensor` of shape `(batch, n, k)`.
    """
    point_norms = squared_norms(points) if point_norms is None else point_norms
    cross = torch.baddbmm(squared_norms(centers)[:, None, :], points, centers.transpose(1, 2), alpha=-2)
    return (cross + point_norms[..., None]).clamp_(min=0)


def rank_within_groups(group: torch.LongTensor, score: torch.Tensor) -> torch.LongTensor:
    r"""
    Each element's rank (0 = highest score) among the elements of its group, for every row at once: two stable
    sorts, by score and then by group. Elements with group -1 rank `max_frames`.

    Args:
        group (`torch.LongTensor` of shape `(num_videos, max_frames)`)
        score (`torch.Tensor` of shape `(num_videos, max_frames)`)
    """
    max_frames = group.shape[1]
    by_score = torch.argsort(score, dim=1, descending=True, stable=True)
    group_key = torch.where(group >= 0, group, max_frames + group.max() + 1).gather(1, by_score)
    order = by_score.gather(1, torch.argsort(group_key, dim=1, stable=True))
    sorted_group = group.gather(1, order)
    index = torch.arange(max_frames, device=group.device).expand_as(sorted_group)
    first = torch.ones_like(sorted_group, dtype=torch.bool)
    first[:, 1:] = sorted_group[:, 1:] != sorted_group[:, :-1]
    sorted_rank = index - torch.cummax(torch.where(first, index, 0), 1).values
    sorted_rank = sorted_rank.masked_fill(sorted_group < 0, max_frames)
    return torch.empty_like(sorted_rank).scatter_(1, order, sorted_rank)


def kmeans_plus_plus(
    points: torch.Tensor, valid: torch.BoolTensor, num_clusters: int, generator: torch.Generator
) -> torch.Tensor:
    r"""
    Greedy k-means++ seeding (as scikit-learn does it: `2 + log k` candidates per step, keep the one that lowers the
    potential most), for all videos at once. Frames are the only candidates; a video whose frames are all equal gets
    uniform draws instead of an undefined distribution.

    Args:
        points (`torch.Tensor` of shape `(num_videos, max_frames, dim)`)
        valid (`torch.BoolTensor` of shape `(num_videos, max_frames)`)
    Returns:
        `torch.Tensor` of shape `(num_videos, num_clusters, dim)`.
    """
    num_videos, max_frames, _ = points.shape
    trials = 2 + int(math.log(num_clusters))
    rows = torch.arange(num_videos, device=points.device)
    uniform = valid.float()
    norms = squared_norms(points)
    first = torch.multinomial(uniform, 1, generator=generator).squeeze(1)
    centers = [points[rows, first]]
    closest = squared_distances(points, centers[0][:, None], norms).squeeze(-1) * valid
    for _ in range(1, num_clusters):
        potential = closest.sum(1, keepdim=True)
        weights = torch.where(potential > 0, closest, uniform)
        candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        candidate_points = points[rows[:, None], candidates]
        to_candidates = squared_distances(points, candidate_points, norms).transpose(1, 2)
        candidate_closest = torch.minimum(closest[:, None, :], to_candidates)
        best = (candidate_closest * valid[:, None, :]).sum(-1).argmin(1)
        centers.append(candidate_points[rows, best])
        closest = candidate_closest[rows, best] * valid
    return torch.stack(centers, 1)


def initial_centers(
    points: torch.Tensor,
    valid: torch.BoolTensor,
    num_clusters: torch.LongTensor,
    init: Literal["k-means++", "random"],
    seed: int,
) -> tuple[torch.Tensor, torch.BoolTensor]:
    r"""
    Initial centres for each video, drawn with its own generator seeded with `seed`, so a video's scenes never
    depend on the other videos in its batch (a loop over videos, not frames).

    Args:
        points (`torch.Tensor` of shape `(num_videos, max_frames, dim)`), valid (`torch.BoolTensor`, same first two)
        num_clusters (`torch.LongTensor` of shape `(num_videos,)`): k of each video, at most its frame count.
    Returns:
        `centers` of shape `(num_videos, max_k, dim)` and `center_valid` of shape `(num_videos, max_k)`.
    """
    num_videos, _, dim = points.shape
    max_k = int(num_clusters.max())
    centers = points.new_zeros(num_videos, max_k, dim)
    for video in range(num_videos):
        k, frames = int(num_clusters[video]), points[video, valid[video]][None]
        all_valid = torch.ones(frames.shape[:2], dtype=torch.bool, device=points.device)
        generator = torch.Generator(points.device).manual_seed(seed)
        if init == "k-means++":
            centers[video, :k] = kmeans_plus_plus(frames, all_valid, k, generator)[0]
        else:
            chosen = torch.randperm(frames.shape[1], generator=generator, device=points.device)[:k]
            centers[video, :k] = frames[0, chosen]
    return centers, torch.arange(max_k, device=points.device)[None, :] < num_clusters[:, None]


def relocate_empty_clusters(
    points: torch.Tensor,
    valid: torch.BoolTensor,
    centers: torch.Tensor,
    labels: torch.LongTensor,
    sums: torch.Tensor,
    sizes: torch.Tensor,
    center_valid: torch.BoolTensor | None,
) -> None:
    r"""
    scikit-learn's rule for a cluster left empty by an assignment step: it takes over the frame farthest from its
    own centre (the next farthest for a second empty cluster, and so on), which leaves its old cluster. `sums` and
    `sizes` (`(num_videos, k, dim)` and `(num_videos, k)`, the new centres' accumulators) are updated in place.
    Empty clusters are rare, so this loops over them, never over frames.
    """
    empty = sizes == 0
    if center_valid is not None:
        empty &= center_valid
    if not empty.any():
        return
    own_center = centers.gather(1, labels.clamp(min=0)[..., None].expand_as(points))
    distance = (points - own_center).square().sum(-1).masked_fill(~valid, float("-inf"))
    num_empty = empty.sum(1)
    farthest = distance.topk(int(num_empty.max()), dim=1).indices
    empty_ids = torch.argsort((~empty).to(torch.uint8), dim=1, stable=True)
    for slot in range(int(num_empty.max())):
        videos = torch.nonzero(num_empty > slot).squeeze(1)
        frame, new_cluster = farthest[videos, slot], empty_ids[videos, slot]
        old_cluster = labels[videos, frame]
        point = points[videos, frame].to(sums)
        sums[videos, old_cluster] -= point
        sizes[videos, old_cluster] -= 1
        sums[videos, new_cluster] = point
        sizes[videos, new_cluster] = 1


def batched_kmeans(
    points: torch.Tensor,
    valid: torch.BoolTensor,
    centers: torch.Tensor,
    center_valid: torch.BoolTensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.LongTensor]:
    r"""
    Lloyd's K-Means (Euclidean) on every video at once, with scikit-learn's stopping rule: stop when the labels no
    longer change, or when the squared centre shift falls to `tol` times the mean per-feature variance of the
    video; labels are then recomputed for the final centres. An emptied cluster takes over the farthest frame, as
    in scikit-learn (`relocate_empty_clusters`).

    Args:
        points (`torch.Tensor` of shape `(num_videos, max_frames, dim)`): frame features, zero-padded.
        valid (`torch.BoolTensor` of shape `(num_videos, max_frames)`): which rows are real frames.
        centers (`torch.Tensor` of shape `(num_videos, max_k, dim)`): initial centres.
        center_valid (`torch.BoolTensor` of shape `(num_videos, max_k)`, *optional*): which centres a video has,
            when videos have different k.
    Returns:
        `centers` of shape `(num_videos, max_k, dim)` and `labels` of shape `(num_videos, max_frames)` (-1 on
        padding).
    """
    num_videos, max_frames, dim = points.shape
    num_clusters = centers.shape[1]
    centers = centers.to(points)
    unused = ~center_valid[:, None, :] if center_valid is not None else None

    def nearest(centers: torch.Tensor) -> torch.LongTensor:
        distances = squared_distances(points, centers, point_norms)
        if unused is not None:
            distances = distances.masked_fill(unused, float("inf"))
        return distances.argmin(-1).masked_fill(~valid, -1)

    # scikit-learn's tolerance is relative to the mean per-feature variance, which is
    # (mean squared norm - squared norm of the mean) / dim: no pass over the points beyond their norms.
    point_norms = squared_norms(points) * valid
    counts = valid.sum(1).to(points)
    mean = torch.bmm(valid.to(points)[:, None, :], points).squeeze(1) / counts[:, None]
    threshold = tol * (point_norms.sum(1) / counts - mean.square().sum(-1)) / dim
    # Centre sums accumulate in float64: the order of a float32 sum must not decide which side of a boundary a
    # frame falls on (scikit-learn's result is the reference).
    sum_points = points.reshape(-1, dim).double()
    flat_valid = valid.flatten().double()
    cluster_offset = (torch.arange(num_videos, device=points.device) * (num_clusters + 1))[:, None]
    labels = torch.full((num_videos, max_frames), -1, dtype=torch.long, device=points.device)
    active = torch.ones(num_videos, dtype=torch.bool, device=points.device)
    for _ in range(max_iter):
        new_labels = nearest(centers)
        label_stable = (new_labels == labels).all(1)
        # Cluster sums in one index_add over all videos; padding rows (label -1) land in a discarded extra slot.
        slot = (new_labels % (num_clusters + 1) + cluster_offset).flatten()
        sums = sum_points.new_zeros(num_videos * (num_clusters + 1), dim).index_add_(0, slot, sum_points)
        sizes = sum_points.new_zeros(num_videos * (num_clusters + 1)).index_add_(0, slot, flat_valid)
        sums = sums.view(num_videos, num_clusters + 1, dim)[:, :num_clusters]
        sizes = sizes.view(num_videos, num_clusters + 1)[:, :num_clusters]
        relocate_empty_clusters(points, valid, centers, new_labels, sums, sizes, center_valid)
        new_centers = torch.where(sizes[..., None] > 0, sums / sizes.clamp(min=1)[..., None], centers).to(points)
        shift = squared_norms(new_centers - centers).sum(1)
        # A converged video keeps its centres and labels while the others go on.
        centers = torch.where(active[:, None, None], new_centers, centers)
        labels = torch.where(active[:, None], new_labels, labels)
        active &= ~label_stable & (shift > threshold)
        if not active.any():
            break
    if not label_stable.all():  # labels must match the final centres (scikit-learn does the same)
        labels = nearest(centers)
    return centers, labels


class FilaSceneSampler(VidCompSampler):
    r"""
    What FiLA's two scene selections share: they read every frame's vision features (as frame means, Eq. 1), keep
    at most `frames_per_scene` frames in each of at most `num_scenes` scenes, and return them as a keep mask and
    scene ids. Subclasses implement `select_scenes` on the per-video layout.
    """

    needs_frame_features = True

    @property
    def frames_per_scene(self) -> int:
        raise NotImplementedError

    def max_kept_frames(self, num_frames: int) -> int:
        return min(num_frames, self.config.num_scenes * self.frames_per_scene)

    def max_scenes(self, num_frames: int) -> int:
        return min(num_frames, self.config.num_scenes)

    def select_scenes(self, points: torch.Tensor, valid: torch.BoolTensor) -> tuple[torch.BoolTensor, torch.LongTensor]:
        r"""
        Args:
            points (`torch.Tensor` of shape `(num_videos, max_frames, dim)`): frame means, zero-padded.
            valid (`torch.BoolTensor` of shape `(num_videos, max_frames)`): which rows are real frames.
        Returns:
            `keep` (`torch.BoolTensor`) and `scene` (`torch.LongTensor`, -1 where not kept), both
            `(num_videos, max_frames)`.
        """
        raise NotImplementedError

    def forward(
        self,
        frames: PackedFrames,
        frame_features: PackedFrames | None = None,
        instruction: InstructionCondition | None = None,
    ) -> SamplerOutput:
        if frame_features is None:
            raise InvalidVideoInputError(f"{type(self).__name__} selects scenes from vision features: pass frame_features.")
        points, valid = frame_means_by_video(frame_features)
        keep, scene = self.select_scenes(points, valid)
        flat = valid.flatten()
        return SamplerOutput(keep_mask=keep.flatten()[flat], scene_ids=scene.flatten()[flat])


@strict
class FilaKMeansSamplerConfig(PreTrainedConfig):
    r"""
    num_scenes (`int`, *optional*, defaults to 32):
        k, the number of scenes (K-Means clusters). A video with fewer frames makes every frame its own scene.
    supplements_per_scene (`int`, *optional*, defaults to 2):
        r, the frames added to each representative frame, so a scene has up to r + 1 frames. 0 keeps only the
        representatives.
    supplement_mode (`str`, *optional*, defaults to `"similar"`):
        `"similar"` adds the r historical frames most similar (cosine) to the representative, the paper's choice;
        `"dissimilar"` the least similar, its Table 2 ablation.
    init (`str`, *optional*, defaults to `"k-means++"`):
        `"k-means++"` (ours: steadier scenes from run to run of the seed) or `"random"` (k distinct frames, the
        paper's §3.1.1 and the `fila-paper` preset's) initial centres.
    max_iter (`int`, *optional*, defaults to 100):
        The most Lloyd iterations.
    tol (`float`, *optional*, defaults to 1e-4):
        Convergence tolerance, relative to the mean per-feature variance of the frame features (as scikit-learn).
    seed (`int`, *optional*, defaults to 0):
        Seeds the initialisation, so repeated runs select the same scenes.
    """

    model_type = "vidcomp_fila_kmeans_sampler"

    num_scenes: int = 32
    supplements_per_scene: int = 2
    supplement_mode: Literal["similar", "dissimilar"] = "similar"
    init: Literal["k-means++", "random"] = "k-means++"
    max_iter: int = 100
    tol: float = 1e-4
    seed: int = 0

    def __post_init__(self, **kwargs):
        if self.num_scenes < 1:
            raise ValueError(f"num_scenes must be at least 1, got {self.num_scenes}.")
        if self.supplements_per_scene < 0:
            raise ValueError(f"supplements_per_scene must be 0 or more, got {self.supplements_per_scene}.")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}.")
        if self.tol < 0:
            raise ValueError(f"tol must be 0 or more, got {self.tol}.")
        super().__post_init__(**kwargs)


@register_sampler
class FilaKMeansSampler(FilaSceneSampler):
    r"""
    FiLA-Video's clustering-based scene selection. Frames kept: k representatives and up to r supplements each.

    Choices the paper leaves open, made here:
    - A representative is the frame nearest its cluster's centre among the frames of that cluster. Two clusters
      never share one; a video of identical frames has one scene.
    - Supplements of scene i come from the frames strictly between representatives i-1 and i (from the video's
      start for the first scene). A gap with fewer than r frames gives all of them: that scene is shorter, never
      padded. Frames after the last representative belong to no scene.
    """

    config: FilaKMeansSamplerConfig
    scene_ends_at_representative = True

    def __init__(self, config: FilaKMeansSamplerConfig):
        super().__init__(config)
        self.post_init()

    @property
    def frames_per_scene(self) -> int:
        return self.config.supplements_per_scene + 1

    def select_scenes(self, points: torch.Tensor, valid: torch.BoolTensor) -> tuple[torch.BoolTensor, torch.LongTensor]:
        num_clusters = valid.sum(1).clamp(max=self.config.num_scenes)  # fewer frames than k: a scene per frame
        centers, center_valid = initial_centers(points, valid, num_clusters, self.config.init, self.config.seed)
        centers, labels = batched_kmeans(
            points, valid, centers, center_valid, self.config.max_iter, self.config.tol
        )
        return self.complete_scenes(points, valid, self.representatives(points, valid, centers, labels))

    @staticmethod
    def representatives(
        points: torch.Tensor, valid: torch.BoolTensor, centers: torch.Tensor, labels: torch.LongTensor
    ) -> torch.BoolTensor:
        r"""
        The frame nearest each cluster's centre among that cluster's frames; ties (the two frames of a two-frame
        cluster are equally far from its mean) go to the earlier frame. Distances are taken element-wise, so the
        choice never depends on the batch a video is in.
        """
        num_videos, max_frames, _ = points.shape
        own_center = centers.gather(1, labels.clamp(min=0)[..., None].expand_as(points))
        distance = (points - own_center).square().sum(-1).masked_fill(~valid, float("inf"))
        slot = labels.masked_fill(~valid, centers.shape[1])  # padding goes to a discarded slot
        nearest = torch.full((num_videos, centers.shape[1] + 1), float("inf"), device=points.device)
        nearest = nearest.scatter_reduce(1, slot, distance, reduce="amin")
        is_nearest = valid & (distance == nearest.gather(1, slot))
        position = torch.arange(max_frames, device=points.device).expand(num_videos, -1)
        first = torch.full_like(nearest, max_frames, dtype=torch.long).scatter_reduce(
            1, slot, position.masked_fill(~is_nearest, max_frames), reduce="amin"
        )[:, :-1]
        is_representative = torch.zeros_like(valid)
        has_frames = first < max_frames
        rows = torch.arange(num_videos, device=points.device)[:, None].expand_as(first)
        is_representative[rows[has_frames], first[has_frames]] = True
        return is_representative

    def complete_scenes(
        self, points: torch.Tensor, valid: torch.BoolTensor, is_representative: torch.BoolTensor
    ) -> tuple[torch.BoolTensor, torch.LongTensor]:
        r"""
        Adds to each representative its r supplements from the frames since the previous representative, and
        numbers the scenes in time order.

        Args:
            points (`torch.Tensor` of shape `(num_videos, max_frames, dim)`): frame means.
            valid, is_representative (`torch.BoolTensor` of shape `(num_videos, max_frames)`)
        """
        num_videos, max_frames, _ = points.shape
        # Frames after representative i-1, up to and including representative i, belong to scene i.
        reps_before = torch.cumsum(is_representative.long(), 1) - is_representative.long()
        scene = reps_before.masked_fill(~valid, -1)
        num_scenes = is_representative.sum(1)
        scene = scene.masked_fill(scene >= num_scenes[:, None], -1)  # after the last representative: no scene
        unit = torch.nn.functional.normalize(points, dim=-1)
        rep_position = torch.where(is_representative, torch.arange(max_frames, device=points.device), max_frames)
        # The representative of each frame's scene is the first representative at or after it.
        next_rep = torch.flip(torch.cummin(torch.flip(rep_position, [1]), 1).values, [1]).clamp(max=max_frames - 1)
        similarity = (unit * unit.gather(1, next_rep[..., None].expand_as(unit))).sum(-1)
        if self.config.supplement_mode == "dissimilar":
            similarity = -similarity
        candidate = (scene >= 0) & ~is_representative
        rank = rank_within_groups(scene.masked_fill(~candidate, -1), similarity)
        chosen = candidate & (rank < self.config.supplements_per_scene)
        keep = is_representative | chosen
        return keep, scene.masked_fill(~keep, -1)


@strict
class FilaBipartiteSamplerConfig(PreTrainedConfig):
    r"""
    num_scenes (`int`, *optional*, defaults to 32):
        k, the number of even segments the video is cut into, one scene each.
    frames_per_scene (`int`, *optional*, defaults to 3):
        The frames each scene keeps (r + 1 in the K-Means sampler's terms, so both keep the same number).
    """

    model_type = "vidcomp_fila_bipartite_sampler"

    num_scenes: int = 32
    frames_per_scene: int = 3

    def __post_init__(self, **kwargs):
        if self.num_scenes < 1 or self.frames_per_scene < 1:
            raise ValueError(
                f"num_scenes and frames_per_scene must be at least 1, got {self.num_scenes}, {self.frames_per_scene}."
            )
        super().__post_init__(**kwargs)


@register_sampler
class FilaBipartiteSampler(FilaSceneSampler):
    r"""
    FiLA-Video's Appendix B alternative: bipartite soft matching (ToMe) within even segments.

    Each video is cut into k even segments (frame i of n goes to segment floor(i k / n)). In each round, a
    segment's remaining frames alternate into sets A and B; every A frame draws an edge to its most similar B frame (cosine of frame means);
    the A ends of the most similar edges merge into their partners and leave, as many as the segment is over
    `frames_per_scene` (at most all of A). Rounds repeat until every segment is down to `frames_per_scene`; a
    shorter segment keeps all its frames. The kept frames stay in time order, one scene per segment.
    """

    config: FilaBipartiteSamplerConfig

    def __init__(self, config: FilaBipartiteSamplerConfig):
        super().__init__(config)
        self.post_init()

    @property
    def frames_per_scene(self) -> int:
        return self.config.frames_per_scene

    def select_scenes(self, points: torch.Tensor, valid: torch.BoolTensor) -> tuple[torch.BoolTensor, torch.LongTensor]:
        num_videos, max_frames, _ = points.shape
        counts = valid.sum(1, keepdim=True)
        position = torch.arange(max_frames, device=points.device)[None, :].expand(num_videos, -1)
        segments = counts.clamp(max=self.config.num_scenes)
        segment = ((position * segments) // counts).masked_fill(~valid, -1)
        unit = torch.nn.functional.normalize(points, dim=-1)
        similarity = unit @ unit.transpose(1, 2)
        same_segment = segment[:, :, None] == segment[:, None, :]
        keep = valid.clone()
        while True:
            live_segment = segment.masked_fill(~keep, -1)
            size = torch.zeros_like(segment).scatter_add(1, live_segment.clamp(min=0), keep.long())
            excess = (size - self.config.frames_per_scene).clamp(min=0).gather(1, live_segment.clamp(min=0)) * keep
            if not excess.any():
                break
            # Alternate the remaining frames of each segment into A (even) and B (odd); dropped frames take no part.
            order_in_segment = (torch.cumsum(keep.long(), 1) - 1).masked_fill(~keep, max_frames)
            first_in_segment = torch.full_like(segment, max_frames).scatter_reduce(
                1, live_segment.clamp(min=0), order_in_segment, reduce="amin"
            )
            local = order_in_segment - first_in_segment.gather(1, live_segment.clamp(min=0))
            in_a, in_b = keep & (local % 2 == 0), keep & (local % 2 == 1)
            allowed = same_segment & in_a[:, :, None] & in_b[:, None, :]
            best = similarity.masked_fill(~allowed, float("-inf")).max(-1).values
            has_edge = in_a & torch.isfinite(best)
            rank = rank_within_groups(live_segment.masked_fill(~has_edge, -1), best)
            keep &= ~(has_edge & (rank < excess))
        return keep, segment.masked_fill(~keep, -1)


__all__ = [
    "FilaBipartiteSampler",
    "FilaSceneSampler",
    "FilaBipartiteSamplerConfig",
    "FilaKMeansSampler",
    "FilaKMeansSamplerConfig",
    "batched_kmeans",
    "initial_centers",
    "kmeans_plus_plus",
    "rank_within_groups",
]
