import json
import subprocess
import sys

import pytest

from transformers_vidcomp.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "transformers_vidcomp.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_methods_lists_registered_components(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "vidcomp_uniform_sampler" in out and "vidcomp_spatial_pool_compressor" in out and "baseline" in out


def test_create_tiny_writes_a_loadable_checkpoint_and_refuses_to_overwrite(tmp_path, capsys):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "tiny"
    assert main(["create-tiny", str(out), "--preset", "baseline"]) == 0
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert model.config.sampler_config.model_type == "vidcomp_uniform_sampler"
    assert main(["create-tiny", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["create-tiny", str(out), "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny.")], "staging folders left behind"


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from transformers_vidcomp.conversion import writer

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")

    from transformers_vidcomp.tiny import build_tiny

    model, processor = build_tiny()
    monkeypatch.setattr(type(processor), "save_pretrained", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        writer.save_checkpoint(model, processor, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_demo_prints_the_table_and_writes_report_and_contact_sheet(tmp_path):
    from PIL import Image

    result = run_cli("demo", "--preset", "baseline", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("decode", "sample", "encode", "compress", "llm"):
        assert f"\n{stage} " in result.stdout
    assert "untrained tiny model" in result.stdout
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["frames_kept"] == len(report["kept_timestamps"]) > 0
    assert report["tokens_to_llm"] == report["frames_kept"] * report["tokens_per_frame"]
    assert report["scene_cuts"] == [2.0, 4.0, 6.0]
    sheet = Image.open(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.width > 0 and sheet.height > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "missing.mp4", "--preset", "baseline"], "No video at"),
        (["demo", "notes.mp4", "--preset", "baseline"], "could not be opened as a video"),
        (["demo", "empty.mp4", "--preset", "baseline"], "empty file"),
        (["demo", "--preset", "nope"], "Unknown preset 'nope'"),
        (["create-tiny", "out", "--preset", "nope"], "Unknown preset 'nope'"),
    ],
)
def test_user_errors_exit_nonzero_without_traceback(tmp_path, args, message):
    (tmp_path / "notes.mp4").write_text("not a video\n" * 100)
    (tmp_path / "empty.mp4").write_bytes(b"")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
