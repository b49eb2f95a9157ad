"""Hub-facing processing code. Files here are copied flat into checkpoints, so they import each other only as `.name`."""

import json
import os
from pathlib import Path

from .pipeline_vidcomp import VideoTextToTextPipeline
from .processing_hicom import HIComProcessor
from .processing_vidcomp import VidCompProcessor
from .video_processing_qwen_vidcomp import QWEN_VIDEO_SETTINGS, VidCompQwenVideoProcessor
from .video_processing_vidcomp import (
    PIXEL_SETTINGS,
    EmptyVideoError,
    VidCompVideoProcessor,
    VideoDecodeError,
    decode_video,
    pixel_settings,
)


PROCESSOR_CLASSES = {cls.__name__: cls for cls in (VidCompProcessor, HIComProcessor)}


def load_processor(folder: str | os.PathLike) -> VidCompProcessor:
    """The processor a checkpoint folder saved, of the class its `processor_config.json` names (HICom's has a guide)."""
    config = Path(folder) / "processor_config.json"
    name = json.loads(config.read_text()).get("processor_class") if config.is_file() else None
    return PROCESSOR_CLASSES.get(name, VidCompProcessor).from_pretrained(folder)
