"""Hub-facing processing code. Files here are copied flat into checkpoints, so they import each other only as `.name`."""

from .pipeline_vidcomp import VideoTextToTextPipeline
from .processing_hicom import HIComProcessor
from .processing_vidcomp import VidCompProcessor
from .video_processing_vidcomp import (
    PIXEL_SETTINGS,
    EmptyVideoError,
    VidCompVideoProcessor,
    VideoDecodeError,
    decode_video,
    pixel_settings,
)
