r"""
Converters: one per source checkpoint format, all sharing one strict path.

A converter says three things about its source: the config it implies, the processor, and the key layout
(`CheckpointLayout`). `CheckpointConverter.convert` does the rest the same way for every source: it reads the
tensors, maps them, checks every key and shape against a meta-device model (no memory spent), and only then loads
them with `from_pretrained(None, config=..., state_dict=...)`. Method issues add converters with
`@register_converter`; `LocalCheckpointExporter` handles our own folders for `vidcomp export`.
"""

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import ModelCard
from transformers import GenerationConfig
from transformers.utils import logging

from ..modeling import VidCompConfig, VidCompForConditionalGeneration
from ..processors import VidCompProcessor, load_processor
from .cards import RANDOM_WEIGHTS_TAG, REAL_WEIGHTS_TAG, CardInfo
from .layouts import CheckpointLayout, apply_layout, check_state_dict
from .sources import read_state_dict


logger = logging.get_logger(__name__)


class UnknownConverterError(ValueError):
    """No converter is registered for the requested source kind."""


class SourceCheckpointError(ValueError):
    """The source is not of the kind its converter reads, or its config cannot describe a model of ours."""


class NotAVidCompCheckpointError(SourceCheckpointError):
    """`vidcomp export` was given a folder that is not a transformers-vidcomp checkpoint."""


def source_model_type(source: Path, error: type[SourceCheckpointError] = SourceCheckpointError) -> str | None:
    """The `model_type` in a source folder's config.json; `error` if the folder has no readable config."""
    config_file = source / "config.json"
    if not source.is_dir() or not config_file.is_file():
        raise error(f"{str(source)!r} is not a checkpoint folder with a config.json.")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as decode_error:
        raise error(f"{config_file} is not valid JSON: {decode_error}.") from decode_error
    if not isinstance(config, dict):
        raise error(f"{config_file} does not hold a JSON object.")
    return config.get("model_type")


def hub_id_of(source: Path) -> str | None:
    """The Hub id of a folder inside the Hugging Face cache (`.../models--org--name/snapshots/<hash>`), if it is one."""
    for part in source.resolve().parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/", 1)
    return None


@dataclass
class ConvertedCheckpoint:
    r"""
    A converted model ready to be written.

    Args:
        model: the loaded model, in eval mode.
        processor: its processor.
        card_info: what its model card says about provenance and license.
        dropped_keys: source keys the layout deliberately left out.
    """

    model: VidCompForConditionalGeneration
    processor: VidCompProcessor
    card_info: CardInfo
    dropped_keys: list[str] = field(default_factory=list)


class CheckpointConverter(ABC):
    r"""
    Turns one kind of source checkpoint into ours. Subclasses declare `kind`, `description` and `layout`, and build
    the config, processor and card information from the source.
    """

    kind: ClassVar[str]
    description: ClassVar[str]
    layout: ClassVar[CheckpointLayout]

    @abstractmethod
    def build_config(self, source: Path) -> VidCompConfig:
        """Our config for the source, raising a clear error if the source is not of this kind."""

    @abstractmethod
    def build_processor(self, source: Path, config: VidCompConfig) -> VidCompProcessor:
        """Our processor for the source: tokenizer, chat template and video settings."""

    @abstractmethod
    def card_info(self, source: Path, config: VidCompConfig) -> CardInfo:
        """Provenance, license and base models for the card."""

    def read_weights(self, source: Path) -> dict[str, torch.Tensor]:
        return read_state_dict(source)

    # Sources that carry their own `generation_config.json` (a Transformers-format folder) keep it.
    keeps_source_generation_config: ClassVar[bool] = False

    def generation_config(self, source: Path, config: VidCompConfig) -> GenerationConfig | None:
        """The generation defaults to ship; `None` derives them from the config."""
        if self.keeps_source_generation_config and (source / "generation_config.json").is_file():
            return GenerationConfig.from_pretrained(source)
        return None

    def convert(self, source: str | os.PathLike) -> ConvertedCheckpoint:
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"Source checkpoint {str(source)!r} does not exist.")
        config = self.build_config(source)
        with torch.device("meta"):
            target = VidCompForConditionalGeneration(config)
        mapped, dropped = apply_layout(self.read_weights(source), self.layout, target)
        check_state_dict(mapped, target, source=str(source))
        model = VidCompForConditionalGeneration.from_pretrained(None, config=config, state_dict=mapped)
        generation_config = self.generation_config(source, config)
        if generation_config is not None:
            model.generation_config = generation_config
        return ConvertedCheckpoint(
            model=model.eval(),
            processor=self.build_processor(source, config),
            card_info=self.card_info(source, config),
            dropped_keys=dropped,
        )


CONVERTERS: dict[str, type[CheckpointConverter]] = {}


def register_converter(cls: type[CheckpointConverter]) -> type[CheckpointConverter]:
    """Class decorator: makes `vidcomp convert <cls.kind>` available."""
    CONVERTERS[cls.kind] = cls
    return cls


def get_converter(kind: str) -> CheckpointConverter:
    if kind not in CONVERTERS:
        available = ", ".join(sorted(CONVERTERS)) or "none registered"
        raise UnknownConverterError(f"No converter for {kind!r}. Available: {available}.")
    return CONVERTERS[kind]()


class LocalCheckpointExporter(CheckpointConverter):
    r"""
    Our own checkpoint folders, for example one written by `Trainer` or `save_pretrained`: the layout is the
    identity, but every key is still checked, and the folder is rewritten Hub-ready with card and remote code.
    The card keeps the front matter (base model, license, datasets) of a `README.md` already in the folder.
    """

    kind = "vidcomp"
    keeps_source_generation_config = True
    description = "a transformers-vidcomp checkpoint folder"
    layout = CheckpointLayout(name="transformers-vidcomp")

    def build_config(self, source: Path) -> VidCompConfig:
        model_type = source_model_type(source, NotAVidCompCheckpointError)
        if model_type != VidCompConfig.model_type:
            raise NotAVidCompCheckpointError(
                f"{str(source)!r} holds a {model_type!r} checkpoint, not a transformers-vidcomp one. Convert it with "
                "`vidcomp convert KIND SRC OUT` (`vidcomp convert --help` lists the kinds)."
            )
        return VidCompConfig.from_pretrained(source)

    def build_processor(self, source: Path, config: VidCompConfig) -> VidCompProcessor:
        try:
            return load_processor(source)
        except OSError as error:
            raise NotAVidCompCheckpointError(
                f"{str(source)!r} has no usable processor files (processor_config.json, tokenizer): {error}. "
                "Save the processor next to the model with `processor.save_pretrained(folder)`."
            ) from error

    def card_info(self, source: Path, config: VidCompConfig) -> CardInfo:
        info = CardInfo(source=f"Exported from the local checkpoint `{source.name}` with `vidcomp export`.")
        if (source / "README.md").is_file():
            try:
                data = ModelCard.load(source / "README.md").data
            except ValueError as error:  # malformed front matter: the new card starts from the defaults
                logger.warning(f"Ignoring the unreadable front matter of {source / 'README.md'}: {error}")
                return info
            info.base_model = _as_list(data.base_model)
            info.license = data.license or info.license
            info.datasets = _as_list(data.datasets)
            info.trained = RANDOM_WEIGHTS_TAG not in (data.tags or [])
            if REAL_WEIGHTS_TAG in (data.tags or []):
                from ..real import training_statement

                info.extra_tags = [REAL_WEIGHTS_TAG]
                info.training = training_statement(trained=info.trained)
        return info


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])
