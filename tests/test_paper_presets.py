"""The paper presets: token and parameter counts against the papers' figures, their settings, prompts and cards."""

from pathlib import Path

import pytest
import torch

from transformers_vidcomp.modeling import COMPRESSOR_REGISTRY, SAMPLER_REGISTRY, PackedFrames
from transformers_vidcomp.modeling.autoencoder_compact import CompactAutoencoderConfig, CompactVideoAutoencoder
from transformers_vidcomp.presets import PRESETS


README = Path(__file__).resolve().parents[1] / "README.md"
PAPER_PRESETS = [name for name, preset in PRESETS.items() if preset.paper is not None]


def component(registry: dict, settings: dict, **sizes):
    """A sampler or compressor from a preset's settings, with the tower sizes a checkpoint would give it."""
    cls = registry[settings["model_type"]]
    config = cls.config_class(**{key: value for key, value in settings.items() if key != "model_type"}, **sizes)
    return cls(config).eval()


def random_features(num_frames: int, grid: int, dim: int, seed: int = 0) -> PackedFrames:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(num_frames, grid, grid, dim, generator=generator)
    return PackedFrames(values, torch.tensor([num_frames]), torch.arange(num_frames, dtype=torch.float32))


def test_the_paper_presets_exist_and_vidcomp_methods_lists_them(capsys):
    from transformers_vidcomp.cli import main

    assert PAPER_PRESETS == ["fila-paper", "avs-compact-paper"]
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    for name in PAPER_PRESETS:
        assert f"  {name} " in listed


def test_fila_paper_sends_half_of_fila_bases_64_frames_of_tokens():
    preset = PRESETS["fila-paper"]
    paper = preset.paper
    grid = paper.patch_grid
    assert (grid, paper.vision_hidden_size) == (27, 1152)  # SigLIP so400m-patch14-384
    assert paper.tokens_per_video == 64 * grid * grid // 2
    frames = preset.video_processor_kwargs["num_frames"]
    assert frames == 96 and preset.video_processor_kwargs["fps"] is None
    sampler = component(SAMPLER_REGISTRY, preset.sampler_config)
    assert sampler.config.init == "random"  # §3.1.1: "choose M random representative features"
    # The real selection and fusion, at the paper's grid (the width does not change the count).
    features = random_features(frames, grid, 8)
    selection = sampler(features, frame_features=features)
    keep = selection.keep_mask
    compressor = component(COMPRESSOR_REGISTRY, preset.compressor_config, num_patches=grid * grid, hidden_size=8)
    tokens = compressor(features.select(keep), scene_ids=selection.scene_ids[keep]).tokens
    assert len(torch.unique(selection.scene_ids[keep])) == 32
    assert tokens.shape[0] == paper.tokens_per_video == 23_328
    bound = compressor.max_tokens(sampler.max_kept_frames(frames), grid, grid, num_scenes=sampler.max_scenes(frames))
    assert bound == paper.tokens_per_video


def test_fila_paper_fusion_has_eq_7s_parameters_at_the_papers_width():
    preset = PRESETS["fila-paper"]
    paper = preset.paper
    with torch.device("meta"):
        fusion = component(
            COMPRESSOR_REGISTRY, preset.compressor_config,
            num_patches=paper.patch_grid**2, hidden_size=paper.vision_hidden_size,
        )
    assert fusion.num_parameters() == paper.parameters == 3 * 729 * 1152


def test_avs_compact_paper_sends_128_tokens_for_32_frames():
    preset = PRESETS["avs-compact-paper"]
    paper = preset.paper
    grid = paper.patch_grid
    sampler = component(SAMPLER_REGISTRY, preset.sampler_config)
    assert sampler.max_kept_frames(10 * 3600) == 32  # supplement §1.4: 32 frames
    assert (sampler.config.decode_fps, sampler.config.nms_seconds) == (10.0, 3.0)  # §1.2
    assert sampler.shot_detector.config.inference_windows == "reference"  # the published network as released
    compressor = component(COMPRESSOR_REGISTRY, preset.compressor_config, hidden_size=16)
    tokens = compressor(random_features(32, grid, 16)).tokens
    assert tokens.shape[0] == paper.tokens_per_video == 32 * 16 * 16 // 64 == 128
    assert compressor.max_tokens(32, grid, grid) == paper.tokens_per_video


def test_avs_compact_paper_has_about_65m_parameters_in_the_reading_it_states():
    preset = PRESETS["avs-compact-paper"]
    paper = preset.paper
    settings = {key: value for key, value in preset.compressor_config.items() if key != "model_type"}
    with torch.device("meta"):
        autoencoder = CompactVideoAutoencoder(
            CompactAutoencoderConfig(hidden_size=paper.vision_hidden_size, **settings)
        )
    total = autoencoder.num_parameters()
    compressor = autoencoder.compressor.num_parameters()
    assert total == 65_442_432 and compressor == 32_721_216
    assert abs(total - paper.parameters) / paper.parameters < 0.01  # "approximately 65 million"
    assert compressor == autoencoder.compressor.config.conv_block_parameters() * 6
    # The other readings miss it: the encoder alone, or temporal kernels of 3.
    with torch.device("meta"):
        kernel_3 = CompactVideoAutoencoder(
            CompactAutoencoderConfig(hidden_size=paper.vision_hidden_size, **{**settings, "temporal_kernel_size": 3})
        )
    assert abs(kernel_3.num_parameters() - paper.parameters) / paper.parameters > 0.09
    assert abs(compressor - paper.parameters) / paper.parameters > 0.4


@pytest.mark.parametrize("name, sentence", [("fila-paper", True), ("avs-compact-paper", False)])
def test_prompt_format_follows_the_paper(name, sentence, demo_video):
    from transformers_vidcomp.tiny import build_tiny

    _, processor = build_tiny(name)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "path": str(demo_video[0])}, {"type": "text", "text": "Why?"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    frame_selector = None
    if name == "avs-compact-paper":
        model, _ = build_tiny(name)
        frame_selector = model.model.sampler
    inputs = processor(text=text, videos=[str(demo_video[0])], frame_selector=frame_selector)
    prompt = processor.tokenizer.decode(inputs["input_ids"][0])
    assert ("This video samples" in prompt) is sentence
    if sentence:  # FiLA §3.3 lists the sampled frames: all of them (the 10 fps demo video has 80)
        assert f"This video samples {len(inputs['video_timestamps'])} frames of a" in prompt


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_readme_table_and_model_card_cite_every_setting(name):
    from transformers_vidcomp.conversion.cards import CardInfo, card_template_name, render_model_card
    from transformers_vidcomp.tiny import build_tiny

    paper = PRESETS[name].paper
    readme = README.read_text()
    model, processor = build_tiny(name)
    assert card_template_name(model) == name
    card = str(render_model_card(model, processor, CardInfo(source="A test.", trained=False), repo_id="me/x"))
    for row in paper.settings:
        line = f"| {row.setting} | {row.value} | {row.source} |"
        assert line in readme, f"README lacks the row: {line}"
        assert line in card, f"the {name} card lacks the row: {line}"


def test_demo_presets_keep_their_own_cards():
    from transformers_vidcomp.conversion.cards import card_template_name
    from transformers_vidcomp.tiny import build_tiny

    for name in ("fila", "avs-compact"):
        assert card_template_name(build_tiny(name)[0]) == name
