r"""
Source checkpoint layouts declared as data, and their strict application to a state dict.

A `CheckpointLayout` lists Transformers' own weight transforms (`WeightRenaming` for regex renames, `WeightConverter`
with `Concatenate`, `Chunk`, `Split`, ... for fused or split tensors) plus the keys a layout deliberately leaves
behind. `apply_layout` runs them over a plain state dict, the way `from_pretrained` runs them while loading, and
`check_state_dict` then demands an exact match with the target model: every missing, unexpected or mis-shaped key is
reported by name. Nothing is dropped unless the layout says so.
"""

import re
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.core_model_loading import WeightConverter, WeightRenaming, WeightTransform, rename_source_key


class CheckpointKeysError(KeyError):
    """The converted state dict does not have exactly the keys the target model expects."""

    def __init__(self, missing: list[str], unexpected: list[str], source: str = "the checkpoint"):
        self.missing, self.unexpected = sorted(missing), sorted(unexpected)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {_key_list(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {_key_list(self.unexpected)}")
        super().__init__(
            f"{source} does not match the target model: {'; '.join(parts)}. A missing key usually means a tensor was "
            "lost from the file; an unexpected one, a different model or layout. Nothing was written."
        )

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes around it
        return self.args[0]


class LayoutError(ValueError):
    """A layout's transforms are inconsistent, for example two source keys renamed to the same target."""


class CheckpointShapeError(ValueError):
    """Some converted tensors have a different shape than the target model's parameters."""

    def __init__(self, mismatches: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], source: str = "the checkpoint"):
        self.mismatches = dict(sorted(mismatches.items()))
        listed = "; ".join(
            f"{key}: checkpoint {list(got)} vs model {list(expected)}" for key, (got, expected) in self.mismatches.items()
        )
        super().__init__(
            f"{source} has {len(self.mismatches)} tensor(s) whose shape does not fit the model config: {listed}. "
            "Check that the config matches the weights. Nothing was written."
        )


def _key_list(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass
class CheckpointLayout:
    r"""
    How the keys of a source checkpoint become ours.

    Args:
        name: the layout's name, used in error messages.
        transforms: Transformers weight transforms, applied like `from_pretrained` does: every matching
            `WeightRenaming` in order, then at most one `WeightConverter`.
        dropped: regexes of source keys the target model has no place for (for example a training-only head).
            They are removed before mapping and listed in the conversion report, never silently.
    """

    name: str
    transforms: list[WeightTransform] = field(default_factory=list)
    dropped: tuple[str, ...] = ()

    def split_dropped(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """`(kept, dropped)` keys of the source, in order."""
        patterns = [re.compile(pattern) for pattern in self.dropped]
        dropped = [key for key in keys if any(pattern.search(key) for pattern in patterns)]
        dropped_set = set(dropped)
        return [key for key in keys if key not in dropped_set], dropped


def apply_layout(
    state_dict: Mapping[str, torch.Tensor], layout: CheckpointLayout, model: nn.Module | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    r"""
    Maps a source state dict to our key names.

    Args:
        state_dict: the source tensors by source key.
        layout: the source's declared layout.
        model: the target model, possibly on the meta device; `Split` reads target sizes from it.

    Returns:
        `(converted_state_dict, dropped_source_keys)`.
    """
    kept, dropped = layout.split_dropped(list(state_dict))
    renamings = [transform for transform in layout.transforms if isinstance(transform, WeightRenaming)]
    converters = [transform for transform in layout.transforms if isinstance(transform, WeightConverter)]
    converter_by_pattern = {pattern: converter for converter in converters for pattern in converter.source_patterns}

    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    # A converter gathers all source tensors of one target (q, k and v of one layer) before it runs.
    pending: dict[str, WeightConverter] = {}
    for source_key in kept:
        target_key, pattern = rename_source_key(source_key, renamings, converters)
        if pattern is None:
            if target_key in origin:
                raise LayoutError(
                    f"Layout {layout.name!r} maps both {origin[target_key]!r} and {source_key!r} to {target_key!r}; "
                    "fix its renaming patterns."
                )
            origin[target_key] = source_key
            converted[target_key] = state_dict[source_key]
            continue
        converter = pending.setdefault(target_key, deepcopy(converter_by_pattern[pattern]))
        converter.add_tensor(target_key, source_key, pattern, state_dict[source_key])
    config = getattr(model, "config", None)
    for first_target_key, converter in pending.items():
        sources = sorted(set().union(*converter.layer_targets.values()))
        for target_key, tensor in converter.convert(first_target_key, model=model, config=config).items():
            if target_key in origin:
                raise LayoutError(
                    f"Layout {layout.name!r} maps {origin[target_key]!r} to {target_key!r}, which its converter also "
                    f"builds from {sources}; fix its patterns."
                )
            origin[target_key] = ", ".join(sources)
            converted[target_key] = tensor[0] if isinstance(tensor, list) else tensor
    return converted, dropped


def expected_state_dict_shapes(model: nn.Module) -> tuple[dict[str, torch.Size], set[str]]:
    r"""
    The keys a checkpoint of `model` must hold, with their shapes, and the optional keys: aliases of tied weights
    (`lm_head.weight` when it shares the embeddings), which safetensors files leave out.
    """
    shapes = {key: tensor.shape for key, tensor in model.state_dict().items()}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    return shapes, tied & set(shapes)


def check_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module, source: str = "the checkpoint") -> None:
    r"""
    Raises `CheckpointKeysError` unless `state_dict` holds exactly the keys `model` expects (tied aliases optional),
    then `CheckpointShapeError` if any tensor's shape differs from the model's.
    """
    shapes, optional = expected_state_dict_shapes(model)
    missing = [key for key in shapes if key not in state_dict and key not in optional]
    unexpected = [key for key in state_dict if key not in shapes]
    if missing or unexpected:
        raise CheckpointKeysError(missing, unexpected, source)
    mismatches = {
        key: (tuple(tensor.shape), tuple(shapes[key]))
        for key, tensor in state_dict.items()
        if tuple(tensor.shape) != tuple(shapes[key])
    }
    if mismatches:
        raise CheckpointShapeError(mismatches, source)
