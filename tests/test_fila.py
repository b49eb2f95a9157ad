"""FiLA-Video: K-Means scene selection, bipartite selection, the four scene-merging compressors, presets and stage 4."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from transformers_vidcomp import InvalidVideoInputError, PackedFrames, TokenBudgetError
from transformers_vidcomp.modeling import (
    FilaAttentionPoolingCompressor,
    FilaAttentionPoolingConfig,
    FilaBipartiteMergeCompressor,
    FilaBipartiteMergeConfig,
    FilaBipartiteSampler,
    FilaBipartiteSamplerConfig,
    FilaKMeansSampler,
    FilaKMeansSamplerConfig,
    FilaTemporalAverageCompressor,
    FilaTemporalAverageConfig,
    FilaWeightedFusionCompressor,
    FilaWeightedFusionConfig,
)
from transformers_vidcomp.modeling.sampler_fila import batched_kmeans, kmeans_plus_plus


def packed(means_per_video, grid=2):
    """PackedFrames whose every patch equals its frame's mean vector, so frame means are exactly `means`."""
    values = torch.cat([m[:, None, None, :].expand(-1, grid, grid, -1) for m in means_per_video]).contiguous()
    counts = torch.tensor([len(m) for m in means_per_video])
    times = torch.cat([torch.arange(len(m), dtype=torch.float32) * 0.5 for m in means_per_video])
    return PackedFrames(values, counts, times)


def shots(lengths, dim=8, seed=0, noise=0.1):
    """Frame means of a video made of shots: one random direction per shot, plus small per-frame noise."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(len(lengths), dim, generator=generator) * 5
    return torch.cat([base[i] + noise * torch.randn(n, dim, generator=generator) for i, n in enumerate(lengths)])


def kmeans_sampler(**kwargs):
    return FilaKMeansSampler(FilaKMeansSamplerConfig(**kwargs))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 400), dim=st.integers(2, 64), k=st.integers(2, 12), seed=st.integers(0, 10_000))
def test_kmeans_matches_scikit_learn_from_the_same_initial_centres(n, dim, k, seed):
    rng = np.random.default_rng(seed)
    blobs = rng.normal(scale=4.0, size=(k, dim))
    points = (blobs[rng.integers(0, k, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    tensor, valid = torch.from_numpy(points)[None], torch.ones(1, n, dtype=torch.bool)
    init = kmeans_plus_plus(tensor, valid, k, torch.Generator().manual_seed(seed))
    centers, labels = batched_kmeans(tensor, valid, init, max_iter=300)
    reference = KMeans(k, init=init[0].double().numpy(), n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd")
    reference.fit(points.astype(np.float64))
    assert (labels[0].numpy() == reference.labels_).all()
    np.testing.assert_allclose(centers[0].numpy(), reference.cluster_centers_, atol=1e-3)


@pytest.mark.parametrize("sampler", [
    FilaKMeansSampler(FilaKMeansSamplerConfig(num_scenes=4, supplements_per_scene=2)),
    FilaBipartiteSampler(FilaBipartiteSamplerConfig(num_scenes=4, frames_per_scene=3)),
], ids=["kmeans", "bipartite"])
def test_selection_is_deterministic_and_independent_of_batch_mates(sampler):
    videos = [shots([4, 3], seed=2, dim=64), shots([12, 9, 15, 10], seed=1, dim=64), shots([2, 2, 1], seed=3, dim=64)]
    batch = packed(videos)
    together, again = sampler(batch, frame_features=batch), sampler(batch, frame_features=batch)
    assert torch.equal(together.keep_mask, again.keep_mask) and torch.equal(together.scene_ids, again.scene_ids)
    offset = 0
    for video in videos:  # padded or not, each video selects as it would alone
        alone = sampler(packed([video]), frame_features=packed([video]))
        assert torch.equal(together.keep_mask[offset:offset + len(video)], alone.keep_mask)
        assert torch.equal(together.scene_ids[offset:offset + len(video)], alone.scene_ids)
        offset += len(video)


def test_batched_kmeans_with_different_k_per_video_and_random_init_matches_scikit_learn():
    from transformers_vidcomp.modeling.sampler_fila import frame_means_by_video, initial_centers

    videos = [shots([30, 20, 25], seed=11, dim=16), shots([10, 12], seed=12, dim=16)]
    points, valid = frame_means_by_video(packed(videos))
    for init in ("random", "k-means++"):
        centers, center_valid = initial_centers(points, valid, torch.tensor([3, 2]), init, seed=4)
        final, labels = batched_kmeans(points, valid, centers, center_valid)
        for video, k in enumerate([3, 2]):
            n = len(videos[video])
            reference = KMeans(k, init=centers[video, :k].double().numpy(), n_init=1, tol=1e-4, algorithm="lloyd")
            reference.fit(points[video, :n].double().numpy())
            assert (labels[video, :n].numpy() == reference.labels_).all()
            np.testing.assert_allclose(final[video, :k].numpy(), reference.cluster_centers_, atol=1e-4)


def test_representatives_are_chronological_and_supplements_come_from_their_gap():
    means = shots([10, 10, 10], seed=3)
    out = kmeans_sampler(num_scenes=3, supplements_per_scene=2)(packed([means]), frame_features=packed([means]))
    kept = torch.nonzero(out.keep_mask).squeeze(1)
    scenes = out.scene_ids[kept]
    assert scenes.tolist() == sorted(scenes.tolist())  # scenes in time order
    representatives = [int(kept[scenes == s].max()) for s in range(3)]
    for s, representative in enumerate(representatives):
        previous = representatives[s - 1] if s else -1
        members = kept[scenes == s]
        assert ((members > previous) & (members <= representative)).all()
        assert len(members) <= 3
    # The representative of each shot is its frame nearest the shot's centre (shots are the clusters here).
    for s, (start, end) in enumerate([(0, 10), (10, 20), (20, 30)]):
        shot = means[start:end]
        assert representatives[s] == start + int((shot - shot.mean(0)).norm(dim=1).argmin())


def test_similar_and_dissimilar_supplements():
    # One scene whose representative is the last frame; the gap before it holds frames of known similarity.
    direction = torch.tensor([1.0, 0.0])
    angles = torch.tensor([0.1, 1.2, 0.3, 1.5, 0.05, 0.8])
    gap = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * 3
    means = torch.cat([gap, direction[None] * 3])
    frames = packed([means])
    sampler = kmeans_sampler(num_scenes=1, supplements_per_scene=2)
    chosen = lambda out: torch.nonzero(out.keep_mask).squeeze(1).tolist()  # noqa: E731
    out = sampler(frames, frame_features=frames)
    representative = chosen(out)[-1]
    similarity = torch.nn.functional.cosine_similarity(means, means[representative][None])
    gap_frames = [i for i in range(representative)]
    ranked = sorted(gap_frames, key=lambda i: -similarity[i])
    assert chosen(out) == sorted(ranked[:2] + [representative])
    dissimilar = kmeans_sampler(num_scenes=1, supplements_per_scene=2, supplement_mode="dissimilar")(
        frames, frame_features=frames)
    assert chosen(dissimilar) == sorted(ranked[-2:] + [representative])


def test_short_gaps_give_short_scenes_and_r_zero_keeps_representatives_only():
    means = shots([1, 6, 6], seed=4)
    frames = packed([means])
    out = kmeans_sampler(num_scenes=3, supplements_per_scene=4)(frames, frame_features=frames)
    sizes = torch.bincount(out.scene_ids[out.keep_mask]).tolist()
    assert sizes[0] == 1  # the first shot is one frame: nothing before its representative
    assert all(size <= 5 for size in sizes)
    only_reps = kmeans_sampler(num_scenes=3, supplements_per_scene=0)(frames, frame_features=frames)
    assert torch.bincount(only_reps.scene_ids[only_reps.keep_mask]).tolist() == [1, 1, 1]


def test_more_scenes_than_frames_and_identical_frames_and_nan():
    means = shots([2, 2], seed=5)
    frames = packed([means])
    out = kmeans_sampler(num_scenes=10)(frames, frame_features=frames)
    assert out.keep_mask.all() and out.scene_ids.tolist() == [0, 1, 2, 3]  # every frame its own scene
    same = packed([torch.ones(12, 8)])
    degenerate = kmeans_sampler(num_scenes=4, supplements_per_scene=2)(same, frame_features=same)
    assert int(degenerate.keep_mask.sum()) >= 1 and set(degenerate.scene_ids[degenerate.keep_mask].tolist()) == {0}
    broken = packed([torch.full((5, 8), float("nan"))])
    with pytest.raises(InvalidVideoInputError, match="NaN"):
        kmeans_sampler()(broken, frame_features=broken)


def test_config_validation():
    with pytest.raises(ValueError, match="num_scenes"):
        FilaKMeansSamplerConfig(num_scenes=0)
    with pytest.raises(ValueError, match="supplements_per_scene"):
        FilaKMeansSamplerConfig(supplements_per_scene=-1)


def reference_bipartite_selection(means: torch.Tensor, num_scenes: int, frames_per_scene: int) -> list[int]:
    """Appendix B written plainly: per segment, merge away A ends of the most similar edges until the target."""
    n, kept = len(means), []
    segments = [[i for i in range(n) if i * min(num_scenes, n) // n == s] for s in range(min(num_scenes, n))]
    for members in segments:
        members = list(members)
        while len(members) > frames_per_scene:
            a, b = members[::2], members[1::2]
            edges = []
            for i in a:
                scores = [float(torch.nn.functional.cosine_similarity(means[i], means[j], dim=0)) for j in b]
                edges.append((max(scores), i))
            remove = len(members) - frames_per_scene
            ranked = sorted(edges, key=lambda edge: -edge[0])  # stable: ties keep time order
            drop = {i for _, i in ranked[: min(remove, len(a))]}
            members = [i for i in members if i not in drop]
        kept += members
    return kept


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), scenes=st.integers(1, 6), per_scene=st.integers(1, 4), seed=st.integers(0, 999))
def test_bipartite_selection_matches_a_plain_reference(n, scenes, per_scene, seed):
    means = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
    frames = packed([means])
    out = FilaBipartiteSampler(FilaBipartiteSamplerConfig(num_scenes=scenes, frames_per_scene=per_scene))(
        frames, frame_features=frames)
    assert torch.nonzero(out.keep_mask).squeeze(1).tolist() == reference_bipartite_selection(means, scenes, per_scene)


def test_bipartite_selection_keeps_the_least_redundant_frames_per_segment():
    # Segment of 6 frames: three near-duplicates pairs; merging the most similar A->B edges leaves 3 frames.
    pairs = torch.tensor([[5.0, 0], [5.0, 0.01], [0, 5.0], [0.02, 5.0], [3.0, 3.0], [3.0, 3.1]])
    means = torch.cat([pairs, pairs * -1])
    frames = packed([means])
    out = FilaBipartiteSampler(FilaBipartiteSamplerConfig(num_scenes=2, frames_per_scene=3))(
        frames, frame_features=frames)
    kept = torch.nonzero(out.keep_mask).squeeze(1).tolist()
    assert kept == [1, 3, 5, 7, 9, 11]  # each A frame merged into its near-duplicate B partner
    assert out.scene_ids[out.keep_mask].tolist() == [0, 0, 0, 1, 1, 1]
    short = packed([means[:4]])
    few = FilaBipartiteSampler(FilaBipartiteSamplerConfig(num_scenes=2, frames_per_scene=3))(short, frame_features=short)
    assert few.keep_mask.all()  # segments of 2 frames keep both


# ---- merging ----


def scene_batch(scene_lengths, grid=2, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(scene_lengths)
    values = torch.randn(total, grid, grid, dim, generator=generator)
    scene_ids = torch.repeat_interleave(torch.arange(len(scene_lengths)), torch.tensor(scene_lengths))
    return PackedFrames(values, torch.tensor([total]), torch.arange(total, dtype=torch.float32)), scene_ids


def test_weighted_fusion_keeps_each_positions_total_weight_on_short_and_long_scenes():
    fusion = FilaWeightedFusionCompressor(FilaWeightedFusionConfig(scene_size=3, num_patches=4, hidden_size=8))
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([0.1, 0.1, 0.8])[:, None, None].expand(3, 4, 8))
    for length in (1, 2, 3, 5):
        weights = fusion.weights_for(length)
        assert weights.shape == (length, 4, 8)
        torch.testing.assert_close(weights.sum(0), torch.ones(4, 8))
    assert fusion.weights_for(2)[-1, 0, 0] > fusion.weights_for(2)[0, 0, 0]  # the representative keeps its weight


@pytest.mark.parametrize("lengths", [[3, 3, 3], [1, 3, 2], [5, 3]])
def test_untrained_weighted_fusion_averages_every_scene_whatever_its_length(lengths):
    features, scene_ids = scene_batch(lengths)
    fusion = FilaWeightedFusionCompressor(FilaWeightedFusionConfig(scene_size=3, num_patches=4, hidden_size=8))
    average = FilaTemporalAverageCompressor(FilaTemporalAverageConfig())
    fused, averaged = fusion(features, scene_ids=scene_ids), average(features, scene_ids=scene_ids)
    torch.testing.assert_close(fused.tokens, averaged.tokens)
    scenes = features.values.reshape(-1, 4, 8).split(lengths)
    torch.testing.assert_close(averaged.tokens, torch.cat([s.mean(0) for s in scenes]))
    # Each scene is stamped with its last frame, its representative.
    assert averaged.token_frame_index.view(len(lengths), 4)[:, 0].tolist() == (np.cumsum(lengths) - 1).tolist()


def test_weighted_fusion_is_eq_8_and_learns():
    features, scene_ids = scene_batch([3, 3])
    fusion = FilaWeightedFusionCompressor(FilaWeightedFusionConfig(scene_size=3, num_patches=4, hidden_size=8))
    with torch.no_grad():
        fusion.weight.copy_(torch.rand_like(fusion.weight))
    out = fusion(features, scene_ids=scene_ids).tokens.view(2, 4, 8)
    frames = features.values.reshape(2, 3, 4, 8)
    torch.testing.assert_close(out, (frames * fusion.weight).sum(1))
    out.sum().backward()
    assert fusion.weight.grad is not None and fusion.weight.grad.abs().sum() > 0
    with pytest.raises(InvalidVideoInputError, match="built for 729 patches"):
        FilaWeightedFusionCompressor(FilaWeightedFusionConfig())(features, scene_ids=scene_ids)


def test_attention_pooling_weights_frames_per_token_with_the_middle_frame_as_query():
    features, scene_ids = scene_batch([3])
    pooling = FilaAttentionPoolingCompressor(FilaAttentionPoolingConfig(hidden_size=8, key_size=6))
    frames = features.values.reshape(1, 3, 4, 8)
    q, k = pooling.query(frames[:, 1]), pooling.key(frames)
    weights = torch.softmax(torch.einsum("snk,smnk->smn", q, k) / 6**0.5, dim=1)
    expected = (weights[..., None] * frames).sum(1)
    torch.testing.assert_close(pooling(features, scene_ids=scene_ids).tokens, expected.reshape(4, 8))
    bound = (6 / (8 + 6)) ** 0.5  # Xavier-uniform range
    assert pooling.query.weight.abs().max() <= bound and pooling.query.weight.std() > bound / 4
    half = PackedFrames(features.values.bfloat16(), features.frame_counts, features.timestamps)
    assert pooling(half, scene_ids=scene_ids).tokens.dtype == torch.bfloat16  # bf16 features, fp32 projections


def reference_bipartite_merge(tokens: torch.Tensor, target: int) -> torch.Tensor:
    """Algorithm 1 written plainly, one merge at a time, as the independent reference; output in source order."""
    sums, sizes, origins = [t.clone() for t in tokens], [1.0] * len(tokens), list(range(len(tokens)))
    while len(sums) > target:
        current = [s / z for s, z in zip(sums, sizes)]
        a, b = current[::2], current[1::2]
        r = min(len(sums) - target, len(a))
        edges = []
        for i, token in enumerate(a):
            scores = [float(torch.nn.functional.cosine_similarity(token, other, dim=0)) for other in b]
            j = max(range(len(b)), key=lambda j: scores[j])
            edges.append((scores[j], i, j))
        order = sorted(range(len(a)), key=lambda i: -edges[i][0])
        merged, unmerged = order[:r], order[r:]
        sums_b, sizes_b, origins_b = sums[1::2], sizes[1::2], origins[1::2]
        for i in merged:
            j = edges[i][2]
            sums_b[j] = sums_b[j] + sums[::2][i]
            sizes_b[j] = sizes_b[j] + sizes[::2][i]
            origins_b[j] = min(origins_b[j], origins[::2][i])
        sums = [sums[::2][i] for i in unmerged] + sums_b
        sizes = [sizes[::2][i] for i in unmerged] + sizes_b
        origins = [origins[::2][i] for i in unmerged] + origins_b
    order = sorted(range(len(sums)), key=lambda i: origins[i])
    return torch.stack([sums[i] / sizes[i] for i in order])


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_bipartite_merge_matches_algorithm_1(length):
    features, scene_ids = scene_batch([length], grid=3, dim=5, seed=length)
    out = FilaBipartiteMergeCompressor(FilaBipartiteMergeConfig())(features, scene_ids=scene_ids)
    expected = reference_bipartite_merge(features.values.reshape(-1, 5), 9)
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=1e-5)


def test_multi_rate_mode_groups_consecutive_frames_and_budget_keeps_whole_scenes():
    # Stage 4: 96 uniform frames, every 3 consecutive merged into one, giving 32 frame features.
    features = PackedFrames(torch.randn(96, 2, 2, 8), torch.tensor([96]), torch.arange(96.0))
    out = FilaTemporalAverageCompressor(FilaTemporalAverageConfig(scene_size=3))(features)
    assert out.token_counts.tolist() == [32 * 4]
    torch.testing.assert_close(out.tokens[:4], features.values[:3].mean(0).reshape(4, 8))
    budgeted = FilaTemporalAverageCompressor(FilaTemporalAverageConfig())(features, token_budget=42)
    assert budgeted.token_counts.tolist() == [40]  # 10 whole scenes of 4 tokens
    with pytest.raises(TokenBudgetError, match="cannot hold one scene"):
        FilaTemporalAverageCompressor(FilaTemporalAverageConfig())(features, token_budget=3)


@pytest.mark.parametrize("sampler_cls, config", [
    (FilaKMeansSampler, FilaKMeansSamplerConfig(num_scenes=5, supplements_per_scene=2)),
    (FilaBipartiteSampler, FilaBipartiteSamplerConfig(num_scenes=5, frames_per_scene=3)),
])
@pytest.mark.parametrize("budget", [None, 9, 100])
def test_bounds_hold_for_scene_samplers(sampler_cls, config, budget):
    sampler = sampler_cls(config)
    means = shots([7, 5, 9, 3, 6], seed=7)
    frames = packed([means])
    out = sampler(frames, frame_features=frames)
    compressor = FilaTemporalAverageCompressor(FilaTemporalAverageConfig())
    kept = frames.select(out.keep_mask)
    tokens = compressor(kept, scene_ids=out.scene_ids[out.keep_mask], token_budget=budget).token_counts.item()
    assert int(out.keep_mask.sum()) <= sampler.max_kept_frames(len(means))
    assert tokens <= compressor.max_tokens(int(out.keep_mask.sum()), 2, 2, budget, sampler.max_scenes(len(means)))


# ---- presets, training, card ----


def test_fila_preset_runs_end_to_end_and_its_card_says_what_it_costs(tmp_path, demo_video):
    from transformers_vidcomp.conversion import CardInfo, render_model_card, token_figures
    from transformers_vidcomp.tiny import build_tiny

    model, processor = build_tiny("fila")
    messages = [{"role": "user", "content": [{"type": "video", "path": str(demo_video[0])},
                                             {"type": "text", "text": "What happens?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    card = render_model_card(model, processor, CardInfo(source="test", trained=False), repo_id="me/fila")
    figures = token_figures(model, processor)
    assert figures.tokens_per_video == 8 * 64  # 8 scenes of one 8x8 frame each
    assert "FiLA-Video" in card.text and "arXiv:2504.20384" in card.text
    assert f"**at most {figures.tokens_per_video}**" in card.text


def test_fila_stage4_trains_everything_at_the_papers_rates():
    from transformers_vidcomp.tiny import build_tiny
    from transformers_vidcomp.training import stage_parameter_groups

    model, _ = build_tiny("fila-multirate")
    groups = {group["name"]: group["lr"] for group in stage_parameter_groups(model, "fila-stage4")}
    assert groups == {"vision_tower": 2e-6, "compressor": 2e-6, "multi_modal_projector": 2e-6,
                      "language_model": 1e-5, "lm_head": 1e-5}
    optimizer = torch.optim.AdamW(stage_parameter_groups(model, "fila-stage4"))
    pixels = torch.randn(12, 3, 64, 64)
    ids = torch.tensor([[1, 2, model.config.video_token_id, 3, 4]])
    weight_before = model.model.compressor.weight.detach().clone()
    loss = model(input_ids=ids, pixel_values_videos=pixels, video_num_frames=torch.tensor([12]), labels=ids).loss
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.model.compressor.weight, weight_before)


def test_fila_checkpoint_exports_and_verifies_as_remote_code(tmp_path, capsys):
    from transformers_vidcomp.cli import main

    assert main(["create-tiny", str(tmp_path / "fila"), "--preset", "fila"]) == 0
    assert main(["export", str(tmp_path / "fila"), str(tmp_path / "hub")]) == 0
    assert "verified: reloaded with trust_remote_code" in capsys.readouterr().out
    assert {"sampler_fila.py", "compressor_fila.py"} <= {p.name for p in (tmp_path / "hub").iterdir()}


def test_multirate_prompt_states_the_sampled_frames_real_times(demo_video):
    from transformers_vidcomp.tiny import build_tiny

    _, processor = build_tiny("fila-multirate")
    messages = [{"role": "user", "content": [{"type": "video", "path": str(demo_video[0])},
                                             {"type": "text", "text": "What happens?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    prompt = processor.tokenizer.decode(inputs["input_ids"][0])
    times = inputs["video_timestamps"].tolist()
    assert len(times) == 40  # the 4 s demo clip at 10 fps, all under the 96-frame cap
    expected = f"This video samples 40 frames of a 4.0-second video at {times[0]:.1f}, {times[1]:.1f}"
    assert expected in prompt, prompt


def test_fila_demo_reports_and_draws_scenes(tmp_path, demo_video):
    from PIL import Image

    from transformers_vidcomp.demo import format_report, run_demo

    report = run_demo(demo_video[0], preset="fila", out_dir=tmp_path)
    assert report.scenes and sum(len(scene) for scene in report.scenes) == report.frames_kept
    assert report.frames_encoded == report.frames_decoded  # K-Means looks at every decoded frame
    assert "tokens per scene" in format_report(report)
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.height >= len(report.scenes) * 64  # a row per scene
