r"""Writes checkpoint folders atomically and Hub-ready (remote code, `auto_map`, `custom_pipelines`)."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import PreTrainedModel, ProcessorMixin
from transformers.dynamic_module_utils import custom_object_save

from .. import COMPOSITE_AUTO_MAP, VIDEO_TEXT_TO_TEXT
from ..processors.pipeline_vidcomp import VideoTextToTextPipeline


class OutputExistsError(FileExistsError):
    """The output folder exists and is not empty, and overwriting was not asked for."""


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    r"""
    Yields a temporary sibling folder of `out_dir` to write into, and renames it to `out_dir` only when the block
    finishes without error. A failure removes the temporary folder, so no half-written checkpoint is ever left.
    """
    out = Path(out_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{str(out)!r} already exists and is not empty. Choose another folder or overwrite it.")
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


def save_checkpoint(
    model: PreTrainedModel, processor: ProcessorMixin, out_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    r"""
    Saves model, processor, generation config and every remote-code file into `out_dir`, atomically. The folder
    then loads with `AutoModelForImageTextToText`, `AutoProcessor` and `pipeline("video-text-to-text")` under
    `trust_remote_code=True`, without this package installed.
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
    with atomic_output_dir(out_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        custom_object_save(VideoTextToTextPipeline, staging)
    return Path(out_dir)
