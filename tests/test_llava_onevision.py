"""LLaVA-OneVision checkpoints convert into ours with exact parity to Transformers' own implementation."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
)

from transformers_vidcomp.cli import main
from transformers_vidcomp.conversion import CheckpointKeysError, SourceCheckpointError, get_converter
from transformers_vidcomp.processors import decode_video
from transformers_vidcomp.tiny import build_tiny_tokenizer

# LLaVA-OneVision's chat template, as its Hub processors ship it: media tokens first, then the text.
LLAVA_OV_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Two different tiny configurations: an even and an odd patch grid (4x4 -> 2x2, 5x5 -> 3x3 after pooling), one or
# two feature layers, tied or separate embeddings, projector with or without biases.
VARIANTS = {
    "grid4-last-layer": dict(image_size=32, vision_feature_layer=-1, tie=False, projector_bias=True),
    "grid5-two-layers-tied": dict(image_size=40, vision_feature_layer=[-3, -1], tie=True, projector_bias=False),
}
PROMPT = "<|im_start|>user <video>\nWhat happens in this video?<|im_end|>\n<|im_start|>assistant\n"


def build_llava_onevision(folder, image_size, vision_feature_layer, tie, projector_bias, seed=0):
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<video>", "<image>"]})
    config = LlavaOnevisionConfig(
        text_config={
            "model_type": "qwen2", "vocab_size": 576, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 37, "tie_word_embeddings": tie,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "model_type": "siglip_vision_model", "image_size": image_size, "patch_size": 8, "hidden_size": 32,
            "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 37,
        },
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy="full",
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        multimodal_projector_bias=projector_bias,
        tie_word_embeddings=tie,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    size = {"height": image_size, "width": image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(image_size // 8) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_OV_CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from transformers_vidcomp.demo_video import make_demo_video

    path = tmp_path_factory.mktemp("llava-video") / "clip.mp4"
    make_demo_video(path, seconds_per_scene=0.5, fps=10, width=96, height=64, photos=("rocket", "chelsea", "coffee"))
    video, _ = decode_video(path, sample_indices_fn=lambda metadata, **kwargs: list(range(0, 15, 2)))
    return video  # 8 frames, (8, 64, 96, 3) uint8


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_matches_transformers_llava_onevision(variant, frames, tmp_path):
    source = tmp_path / "llava"
    reference, reference_processor = build_llava_onevision(source, **VARIANTS[variant])
    converted = get_converter("llava-onevision").convert(source)
    model, processor = converted.model, converted.processor

    # Same pixels from the same decoded frames.
    theirs = reference_processor(text=PROMPT, videos=[frames], return_tensors="pt")
    ours = processor(text=PROMPT, videos=[frames], return_tensors="pt", do_sample_frames=False)
    assert torch.equal(ours["pixel_values_videos"], theirs["pixel_values_videos"][0])

    with torch.no_grad():
        expected = reference(**theirs).logits
        actual = model(**ours).logits
    # Our single placeholder expands to exactly LLaVA-OneVision's token count: frames x pooled grid + 1 newline.
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)

    expected_ids = reference.generate(**theirs, max_new_tokens=8, do_sample=False)
    actual_ids = model.generate(**ours, max_new_tokens=8, do_sample=False)
    assert actual_ids[:, -8:].tolist() == expected_ids[:, -8:].tolist()

    # The chat template and tokenizer came along: a chat renders to the same prompt.
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens in this video?"}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == PROMPT
    assert reference_processor.apply_chat_template(messages, add_generation_prompt=True) == PROMPT


def test_convert_cli_writes_a_verified_folder(tmp_path, capsys):
    source = tmp_path / "llava"
    build_llava_onevision(source, **VARIANTS["grid4-last-layer"])
    out = tmp_path / "ours"
    assert main(["convert", "llava-onevision", str(source), str(out)]) == 0
    assert "verified: reloaded with trust_remote_code" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["project_before_compression"] and config["video_newline"]
    assert config["compressor_config"]["model_type"] == "vidcomp_spatial_pool_compressor"
    card = (out / "README.md").read_text()
    assert "Converted from the LLaVA-OneVision checkpoint" in card
    assert "at most 129**" in card  # 32 frames x 2x2 pooled tokens + 1 newline


def test_a_folder_that_is_not_llava_onevision_is_refused(tiny_checkpoint, tmp_path, capsys):
    assert main(["convert", "llava-onevision", str(tiny_checkpoint), str(tmp_path / "out")]) == 2
    assert "holds a 'vidcomp' checkpoint, not LLaVA-OneVision" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["missing", "extra"])
def test_missing_or_extra_keys_are_named(damage, tmp_path):
    source = tmp_path / "llava"
    build_llava_onevision(source, **VARIANTS["grid4-last-layer"])
    weights = load_file(source / "model.safetensors")
    if damage == "missing":
        key = next(k for k in weights if k.endswith("layers.1.mlp.up_proj.weight"))
        del weights[key]
        expected = "missing key(s): model.language_model.layers.1.mlp.up_proj.weight"
    else:
        weights["multi_modal_projector.linear_3.weight"] = torch.zeros(2, 2)
        expected = "unexpected key(s): model.multi_modal_projector.linear_3.weight"
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointKeysError) as error:
        get_converter("llava-onevision").convert(source)
    assert expected in str(error.value)
    assert main(["convert", "llava-onevision", str(source), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_vision_feature_layer_out_of_range_is_named(tmp_path, capsys):
    source = tmp_path / "llava"
    build_llava_onevision(source, **VARIANTS["grid4-last-layer"])
    config = json.loads((source / "config.json").read_text())
    config["vision_feature_layer"] = -9
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(SourceCheckpointError, match=r"vision_feature_layer -9 is out of range: the vision tower has 3"):
        get_converter("llava-onevision").convert(source)
    assert main(["convert", "llava-onevision", str(source), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_parity_holds_for_a_left_padded_batch_with_two_videos_in_one_prompt(frames, tmp_path):
    source = tmp_path / "llava"
    reference, reference_processor = build_llava_onevision(source, **VARIANTS["grid5-two-layers-tied"])
    converted = get_converter("llava-onevision").convert(source)
    two_videos = "<|im_start|>user <video><video>\nCompare them.<|im_end|>\n<|im_start|>assistant\n"
    texts, videos = [PROMPT, two_videos], [frames[:4], frames[4:], frames[::2]]
    for processor in (reference_processor, converted.processor):
        processor.tokenizer.padding_side = "left"
    theirs = reference_processor(text=texts, videos=videos, padding=True, return_tensors="pt")
    ours = converted.processor(text=texts, videos=videos, padding=True, return_tensors="pt", do_sample_frames=False)
    with torch.no_grad():
        expected = reference(**theirs).logits
        actual = converted.model(**ours).logits
    assert actual.shape == expected.shape
    real = theirs["attention_mask"].bool()  # padding positions carry no meaning in either model
    torch.testing.assert_close(actual[real], expected[real], atol=1e-4, rtol=0)
    expected_ids = reference.generate(**theirs, max_new_tokens=6, do_sample=False)
    actual_ids = converted.model.generate(**ours, max_new_tokens=6, do_sample=False)
    assert actual_ids[:, -6:].tolist() == expected_ids[:, -6:].tolist()


@pytest.mark.parametrize("damage", ["shape", "corrupt"])
def test_damaged_weights_are_clear_errors_and_leave_no_folder(damage, tmp_path, capsys):
    source = tmp_path / "llava"
    build_llava_onevision(source, **VARIANTS["grid4-last-layer"])
    if damage == "shape":
        weights = load_file(source / "model.safetensors")
        weights["multi_modal_projector.linear_2.weight"] = torch.zeros(32, 16)
        save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
        expected = "model.multi_modal_projector.linear_2.weight: checkpoint [32, 16] vs model [32, 32]"
    else:
        data = (source / "model.safetensors").read_bytes()
        (source / "model.safetensors").write_bytes(data[: len(data) // 2])
        expected = "Could not read the weights"
    assert main(["convert", "llava-onevision", str(source), str(tmp_path / "out")]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_hub_key_layout_converts_to_the_same_weights(tmp_path):
    # Hub checkpoints such as llava-hf/llava-onevision-qwen2-0.5b-ov-hf store the tower under `vision_model.`.
    source = tmp_path / "llava"
    reference, _ = build_llava_onevision(source, **VARIANTS["grid4-last-layer"])
    weights = load_file(source / "model.safetensors")
    hub_layout = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in weights.items()}
    assert any(k.startswith("vision_tower.vision_model.") for k in hub_layout)
    save_file(hub_layout, source / "model.safetensors", metadata={"format": "pt"})
    converted = get_converter("llava-onevision").convert(source).model.state_dict()
    for key, tensor in reference.state_dict().items():
        assert torch.equal(converted[key.replace("model.image_newline", "model.video_newline")], tensor), key


@pytest.mark.parametrize("search", [{"do_sample": False}, {"do_sample": False, "num_beams": 2}], ids=["greedy", "beam2"])
def test_the_generate_idiom_gives_transformers_new_tokens_and_strings(search, frames, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source, out = tmp_path / "llava", tmp_path / "ours"
    reference, reference_processor = build_llava_onevision(source, **VARIANTS["grid4-last-layer"])
    assert main(["convert", "llava-onevision", str(source), str(out)]) == 0
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    question = "<|im_start|>user <video>\nDescribe the clip in detail, please.<|im_end|>\n<|im_start|>assistant\n"
    texts, videos = [PROMPT, question], [frames[:4], frames]  # videos of different lengths, prompts too
    processor.tokenizer.padding_side = "left"
    ours = processor(text=texts, videos=videos, padding=True, return_tensors="pt", do_sample_frames=False)
    # Transformers' LLaVA-OneVision stacks a batch's videos, so it cannot batch different lengths: each prompt alone.
    theirs = [reference_processor(text=[t], videos=[v], return_tensors="pt") for t, v in zip(texts, videos)]

    def new_tokens(m, p, inputs):
        generated = m.generate(**inputs, max_new_tokens=6, min_new_tokens=6, **search)
        ids = generated[:, inputs["input_ids"].shape[1]:]  # the idiom every model card teaches
        return ids.tolist(), p.batch_decode(ids, skip_special_tokens=True)

    expected = [new_tokens(reference, reference_processor, inputs) for inputs in theirs]
    actual_ids, actual_text = new_tokens(model, processor, ours)
    assert ours["input_ids"].shape[1] < theirs[1]["input_ids"].shape[1]  # ours hold one placeholder per video
    assert [len(row) for row in actual_ids] == [6, 6]
    assert actual_ids == [ids[0] for ids, _ in expected]
    assert actual_text == [text[0] for _, text in expected]
    # Videos of one length batch in Transformers too: its left-padded batch and ours give the same idiom.
    same_length = [frames[:4], frames[4:]]
    reference_processor.tokenizer.padding_side = "left"
    theirs = reference_processor(text=texts, videos=same_length, padding=True, return_tensors="pt")
    ours = processor(text=texts, videos=same_length, padding=True, return_tensors="pt", do_sample_frames=False)
    assert new_tokens(model, processor, ours) == new_tokens(reference, reference_processor, theirs)
