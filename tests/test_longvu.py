"""LongVU: DINOv2 temporal reduction, SVA, query-guided resolution mixing, STC with a budget guarantee, frame PE.

Parity tests read tests/fixtures/longvu/, numbers produced by the released Vision-CAIR/LongVU code (see its README).
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from transformers_vidcomp import CompressorOutput, InvalidVideoInputError, PackedFrames, TokenBudgetError
from transformers_vidcomp.conversion.longvu import released_compressor_key
from transformers_vidcomp.modeling import (
    InstructionCondition,
    LongVUCompressor,
    LongVUCompressorConfig,
    LongVUSampler,
    LongVUSamplerConfig,
)
from transformers_vidcomp.modeling.compressor_longvu import frame_position_encoding

FIXTURES = Path(__file__).parent / "fixtures" / "longvu"
TINY_DINO = dict(
    model_type="dinov2", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
    patch_size=4, image_size=16,
)


@pytest.fixture(scope="module")
def reference():
    return load_file(FIXTURES / "longvu_reference.safetensors"), json.loads((FIXTURES / "longvu_reference.json").read_text())


def sampler(**kwargs) -> LongVUSampler:
    kwargs = {"dino_config": TINY_DINO, "dino_image_size": 16, "feature_grid": 3, **kwargs}
    return LongVUSampler(LongVUSamplerConfig(**kwargs)).eval()


def compressor(**kwargs) -> LongVUCompressor:
    defaults = dict(
        vision_hidden_size=12, dino_hidden_size=16, sva_hidden_size=32, num_attention_heads=4, num_layers=2,
        query_side=4, kv_window=2, lowres_side=2,
    )
    return LongVUCompressor(LongVUCompressorConfig(**{**defaults, **kwargs})).eval()


def per_video(budget: int | None, features: PackedFrames) -> torch.LongTensor | None:
    """The same budget for every video, as `LongVUCompressor.video_budgets` gives it without a context_length."""
    return None if budget is None else torch.full((features.num_videos,), budget)


def packed(counts, *shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    counts = torch.tensor(counts)
    total = int(counts.sum())
    return PackedFrames(torch.randn(total, *shape, generator=generator), counts, torch.arange(total).float())


def kept_lists(frames: PackedFrames, keep: torch.Tensor) -> list[list[int]]:
    position = frames.position_in_video()
    return [position[keep & (frames.video_index() == v)].tolist() for v in range(frames.num_videos)]


# ---------------------------------------------------------------- temporal reduction


@pytest.mark.parametrize("threshold,key", [(0.83, "kept_indices"), (0.9, "kept_indices_threshold_0.9")])
def test_reference_mode_keeps_the_frames_the_released_select_frame_keeps(reference, threshold, key):
    tensors, meta = reference
    info = meta["select_frame"]
    features = tensors["select_frame.features"]
    counts = torch.tensor(info["frame_counts"])
    frames = PackedFrames(torch.zeros(features.shape[0], 3, 4, 4), counts, torch.arange(features.shape[0]).float())
    text = torch.tensor(info["text_lengths"]) - 1  # the release's prompt length includes the video placeholder
    mask = (torch.arange(int(text.max()))[None] < text[:, None]).long()
    instruction = InstructionCondition(torch.zeros(*mask.shape, 2), mask)
    model = sampler(
        mode="reference", threshold=threshold, context_length=info["context_length"],
        reserved_tokens=info["reserved_tokens"], tokens_per_frame=info["tokens_per_frame"],
    )
    assert (model.config.window_size, model.config.max_frames) == (16, 400)
    keep = model.select(frames, features, instruction)
    assert kept_lists(frames, keep) == info[key]


def loop_paper_scores(features: torch.Tensor, window: int) -> list[float]:
    """The paper's sim^i = 1/(J-1) sum_{j != i} cos(V^i, V^j), window after window."""
    flat = F.normalize(features.flatten(1).double(), dim=-1)
    scores = []
    for start in range(0, len(flat), window):
        segment = flat[start : start + window]
        gram = segment @ segment.T
        for i in range(len(segment)):
            scores.append(float("-inf") if len(segment) == 1 else float((gram[i].sum() - gram[i, i]) / (len(segment) - 1)))
    return scores


def test_paper_mode_drops_frames_by_mean_similarity_to_the_other_frames_of_their_window():
    model = sampler(mode="paper")
    assert (model.config.window_size, model.config.threshold, model.config.max_frames) == (8, 0.8, None)
    generator = torch.Generator().manual_seed(3)
    # Videos of 21 frames (two full windows and a partial one), 5 (shorter than a window) and 1 frame.
    base = torch.randn(3, 6, generator=generator)
    counts = [21, 5, 1]
    features = torch.cat([base[v] + torch.randn(n, 6, generator=generator) * s for v, (n, s) in enumerate(zip(counts, [0.6, 0.3, 1.0]))])
    frames = PackedFrames(torch.zeros(27, 3, 4, 4), torch.tensor(counts), torch.arange(27).float())
    keep = model.select(frames, features, None)
    expected = []
    for video, start in enumerate([0, 21, 26]):
        scores = loop_paper_scores(features[start : start + counts[video]], 8)
        kept = [i for i, s in enumerate(scores) if s <= 0.8]
        for window_start in range(0, counts[video], 8):
            window = range(window_start, min(window_start + 8, counts[video]))
            if not any(i in kept for i in window):
                kept.append(window[0])
        expected.append(sorted(kept))
    assert kept_lists(frames, keep) == expected
    assert any(len(k) < n for k, n in zip(expected, counts))  # the data does exercise drops
    assert expected[2] == [0]


def test_identical_frames_keep_one_frame_per_window():
    frames = PackedFrames(torch.zeros(30, 3, 4, 4), torch.tensor([20, 1, 9]), torch.arange(30).float())
    features = torch.ones(30, 2, 2, 3)
    assert kept_lists(frames, sampler(mode="paper").select(frames, features, None)) == [[0, 8, 16], [0], [0, 8]]
    # The release keeps each window's middle frame (index len // 2 of the window).
    reference = sampler(mode="reference", context_length=1, reserved_tokens=0)
    assert kept_lists(frames, reference.select(frames, features, None)) == [[8, 18], [0], [4]]


def test_reference_mode_skips_videos_that_fit_the_context_and_caps_the_rest():
    frames = PackedFrames(torch.zeros(12, 3, 4, 4), torch.tensor([6, 6]), torch.arange(12).float())
    features = torch.ones(12, 2)
    model = sampler(mode="reference", context_length=8 * 64 + 16, max_frames=1)
    mask = torch.tensor([[1] * 63 + [0] * 65, [1] * 127 + [0]]).long()
    keep = model.select(frames, features, InstructionCondition(torch.zeros(2, 128, 2), mask))
    # With the placeholder, 64 prompt tokens leave room for 7 frames (6 < 7): untouched. 128 leave 6: reduced, capped.
    assert kept_lists(frames, keep) == [list(range(6)), [3]]


def test_sampler_encodes_with_dinov2_from_siglip_normalised_pixels_and_passes_kept_features():
    model = sampler(mode="paper", feature_grid=3)
    frames = packed([3, 2], 3, 20, 20)
    with torch.no_grad():
        out = model(frames)
        pixels = frames.values * 0.5 + 0.5
        pixels = F.interpolate(pixels, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        hidden = model.dino(pixel_values=(pixels - mean[:, None, None]) / std[:, None, None]).last_hidden_state[:, 1:]
        grid = F.interpolate(hidden.reshape(5, 4, 4, 16).permute(0, 3, 1, 2), size=(3, 3), mode="bilinear")
    expected = grid.permute(0, 2, 3, 1)[out.keep_mask]
    torch.testing.assert_close(out.auxiliary_features.values, expected)
    assert out.auxiliary_features.frame_counts.tolist() == frames.count_per_video(out.keep_mask).tolist()


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_chunked_encoding_keeps_what_scoring_all_frames_at_once_keeps(mode):
    model = sampler(mode=mode, window_size=4, dino_batch_size=3, context_length=9 * 8, reserved_tokens=0,
                    tokens_per_frame=8, max_frames=5, threshold=0.5 if mode == "paper" else 0.6)
    frames = packed([11, 3, 1, 9], 3, 16, 16, seed=4)
    frames.values[5:9] = frames.values[5]  # a static stretch
    mask = torch.tensor([[1] * 20, [1] * 2 + [0] * 18, [1] * 20, [1] * 20]).long()
    instruction = InstructionCondition(torch.zeros(4, 20, 2), mask)  # video 1 fits the context in reference mode
    with torch.no_grad():
        out = model(frames, instruction=instruction)
        features = model.encode(frames.values)
    keep = model.select(frames, features, instruction)
    assert torch.equal(out.keep_mask, keep) and 0 < int(keep.sum()) < 24
    torch.testing.assert_close(out.auxiliary_features.values, features[keep])
    assert out.auxiliary_features.frame_counts.tolist() == frames.count_per_video(keep).tolist()
    torch.testing.assert_close(out.auxiliary_features.timestamps, frames.timestamps[keep])


def test_sampler_config_round_trips_and_refuses_bad_values(tmp_path):
    model = sampler(mode="reference")
    model.save_pretrained(tmp_path)
    loaded = LongVUSampler.from_pretrained(tmp_path)
    assert (loaded.config.mode, loaded.config.window_size, loaded.config.max_frames) == ("reference", 16, 400)
    torch.testing.assert_close(loaded.dino.embeddings.cls_token, model.dino.embeddings.cls_token)
    with pytest.raises(ValueError, match="threshold"):
        LongVUSamplerConfig(dino_config=TINY_DINO, threshold=1.5)
    with pytest.raises(ValueError, match="patch size"):
        LongVUSamplerConfig(dino_config=TINY_DINO, dino_image_size=18)


# ---------------------------------------------------------------- SVA


def test_sva_reproduces_the_released_connector_under_its_weights(reference):
    tensors, meta = reference
    info = meta["sva"]
    model = compressor(
        vision_hidden_size=info["siglip_dim"], dino_hidden_size=info["dino_dim"], sva_hidden_size=info["sva_hidden_size"],
        num_attention_heads=info["num_attention_heads"], num_layers=info["num_layers"], query_side=info["query_side"],
        kv_window=info["kv_window"],
    )
    released = {k.removeprefix("sva.weights."): v for k, v in tensors.items() if k.startswith("sva.weights.")}
    state = {released_compressor_key(k): v for k, v in released.items()}
    assert None not in state
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        fused = model.aggregate(tensors["sva.siglip"], tensors["sva.dino"])
    torch.testing.assert_close(fused.flatten(1, 2), tensors["sva.output"], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def letterbox_reference():
    folder = Path(__file__).parent / "fixtures" / "longvu"
    return load_file(folder / "longvu_letterbox.safetensors"), json.loads((folder / "longvu_letterbox.json").read_text())


def test_letterbox_bands_are_the_cells_the_release_masks_and_crops(letterbox_reference):
    from transformers_vidcomp.modeling.compressor_longvu import band_mask, letterbox_band

    tensors, meta = letterbox_reference
    # The release's callers pass (height, width), which it reads as (width, height): swapped sizes reproduce it.
    read = torch.tensor(meta["band_sizes"]).flip(-1)
    low_read = (torch.tensor(meta["band_sizes"]).double() / 1.5).floor().long().flip(-1)
    for key, sizes, side in (("mask_24", read, 24), ("crop_12", read, 12), ("crop_8", low_read, 8)):
        release = tensors[f"band.{key}"]
        # A band with nothing in it leaves the frame whole (the release falls back to the uncropped frame, and resets
        # fully masked windows to attend everything).
        expected = torch.where(release.flatten(1).any(1)[:, None, None], release, torch.ones_like(release))
        assert torch.equal(band_mask(letterbox_band(sizes, side), side), expected), key
    assert not tensors["band.crop_12"][6].any()  # (2, 1000): the release's crop is empty, so it keeps the frame


@pytest.mark.parametrize("swap,key", [(True, "as_called"), (False, "width_height")])
def test_sva_masks_letterbox_padding_as_the_release(reference, letterbox_reference, swap, key):
    tensors, meta = reference
    letterbox, letterbox_meta = letterbox_reference
    info = meta["sva"]
    model = compressor(
        vision_hidden_size=info["siglip_dim"], dino_hidden_size=info["dino_dim"], sva_hidden_size=info["sva_hidden_size"],
        num_attention_heads=info["num_attention_heads"], num_layers=info["num_layers"], query_side=info["query_side"],
        kv_window=info["kv_window"], swap_video_sizes=swap,
    )
    released = {k.removeprefix("sva.weights."): v for k, v in tensors.items() if k.startswith("sva.weights.")}
    model.load_state_dict({released_compressor_key(k): v for k, v in released.items()}, strict=True)
    picture, _ = model.picture_tokens(torch.tensor(letterbox_meta["sva_frame_sizes"]))  # one frame per video
    with torch.no_grad():
        fused = model.aggregate(tensors["sva.siglip"], tensors["sva.dino"], picture)
    torch.testing.assert_close(fused.flatten(1, 2), letterbox[f"sva_masked.{key}"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fused.flatten(1, 2)[:3], tensors["sva.output"][:3], atol=1e-3)  # the masks matter


def test_letterboxed_frames_are_cropped_to_their_picture_rows_in_every_regime():
    # (90, 160) on a 4x4 grid: the picture spans int(90 * 4 / 160) = 2 rows, so rows 1-2 of 4 stay (8 tokens of 16).
    model = compressor()
    features, aux = packed([4, 4], 8, 8, 12), packed([4, 4], 8, 8, 16)
    features.video_sizes = torch.tensor([[90, 160], [100, 100]])
    picture_grid, picture = model.picture_tokens(features.video_sizes)
    assert picture.high.view(2, 4, 4).any(2).tolist() == [[False, True, True, False], [True] * 4]
    with torch.no_grad():
        out = model(features, aux)
        fused = model.aggregate(features.values, aux.values, picture_grid[features.video_index()])
    assert out.token_counts.tolist() == [4 * 8, 4 * 16]
    assert out.statistics["tokens cropped as letterbox padding"] == 4 * 8
    expected = torch.cat([fused[:4, 1:3].flatten(0, 2), fused[4:].flatten(0, 2)])
    assert torch.equal(out.tokens, expected)
    frames = torch.cat([torch.arange(4).repeat_interleave(8), torch.arange(4).repeat_interleave(16)])
    assert torch.equal(out.token_frame_index, frames)
    # Eq. 1 counts the cropped frames' tokens: 4 frames of 8 high / 4 low tokens fit 2 high frames in 24, where
    # uncropped frames (16 / 4) would all be low.
    instruction = InstructionCondition(torch.randn(2, 3, 32), torch.ones(2, 3, dtype=torch.long))
    with torch.no_grad():
        mixed = model(features, aux, instruction, token_budget=24)
    assert mixed.token_counts.tolist() == [2 * 8 + 2 * 4, 16]
    # Overflowing at the high resolution, STC never keeps a padding token and the budget holds.
    stc = compressor(overflow_resolution="high", stc_threshold=1.0)
    with torch.no_grad():
        pruned = stc(features, aux, instruction, token_budget=9)
        grid = stc.aggregate(features.values, aux.values, picture_grid[features.video_index()])[:4, 1:3]
    assert pruned.token_counts.tolist() == [9, 9]
    shown = grid.flatten(0, 2)
    assert all(bool((shown == token).all(-1).any()) for token in pruned.tokens[:9])


def test_each_sva_query_attends_only_its_own_window_in_both_attention_implementations():
    model = compressor(num_layers=2)
    generator = torch.Generator().manual_seed(0)
    siglip, dino = torch.randn(1, 8, 8, 12, generator=generator), torch.randn(1, 8, 8, 16, generator=generator)
    touched_siglip, touched_dino = siglip.clone(), dino.clone()
    touched_siglip[0, :2, :2] += 5.0  # the 2x2 SigLIP window of query (0, 0)
    touched_dino[0, 6:, 6:] += 5.0  # the 2x2 DINOv2 window of query (3, 3)
    outputs = {}
    with torch.no_grad():
        for layer in model.aggregator.layers:
            layer.proj_context.weight.zero_()  # the frame-wide mean context reaches every query; set it aside
        for implementation in ("eager", "sdpa"):
            model.config._attn_implementation = implementation
            outputs[implementation] = (model.aggregate(siglip, dino), model.aggregate(touched_siglip, touched_dino))
    before, after = outputs["eager"]
    moved = (after - before).abs().amax(-1) > 1e-6
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, 0, 0] = expected[0, 3, 3] = True
    assert torch.equal(moved, expected)
    torch.testing.assert_close(outputs["sdpa"][0], before, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- resolution mixing


@pytest.mark.parametrize("budget", [48, 50, 60, 90, 107])
def test_mixing_gives_high_resolution_to_the_frames_the_release_picks(reference, budget):
    tensors, meta = reference
    low, text = tensors["mix.low"], tensors["mix.text"]
    model = compressor(query_side=3, lowres_side=2)  # 9 and 4 tokens per frame, as in the fixture
    features = PackedFrames(torch.zeros(12, 1, 1, 1), torch.tensor([12]), torch.arange(12).float())
    instruction = InstructionCondition(text[None], torch.ones(1, text.shape[0], dtype=torch.long))
    is_high, overflow = model.plan_resolution(features, low, instruction, per_video(budget, features))
    assert not overflow.any()
    assert torch.nonzero(is_high).flatten().tolist() == meta["mix"]["high_frames_by_budget"][str(budget)]


def test_resolution_regimes_and_relevance_options():
    model = compressor(query_side=3, lowres_side=2)
    counts = torch.tensor([4, 4, 4])
    features = PackedFrames(torch.zeros(12, 1, 1, 1), counts, torch.arange(12).float())
    text = torch.zeros(3, 2, 5)
    text[..., 0], text[..., 1] = 1.0, 0.01
    # Frame f has a large component 10 f off the text's direction; the text's direction gets 0.5 in each video's
    # frame 1 and 0.1 elsewhere.
    low = torch.zeros(12, 4, 5)
    low[:, :, 1] = torch.arange(12).float()[:, None] * 10
    low[:, :, 0] = torch.tensor([0.1, 0.5, 0.1, 0.1] * 3)[:, None]
    instruction = InstructionCondition(text, torch.ones(3, 2, dtype=torch.long))
    # A budget of 26 per video: 4 low frames take 16, leaving room for 2 high ones (5 more tokens each).
    is_high, overflow = model.plan_resolution(features, low, instruction, per_video(26, features))
    assert is_high.view(3, 4).sum(1).tolist() == [2, 2, 2] and not overflow.any()
    # The raw dot product follows the large norms (scores 0.1, 0.6, 0.3, 0.4 in the first video).
    assert is_high.view(3, 4).tolist() == [[False, True, False, True]] * 3
    model.config.relevance = "cosine"
    cosine_high, _ = model.plan_resolution(features, low, instruction, per_video(26, features))
    # Cosine follows the direction: frame 0 (all along the text) and frame 1 (the 0.5 frame) in the first video.
    assert cosine_high.view(3, 4)[0].tolist() == [True, True, False, False]
    assert model.plan_resolution(features, low, instruction, per_video(36, features))[0].all()  # all high: 4 x 9 <= 36
    assert not model.plan_resolution(features, low, instruction, per_video(16, features))[0].any()  # all low, fits exactly
    _, overflow = model.plan_resolution(features, low, instruction, per_video(15, features))
    assert overflow.all()
    # Without an instruction the high-resolution frames are spread evenly.
    spread, _ = model.plan_resolution(features, low, None, per_video(26, features))
    assert spread.view(3, 4)[0].tolist() == [True, False, True, False]


def test_low_resolution_by_bilinear_interpolation_or_pooling():
    generator = torch.Generator().manual_seed(0)
    siglip, dino = torch.randn(2, 8, 8, 12, generator=generator), torch.randn(2, 8, 8, 16, generator=generator)
    features, aux = PackedFrames(siglip, torch.tensor([2]), torch.arange(2.0)), PackedFrames(dino, torch.tensor([2]), torch.arange(2.0))
    for mode in ("bilinear", "pool"):
        model = compressor(lowres_mode=mode, query_side=4, lowres_side=2)
        with torch.no_grad():
            out = model(features, aux, token_budget=8)  # 2 frames x 4 low tokens: all low
            fused = model.aggregate(siglip, dino).permute(0, 3, 1, 2)
        if mode == "bilinear":
            expected = F.interpolate(fused, size=(2, 2), mode="bilinear", align_corners=False)
        else:
            expected = F.avg_pool2d(fused, 2)
        torch.testing.assert_close(out.tokens, expected.permute(0, 2, 3, 1).flatten(0, 2))


# ---------------------------------------------------------------- spatial token compression


def stc_inputs(counts, budget):
    features = PackedFrames(torch.zeros(sum(counts), 1, 1, 1), torch.tensor(counts), torch.arange(sum(counts)).float())
    return features.video_index(), features.position_in_video(), features.frame_counts, per_video(budget, features)


@pytest.mark.parametrize("threshold", [0.7, 0.8])
def test_stc_prunes_the_tokens_the_release_prunes(reference, threshold):
    tensors, meta = reference
    tokens = tensors["stc.tokens"]
    counts = meta["stc"]["frame_counts"]
    model = compressor(stc_threshold=threshold)
    keep, pruned = model.spatial_token_compression(tokens, *stc_inputs(counts, 10**6))
    release_keep = tensors[f"stc.keep_{threshold}"].bool()
    assert torch.equal(keep, release_keep) and torch.equal(pruned, ~release_keep)
    assert 0 < int(pruned.sum()) < pruned.numel()


def test_stc_budget_guarantee_drops_the_most_redundant_tokens_then_whole_windows():
    model = compressor(stc_window=4, stc_threshold=0.99)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(8, 4, 6, generator=generator)
    tokens[1:4] = tokens[0] + 0.5 * torch.randn(3, 4, 6, generator=generator)  # window 0: similar to its anchor
    similarity = F.cosine_similarity(tokens, tokens[torch.arange(8) // 4 * 4], dim=-1).flatten()
    keep, pruned = model.spatial_token_compression(tokens, *stc_inputs([8], 13))
    assert int(keep.sum()) == 13 and not pruned.any()
    keep = keep.flatten()
    anchors = (torch.arange(8) % 4 == 0).repeat_interleave(4)
    assert keep[anchors].all()
    # The 5 kept non-anchor tokens are the 5 least similar to their anchors.
    assert set(torch.nonzero(keep & ~anchors).flatten().tolist()) == set(
        torch.nonzero(~anchors).flatten()[similarity[~anchors].argsort()[:5]].tolist()
    )
    keep, _ = model.spatial_token_compression(tokens, *stc_inputs([8], 7))
    assert torch.nonzero(keep.flatten()).flatten().tolist() == [0, 1, 2, 3]  # 2 anchors do not fit: one window's anchor


def test_stc_similarities_in_chunks_equal_one_pass(monkeypatch):
    import transformers_vidcomp.modeling.compressor_longvu as longvu

    model = compressor(stc_window=3, stc_threshold=0.3)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randn(11, 5, 6, generator=generator).to(torch.bfloat16)
    counts = [4, 7]
    whole = model.spatial_token_compression(tokens, *stc_inputs(counts, 40))
    # 2 frames per chunk: windows and videos straddle the chunks, and anchors lie in earlier chunks.
    monkeypatch.setattr(longvu, "CHUNK_BYTES", 2 * 5 * 6 * 4)
    assert longvu.frames_per_chunk(tokens) == 2
    chunked = model.spatial_token_compression(tokens, *stc_inputs(counts, 40))
    anchor = torch.tensor([0, 0, 0, 3, 4, 4, 4, 7, 7, 7, 10])
    expected = F.cosine_similarity(tokens.float(), tokens.float()[anchor], dim=-1)
    torch.testing.assert_close(longvu.cosine_to_anchor(tokens, anchor), expected, rtol=0, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked))


@pytest.mark.parametrize("budget", [None, 100, 30])  # all high; mixed; video 0 mixed and video 1 overflowing at high
def test_assemble_takes_the_high_tokens_of_the_chosen_frames_or_of_every_frame(monkeypatch, budget):
    import transformers_vidcomp.modeling.compressor_longvu as longvu

    model = compressor(overflow_resolution="high")
    features = PackedFrames(torch.zeros(12, 1, 1, 1), torch.tensor([3, 9]), torch.arange(12).float())
    generator = torch.Generator().manual_seed(2)
    high = torch.randn(12, model.high_tokens, 8, generator=generator)
    low = torch.randn(12, model.low_tokens, 8, generator=generator)
    instruction = InstructionCondition(torch.randn(2, 3, 8, generator=generator), torch.ones(2, 3, dtype=torch.long))
    is_high, overflow = model.plan_resolution(features, low, instruction, per_video(budget, features))
    assert overflow.tolist() == [False, budget == 30]
    monkeypatch.setattr(longvu, "CHUNK_BYTES", 4 * high[0].numel())  # rows are gathered one frame at a time
    every = model.assemble(features, high, low, is_high, overflow, per_video(budget, features))
    compact = model.assemble(features, high[is_high], low, is_high, overflow, per_video(budget, features))
    assert torch.equal(every.tokens, compact.tokens) and torch.equal(every.token_counts, compact.token_counts)
    frames = range(3) if bool(overflow.any()) else range(12)
    expected = torch.cat([(high if is_high[f] else low)[f] for f in frames])
    assert torch.equal(every.tokens[: expected.shape[0]], expected)


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=3),
    budget=st.integers(4, 300),
    threshold=st.floats(-1.0, 1.0),
    overflow_resolution=st.sampled_from(["low", "high"]),
    seed=st.integers(0, 1000),
)
def test_no_video_ever_exceeds_the_budget(counts, budget, threshold, overflow_resolution, seed):
    model = compressor(stc_threshold=threshold, overflow_resolution=overflow_resolution, num_layers=1)
    features, aux = packed(counts, 8, 8, 12, seed=seed), packed(counts, 8, 8, 16, seed=seed + 1)
    instruction = InstructionCondition(torch.randn(len(counts), 3, 32), torch.ones(len(counts), 3, dtype=torch.long))
    with torch.no_grad():
        out = model(features, aux, instruction, token_budget=budget)
    assert (out.token_counts <= budget).all() and (out.token_counts >= 1).all()
    assert out.tokens.shape[0] == int(out.token_counts.sum()) == out.token_frame_index.shape[0]
    assert model.max_tokens(max(counts), 8, 8, budget) >= int(out.token_counts.max())
    # Tokens stay in time order within each video.
    video = torch.repeat_interleave(torch.arange(len(counts)), out.token_counts)
    for v in range(len(counts)):
        index = out.token_frame_index[video == v]
        assert (index[1:] >= index[:-1]).all()


def prompts(lengths: list[int], width: int = 32, seed: int = 0) -> InstructionCondition:
    """Right-padded instructions of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return InstructionCondition(torch.randn(len(lengths), max(lengths), width, generator=generator), mask)


def test_context_length_sizes_each_video_budget_by_its_own_prompt_as_released():
    model = compressor(context_length=100, reserved_tokens=16)
    instruction = prompts([10, 30])
    # L = context - prompt text - reserved answer tokens, per video (the release's max_visual_len).
    assert model.video_budgets(2, instruction, None).tolist() == [100 - 10 - 16, 100 - 30 - 16]
    assert model.video_budgets(2, instruction, 60).tolist() == [60, 54]
    assert model.video_budgets(2, None, None).tolist() == [84, 84]
    with torch.no_grad():
        out = model(packed([6, 6], 8, 8, 12), packed([6, 6], 8, 8, 16), instruction)
    # 6 frames of 16 high / 4 low tokens: k = (L - 24) // 12 high frames, so 4 (72 tokens) and 2 (48 tokens).
    assert out.token_counts.tolist() == [4 * 16 + 2 * 4, 2 * 16 + 4 * 4]
    with pytest.raises(TokenBudgetError, match="Shorten the prompt"):
        compressor(context_length=40)(packed([2], 8, 8, 12), packed([2], 8, 8, 16), prompts([30]))


def test_videos_of_one_prompt_split_what_it_leaves_of_the_context():
    model = compressor(context_length=100, reserved_tokens=16)
    instruction = prompts([10, 10, 10, 30])
    instruction.videos_in_prompt = torch.tensor([3, 3, 3, 1])  # three videos in the first prompt, one in the second
    assert model.video_budgets(4, instruction, None).tolist() == [(100 - 10 - 16) // 3] * 3 + [100 - 30 - 16]
    crowded = prompts([10] * 4)
    crowded.videos_in_prompt = torch.tensor([4, 4, 4, 4])  # 100 - 10 - 16 = 74 tokens: 18 each
    assert model.video_budgets(4, crowded, None).tolist() == [18] * 4
    with pytest.raises(TokenBudgetError, match="leaves 3 tokens .* for each of its 4 videos"):  # 14 // 4, below 4 low tokens
        compressor(context_length=40, reserved_tokens=16).video_budgets(4, crowded, None)


def test_videos_overflowing_at_different_resolutions_compress_as_they_would_alone():
    # Budgets 39 and 12: both videos overflow (10 frames x 4 low tokens); the first stays at 16 high tokens a frame,
    # the second has no room for one high frame and goes low. No token is above the threshold of 1, so the budget
    # guarantee trims both to exactly their budgets.
    model = compressor(context_length=68, reserved_tokens=0, overflow_resolution="high", stc_threshold=1.0)
    generator = torch.Generator().manual_seed(3)
    high, low = torch.randn(20, 16, 8, generator=generator), torch.randn(20, 4, 8, generator=generator)
    instruction = prompts([29, 56], width=8)

    def compress(videos: list[int]) -> CompressorOutput:
        rows = torch.cat([torch.arange(10 * video, 10 * video + 10) for video in videos])
        features = PackedFrames(torch.zeros(len(rows), 1, 1, 1), torch.tensor([10] * len(videos)), rows.float())
        prompt = InstructionCondition(instruction.embeds[videos], instruction.attention_mask[videos])
        budget = model.video_budgets(len(videos), prompt, None)
        is_high, overflow = model.plan_resolution(features, low[rows], prompt, budget)
        return model.assemble(features, high[rows][is_high], low[rows], is_high, overflow, budget)

    both, alone = compress([0, 1]), [compress([0]), compress([1])]
    assert both.token_counts.tolist() == [39, 12]
    assert both.statistics["frames at high resolution"] == 10 and both.statistics["tokens cut to meet the budget"] > 0
    for field in ("tokens", "token_frame_index", "token_timestamps"):
        assert torch.equal(getattr(both, field), torch.cat([getattr(out, field) for out in alone]))


def test_identical_frames_shrink_to_the_anchors():
    model = compressor(stc_window=8)
    features = PackedFrames(torch.ones(10, 8, 8, 12), torch.tensor([10]), torch.arange(10.0))
    aux = PackedFrames(torch.ones(10, 8, 8, 16), torch.tensor([10]), torch.arange(10.0))
    with torch.no_grad():
        out = model(features, aux, token_budget=30)  # 10 low frames need 40 tokens: overflow
    assert out.token_counts.tolist() == [8]  # the anchors of frames 0 and 8, 4 tokens each
    assert out.token_frame_index.tolist() == [0] * 4 + [8] * 4
    assert out.statistics["tokens pruned by STC"] == 32


def test_row_newlines_follow_every_row_and_count_in_the_budget():
    model = compressor(newline_size=32, query_side=4, lowres_side=2)
    features, aux = packed([3], 8, 8, 12), packed([3], 8, 8, 16)
    assert (model.high_tokens, model.low_tokens) == (20, 6)
    with torch.no_grad():
        out = model(features, aux, token_budget=60)  # 3 x 20 tokens: all high
        fused = model.aggregate(features.values, aux.values)
    grid = out.tokens.view(3, 4, 5, 32)
    torch.testing.assert_close(grid[:, :, 4], model.image_newline.detach().expand(3, 4, 32))
    torch.testing.assert_close(grid[:, :, :4], fused)
    with torch.no_grad():
        mixed = model(features, aux, token_budget=40)  # 3 x 6 low = 18, room for (40 - 18) // 14 = 1 high frame
    assert mixed.token_counts.tolist() == [20 + 6 + 6]
    with pytest.raises(TokenBudgetError):
        model(features, aux, token_budget=5)


# ---------------------------------------------------------------- frame position encoding, errors


def test_frame_position_encoding_is_eq_3_not_the_released_cos_of_sin(reference):
    tensors, _ = reference
    encoding = frame_position_encoding(torch.arange(5.0), 8)
    t = torch.arange(5.0)[:, None]
    frequency = 10000 ** (-2 * torch.arange(4.0) / 8)
    torch.testing.assert_close(encoding[:, 0::2], torch.sin(t * frequency))
    torch.testing.assert_close(encoding[:, 1::2], torch.cos(t * frequency))
    release = tensors["frame_pos.release"]
    torch.testing.assert_close(release[:, 0::2], encoding[:, 0::2])  # the even channels agree
    torch.testing.assert_close(release[:, 1::2], torch.cos(encoding[:, 0::2]))  # the odd ones are cos(sin(x))
    model = compressor(frame_position_encoding=True)
    features, aux = packed([3], 8, 8, 12), packed([3], 8, 8, 16)
    with torch.no_grad():
        plain = compressor()
        plain.load_state_dict(model.state_dict())
        difference = model(features, aux).tokens - plain(features, aux).tokens
    expected = frame_position_encoding(features.timestamps, 32).repeat_interleave(16, dim=0)
    torch.testing.assert_close(difference, expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_get_clear_errors():
    model = compressor()
    features, aux = packed([3, 2], 8, 8, 12), packed([2, 3], 8, 8, 16)
    with pytest.raises(InvalidVideoInputError, match="same kept frames"):
        model(features, aux)
    with pytest.raises(InvalidVideoInputError, match="auxiliary_features"):
        model(features)
    with pytest.raises(TokenBudgetError, match="low resolution"):
        model(features, packed([3, 2], 8, 8, 16), token_budget=3)
    with pytest.raises(InvalidVideoInputError, match="projector"):
        instruction = InstructionCondition(torch.randn(2, 3, 7), torch.ones(2, 3, dtype=torch.long))
        model(features, packed([3, 2], 8, 8, 16), instruction, token_budget=40)
    with pytest.raises(ValueError, match="lowres_side"):
        LongVUCompressorConfig(query_side=4, lowres_side=4)
    with pytest.raises(InvalidVideoInputError, match=r"DINOv2 features as \(frames, height, width, 16\)"):
        model(features, packed([3, 2], 8, 8, 24))  # a DINOv2 wider than the compressor was built for
    with pytest.raises(InvalidVideoInputError, match=r"main tower's features as \(frames, height, width, 12\)"):
        model(packed([3, 2], 8, 8, 10), packed([3, 2], 8, 8, 16))


# ---------------------------------------------------------------- composite model, preset, demo


def test_longvu_preset_runs_end_to_end_within_its_budget(demo_video):
    from transformers_vidcomp.conversion import CardInfo, render_model_card, token_figures
    from transformers_vidcomp.tiny import build_tiny

    model, processor = build_tiny("longvu")
    assert model.model.compressor.projection == "inside"
    messages = [{"role": "user", "content": [{"type": "video", "path": str(demo_video[0])},
                                             {"type": "text", "text": "What happens?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        features = model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_num_frames"], inputs["video_timestamps"],
            instruction=model.model.instruction_condition(inputs["input_ids"], inputs["attention_mask"]),
            video_token_budget=200,
        )
    assert int(features.token_counts.sum()) <= 200
    assert features.pooler_output.shape == (int(features.token_counts.sum()), model.config.text_config.hidden_size)
    assert int(features.keep_mask.sum()) >= 1
    generated = model.generate(**inputs, max_new_tokens=2)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    card = render_model_card(model, processor, CardInfo(source="test", trained=False), repo_id="me/longvu")
    assert "LongVU" in card.text and "arXiv:2410.17434" in card.text
    assert token_figures(model, processor).tokens_per_video == 1024


def test_two_videos_in_one_prompt_fit_the_context_together(demo_video):
    from transformers_vidcomp.tiny import build_tiny

    model, processor = build_tiny("longvu")
    compressor_config = model.model.compressor.config
    compressor_config.context_length, compressor_config.reserved_tokens = 600, 16
    video = {"type": "video", "path": str(demo_video[0])}
    messages = [{"role": "user", "content": [video, video, {"type": "text", "text": "Which differs?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    text_tokens = int(inputs["attention_mask"].sum()) - 2  # the two placeholders are not text
    assert out.video_outputs.token_counts.shape == (2,)
    assert int(out.video_outputs.token_counts.sum()) <= 600 - text_tokens - 16
    assert out.video_outputs.token_counts[0] == out.video_outputs.token_counts[1]  # the same video gets the same half


def test_a_later_turn_on_the_expanded_prompt_keeps_the_budget_of_one_video():
    from conftest import random_videos
    from transformers_vidcomp.tiny import build_tiny

    model, processor = build_tiny("longvu")
    compressor_config = model.model.compressor.config
    compressor_config.context_length, compressor_config.reserved_tokens = 600, 16
    tokenizer, video_token = processor.tokenizer, model.config.video_token_id
    pixels, counts, times = random_videos([8], seed=1)
    video = dict(pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)
    prompt = tokenizer(["<|im_start|>user\n<video>What happens?<|im_end|>\n<|im_start|>assistant\n"],
                       return_tensors="pt")
    with torch.no_grad():
        first = model.generate(**prompt, **video, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        counts = model(**prompt, **video).video_outputs.token_counts
        first_expanded, _, _ = model.model.expand_video_placeholders(first, None, None, counts)
        follow_up = tokenizer(["<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"],
                              return_tensors="pt").input_ids
        expanded = torch.cat([first_expanded, follow_up], 1)  # the first turn's video tokens, one placeholder each
        instruction = model.model.instruction_condition(expanded, num_videos=1)
        assert instruction.embeds.shape[0] == 1 and instruction.videos_in_prompt.tolist() == [1]
        prefill_lengths = []
        hook = model.model.language_model.register_forward_pre_hook(
            lambda module, args, kwargs: prefill_lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
        )
        try:
            second = model.generate(input_ids=expanded, attention_mask=torch.ones_like(expanded), **video,
                                    max_new_tokens=3, min_new_tokens=3, do_sample=False)
        finally:
            hook.remove()
    # The expanded video is read as it is, not expanded again, and comes back as given.
    assert prefill_lengths[0] == expanded.shape[1]
    assert second[:, : expanded.shape[1]].tolist() == expanded.tolist()
    # Two expanded videos with no text between them cannot be told apart.
    run = torch.full((1, 5), video_token)
    with pytest.raises(InvalidVideoInputError, match="10 video placeholder tokens in 1 runs for 2 videos"):
        model.model.instruction_condition(torch.cat([run, run], 1), num_videos=2)
    # Unexpanded placeholders may sit side by side: each is one video.
    adjacent = model.model.instruction_condition(torch.tensor([[7, video_token, video_token, 8]]), num_videos=2)
    assert adjacent.videos_in_prompt.tolist() == [2, 2]


def test_longvu_projector_is_applied_once_inside_the_compressor():
    from transformers_vidcomp.tiny import build_tiny

    model, _ = build_tiny("longvu")
    inner = model.model
    pixels = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        features = inner.get_video_features(pixels, torch.tensor([5]))
        sampled = inner.sampler(PackedFrames(pixels, torch.tensor([5]), torch.arange(5.0)))
        kept = pixels[sampled.keep_mask]
        siglip = PackedFrames(inner.encode_frames(kept), sampled.auxiliary_features.frame_counts,
                              sampled.auxiliary_features.timestamps)
        direct = inner.compressor(siglip, sampled.auxiliary_features)  # no projector: SVA width
    torch.testing.assert_close(features.pooler_output, inner.multi_modal_projector(direct.tokens))


def test_longvu_demo_reports_dropped_frames_resolutions_and_stc(tmp_path, demo_video):
    from transformers_vidcomp.demo import format_report, run_demo

    report = run_demo(demo_video[0], preset="longvu", out_dir=tmp_path, max_new_tokens=2)
    stats = report.compressor_statistics
    assert stats["frames at high resolution"] + stats["frames at low resolution"] == report.frames_kept
    assert {"tokens pruned by STC", "tokens cut to meet the budget"} <= set(stats)
    text = format_report(report)
    assert f"{report.frames_decoded - report.frames_kept} dropped" in text
    assert "frames at low resolution" in text and "tokens pruned by STC" in text
    assert report.tokens_to_llm <= 1024


def test_longvu_checkpoint_exports_and_verifies_as_remote_code(tmp_path, capsys):
    from transformers_vidcomp.cli import main

    assert main(["create-tiny", str(tmp_path / "longvu"), "--preset", "longvu"]) == 0
    assert main(["export", str(tmp_path / "longvu"), str(tmp_path / "hub")]) == 0
    assert "verified: reloaded with trust_remote_code" in capsys.readouterr().out
    assert {"sampler_longvu.py", "compressor_longvu.py"} <= {p.name for p in (tmp_path / "hub").iterdir()}


# ---------------------------------------------------------------- conversion of the released layout


def released_checkpoint(folder: Path) -> dict:
    """A tiny folder in the released Vision-CAIR/LongVU_Qwen2 layout, with random weights; returns its tensors."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from transformers_vidcomp.tiny import IM_END, IM_START, TINY_TEXT, build_tiny_tokenizer

    folder.mkdir()
    tokenizer = build_tiny_tokenizer(special_tokens=(IM_START, IM_END))
    tokenizer.save_pretrained(folder)
    text = {k: v for k, v in TINY_TEXT.items() if k != "model_type"}
    config = {
        **Qwen2Config(**text, vocab_size=576).to_dict(), "model_type": "cambrian_qwen", "architectures": ["CambrianQwenForCausalLM"],
        "mm_projector_type": "sva", "image_token_len": 16, "query_num_list": [16], "num_query_group": 1,
        "connector_depth": 2, "connector_only": True, "highres": True, "lowres_token": 2, "dino_threshold": 0.83,
        "drop_threshold": 0.7, "frame_pos": False, "vision_hidden_size": 32, "tokenizer_model_max_length": 1024,
        "mm_vision_tower_aux_list": ["siglip/CLIP-ViT-SO400M-14-384", "facebook/dinov2-giant-res378"],
        "mm_vision_tower_aux_token_len_list": [64, 64],
    }
    (folder / "config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(0)
    llm = Qwen2ForCausalLM(Qwen2Config(**text, vocab_size=576))
    tensors = {k: v.clone() for k, v in llm.state_dict().items()}
    c, h = 32, TINY_TEXT["hidden_size"]

    def add(name, *shape):
        tensors[name] = torch.randn(*shape, generator=generator)

    for tower, width in ((0, 64), (1, 32)):  # SigLIP (tiny width 64), DINOv2 (tiny width 32)
        prefix = f"model.mm_projector_aux_{tower}"
        add(f"{prefix}.0.weight", c, width), add(f"{prefix}.0.bias", c), add(f"{prefix}.2.weight", c, c)
        add(f"{prefix}.2.bias", c), add(f"{prefix}.3.weight", c), add(f"{prefix}.3.bias", c)
    for layer in range(2):
        prefix = f"model.vision_sampler_0.layers.{layer}"
        add(f"{prefix}.proj_context.weight", c, c), add(f"{prefix}.proj_in.weight", c, 2 * c)
        add(f"{prefix}.proj_out.linear_1.weight", c, c), add(f"{prefix}.proj_out.linear_2.weight", c, c)
        add(f"{prefix}.norm.weight", c), add(f"{prefix}.norm.bias", c)
        for proj in ("q_proj", "k_proj_0", "k_proj_1", "v_proj_0", "v_proj_1"):
            add(f"{prefix}.cross_attn.{proj}.0.weight", c), add(f"{prefix}.cross_attn.{proj}.0.bias", c)
            add(f"{prefix}.cross_attn.{proj}.1.weight", c, c)
        add(f"{prefix}.cross_attn.o_proj.weight", c, c)
        add(f"{prefix}.pos_embed_0", 4, c), add(f"{prefix}.pos_embed_1", 4, c)
    add("model.vision_query", 1, c), add("model.image_newline", h)
    add("model.mm_projector.0.weight", h, c), add("model.mm_projector.0.bias", h)
    add("model.mm_projector.2.weight", h, h), add("model.mm_projector.2.bias", h)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return tensors


@pytest.fixture(scope="module")
def tiny_towers(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model, SiglipVisionConfig, SiglipVisionModel

    from transformers_vidcomp.tiny import TINY_DINO, TINY_VISION

    root = tmp_path_factory.mktemp("towers")
    torch.manual_seed(1)
    SiglipVisionModel(SiglipVisionConfig(**{k: v for k, v in TINY_VISION.items() if k != "model_type"})).save_pretrained(root / "siglip")
    Dinov2Model(Dinov2Config(**{k: v for k, v in TINY_DINO.items() if k != "model_type"})).save_pretrained(root / "dino")
    return root / "siglip", root / "dino"


def test_released_longvu_checkpoint_converts_key_for_key(tmp_path, tiny_towers):
    from transformers import AutoModel

    from transformers_vidcomp.conversion import LongVUConverter

    tensors = released_checkpoint(tmp_path / "LongVU_Qwen2_tiny")
    siglip_dir, dino_dir = tiny_towers
    converted = LongVUConverter(vision_tower=siglip_dir, dino=dino_dir).convert(tmp_path / "LongVU_Qwen2_tiny")
    model, config = converted.model, converted.model.config
    assert converted.dropped_keys == []
    state = model.state_dict()
    for released, ours in [
        ("model.vision_sampler_0.layers.1.cross_attn.k_proj_1.1.weight", "model.compressor.aggregator.layers.1.cross_attn.k_proj_1.1.weight"),
        ("model.vision_sampler_0.layers.0.pos_embed_1", "model.compressor.aggregator.layers.0.pos_embed_1"),
        ("model.mm_projector_aux_1.3.bias", "model.compressor.dino_projector.3.bias"),
        ("model.vision_query", "model.compressor.vision_query"),
        ("model.image_newline", "model.compressor.image_newline"),
        ("model.mm_projector.2.weight", "model.multi_modal_projector.linear_2.weight"),
        ("model.layers.1.self_attn.q_proj.weight", "model.language_model.layers.1.self_attn.q_proj.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ]:
        torch.testing.assert_close(state[ours], tensors[released], msg=released)
    dino = AutoModel.from_pretrained(dino_dir)
    torch.testing.assert_close(state["model.sampler.dino.embeddings.cls_token"], dino.embeddings.cls_token)
    siglip = AutoModel.from_pretrained(siglip_dir)
    torch.testing.assert_close(
        state["model.vision_tower.embeddings.patch_embedding.weight"],
        siglip.embeddings.patch_embedding.weight,
    )
    sampler, compressor = config.sampler_config, config.compressor_config
    assert (sampler.mode, sampler.threshold, sampler.window_size, sampler.max_frames) == ("reference", 0.83, 16, 400)
    assert (compressor.stc_threshold, compressor.query_side, compressor.kv_window, compressor.lowres_side) == (0.7, 4, 2, 2)
    assert (compressor.overflow_resolution, compressor.relevance, compressor.num_layers) == ("high", "dot", 2)
    assert config.parts == {"vision_tower": str(siglip_dir), "sampler": str(dino_dir)}
    assert str(siglip_dir) in converted.card_info.source and str(dino_dir) in converted.card_info.source
    assert converted.processor.video_processor.pad_to_square  # frames letterboxed, as the release's expand2square
    tokenizer = converted.processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<video>") == config.video_token_id < config.text_config.vocab_size
    with torch.no_grad():
        features = model.get_video_features(torch.randn(6, 3, 64, 64), torch.tensor([6]), video_token_budget=40)
    assert int(features.token_counts.sum()) <= 40
    assert model.model.compressor.high_tokens == 4 * 5 and model.model.compressor.low_tokens == 2 * 3  # row newlines


def test_convert_refuses_other_checkpoints_and_names_the_missing_towers(tmp_path):
    from transformers_vidcomp.conversion import LongVUConverter, NotLongVUError, SourceCheckpointError

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(NotLongVUError, match="not a released LongVU"):
        LongVUConverter(vision_tower="nope/siglip", dino="nope/dino").convert(tmp_path / "other")
    released_checkpoint(tmp_path / "LongVU")
    with pytest.raises(SourceCheckpointError, match="not in its checkpoint"):
        LongVUConverter(vision_tower=tmp_path / "missing-siglip", dino=tmp_path / "missing-dino").convert(tmp_path / "LongVU")


def test_vidcomp_convert_longvu_writes_a_verified_checkpoint(tmp_path, tiny_towers, monkeypatch, capsys):
    from transformers_vidcomp.cli import main
    from transformers_vidcomp.conversion import longvu

    monkeypatch.setattr(longvu, "SIGLIP_TOWER", str(tiny_towers[0]))
    monkeypatch.setattr(longvu, "DINO_TOWER", str(tiny_towers[1]))
    released_checkpoint(tmp_path / "LongVU_Qwen2_tiny")
    assert main(["convert", "longvu", str(tmp_path / "LongVU_Qwen2_tiny"), str(tmp_path / "out")]) == 0
    assert "verified: reloaded with trust_remote_code" in capsys.readouterr().out
    card = (tmp_path / "out" / "README.md").read_text()
    assert str(tiny_towers[0]) in card and str(tiny_towers[1]) in card and "LongVU" in card
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    context = config["sampler_config"]["context_length"]
    # Sized per prompt as released, so no fixed budget; the card's figure is what the shortest prompt leaves.
    assert config["video_token_budget"] is None and config["compressor_config"]["context_length"] == context
    assert config["compressor_config"]["swap_video_sizes"] and "as (width, height) as the release" in card
    assert f"what its prompt leaves of the\n{context}-token context" in card
    assert f"at most {context - config['compressor_config']['reserved_tokens']}**" in card


def test_sampler_from_pretrained_dinov2_weights(tiny_towers):
    from transformers import AutoModel

    dino_dir = tiny_towers[1]
    model = LongVUSampler.from_dinov2(dino_dir, mode="reference", dino_image_size=64, feature_grid=8)
    reference = AutoModel.from_pretrained(dino_dir)
    torch.testing.assert_close(model.dino.embeddings.cls_token, reference.embeddings.cls_token)
    assert (model.config.mode, model.config.dino_config.hidden_size) == ("reference", reference.config.hidden_size)
    out = model(packed([4], 3, 64, 64))
    assert out.auxiliary_features.values.shape[1:] == (8, 8, reference.config.hidden_size)


def test_the_sva_in_frame_batches_equals_one_call():
    sva = compressor()
    siglip, dino = torch.randn(7, 6, 6, 12), torch.randn(7, 5, 5, 16)
    with torch.no_grad():
        whole = sva.aggregate(siglip, dino)
        sva.config.sva_batch_size = 3  # 3 + 3 + 1 frames
        batched = sva.aggregate(siglip, dino)
    torch.testing.assert_close(batched, whole)
