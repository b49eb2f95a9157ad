r"""Reading a source checkpoint: safetensors (single or sharded), PyTorch files loaded weights-only, or a Transformers
model through its own loader with exact key matching."""

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from .layouts import CheckpointKeysError, CheckpointShapeError


class CheckpointReadError(ValueError):
    """The source weights could not be read: a corrupt, truncated or unsupported file."""


TORCH_SUFFIXES = (".bin", ".pt", ".pth")


def checkpoint_files(source: str | os.PathLike) -> list[Path]:
    r"""
    The weight files of `source`: the file itself, or in a folder the safetensors shards named by its index, a
    single `model.safetensors`, then the PyTorch equivalents.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"Source checkpoint {str(source)!r} does not exist.")
    if source.is_file():
        return [source]
    for index_name, single_name in ((SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME), (WEIGHTS_INDEX_NAME, WEIGHTS_NAME)):
        if (source / index_name).is_file():
            try:
                shards = sorted(set(json.loads((source / index_name).read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError) as error:
                raise CheckpointReadError(f"{source / index_name} is not a valid shard index: {error}") from error
            missing = [name for name in shards if not (source / name).is_file()]
            if missing:
                raise FileNotFoundError(f"{source / index_name} names shard(s) that are not in the folder: {missing}.")
            return [source / name for name in shards]
        if (source / single_name).is_file():
            return [source / single_name]
    found = sorted(path.name for path in source.iterdir() if path.suffix in (".safetensors", *TORCH_SUFFIXES))
    if len(found) == 1:
        return [source / found[0]]
    raise FileNotFoundError(
        f"No weights found in {str(source)!r}: expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} or "
        f"{WEIGHTS_NAME}" + (f", found several candidates {found}; pass one file." if found else ".")
    )


def read_state_dict(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    r"""
    All tensors of a source checkpoint (a file or a folder), on CPU. PyTorch pickles are loaded with
    `weights_only=True`; a file that needs arbitrary code to unpickle is refused.
    """
    state_dict: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(source):
        try:
            if path.suffix == ".safetensors":
                tensors = load_file(path)
            elif path.suffix in TORCH_SUFFIXES:
                # mmap keeps a large file out of memory, but only the zip format (torch >= 1.6) supports it.
                tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
            else:
                raise CheckpointReadError(f"{path} is neither safetensors nor a PyTorch weights file ({TORCH_SUFFIXES}).")
        except (SafetensorError, RuntimeError, EOFError, OSError) as error:
            raise CheckpointReadError(f"Could not read {path}: {error}. The file may be truncated or corrupt.") from error
        except pickle.UnpicklingError as error:
            raise CheckpointReadError(
                f"{path} is not a plain tensor file (weights_only loading refused it: {error}). Re-save it as "
                "safetensors; arbitrary pickles are never loaded."
            ) from error
        if isinstance(tensors, dict) and "state_dict" in tensors and isinstance(tensors["state_dict"], dict):
            tensors = tensors["state_dict"]
        if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise CheckpointReadError(f"{path} does not hold a flat mapping of tensor names to tensors.")
        duplicated = state_dict.keys() & tensors.keys()
        if duplicated:
            raise CheckpointReadError(f"{path} repeats keys already read from another shard: {sorted(duplicated)[:10]}")
        state_dict.update(tensors)
    if not state_dict:
        raise CheckpointReadError(f"{str(source)!r} holds no tensors.")
    return state_dict


def load_transformers_checkpoint(model_class: type[PreTrainedModel], source: Path) -> PreTrainedModel:
    r"""
    Reads `source` through Transformers' own loader for `model_class`, which knows every historic key layout of its
    family, then demands an exact match: `from_pretrained` would initialise missing weights randomly and ignore extra
    ones, which a conversion may not.
    """
    try:
        # Mismatched shapes are collected (and refused below) rather than raised halfway through loading.
        model, loading = model_class.from_pretrained(
            source, output_loading_info=True, dtype="auto", ignore_mismatched_sizes=True
        )
    except (OSError, SafetensorError) as error:
        raise CheckpointReadError(f"Could not read the weights in {str(source)!r}: {error}") from error
    if loading["missing_keys"] or loading["unexpected_keys"]:
        raise CheckpointKeysError(list(loading["missing_keys"]), list(loading["unexpected_keys"]), str(source))
    if loading["mismatched_keys"]:
        raise CheckpointShapeError(
            {key: (tuple(got), tuple(want)) for key, got, want in loading["mismatched_keys"]}, str(source)
        )
    return model
