"""Assembling a model from pretrained parts, training only the new ones, and swapping components after conversion."""

import pytest
import torch
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from transformers_vidcomp import VidCompForConditionalGeneration
from transformers_vidcomp.cli import main
from transformers_vidcomp.modeling.parts_vidcomp import PartError
from transformers_vidcomp.processors import VidCompProcessor
from transformers_vidcomp.tiny import TINY_TEXT, TINY_VISION, build_tiny_tokenizer
from transformers_vidcomp.training import apply_training_stage

VISION = {k: v for k, v in TINY_VISION.items() if k != "model_type"}
TEXT = {k: v for k, v in TINY_TEXT.items() if k != "model_type"}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A SigLIP vision folder (with its image processor), a two-tower SigLIP folder, and a Qwen2 LLM folder whose
    tokenizer has no <video> token yet."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    vision = SiglipVisionModel(SiglipVisionConfig(**VISION))
    vision.save_pretrained(root / "vision")
    SiglipImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.4, 0.4, 0.4]).save_pretrained(root / "vision")
    two_tower = SiglipModel(SiglipConfig(vision_config=VISION, text_config={"hidden_size": 32, "num_hidden_layers": 1,
                                                                           "num_attention_heads": 2, "intermediate_size": 37}))
    two_tower.save_pretrained(root / "siglip")
    tokenizer = build_tiny_tokenizer()
    llm = Qwen2ForCausalLM(Qwen2Config(**TEXT, vocab_size=len(tokenizer)))
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return root, vision, two_tower, llm


def test_assembles_from_local_folders_and_records_the_parts(parts, tmp_path):
    root, vision, _, llm = parts
    model = VidCompForConditionalGeneration.from_pretrained_parts(
        vision_tower=root / "vision", language_model=root / "llm", video_token_budget=64
    )
    assert model.config.parts == {"vision_tower": str(root / "vision"), "language_model": str(root / "llm")}
    assert model.config.video_token_budget == 64
    for name, tensor in vision.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], tensor), name
    for name, tensor in llm.model.state_dict().items():
        assert torch.equal(model.model.language_model.state_dict()[name], tensor), name
    assert torch.equal(model.lm_head.weight, llm.lm_head.weight)
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))

    processor = VidCompProcessor.from_pretrained_parts(vision_tower=root / "vision", language_model=root / "llm")
    assert processor.video_token_id == model.config.video_token_id
    assert list(processor.video_processor.image_mean) == [0.4, 0.4, 0.4]  # copied from the tower's image processor
    inputs = processor(text="<video> what is it?", videos=[torch.randint(0, 255, (3, 64, 64, 3), dtype=torch.uint8)],
                       return_tensors="pt")
    assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1] - 1 + 3 * 16

    model.save_pretrained(tmp_path / "assembled")
    reloaded = VidCompForConditionalGeneration.from_pretrained(tmp_path / "assembled")
    assert reloaded.config.parts == model.config.parts


def test_the_vision_half_of_a_two_tower_checkpoint_and_a_new_video_token(parts, tmp_path):
    root, _, two_tower, llm = parts
    # An LLM whose tokenizer lacks <video>: the token is added and the embeddings grow to hold it.
    bare = build_tiny_tokenizer(special_tokens=())
    bare.save_pretrained(tmp_path / "llm")
    Qwen2ForCausalLM(Qwen2Config(**TEXT, vocab_size=len(bare))).save_pretrained(tmp_path / "llm")
    assert "<video>" not in bare.get_vocab()

    model = VidCompForConditionalGeneration.from_pretrained_parts(vision_tower=root / "siglip", language_model=tmp_path / "llm")
    assert torch.equal(
        model.model.vision_tower.embeddings.patch_embedding.weight,
        two_tower.vision_model.embeddings.patch_embedding.weight,
    )
    processor = VidCompProcessor.from_pretrained_parts(vision_tower=root / "siglip", language_model=tmp_path / "llm")
    assert model.config.video_token_id == processor.video_token_id == len(bare)
    assert model.get_input_embeddings().num_embeddings == len(bare) + 1


def test_freeze_and_the_new_parts_stage_train_only_what_was_not_loaded(parts):
    root, *_ = parts
    model = VidCompForConditionalGeneration.from_pretrained_parts(
        vision_tower=root / "vision", language_model=root / "llm", freeze=True
    )
    trainable = {name.split(".")[1] if name.startswith("model.") else name.split(".")[0]
                 for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"multi_modal_projector"}
    model.requires_grad_(True)
    counts = apply_training_stage(model, "new-parts")
    assert counts["trainable"] == sum(p.numel() for p in model.model.multi_modal_projector.parameters())


def test_a_projector_part_is_loaded(parts, tmp_path):
    root, *_ = parts
    first = VidCompForConditionalGeneration.from_pretrained_parts(vision_tower=root / "vision", language_model=root / "llm")
    from safetensors.torch import save_file

    save_file(first.model.multi_modal_projector.state_dict(), tmp_path / "projector.safetensors")
    second = VidCompForConditionalGeneration.from_pretrained_parts(
        vision_tower=root / "vision", language_model=root / "llm", projector=tmp_path / "projector.safetensors"
    )
    assert torch.equal(second.model.multi_modal_projector.linear_1.weight, first.model.multi_modal_projector.linear_1.weight)
    assert second.config.parts["projector"] == str(tmp_path / "projector.safetensors")


def test_parts_of_the_wrong_kind_are_refused(parts):
    root, _, two_tower, _ = parts
    with pytest.raises(PartError, match="two-tower SiglipModel"):
        VidCompForConditionalGeneration.from_pretrained_parts(vision_tower=two_tower, language_model=root / "llm")
    with pytest.raises(PartError, match="has no output head"):
        VidCompForConditionalGeneration.from_pretrained_parts(
            vision_tower=root / "vision", language_model=Qwen2Model(Qwen2Config(**TEXT, vocab_size=600)), video_token_id=5
        )


def test_swap_after_llava_onevision_conversion_keeps_towers_and_llm(tmp_path, capsys):
    from test_llava_onevision import VARIANTS, build_llava_onevision

    build_llava_onevision(tmp_path / "llava", **VARIANTS["grid4-last-layer"])
    assert main(["convert", "llava-onevision", str(tmp_path / "llava"), str(tmp_path / "ours")]) == 0
    spec = '{"model_type": "vidcomp_spatial_pool_compressor", "mode": "average", "stride": 4}'
    assert main(["swap", str(tmp_path / "ours"), str(tmp_path / "swapped"), "--compressor", spec]) == 0
    assert "verified" in capsys.readouterr().out
    before = VidCompForConditionalGeneration.from_pretrained(tmp_path / "ours")
    after = VidCompForConditionalGeneration.from_pretrained(tmp_path / "swapped")
    assert after.config.compressor_config.mode == "average" and after.config.compressor_config.stride == 4
    for name, tensor in before.state_dict().items():
        if not name.startswith(("model.compressor.", "model.sampler.")):
            assert torch.equal(after.state_dict()[name], tensor), name
    counts = apply_training_stage(after, "compressor+projector")
    assert counts["trainable"] == sum(p.numel() for p in after.model.multi_modal_projector.parameters()) + 32

    assert main(["swap", str(tmp_path / "ours"), str(tmp_path / "x"), "--compressor", "no_such_compressor"]) == 2
    assert "Unknown compressor 'no_such_compressor'" in capsys.readouterr().err
    assert main(["swap", str(tmp_path / "ours"), str(tmp_path / "x")]) == 2
    assert "Nothing to swap" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_loaded_models_and_saved_components_are_parts_too(parts, tmp_path):
    from transformers_vidcomp.modeling import UniformSampler, UniformSamplerConfig

    root, *_ = parts
    vision = SiglipVisionModel.from_pretrained(root / "vision")
    llm = Qwen2ForCausalLM.from_pretrained(root / "llm")  # its tokenizer is found through name_or_path
    llm.generation_config.eos_token_id = [3, 4]
    UniformSampler(UniformSamplerConfig(num_frames=5)).save_pretrained(tmp_path / "sampler")
    model = VidCompForConditionalGeneration.from_pretrained_parts(
        vision_tower=vision, language_model=llm, sampler=tmp_path / "sampler", compressor="vidcomp_spatial_pool_compressor"
    )
    assert model.model.vision_tower is vision and model.config.sampler_config.num_frames == 5
    assert model.config.parts["sampler"] == str(tmp_path / "sampler") and "compressor" not in model.config.parts
    assert model.generation_config.eos_token_id == [3, 4]  # the LLM's stop tokens survive


def test_a_tied_llm_stays_tied(parts, tmp_path):
    root, *_ = parts
    tokenizer = build_tiny_tokenizer()
    Qwen2ForCausalLM(Qwen2Config(**TEXT, vocab_size=len(tokenizer), tie_word_embeddings=True)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = VidCompForConditionalGeneration.from_pretrained_parts(vision_tower=root / "vision", language_model=tmp_path)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_bad_component_specs_and_projectors_are_named(parts, tmp_path):
    from transformers_vidcomp.modeling.parts_vidcomp import ComponentSpecError

    root, *_ = parts
    kwargs = dict(vision_tower=root / "vision", language_model=root / "llm")
    with pytest.raises(ComponentSpecError, match=r"has no setting\(s\) \['strid'\]"):
        VidCompForConditionalGeneration.from_pretrained_parts(
            **kwargs, compressor='{"model_type": "vidcomp_spatial_pool_compressor", "strid": 3}')
    with pytest.raises(ComponentSpecError, match="stride must be at least 1"):
        VidCompForConditionalGeneration.from_pretrained_parts(
            **kwargs, compressor={"model_type": "vidcomp_spatial_pool_compressor", "stride": 0})
    from safetensors.torch import save_file

    save_file({"linear_1.weight": torch.zeros(3, 3)}, tmp_path / "bad.safetensors")
    with pytest.raises(PartError, match="does not fit this model"):
        VidCompForConditionalGeneration.from_pretrained_parts(**kwargs, projector=tmp_path / "bad.safetensors")
    with pytest.raises(PartError, match="not a patch-based vision model"):
        VidCompForConditionalGeneration.from_pretrained_parts(vision_tower=root / "llm", language_model=root / "llm")
