"""`vidcomp convert hicom`: a small random state dict in the released lntzm/HICom_* layout becomes our model."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipTextConfig,
    SiglipTextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from transformers_vidcomp import PackedFrames
from transformers_vidcomp.cli import main
from transformers_vidcomp.conversion import get_converter
from transformers_vidcomp.conversion.hicom import NotHIComError, parse_projector_type
from transformers_vidcomp.tiny import build_tiny_tokenizer


VISION = dict(hidden_size=128, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=48,
              patch_size=8)
GUIDE = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, vocab_size=512,
             max_position_embeddings=16, projection_size=128, bos_token_id=None, eos_token_id=None, pad_token_id=0)
LLM = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           vocab_size=640, max_position_embeddings=2048, tie_word_embeddings=False)


def released_checkpoint(folder, projector_type="local43_global32_coarse", use_guide="direct", extra=None):
    r"""
    A HICom_* folder as transformers 4.46 would save it: hicom_qwen2 config (towers named by path, plus their small
    configs), one safetensors file with the Qwen2 LLM, the SigLIP vision tower with its MAP head, the SigLIP text
    tower and the released compressors, and the LLM and SigLIP tokenizers. Returns the parts it was made from.
    """
    torch.manual_seed(0)
    vision = SiglipVisionModel(SiglipVisionConfig(**VISION, vision_use_head=True))
    guide = SiglipTextModel(SiglipTextConfig(**GUIDE))
    llm = Qwen2ForCausalLM(Qwen2Config(**LLM))
    compressor = {
        "local_compressor.readout.0.weight": torch.randn(64, 128), "local_compressor.readout.0.bias": torch.randn(64),
        "local_compressor.readout.2.weight": torch.randn(64, 64), "local_compressor.readout.2.bias": torch.randn(64),
        "global_compressor.query": torch.randn(32, 128),
        **{f"global_compressor.attn_layer.{p}_proj.{w}": torch.randn(128, 128) if w == "weight" else torch.randn(128)
           for p in "qkv" for w in ("weight", "bias")},
        "global_compressor.attn_layer.out_proj.weight": torch.randn(128, 128),
        "global_compressor.attn_layer.out_proj.bias": torch.randn(128),
        "global_compressor.readout.0.weight": torch.randn(64, 128), "global_compressor.readout.0.bias": torch.randn(64),
        "global_compressor.readout.2.weight": torch.randn(64, 64), "global_compressor.readout.2.bias": torch.randn(64),
    }
    state = {}
    state.update({k: v for k, v in llm.state_dict().items() if k.startswith("model.")})
    state["lm_head.weight"] = llm.lm_head.weight
    # transformers 4.46 nested the towers one level deeper (`vision_model.`, `text_model.`).
    state.update({f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in vision.state_dict().items()})
    state.update({f"model.vision_tower.guide_encoder.text_model.{k}": v for k, v in guide.state_dict().items()})
    state.update({f"model.mm_projector.{k}": v for k, v in compressor.items()})
    state.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, folder / "model.safetensors")
    config = {
        "model_type": "hicom_qwen2", "architectures": ["HIComQwen2ForCausalLM"], **LLM,
        "mm_vision_tower": "playground/models/siglip-so400m-patch14-384", "mm_hidden_size": 128,
        "mm_projector_type": projector_type, "use_guide": use_guide, "mm_vision_select_layer": -2,
        "mm_newline_position": "no_token", "max_num_frames": 128, "image_aspect_ratio": "pad",
        "vision_config": VISION, "guide_config": GUIDE,
    }
    (folder / "config.json").write_text(json.dumps(config))
    build_tiny_tokenizer(special_tokens=("<|im_start|>", "<|im_end|>")).save_pretrained(folder)
    build_tiny_tokenizer(special_tokens=()).save_pretrained(folder / "guide_tokenizer")
    return vision, guide, llm, compressor


def test_projector_strings_parse_as_the_released_code_does():
    assert parse_projector_type("local43_global32_coarse", "direct") == dict(
        group_t=4, group_h=3, group_w=3, num_global_queries=32, local_injection="direct", global_injection="direct"
    )
    assert parse_projector_type("local412guidecoarse_global16guidefine", None) == dict(
        group_t=4, group_h=12, group_w=12, num_global_queries=16, local_injection="coarse", global_injection="fine"
    )
    with pytest.raises(NotHIComError, match="adaptive"):
        parse_projector_type("local43adaptkv_global32", "direct")
    with pytest.raises(NotHIComError, match="not a HICom local\\+global projector"):
        parse_projector_type("mlp2x_gelu", None)


def test_released_layout_converts_to_the_same_weights(tmp_path):
    source = tmp_path / "HICom_tiny"
    vision, guide, llm, compressor = released_checkpoint(source, extra={"model.image_newline": torch.randn(64)})
    converted = get_converter("hicom").convert(source)
    model = converted.model
    config = model.config.compressor_config
    assert (config.local_injection, config.global_injection) == ("direct", "direct")
    assert config.position_embedding == "summed"
    assert config.position_in_value and config.key_source == "vision_head"
    assert model.config.vision_feature_layer == [-2, -1]
    assert sorted(converted.dropped_keys) == sorted(
        [k for k in [f"model.vision_tower.vision_tower.vision_model.{n}" for n in vision.state_dict()]
         if ".head.probe" in k or ".head.attention." in k] + ["model.image_newline"]
    )

    ours = model.state_dict()
    for name, tensor in vision.state_dict().items():
        if not name.startswith("head."):
            torch.testing.assert_close(ours[f"model.vision_tower.{name}"], tensor)
    for name, tensor in guide.state_dict().items():
        torch.testing.assert_close(ours[f"model.compressor.guide_encoder.{name}"], tensor)
    for name, tensor in llm.state_dict().items():
        target = "lm_head.weight" if name == "lm_head.weight" else f"model.language_model.{name.removeprefix('model.')}"
        torch.testing.assert_close(ours[target], tensor)
    for name, tensor in compressor.items():
        torch.testing.assert_close(ours[f"model.compressor.{name}"], tensor)

    # The local keys are SigLIP's last state through its head MLP, as the released tower computes them.
    pixels = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        out = vision(pixel_values=pixels, output_hidden_states=True)
        expected = out.last_hidden_state + vision.head.mlp(vision.head.layernorm(out.last_hidden_state))
        features = model.model.encode_frames(pixels)
        _, keys = model.model.compressor.split_features(
            PackedFrames(features, torch.tensor([4]), torch.arange(4.0))
        )
    torch.testing.assert_close(keys.reshape(4, 36, 128), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(features[..., :128].reshape(4, 36, 128), out.hidden_states[-2])

    # The converted model answers with the guide: 4 frames of 6x6 -> 1 x 2 x 2 local tokens, then 32 global ones.
    processor = converted.processor
    assert processor.video_processor.pad_to_square  # frames letterboxed, as the release's expand2square
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What is it?\nA. a cat\nB. a dog"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    video = torch.randint(0, 255, (4, 3, 48, 48), dtype=torch.uint8)
    inputs = processor(text=prompt, videos=[video], return_tensors="pt")
    assert processor.guide_texts([prompt]) == ["What is it?"]
    with torch.no_grad():
        result = model(**inputs)
    assert result.video_outputs.token_counts.tolist() == [4 + 32]


def test_convert_cli_writes_a_verified_folder(tmp_path, capsys):
    source = tmp_path / "HICom_tiny"
    released_checkpoint(source)
    out = tmp_path / "ours"
    assert main(["convert", "hicom", str(source), str(out)]) == 0, capsys.readouterr().err
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "processing_hicom.py", "compressor_hicom.py"} <= files
    assert "guide_tokenizer" in files


def test_refuses_sources_that_are_not_hicom(tiny_checkpoint, tmp_path, capsys):
    assert main(["convert", "hicom", str(tiny_checkpoint), str(tmp_path / "out")]) == 2
    assert "not HICom ('hicom_qwen2')" in capsys.readouterr().err
    source = tmp_path / "HICom_tiny"
    released_checkpoint(source, extra={"model.mm_projector.local_compressor.unknown": torch.zeros(1)})
    assert main(["convert", "hicom", str(source), str(tmp_path / "out2")]) == 2
    assert "unexpected key(s): model.compressor.local_compressor.unknown" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()
