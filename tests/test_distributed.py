"""`vidcomp finetune` under torchrun with 2 CPU processes (gloo) ends where one process ends."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture()
def training_run(tiny_checkpoint, demo_video, tmp_path):
    answers = ["A rocket.", "A cat and a cup.", "An astronaut smiles.", "Coffee on a table."]
    with open(tmp_path / "data.jsonl", "w") as data:
        for answer in answers:
            data.write(json.dumps({"messages": [
                {"role": "user", "content": [{"type": "video", "path": str(demo_video[0])},
                                             {"type": "text", "text": "What is shown?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ]}) + "\n")
    common = [str(tiny_checkpoint), str(tmp_path / "data.jsonl")]
    options = ["--max-steps", "2", "--learning-rate", "1e-3", "--data-order", "sequential", "--num-frames", "4",
               "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return tmp_path, common, options, env


def test_two_processes_match_one(training_run):
    tmp_path, common, options, env = training_run
    one = subprocess.run(
        [sys.executable, "-m", "transformers_vidcomp.cli", "finetune", *common, str(tmp_path / "one"),
         "--per-device-batch-size", "2", *options],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    two = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "transformers_vidcomp.cli", "finetune", *common,
         str(tmp_path / "two"), "--per-device-batch-size", "1", *options],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    start = load_file(common[0] + "/model.safetensors")
    single, double = load_file(tmp_path / "one/model.safetensors"), load_file(tmp_path / "two/model.safetensors")
    moved = max((single[k] - start[k]).abs().max().item() for k in start)
    difference = max((single[k] - double[k]).abs().max().item() for k in start)
    assert moved > 1e-4, "training did not change the weights"
    assert difference < 1e-5, f"2 processes ended {difference:.2e} away from 1 process"
    losses = [json.loads((tmp_path / run / "training_losses.json").read_text()) for run in ("one", "two")]
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), atol=1e-5, rtol=1e-5)
    assert {"README.md", "modeling_vidcomp.py"} <= {p.name for p in (tmp_path / "two").iterdir()}


def test_bad_training_data_is_a_clear_error(training_run, capsys):
    from transformers_vidcomp.cli import main

    tmp_path, common, options, _ = training_run
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\nnot json\n')
    assert main(["finetune", common[0], str(tmp_path / "bad.jsonl"), str(tmp_path / "out"), *options]) == 2
    assert "bad.jsonl:2 is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
