r"""Writes checkpoint folders atomically and Hub-ready (remote code, `auto_map`, `custom_pipelines`)."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCard
from transformers import PreTrainedModel, ProcessorMixin
from transformers.dynamic_module_utils import custom_object_save

from .. import COMPOSITE_AUTO_MAP, VIDEO_TEXT_TO_TEXT
from ..processors.pipeline_vidcomp import VideoTextToTextPipeline
from .verify import verify_checkpoint


class OutputExistsError(FileExistsError):
    """The output folder exists and is not empty, and overwriting was not asked for."""


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuses a non-empty `out_dir` unless `overwrite`, before any work is done. Returns its absolute path."""
    out = Path(out_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"{str(out)!r} already exists and is not empty. Choose another folder, or pass --overwrite to replace it."
        )
    return out


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    r"""
    Yields a temporary sibling folder of `out_dir` to write into, and renames it to `out_dir` only when the block
    finishes without error. A failure removes the temporary folder, so no half-written checkpoint is ever left.
    """
    out = check_output_dir(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(retired / out.name)
        staging.rename(out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(out)


DEFAULT_MAX_SHARD_SIZE = "5GB"


def write_checkpoint_files(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    folder: str | os.PathLike,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> None:
    r"""
    Writes model weights (safetensors, sharded above `max_shard_size`), config with `auto_map` and
    `custom_pipelines`, generation config, processor with its chat template, and every remote-code file into an
    existing `folder`. The folder then loads with `AutoModelForImageTextToText`, `AutoProcessor` and
    `pipeline("video-text-to-text")` under `trust_remote_code=True`, without this package installed.
    """
    model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), **COMPOSITE_AUTO_MAP}
    module = VideoTextToTextPipeline.__module__.rsplit(".", 1)[-1]
    model.config.custom_pipelines = {
        VIDEO_TEXT_TO_TEXT: {
            "impl": f"{module}.{VideoTextToTextPipeline.__name__}",
            "pt": ["AutoModelForImageTextToText"],
            "type": "multimodal",
        }
    }
    # Our key names, not the legacy ones Transformers would restore for sub-models such as DINOv2 (LongVU's
    # sampler): `vidcomp export` checks a folder's keys against the model, and loading accepts both.
    model.save_pretrained(folder, max_shard_size=max_shard_size, save_original_format=False)
    processor.save_pretrained(folder)
    custom_object_save(VideoTextToTextPipeline, folder)


@dataclass
class SavedCheckpoint:
    r"""
    A written folder.

    Args:
        path: where it is.
        files: file names and sizes in bytes.
        max_logit_difference: verification's largest absolute logit difference, if it was verified.
    """

    path: Path
    files: dict[str, int]
    max_logit_difference: float | None = None


def save_checkpoint(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    model_card: ModelCard | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    verify: bool = False,
) -> SavedCheckpoint:
    r"""
    `write_checkpoint_files` plus an optional `README.md` model card, atomically into `out_dir`. With `verify`, the
    staged folder must first reload in a clean interpreter and reproduce `model`'s logits (`verify_checkpoint`);
    otherwise nothing is kept.
    """
    difference = None
    with atomic_output_dir(out_dir, overwrite=overwrite) as staging:
        write_checkpoint_files(model, processor, staging, max_shard_size)
        if model_card is not None:
            model_card.save(staging / "README.md")
        if verify:
            difference = verify_checkpoint(staging, model, processor)
        files = {path.name: path.stat().st_size for path in sorted(staging.iterdir())}
    return SavedCheckpoint(Path(out_dir).resolve(), files, difference)
