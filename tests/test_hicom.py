"""HICom: parity with the released compressors, the paper's formulas, partial groups, injection and bad input."""

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file

from transformers_vidcomp.modeling import (
    HIComCompressor,
    HIComCompressorConfig,
    InstructionCondition,
    InvalidVideoInputError,
    PackedFrames,
    TokenBudgetError,
)
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from transformers_vidcomp.modeling import compressor_hicom
from transformers_vidcomp.modeling.compressor_hicom import (
    GuideFeatures,
    HIComGlobalCompressor,
    HIComLocalCompressor,
    position_tables,
)


FIXTURES = Path(__file__).parent / "fixtures" / "hicom"
TINY_GUIDE = dict(
    model_type="siglip_text_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
    vocab_size=128, max_position_embeddings=16, bos_token_id=None, eos_token_id=1, pad_token_id=0,
)


def tiny_config(**kwargs) -> HIComCompressorConfig:
    settings = dict(hidden_size=16, output_hidden_size=24, num_attention_heads=2, num_global_queries=4,
                    guide_config=TINY_GUIDE)
    return HIComCompressorConfig(**{**settings, **kwargs})


def packed(counts: list[int], height: int, width: int, dim: int, seed: int = 0) -> PackedFrames:
    generator = torch.Generator().manual_seed(seed)
    total = sum(counts)
    return PackedFrames(
        torch.randn(total, height, width, dim, generator=generator), torch.tensor(counts), torch.arange(total).float()
    )


def guide_features(num_videos: int, dim: int, length: int = 5, seed: int = 1) -> GuideFeatures:
    generator = torch.Generator().manual_seed(seed)
    return GuideFeatures(
        torch.randn(num_videos, dim, generator=generator),
        torch.randn(num_videos, length, dim, generator=generator),
        torch.ones(num_videos, dtype=torch.bool),
    )


# ---------------------------------------------------------------------------------------------------------------
# Parity with the released LocalCompressor / GlobalCompressor (fixtures made by running lntzm/HICom, see README).


def regenerate(case: dict, meta: dict) -> tuple[dict, dict, tuple[torch.Tensor, ...]]:
    """The seeded weights and inputs the fixture script gave the original modules, drawn in the same order."""
    generator = torch.Generator().manual_seed(case["seed"])

    def draw(specs):
        return {
            spec["name"]: spec["base"] + spec["scale"] * torch.randn(spec["shape"], generator=generator)
            for spec in specs
        }

    local, global_ = draw(case["local_params"]), draw(case["global_params"])
    t, h, w, d, length = case["t"], meta["H"], meta["W"], meta["D"], meta["text_length"]
    features = torch.randn(t, h, w, d, generator=generator)
    embed = torch.randn(t, h, w, d, generator=generator)
    pooled = torch.randn(d, generator=generator)
    tokens = torch.randn(length, d, generator=generator)
    for name, tensor in {"features": features, "embed": embed, "pooled": pooled, "tokens": tokens}.items():
        assert float(tensor.double().sum()) == pytest.approx(case["input_checksums"][name], rel=1e-9), name
    return local, global_, (features, embed, pooled, tokens)


def released_to_ours(state: dict) -> dict:
    return {name.replace("text2qk_proj", "text_projection"): value for name, value in state.items()}


META = json.loads((FIXTURES / "cases.json").read_text())


@pytest.mark.parametrize("case_name", sorted(META["cases"]))
def test_matches_released_compressors(case_name):
    case, outputs = META["cases"][case_name], load_file(FIXTURES / "released_outputs.safetensors")
    local_state, global_state, (features, embed, pooled, tokens) = regenerate(case, META)
    injection = case["guide"]
    config = HIComCompressorConfig(
        hidden_size=META["D"], output_hidden_size=META["out_dim"], num_attention_heads=META["D"] // 128,
        local_injection=injection, global_injection=injection, position_embedding="summed", position_in_value=True,
        guide_config={**TINY_GUIDE, "projection_size": META["D"]}, attn_implementation="eager",
    )
    local, global_ = HIComLocalCompressor(config).eval(), HIComGlobalCompressor(config).eval()
    local.load_state_dict(released_to_ours(local_state))
    global_.load_state_dict(released_to_ours(global_state))
    frames = PackedFrames(features, torch.tensor([case["t"]]), torch.arange(case["t"]).float())
    guide = GuideFeatures(pooled[None], tokens[None], torch.ones(1, dtype=torch.bool))
    keys = embed if case["keys_from_embed"] else features
    with torch.no_grad():
        ours_local, counts, _, _ = local(frames, keys, guide)
        ours_global, _ = global_(frames, guide)
    expected_local = rearrange(outputs[f"{case_name}.local"], "t h w d -> (t h w) d")
    assert counts.tolist() == [expected_local.shape[0]]
    torch.testing.assert_close(ours_local, expected_local, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_global, outputs[f"{case_name}.global"], rtol=1e-4, atol=1e-5)


def test_summed_position_embedding_is_the_released_one():
    expected = load_file(FIXTURES / "released_outputs.safetensors")["position_embedding_3x4x5x16"]
    pt, ph, pw = position_tables("summed", 3, 4, 5, 16, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(pt[:, None, None] + ph[None, :, None] + pw[None, None, :], expected)


def test_split_position_embedding_follows_the_paper():
    # Appendix: 3/8, 3/8 and 2/8 of the channels encode t, h and w; the three encodings are concatenated.
    t, h, w, dim = 3, 4, 5, 64
    pt, ph, pw = position_tables("split", t, h, w, dim, torch.device("cpu"), torch.float64)
    embedding = pt[:, None, None] + ph[None, :, None] + pw[None, None, :]

    def encoding(length, width):
        pos = torch.arange(length, dtype=torch.float64)[:, None]
        i = torch.arange(width)
        angle = pos / 10000 ** ((2 * (i // 2)).double() / width)
        return torch.where(i % 2 == 0, angle.sin(), angle.cos())

    grid_t, grid_h, grid_w = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    expected = torch.cat(
        [encoding(t, 24)[grid_t], encoding(h, 24)[grid_h], encoding(w, 16)[grid_w]], dim=-1
    )
    torch.testing.assert_close(embedding, expected)


# ---------------------------------------------------------------------------------------------------------------
# Token counts and partial groups.


def test_32_frames_of_27x27_give_648_local_then_32_global_tokens():
    config = tiny_config(num_global_queries=32, local_injection="none", global_injection="none")
    compressor = HIComCompressor(config).eval()
    assert compressor.max_tokens(32, 27, 27) == 680
    with torch.no_grad():
        out = compressor(packed([32], 27, 27, 16))
    assert out.tokens.shape == (680, 24) and out.token_counts.tolist() == [680]
    # Local tokens in (t, h, w) order, stamped with their group's first frame; the global ones with the last frame.
    assert out.token_frame_index[:648].tolist() == [4 * (i // 81) for i in range(648)]
    assert out.token_frame_index[648:].tolist() == [31] * 32


def naive_local(x: torch.Tensor, keys: torch.Tensor, groups: tuple[int, int, int]) -> torch.Tensor:
    """Group-by-group reference of the partial-group rule: consecutive blocks, the last one holding the rest."""
    t, h, w, d = x.shape
    gt, gh, gw = groups
    nt, nh, nw = math.ceil(t / gt), math.ceil(h / gh), math.ceil(w / gw)
    query = torch.nn.functional.interpolate(
        rearrange(x, "t h w d -> 1 d t h w"), size=(nt, nh, nw), mode="trilinear"
    )[0]
    out = []
    for i in range(nt):
        for j in range(nh):
            for k in range(nw):
                block = (slice(i * gt, (i + 1) * gt), slice(j * gh, (j + 1) * gh), slice(k * gw, (k + 1) * gw))
                key, value = keys[block].reshape(-1, d), x[block].reshape(-1, d)
                weights = torch.softmax(key @ query[:, i, j, k] / math.sqrt(d), 0)
                out.append(weights @ value)
    return torch.stack(out)


# A kernel registered in ALL_ATTENTION_FUNCTIONS, as a user would plug one in: it gets HICom's dense calls.
DENSE_CALLS = []


def counting_kernel(module, query, key, value, attention_mask, **kwargs):
    DENSE_CALLS.append(type(module).__name__)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register("hicom_test_kernel", counting_kernel)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa", "hicom_test_kernel"])
def test_every_size_works_and_partial_groups_attend_to_their_own_patches(attn_implementation):
    config = tiny_config(local_injection="none", global_injection="none", attn_implementation=attn_implementation)
    local = HIComLocalCompressor(config).eval()
    local.readout = torch.nn.Identity()
    # Heights that group_h = 3 divides take the grouped formulation, the others the dense band call.
    shapes = ((1, 1), (2, 5), (4, 3), (7, 8), (3, 1), (3, 5), (6, 7), (6, 6))
    sizes = [(t, h, w) for t in (1, 2, 3, 4, 5, 6, 7, 9, 10) for h, w in shapes]
    for t, h, w in sizes:
        frames = packed([t], h, w, 16, seed=t * 100 + h * 10 + w)
        keys = torch.randn_like(frames.values)
        with torch.no_grad():
            tokens, counts, _, _ = local(frames, keys, None)
        assert counts.tolist() == [math.ceil(t / 4) * math.ceil(h / 3) * math.ceil(w / 3)], (t, h, w)
        torch.testing.assert_close(tokens, naive_local(frames.values, keys, (4, 3, 3)), rtol=1e-4, atol=1e-5)


def test_videos_of_different_lengths_are_compressed_as_if_alone():
    compressor = HIComCompressor(tiny_config(local_injection="coarse", global_injection="fine")).eval()
    counts = [5, 1, 9, 4]
    batch = packed(counts, 5, 4, 16)
    input_ids = torch.randint(2, 128, (4, 8))
    with torch.no_grad():
        condition = InstructionCondition(torch.zeros(4, 1, 1), torch.ones(4, 1), input_ids)
        together = compressor(batch, instruction=condition)
        alone = []
        for i, video in enumerate(batch.split()):
            frames = PackedFrames(video, torch.tensor([video.shape[0]]), torch.arange(video.shape[0]).float())
            condition = InstructionCondition(torch.zeros(1, 1, 1), torch.ones(1, 1), input_ids[i : i + 1])
            alone.append(compressor(frames, instruction=condition).tokens)
    torch.testing.assert_close(together.tokens, torch.cat(alone), rtol=1e-5, atol=1e-6)
    assert together.token_counts.tolist() == [t.shape[0] for t in alone]


# ---------------------------------------------------------------------------------------------------------------
# Global attention without materialising keys, values or the position embedding.


@pytest.mark.parametrize("layout", ["split", "summed"])
@pytest.mark.parametrize("position_in_value", [False, True])
@pytest.mark.parametrize("stream_patches", [20, 4096], ids=["a frame per step", "one step"])
def test_global_attention_equals_plain_multihead_attention(layout, position_in_value, stream_patches, monkeypatch):
    # With a frame per step, the online softmax rescales at every step, and steps past the shorter video's end
    # hold nothing but its padding.
    monkeypatch.setattr(compressor_hicom, "STREAM_PATCHES", stream_patches)
    config = tiny_config(
        global_injection="coarse", position_embedding=layout, position_in_value=position_in_value, hidden_size=32,
        num_attention_heads=4,
    )
    global_ = HIComGlobalCompressor(config).eval()
    torch.nn.init.normal_(global_.query)
    for parameter in global_.attn_layer.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    frames = packed([3, 6], 4, 5, 32)
    guide = guide_features(2, 32)
    with torch.no_grad():
        tokens, _ = global_(frames, guide)
        expected = []
        for v, video in enumerate(frames.split()):
            pt, ph, pw = position_tables(layout, video.shape[0], 4, 5, 32, video.device, video.dtype)
            position = pt[:, None, None] + ph[None, :, None] + pw[None, None, :]
            keys = rearrange(video + position, "t h w d -> 1 (t h w) d")
            values = keys if position_in_value else rearrange(video, "t h w d -> 1 (t h w) d")
            attn = global_.attn_layer
            own_guide = GuideFeatures(guide.pooled[v : v + 1], None, guide.has_text[:1])
            query = global_.guide_injector(global_.query[None], own_guide)
            q = rearrange(attn.q_proj(query), "b q (n e) -> b n q e", n=4)
            k = rearrange(attn.k_proj(keys), "b l (n e) -> b n l e", n=4)
            val = rearrange(attn.v_proj(values), "b l (n e) -> b n l e", n=4)
            out = torch.softmax(q @ k.transpose(-1, -2) * attn.scaling, -1) @ val
            out = attn.out_proj(rearrange(out, "b n q e -> b q (n e)"))
            expected.append(global_.readout(query + out)[0])
    torch.testing.assert_close(tokens, torch.cat(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("key_source", ["features", "vision_head"])
def test_registered_kernels_get_the_dense_calls_and_agree(key_source, monkeypatch):
    monkeypatch.setattr(compressor_hicom, "STREAM_PATCHES", 30)  # two frames of 3 x 5 per step
    settings = dict(local_injection="coarse", global_injection="fine", key_source=key_source,
                    position_embedding="summed", position_in_value=True)
    outputs = []
    for implementation in ("eager", "hicom_test_kernel"):
        torch.manual_seed(0)
        compressor = HIComCompressor(tiny_config(attn_implementation=implementation, **settings)).eval()
        condition = InstructionCondition(torch.zeros(3, 1, 1), torch.ones(3, 1), torch.randint(2, 128, (3, 8)))
        features = packed([6, 3, 9], 3, 5, 32 if key_source == "vision_head" else 16)
        DENSE_CALLS.clear()
        with torch.no_grad():
            outputs.append(compressor(features, instruction=condition).tokens)
        calls = set(DENSE_CALLS)
    # The kernel ran the local band call and the global call (and the guide encoder's and fine injection's).
    assert {"HIComLocalCompressor", "HIComGlobalCompressor", "HIComAttention"} <= calls
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def test_sdpa_and_eager_agree():
    outputs = []
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        compressor = HIComCompressor(tiny_config(attn_implementation=implementation)).eval()
        condition = InstructionCondition(torch.zeros(2, 1, 1), torch.ones(2, 1), torch.randint(2, 128, (2, 8)))
        with torch.no_grad():
            outputs.append(compressor(packed([6, 3], 5, 5, 16), instruction=condition).tokens)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Injection and the guide text.


def run(compressor, frames, input_ids=None, guide_mask=None):
    condition = None
    if input_ids is not None:
        condition = InstructionCondition(
            torch.zeros(input_ids.shape[0], 1, 1), torch.ones(input_ids.shape[0], 1), input_ids, guide_mask
        )
    with torch.no_grad():
        return compressor(frames, instruction=condition).tokens


@pytest.mark.parametrize("injection", ["direct", "coarse", "fine"])
def test_the_instruction_changes_conditional_tokens_only(injection):
    torch.manual_seed(0)
    compressor = HIComCompressor(tiny_config(local_injection=injection, global_injection=injection)).eval()
    frames = packed([4], 6, 6, 16)
    first, second = torch.randint(2, 128, (1, 8)), torch.randint(2, 128, (1, 8))
    assert not torch.allclose(run(compressor, frames, first), run(compressor, frames, second))

    torch.manual_seed(0)
    unconditional = HIComCompressor(tiny_config(local_injection="none", global_injection="none")).eval()
    assert unconditional.guide_encoder is None
    torch.testing.assert_close(run(unconditional, frames, first), run(unconditional, frames, second))


def test_direct_injection_uses_the_pooled_text_of_the_guide_encoder():
    compressor = HIComCompressor(tiny_config(local_injection="direct", global_injection="direct")).eval()
    input_ids = torch.randint(2, 128, (1, 8))
    guide = compressor.encode_guide(InstructionCondition(torch.zeros(1, 1, 1), torch.ones(1, 1), input_ids), 1)
    with torch.no_grad():
        expected = compressor.guide_encoder(input_ids=input_ids).pooler_output
    torch.testing.assert_close(guide.pooled, expected)
    # The text width (32) differs from the features' (16), so a two-layer MLP maps it, as the released text2qk_proj.
    assert isinstance(compressor.local_compressor.guide_injector.text_projection, torch.nn.Sequential)
    # Released behaviour: with direct global injection, all global tokens are equal.
    tokens = run(compressor, packed([4], 6, 6, 16), input_ids)
    torch.testing.assert_close(tokens[-4:], tokens[-1:].expand(4, -1))


def test_empty_instruction_falls_back_to_unconditional_with_a_warning():
    torch.manual_seed(0)
    compressor = HIComCompressor(tiny_config(local_injection="coarse", global_injection="coarse")).eval()
    torch.manual_seed(0)
    unconditional = HIComCompressor(tiny_config(local_injection="none", global_injection="none")).eval()
    unconditional.load_state_dict(compressor.state_dict(), strict=False)
    frames = packed([4, 5], 6, 6, 16)
    input_ids = torch.randint(2, 128, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1] = 0
    with pytest.warns(UserWarning, match=r"video\(s\) \[1\] is empty"):
        tokens = run(compressor, frames, input_ids, mask)
    expected = run(unconditional, frames)
    counts = [2 * 4 + 4, 2 * 4 + 4]
    torch.testing.assert_close(tokens[counts[0]:], expected[counts[0]:])
    assert not torch.allclose(tokens[: counts[0]], expected[: counts[0]])
    with pytest.warns(UserWarning, match="no guide text"):
        torch.testing.assert_close(run(compressor, frames), expected)


# ---------------------------------------------------------------------------------------------------------------
# Keys from SigLIP's head, bad input and budgets.


def test_vision_head_keys_are_siglips_head_mlp_on_the_last_state():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    vision = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    )).eval()
    compressor = HIComCompressor(tiny_config(key_source="vision_head", vision_intermediate_size=24)).eval()
    model = vision  # Transformers 5 flattened SiglipVisionModel (no .vision_model)
    compressor.key_head.post_layernorm.load_state_dict(model.post_layernorm.state_dict())
    compressor.key_head.layernorm.load_state_dict(model.head.layernorm.state_dict())
    compressor.key_head.mlp.load_state_dict(model.head.mlp.state_dict())
    with torch.no_grad():
        out = vision(pixel_values=torch.randn(3, 3, 32, 32), output_hidden_states=True)
        last = out.last_hidden_state
        expected = last + model.head.mlp(model.head.layernorm(last))
        features = torch.cat([out.hidden_states[-2], out.hidden_states[-1]], -1).view(3, 4, 4, 32)
        values, keys = compressor.split_features(PackedFrames(features, torch.tensor([3]), torch.arange(3.0)))
    torch.testing.assert_close(keys, expected.view(3, 4, 4, 16), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values.values, out.hidden_states[-2].view(3, 4, 4, 16))


def test_features_of_the_wrong_width_get_a_clear_error():
    compressor = HIComCompressor(tiny_config())
    with pytest.raises(InvalidVideoInputError, match=r"\(frames, grid_h, grid_w, 16\).*hidden_size=16"):
        compressor(packed([4], 6, 6, 12))
    head = HIComCompressor(tiny_config(key_source="vision_head"))
    with pytest.raises(InvalidVideoInputError, match=r"vision_feature_layer=\[-2, -1\]"):
        head(packed([4], 6, 6, 16))


def test_token_budget_keeps_whole_temporal_groups_evenly():
    compressor = HIComCompressor(tiny_config(local_injection="none", global_injection="none")).eval()
    # 6x6 patches -> 4 local tokens per temporal group of 4 frames, plus 4 global tokens.
    assert compressor.max_tokens(32, 6, 6) == 8 * 4 + 4
    assert compressor.max_tokens(32, 6, 6, token_budget=20) == 4 * 4 + 4
    with torch.no_grad():
        out = compressor(packed([32, 6], 6, 6, 16), token_budget=20)
    assert out.token_counts.tolist() == [20, 2 * 4 + 4]
    assert sorted(set(out.token_frame_index[:16].tolist())) == [0, 8, 16, 24]
    with pytest.raises(TokenBudgetError, match="cannot hold one group of 4 frames"):
        compressor.max_tokens(32, 6, 6, token_budget=7)


def test_config_validation_and_reference():
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        HIComCompressorConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="group_t must be at least 1"):
        HIComCompressorConfig(group_t=0)
    reference = HIComCompressorConfig.reference()
    assert (reference.local_injection, reference.global_injection) == ("direct", "direct")
    assert (reference.position_embedding, reference.position_in_value, reference.key_source) == (
        "summed", True, "vision_head"
    )
    paper = HIComCompressorConfig()
    assert (paper.local_injection, paper.global_injection, paper.position_embedding) == ("direct", "coarse", "split")


def test_attention_maps_for_visualisation():
    compressor = HIComCompressor(tiny_config()).eval()
    frames = packed([5, 3], 5, 7, 16)
    condition = InstructionCondition(torch.zeros(2, 1, 1), torch.ones(2, 1), torch.randint(2, 128, (2, 8)))
    with torch.no_grad():
        plain = compressor(frames, instruction=condition).tokens
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mapped = compressor(frames, instruction=condition, return_attention=True).tokens
    torch.testing.assert_close(plain, mapped, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        maps = compressor(frames, instruction=condition, return_attention=True).attention_maps
    assert maps.local.shape == maps.global_.shape == (8, 5, 7)
    # Every local group's weights sum to 1: 2x3 groups per temporal group; 2 + 1 temporal groups.
    assert float(maps.local.sum()) == pytest.approx(3 * 6, rel=1e-5)
    assert float(maps.global_[:5].sum()) == pytest.approx(1.0, rel=1e-5)
    assert float(maps.global_[5:].sum()) == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# The processor's guide text, the composite model, the training stage and the demo.


@pytest.fixture(scope="module")
def tiny_hicom():
    from transformers_vidcomp.tiny import build_tiny

    return build_tiny("hicom", seed=0)


def chat(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]


def test_processor_guide_is_the_question_without_options(tiny_hicom):
    _, processor = tiny_hicom
    question = "What is the man holding?\nOptions:\n(A) a cup\n(B) a ball\nAnswer with the option's letter."
    prompt = processor.apply_chat_template(chat(question), add_generation_prompt=True, tokenize=False)
    other = processor.apply_chat_template(chat("Describe the video."), add_generation_prompt=True, tokenize=False)
    assert processor.guide_texts([prompt, other]) == ["What is the man holding?", "Describe the video."]
    videos = [torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)] * 2
    inputs = processor(text=[prompt, other], videos=videos, return_tensors="pt", padding=True)
    expected = processor.guide_tokenizer("What is the man holding?")["input_ids"]
    assert inputs["guide_input_ids"].shape == (2, processor.guide_max_length)
    assert inputs["guide_input_ids"][0, : len(expected)].tolist() == expected
    assert inputs["guide_attention_mask"][0].sum() == len(expected)
    # Configurable: keep the whole turn, or give the guide text directly.
    processor.guide_drop_patterns = []
    try:
        assert processor.guide_texts([prompt])[0].startswith("What is the man holding? Options: (A) a cup")
    finally:
        processor.guide_drop_patterns = list(type(processor)(
            processor.video_processor, processor.tokenizer, processor.guide_tokenizer
        ).guide_drop_patterns)
    given = processor(text=[prompt], videos=videos[:1], guide_text=[""], return_tensors="pt")
    assert given["guide_attention_mask"].sum() == 0


def test_processor_truncates_long_guides_and_says_so(tiny_hicom, caplog):
    _, processor = tiny_hicom
    long_question = " ".join(["the camera pans to the left and zooms in on the flowers"] * 20)
    prompt = processor.apply_chat_template(chat(long_question), add_generation_prompt=True, tokenize=False)
    video = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            inputs = processor(text=prompt, videos=[video], return_tensors="pt")
    finally:
        hf_logging.disable_propagation()
    assert "truncated to the guide tokenizer's 64" in caplog.text
    assert inputs["guide_attention_mask"].sum() == 64


def test_processor_saves_and_loads_its_guide_tokenizer(tiny_hicom, tmp_path):
    from transformers_vidcomp import HIComProcessor

    _, processor = tiny_hicom
    processor.save_pretrained(tmp_path)
    # Remote code: the processor's module and the one it builds on travel with it.
    assert {"processing_hicom.py", "processing_vidcomp.py"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "guide_tokenizer").is_dir()
    loaded = HIComProcessor.from_pretrained(tmp_path)
    assert loaded.guide_max_length == processor.guide_max_length
    text = "a cup of coffee"
    assert loaded.guide_tokenizer(text)["input_ids"] == processor.guide_tokenizer(text)["input_ids"]


def test_composite_model_conditions_on_the_guide_and_generates(tiny_hicom):
    model, processor = tiny_hicom
    video = torch.randint(0, 255, (8, 3, 64, 64), dtype=torch.uint8)
    prompts = [processor.apply_chat_template(chat(q), add_generation_prompt=True, tokenize=False)
               for q in ("Where is the cat?", "How many rockets are there?")]
    features = []
    for prompt in prompts:
        inputs = processor(text=prompt, videos=[video], return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
            features.append(model.get_video_features(
                inputs["pixel_values_videos"], inputs["video_num_frames"], inputs["video_timestamps"],
                instruction=model.model.instruction_condition(
                    inputs["input_ids"], inputs["attention_mask"], None, inputs["guide_input_ids"],
                    inputs["guide_attention_mask"],
                ),
            ).pooler_output)
        # 8 frames of an 8x8 grid: 2 temporal groups of 3x3 local tokens, then 32 global ones.
        assert out.video_outputs.token_counts.tolist() == [2 * 9 + 32]
    assert isinstance(model.model.multi_modal_projector, torch.nn.Identity)
    assert not torch.allclose(features[0], features[1])
    generated = model.generate(**inputs, max_new_tokens=2, min_new_tokens=2)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 2  # the prompt as given, then the new tokens


def test_conditional_pretrain_stage_learning_rates(tiny_hicom):
    from transformers_vidcomp.training.stages import apply_training_stage, stage_parameter_groups

    model, _ = tiny_hicom
    groups = {group["name"]: group for group in stage_parameter_groups(model, "hicom-conditional-pretrain")}
    assert {name: group["lr"] for name, group in groups.items()} == {"compressor": 1e-4, "guide_injector": 1e-3}
    injection = {id(p) for n, p in model.named_parameters() if "guide_injector" in n}
    assert {id(p) for p in groups["guide_injector"]["params"]} == injection
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        trained = "compressor" in parts and "guide_encoder" not in parts and "key_head" not in parts
        assert parameter.requires_grad == trained, name
    apply_training_stage(model, "compressor+projector+llm")  # leave the shared fixture trainable as built


def test_demo_writes_attention_heatmaps(tmp_path):
    from PIL import Image

    from transformers_vidcomp.demo import run_demo
    from transformers_vidcomp.presets import UnsupportedVisualizationError

    report = run_demo(preset="hicom", out_dir=tmp_path, question="Where is the cat?", max_new_tokens=2,
                      visualize=True)
    assert report.frames_kept == 32 and report.tokens_to_llm == 8 * 9 + 32
    for name in ("attention_local.png", "attention_global.png"):
        image = Image.open(tmp_path / name)
        frame_width = image.width // 8  # 8 columns, 4 rows of 32 frames, each captioned
        assert image.width % 8 == 0 and image.height > 4 * frame_width * 0.5
    with pytest.raises(UnsupportedVisualizationError, match="--visualize needs a compressor that reports its"):
        run_demo(preset="baseline", out_dir=tmp_path / "baseline", max_new_tokens=1, visualize=True)
    assert not (tmp_path / "baseline").exists()  # refused before any work


def test_conditional_pretraining_step_reaches_the_injection(demo_video):
    from transformers_vidcomp.tiny import build_tiny
    from transformers_vidcomp.training import VidCompDataCollator
    from transformers_vidcomp.training.stages import stage_parameter_groups

    model, processor = build_tiny("hicom", seed=1)
    example = {"messages": [
        {"role": "user", "content": [{"type": "video", "path": str(demo_video[0])},
                                     {"type": "text", "text": "Describe the cat.\nA. sleeping\nB. eating"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat looks at the camera."}]},
    ]}
    batch = VidCompDataCollator(processor, {"num_frames": 8})([example])
    # The guide is the question alone: no options, no answer.
    expected = processor.guide_tokenizer("Describe the cat.")["input_ids"]
    assert batch["guide_input_ids"][0, : len(expected)].tolist() == expected
    assert batch["guide_attention_mask"][0].sum() == len(expected)
    optimizer = torch.optim.AdamW(stage_parameter_groups(model.train(), "hicom-conditional-pretrain"))
    model(**batch).loss.backward()
    injector = model.model.compressor.global_compressor.guide_injector
    assert injector.coarse_proj[0].weight.grad.abs().sum() > 0
    assert model.model.compressor.guide_encoder.head.weight.grad is None  # frozen
    before = injector.coarse_proj[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, injector.coarse_proj[0].weight)


def test_local_branch_alone():
    compressor = HIComCompressor(tiny_config(num_global_queries=0, local_injection="none")).eval()
    assert compressor.global_compressor is None and compressor.guide_encoder is None
    assert compressor.max_tokens(9, 7, 5) == 3 * 3 * 2
    with torch.no_grad():
        out = compressor(packed([9, 2], 7, 5, 16))
    assert out.token_counts.tolist() == [3 * 3 * 2, 1 * 3 * 2]
    assert out.token_frame_index.tolist() == [0] * 6 + [4] * 6 + [8] * 6 + [0] * 6


def test_guide_keeps_questions_that_look_like_labels(tiny_hicom):
    _, processor = tiny_hicom
    for question in ("Q: What is the man doing?", "I. e. what happens first?", "Note: the cat. What colour is it?"):
        prompt = processor.apply_chat_template(chat(question), add_generation_prompt=True, tokenize=False)
        assert processor.guide_texts([prompt]) == [question]
    prompt = processor.apply_chat_template(chat("Which?\nA. red\nB) blue\n(C) green"), add_generation_prompt=True, tokenize=False)
    assert processor.guide_texts([prompt]) == ["Which?"]


def test_reloaded_folders_keep_the_guide_processor(tiny_hicom, tmp_path):
    from transformers_vidcomp import HIComProcessor
    from transformers_vidcomp.processors import load_processor

    _, processor = tiny_hicom
    processor.save_pretrained(tmp_path)
    assert isinstance(load_processor(tmp_path), HIComProcessor)


def test_hicom_stage_refuses_other_compressors(tiny):
    from transformers_vidcomp.training import UnknownStageError, apply_training_stage

    model, _ = tiny
    with pytest.raises(UnknownStageError, match="vidcomp_hicom_compressor"):
        apply_training_stage(model, "hicom-conditional-pretrain")


# Saving and loading run in a fresh interpreter: Transformers reports each config warning once per process.
QUIET_LOAD_SCRIPT = r"""
import sys
from transformers import AutoModelForImageTextToText, SiglipTextConfig
from transformers_vidcomp import VidCompForConditionalGeneration
from transformers_vidcomp.conversion.hicom import SO400M_TEXT
from transformers_vidcomp.modeling import HIComCompressorConfig
from transformers_vidcomp.tiny import create_tiny_checkpoint

folder = create_tiny_checkpoint(sys.argv[1], "hicom")
VidCompForConditionalGeneration.from_pretrained(folder)
AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
# The paper's guide, built by default and as the converter builds it, printed and saved (nested configs are diffed
# against a default instance of their class).
for config in (HIComCompressorConfig(), HIComCompressorConfig(guide_config=SiglipTextConfig(**SO400M_TEXT))):
    repr(config)
    config.save_pretrained(sys.argv[1] + "-config")
    assert HIComCompressorConfig.from_pretrained(sys.argv[1] + "-config").guide_config.eos_token_id == 1
print("loaded")
"""


def test_hicom_checkpoints_save_and_load_without_token_id_warnings(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", QUIET_LOAD_SCRIPT, str(tmp_path / "tiny-hicom")], capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded" in result.stdout
    assert "token_id must be" not in result.stderr, result.stderr
    assert "[transformers]" not in result.stderr, result.stderr


def test_guide_config_keeps_explicit_token_ids_and_stays_siglip():
    config = tiny_config(guide_config={**TINY_GUIDE, "bos_token_id": 5, "eos_token_id": 7})
    assert isinstance(config.guide_config, compressor_hicom.HIComGuideTextConfig)
    assert (config.guide_config.bos_token_id, config.guide_config.eos_token_id) == (5, 7)
    assert config.guide_config.model_type == "siglip_text_model"
    assert HIComCompressorConfig().guide_config.bos_token_id is None
