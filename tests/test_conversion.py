"""Conversion and publishing: layouts, strict keys, the written folder, its card, verification and the upload path."""

import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from transformers.core_model_loading import Chunk, Concatenate, Split, WeightConverter, WeightRenaming

from transformers_vidcomp.cli import main
from transformers_vidcomp.conversion import (
    CONVERTERS,
    CardInfo,
    CheckpointConverter,
    CheckpointKeysError,
    CheckpointLayout,
    CheckpointReadError,
    CheckpointShapeError,
    HubOfflineError,
    HubPermissionError,
    HubTokenError,
    LayoutError,
    LocalCheckpointExporter,
    OutputExistsError,
    VerificationError,
    apply_layout,
    check_state_dict,
    export_checkpoint,
    push_checkpoint,
    read_state_dict,
    render_model_card,
    token_figures,
)
from transformers_vidcomp.conversion import writer
from transformers_vidcomp.modeling import VidCompForConditionalGeneration
from transformers_vidcomp.tiny import build_tiny


def leftovers(folder: Path) -> list[str]:
    """Staging or retired folders an atomic write might have left next to its output."""
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# A made-up but typical "original" layout: other prefixes, fused attention projections (equal-sized for the vision
# tower, GQA-sized for the LLM), the added-token embeddings stored apart, and a stale rotary buffer.
LEGACY_LAYOUT = CheckpointLayout(
    name="legacy-test",
    transforms=[
        WeightRenaming(r"^visual\.", "model.vision_tower."),
        WeightRenaming(r"^llm\.", "model.language_model."),
        WeightRenaming(r"^mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
        WeightRenaming(r"^mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
        WeightRenaming(r"^output\.", "lm_head."),
        WeightConverter("self_attn.in_proj", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], [Chunk(dim=0)]),
        WeightConverter("self_attn.qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], [Split(dim=0)]),
        WeightConverter(["embed_tokens.base", "embed_tokens.added"], "embed_tokens", [Concatenate(dim=0)]),
    ],
    dropped=(r"rotary_emb\.inv_freq$",),
)

PREFIXES = {
    "model.vision_tower.": "visual.",
    "model.language_model.": "llm.",
    "model.multi_modal_projector.linear_1.": "mm_projector.0.",
    "model.multi_modal_projector.linear_2.": "mm_projector.2.",
    "lm_head.": "output.",
}


def to_legacy(state_dict: dict[str, torch.Tensor], added_tokens: int = 5) -> dict[str, torch.Tensor]:
    """Writes our state dict in `LEGACY_LAYOUT`, by hand, independently of the layout code."""
    legacy = {}
    for key, tensor in state_dict.items():
        prefix = next(p for p in PREFIXES if key.startswith(p))
        legacy[PREFIXES[prefix] + key[len(prefix):]] = tensor.clone()
    for key in [k for k in legacy if ".q_proj." in k]:
        parts = [legacy.pop(key.replace("q_proj", name)) for name in ("q_proj", "k_proj", "v_proj")]
        fused = "in_proj" if key.startswith("visual.") else "qkv"
        legacy[key.replace("q_proj", fused)] = torch.cat(parts)
    embeddings = legacy.pop("llm.embed_tokens.weight")
    legacy["llm.embed_tokens.base.weight"] = embeddings[:-added_tokens].clone()
    legacy["llm.embed_tokens.added.weight"] = embeddings[-added_tokens:].clone()
    legacy["llm.rotary_emb.inv_freq"] = torch.ones(8)
    return legacy


class LegacyTestConverter(CheckpointConverter):
    kind = "legacy-test"
    description = "the made-up layout of the tests"
    layout = LEGACY_LAYOUT

    def build_config(self, source):
        return build_tiny()[0].config

    def build_processor(self, source, config):
        return build_tiny()[1]

    def card_info(self, source, config):
        return CardInfo(source="Converted from a legacy test layout.", base_model=["Qwen/Qwen2-0.5B"],
                        license="mit", datasets=["lmms-lab/LLaVA-Video-178K"], trained=False)


@pytest.fixture()
def legacy_source(tmp_path):
    model, _ = build_tiny(seed=3)
    source = tmp_path / "legacy"
    source.mkdir()
    save_file(to_legacy(model.state_dict()), source / "model.safetensors")
    return model, source


def test_layout_maps_renames_splits_and_concatenations_exactly(legacy_source):
    model, source = legacy_source
    with torch.device("meta"):
        target = VidCompForConditionalGeneration(model.config)
    mapped, dropped = apply_layout(read_state_dict(source), LEGACY_LAYOUT, target)
    assert dropped == ["llm.rotary_emb.inv_freq"]
    check_state_dict(mapped, target)
    expected = model.state_dict()
    assert mapped.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(mapped[key], tensor), key


def test_layout_refuses_two_keys_for_one_target():
    layout = CheckpointLayout("clash", [WeightRenaming(r"^old\.", "new.")])
    with pytest.raises(LayoutError, match="'old.w' and 'new.w'"):
        apply_layout({"old.w": torch.zeros(1), "new.w": torch.zeros(1)}, layout)
    # A converter's output may not silently replace a tensor that came through unchanged.
    fused = CheckpointLayout("fused", [WeightConverter("attn.qkv", ["attn.q", "attn.k", "attn.v"], [Chunk(dim=0)])])
    with pytest.raises(LayoutError, match="'attn.q.weight' to 'attn.q.weight', which its converter also builds"):
        apply_layout({"attn.q.weight": torch.zeros(2), "attn.qkv.weight": torch.zeros(6)}, fused)


def test_convert_cli_writes_a_verified_hub_ready_folder(legacy_source, tmp_path, monkeypatch, capsys):
    model, source = legacy_source
    monkeypatch.setitem(CONVERTERS, LegacyTestConverter.kind, LegacyTestConverter)
    out = tmp_path / "converted"
    assert main(["convert", "legacy-test", str(source), str(out), "--max-shard-size", "300KB"]) == 0
    printed = capsys.readouterr().out
    assert "left out by the layout: llm.rotary_emb.inv_freq" in printed
    assert "verified: reloaded with trust_remote_code" in printed

    files = {p.name for p in out.iterdir()}
    # Sharded above the threshold, with its index.
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) > 1
    assert {"README.md", "config.json", "generation_config.json", "processor_config.json", "chat_template.jinja",
            "tokenizer.json", "modeling_vidcomp.py", "configuration_vidcomp.py", "components_vidcomp.py",
            "processing_vidcomp.py", "video_processing_vidcomp.py", "pipeline_vidcomp.py"} <= files
    config = json.loads((out / "config.json").read_text())
    assert {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"} <= set(config["auto_map"])
    assert config["custom_pipelines"]["video-text-to-text"]["impl"] == "pipeline_vidcomp.VideoTextToTextPipeline"
    # The weights are the source model's, exactly.
    written = read_state_dict(out)
    for key, tensor in model.state_dict().items():
        assert torch.equal(written[key], tensor), key

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "video-text-to-text"
    assert card.data.base_model == ["Qwen/Qwen2-0.5B"] and card.data.license == "mit"
    assert card.data.datasets == ["lmms-lab/LLaVA-Video-178K"]
    assert {"video-llm", "token-compression", "random-weights"} <= set(card.data.tags)
    assert "Converted from a legacy test layout." in card.text
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda sd: sd.pop("llm.layers.1.mlp.down_proj.weight"), r"1 missing key\(s\): model\.language_model\.layers\.1\.mlp\.down_proj\.weight"),
        (lambda sd: sd.update({"llm.layers.0.extra.weight": torch.zeros(2)}), r"unexpected key\(s\): model\.language_model\.layers\.0\.extra\.weight"),
        (lambda sd: sd.update({"mm_projector.2.weight": torch.zeros(64, 48)}), r"model\.multi_modal_projector\.linear_2\.weight: checkpoint \[64, 48\] vs model \[64, 64\]"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_corrupt_source_names_the_key_and_writes_nothing(legacy_source, tmp_path, monkeypatch, capsys, corrupt, message):
    _, source = legacy_source
    state_dict = load_file(source / "model.safetensors")
    corrupt(state_dict)
    save_file(state_dict, source / "model.safetensors")
    monkeypatch.setitem(CONVERTERS, LegacyTestConverter.kind, LegacyTestConverter)
    out = tmp_path / "converted"
    assert main(["convert", "legacy-test", str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, "a user error is one line, not a traceback"
    assert re.search(message, err), err
    assert not out.exists() and leftovers(tmp_path) == []


def test_export_of_a_tiny_checkpoint_verifies_and_pushing_offline_keeps_the_folder(tiny_checkpoint, tmp_path):
    # `vidcomp export` with --push-to-hub, on a machine with HF_HUB_OFFLINE=1 (these tests' setting).
    out = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, "-m", "transformers_vidcomp.cli", "export", str(tiny_checkpoint), str(out),
         "--push-to-hub", "someone/tiny-baseline"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr
    # Reloaded, the same float32 weights give the same logits up to the order of threaded reductions (0 or ~1e-6).
    verified = re.search(r"verified: reloaded with trust_remote_code, max \|logit difference\| = (\S+)", result.stdout)
    assert verified and float(verified.group(1)) < 1e-5, result.stdout
    assert "offline mode is on" in result.stderr and "intact" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    card = ModelCard.load(out / "README.md")
    assert 'from_pretrained("someone/tiny-baseline", trust_remote_code=True)' in card.text
    # The source's card said its weights were random; the exported one still does.
    assert "random-weights" in card.data.tags and "These weights are random" in card.text


def test_export_refuses_a_non_empty_folder_and_foreign_checkpoints(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["export", str(tiny_checkpoint), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "llava_onevision"}))
    assert main(["export", str(foreign), str(tmp_path / "x")]) == 2
    assert "'llava_onevision' checkpoint, not a transformers-vidcomp one" in capsys.readouterr().err


def test_dry_run_verifies_but_keeps_nothing(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["export", str(tiny_checkpoint), str(out), "--dry-run", "--push-to-hub", "someone/x"]) == 0
    printed = capsys.readouterr().out
    assert "model.safetensors" in printed and "dry run: nothing written" in printed
    assert not out.exists()


def test_failed_verification_leaves_no_folder(tiny_checkpoint, tmp_path, monkeypatch):
    real_write = writer.write_checkpoint_files

    def write_wrong_config(model, processor, folder, max_shard_size):
        real_write(model, processor, folder, max_shard_size)
        config = json.loads((folder / "config.json").read_text())
        config["projector_hidden_act"] = "relu"  # a writer bug: the saved model is not the source model
        (folder / "config.json").write_text(json.dumps(config))

    monkeypatch.setattr(writer, "write_checkpoint_files", write_wrong_config)
    converted = LocalCheckpointExporter().convert(tiny_checkpoint)
    out = tmp_path / "bad"
    with pytest.raises(VerificationError, match="logits differ"):
        export_checkpoint(converted, out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_card_figures_for_budgets_and_uncapped_processors(tiny):
    from transformers_vidcomp import TokenBudgetError

    model, processor = tiny
    model.config.video_token_budget = 15  # one frame pools to 16 tokens
    with pytest.raises(TokenBudgetError, match="cannot hold one frame"):
        token_figures(model, processor)
    model.config.video_token_budget = None
    processor.video_processor.num_frames = None  # fps 4, no cap: the card describes an hour
    figures = token_figures(model, processor)
    assert figures.max_decoded_frames == 4 * 3600 and figures.tokens_per_video == 16 * 16
    assert "a one-hour video" in render_model_card(model, processor, CardInfo(source="t"), repo_id="me/m").text


def test_card_figures_are_what_the_model_produces(tiny, tmp_path):
    model, processor = tiny
    frames = processor.video_processor.num_frames
    size = processor.video_processor.size["height"]
    for budget in (None, 100):
        model.config.video_token_budget = budget
        figures = token_figures(model, processor)
        with torch.no_grad():
            features = model.model.get_video_features(torch.randn(frames, 3, size, size), torch.tensor([frames]))
        assert figures.tokens_per_video == int(features.token_counts[0])
        card = render_model_card(model, processor, CardInfo(source="test"), repo_id="me/m")
        assert f"**at most {figures.tokens_per_video}**" in card.text
        assert f"{figures.compression_ratio:.1f}×" in card.text
    assert figures.tokens_per_video == 96  # 6 frames of 4x4 pooled tokens fit a budget of 100
    custom = render_model_card(model, processor, CardInfo(source="test"), repo_id="me/m", template="custom")
    assert "vidcomp_uniform_sampler" in custom.text and "## Citation" in custom.text


def test_read_state_dict_refuses_pickles_and_truncated_files(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    assert torch.equal(read_state_dict(tmp_path / "plain.pt")["w"], torch.ones(2))
    torch.save({"w": datetime.date(2024, 1, 1)}, tmp_path / "pickle.bin")  # needs a global: refused
    with pytest.raises(CheckpointReadError, match="weights_only"):
        read_state_dict(tmp_path / "pickle.bin")
    save_file({"w": torch.ones(1000)}, tmp_path / "whole.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "whole.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointReadError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "cut.safetensors")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "absent")


# ---- publishing: everything up to the network call, and the failures themselves ----


@pytest.fixture()
def online(monkeypatch, tmp_path):
    """Lifts the tests' offline mode and isolates the token store."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    folder = tmp_path / "ready"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_push_calls_create_repo_branch_and_upload(online, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: calls.append(("create_branch", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload_folder", kw)) or "commit")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert push_checkpoint(online, "me/model", private=True, revision="v1") == "commit"
    assert calls[0] == ("create_repo", "me/model", {"private": True, "exist_ok": True})
    assert calls[1] == ("create_branch", "me/model", {"branch": "v1", "exist_ok": True})
    upload = calls[2][1]
    assert (upload["repo_id"], Path(upload["folder_path"]), upload["revision"], upload["create_pr"]) == (
        "me/model", online, "v1", False)


def test_push_without_a_token_says_how_to_get_one(online):
    with pytest.raises(HubTokenError, match="HF_TOKEN or run `hf auth login`"):
        push_checkpoint(online, "me/model")
    assert (online / "config.json").is_file()


def test_push_without_network_fails_cleanly(online, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubOfflineError, match="may be offline. Nothing was uploaded"):
        push_checkpoint(online, "me/model")
    assert (online / "config.json").is_file()


def test_push_to_someone_elses_repo_is_a_permission_error(online, monkeypatch):
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    def forbidden(self, repo_id, **kwargs):
        response = httpx2.Response(403, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
        raise HfHubHTTPError("403 Forbidden: You don't have the rights to create a model under this namespace",
                             response=response)

    monkeypatch.setattr(HfApi, "create_repo", forbidden)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with pytest.raises(HubPermissionError, match="belongs to someone else"):
        push_checkpoint(online, "google/not-mine")
    assert (online / "config.json").is_file()


def test_export_checkpoint_refuses_a_non_empty_folder(tiny, tmp_path):
    from transformers_vidcomp.conversion import ConvertedCheckpoint

    model, processor = tiny
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(OutputExistsError):
        export_checkpoint(ConvertedCheckpoint(model, processor, CardInfo(source="t")), out)
    assert [p.name for p in out.iterdir()] == ["x"] and leftovers(tmp_path) == []


def test_the_cards_usage_snippets_run(tiny_checkpoint, demo_video, tmp_path):
    # The snippets load "tiny-baseline" (the folder's own name) and read clip.mp4 from the working directory.
    shutil.copytree(tiny_checkpoint, tmp_path / tiny_checkpoint.name)
    shutil.copy(demo_video[0], tmp_path / "clip.mp4")
    card = (tmp_path / tiny_checkpoint.name / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(snippets) == 3  # AutoModel + processor, pipeline, Trainer
    program = "\n".join(snippets).replace('"out"', '"out", max_steps=2, use_cpu=True, report_to=[]')
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_export_then_push_through_the_cli_up_to_the_network_call(tiny_checkpoint, tmp_path, online, monkeypatch, capsys):
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    from transformers_vidcomp.conversion import verify_checkpoint

    uploads = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: None)

    def upload_folder(self, **kwargs):
        uploads.append({**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())})
        return SimpleNamespace(commit_url="https://huggingface.co/me/tiny/commit/abc", pr_url=None)

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "tiny"
    assert main(["export", str(tiny_checkpoint), str(out), "--push-to-hub", "me/tiny", "--revision", "v1"]) == 0
    assert "pushed to https://huggingface.co/me/tiny/commit/abc" in capsys.readouterr().out
    (upload,) = uploads
    assert upload["repo_id"] == "me/tiny" and upload["revision"] == "v1" and Path(upload["folder_path"]) == out
    assert {"README.md", "config.json", "model.safetensors", "modeling_vidcomp.py"} <= set(upload["files"])
    # The uploaded folder reproduces the model the tiny checkpoint was built from (same seed), rebuilt in memory.
    assert verify_checkpoint(out, *build_tiny()) <= 1e-5


def test_unknown_converter_kind_is_a_one_line_error(tmp_path, capsys):
    assert main(["convert", "no-such-kind", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "No converter for 'no-such-kind'. Available:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_push_to_an_existing_foreign_repo_fails_at_upload_with_a_permission_error(online, monkeypatch):
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    def http_error(status):
        def fail(self, **kwargs):
            response = httpx2.Response(status, request=httpx2.Request("POST", "https://huggingface.co/api/models/x"))
            raise HfHubHTTPError(f"{status} error", response=response)
        return fail

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)  # exist_ok: the repo exists
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(HfApi, "upload_folder", http_error(403))
    with pytest.raises(HubPermissionError, match="--create-pr to propose"):
        push_checkpoint(online, "google/not-mine")
    monkeypatch.setattr(HfApi, "upload_folder", http_error(401))
    with pytest.raises(HubTokenError, match="invalid or expired.*hf upload google/not-mine .* --revision v2"):
        push_checkpoint(online, "google/not-mine", revision="v2", create_pr=True)
    assert (online / "config.json").is_file()


def test_a_pull_request_push_does_not_create_the_branch(tiny_checkpoint, tmp_path, online, monkeypatch, capsys):
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", kw)))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: calls.append(("create_branch", kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload_folder", kw)) or SimpleNamespace(
        commit_url="https://huggingface.co/o/m/commit/1", pr_url="https://huggingface.co/o/m/discussions/7"))
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "pr"
    out.mkdir()
    (out / "old-file").write_text("replaced by --overwrite")
    args = ["export", str(tiny_checkpoint), str(out), "--overwrite", "--push-to-hub", "o/m", "--private", "--create-pr"]
    assert main(args) == 0
    assert "(pull request https://huggingface.co/o/m/discussions/7)" in capsys.readouterr().out
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["private"] is True and calls[1][1]["create_pr"] is True
    assert not (out / "old-file").exists() and (out / "README.md").is_file() and leftovers(tmp_path) == []


def test_bad_requests_are_refused_before_any_work(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_checkpoint), str(tmp_path / "a"), "--create-pr"])
    assert exit_info.value.code == 2 and "--create-pr only apply with --push-to-hub" in capsys.readouterr().err
    assert main(["export", str(tiny_checkpoint), str(tmp_path / "b"), "--push-to-hub", "not a repo id"]) == 2
    assert "is not a Hub repository id" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_does_not_load_fails_verification(tiny_checkpoint, tmp_path, monkeypatch):
    real_write = writer.write_checkpoint_files

    def forget_a_code_file(model, processor, folder, max_shard_size):
        real_write(model, processor, folder, max_shard_size)
        (folder / "compressor_pool.py").unlink()

    monkeypatch.setattr(writer, "write_checkpoint_files", forget_a_code_file)
    with pytest.raises(VerificationError, match="did not load and run"):
        export_checkpoint(LocalCheckpointExporter().convert(tiny_checkpoint), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_every_package_directory_ships_in_the_wheel():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(root / "src").parts)
        for path in (root / "src" / "transformers_vidcomp").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
