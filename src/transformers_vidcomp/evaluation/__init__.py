r"""Quality signals that need no trained LLM: does a frame sampler keep a needle, do a compressor's tokens show it."""

from .needle import (
    COMPRESSOR_PRESETS,
    SAMPLER_PRESETS,
    CompressorRetention,
    NeedleCell,
    PresetSampler,
    needle_markdown,
    needle_token_count,
    plot_needle_heatmap,
    run_needle,
    sampler_recall,
)

__all__ = [
    "COMPRESSOR_PRESETS",
    "SAMPLER_PRESETS",
    "CompressorRetention",
    "NeedleCell",
    "PresetSampler",
    "needle_markdown",
    "needle_token_count",
    "plot_needle_heatmap",
    "run_needle",
    "sampler_recall",
]
