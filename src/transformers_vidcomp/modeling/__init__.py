"""Hub-facing model code. Files here are copied flat into checkpoints, so they import each other only as `.name`."""

from .autoencoder_compact import CompactAutoencoderConfig, CompactAutoencoderOutput, CompactVideoAutoencoder
from .components_vidcomp import *  # noqa: F403
from .configuration_vidcomp import VidCompConfig
from .methods_vidcomp import *  # noqa: F403
from .configuration_transnetv2 import TransNetV2Config
from .modeling_transnetv2 import InvalidThumbnailsError, TransNetV2Model, TransNetV2Output
from .modeling_vidcomp import VidCompForConditionalGeneration, VidCompModel, VidCompVideoFeatures
