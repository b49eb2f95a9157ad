r"""Every registered sampler and compressor. Importing this module registers them all.

A new method adds its module to the imports below; nothing else in the composite model changes.
"""


from transformers import PreTrainedConfig

from .components_vidcomp import COMPRESSOR_REGISTRY, SAMPLER_REGISTRY, VidCompCompressor, VidCompSampler
from .compressor_compact import CompactCompressor, CompactCompressorConfig
from .compressor_fila import (
    FilaAttentionPoolingCompressor,
    FilaAttentionPoolingConfig,
    FilaBipartiteMergeCompressor,
    FilaBipartiteMergeConfig,
    FilaTemporalAverageCompressor,
    FilaTemporalAverageConfig,
    FilaWeightedFusionCompressor,
    FilaWeightedFusionConfig,
)
from .compressor_hicom import HIComCompressor, HIComCompressorConfig
from .compressor_longvu import LongVUCompressor, LongVUCompressorConfig
from .compressor_pool import SpatialPoolCompressor, SpatialPoolCompressorConfig
from .compressor_stc import SpatialTokenCompressionConfig, SpatialTokenCompressor
from .sampler_avs import AdaptiveVideoSampler, AdaptiveVideoSamplerConfig
from .sampler_fila import FilaBipartiteSampler, FilaBipartiteSamplerConfig, FilaKMeansSampler, FilaKMeansSamplerConfig
from .sampler_longvu import LongVUSampler, LongVUSamplerConfig
from .sampler_uniform import UniformSampler, UniformSamplerConfig


def build_sampler(config: PreTrainedConfig) -> VidCompSampler:
    return SAMPLER_REGISTRY[config.model_type](config)


def build_compressor(config: PreTrainedConfig) -> VidCompCompressor:
    return COMPRESSOR_REGISTRY[config.model_type](config)


__all__ = [
    "AdaptiveVideoSampler",
    "AdaptiveVideoSamplerConfig",
    "CompactCompressor",
    "CompactCompressorConfig",
    "FilaAttentionPoolingCompressor",
    "FilaAttentionPoolingConfig",
    "FilaBipartiteMergeCompressor",
    "FilaBipartiteMergeConfig",
    "FilaBipartiteSampler",
    "FilaBipartiteSamplerConfig",
    "FilaKMeansSampler",
    "FilaKMeansSamplerConfig",
    "FilaTemporalAverageCompressor",
    "FilaTemporalAverageConfig",
    "FilaWeightedFusionCompressor",
    "FilaWeightedFusionConfig",
    "HIComCompressor",
    "HIComCompressorConfig",
    "LongVUCompressor",
    "LongVUCompressorConfig",
    "LongVUSampler",
    "LongVUSamplerConfig",
    "SpatialPoolCompressor",
    "SpatialPoolCompressorConfig",
    "SpatialTokenCompressionConfig",
    "SpatialTokenCompressor",
    "UniformSampler",
    "UniformSamplerConfig",
    "build_compressor",
    "build_sampler",
]
