r"""
Writing a converted model as a Hub-ready folder: files, card, verification.

The order is the safety rule: everything is written into a temporary sibling of the output folder and verified
there; only a folder that reloads and reproduces the source's logits is renamed into place, and only a folder in
place is then uploaded (`push_checkpoint`). A dry run does the same in a throwaway folder.
"""

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .cards import render_model_card
from .converters import ConvertedCheckpoint
from .writer import DEFAULT_MAX_SHARD_SIZE, save_checkpoint


@dataclass
class ExportReport:
    r"""
    What an export did.

    Args:
        out_dir: the written folder (gone again after a dry run).
        files: file names and sizes in bytes.
        max_logit_difference: verification's largest absolute logit difference.
        dropped_keys: source keys the layout deliberately left out.
        dry_run: the folder was verified in a scratch location and not kept.
    """

    out_dir: Path
    files: dict[str, int]
    max_logit_difference: float
    dropped_keys: list[str] = field(default_factory=list)
    dry_run: bool = False


def export_checkpoint(
    converted: ConvertedCheckpoint,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    repo_id: str | None = None,
    dry_run: bool = False,
) -> ExportReport:
    r"""
    Writes `converted` into `out_dir` with its card, and verifies the folder in a clean interpreter before it
    takes `out_dir`'s place. `repo_id` is the Hub id the card's snippets load from (the folder name by default).

    Raises:
        OutputExistsError: `out_dir` is not empty and `overwrite` is false.
        VerificationError: the folder does not reproduce the model; nothing is left behind.
    """
    card = render_model_card(
        converted.model, converted.processor, converted.card_info, repo_id=repo_id or Path(out_dir).name
    )
    with tempfile.TemporaryDirectory(prefix="vidcomp-dry-run-") as scratch:
        saved = save_checkpoint(
            converted.model,
            converted.processor,
            Path(scratch) / Path(out_dir).name if dry_run else out_dir,
            overwrite=overwrite,
            model_card=card,
            max_shard_size=max_shard_size,
            verify=True,
        )
    return ExportReport(
        out_dir=Path(out_dir).resolve(),
        files=saved.files,
        max_logit_difference=saved.max_logit_difference,
        dropped_keys=converted.dropped_keys,
        dry_run=dry_run,
    )
