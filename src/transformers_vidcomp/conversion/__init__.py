r"""
Conversion and publishing: source layouts as data, strict key checking, Hub-ready folders with model cards,
verification in a clean interpreter, and upload to the Hub.

    source files --read_state_dict--> tensors --apply_layout--> our keys --check_state_dict--> model
    model --write_checkpoint_files + render_model_card--> staging folder --verify_checkpoint--> OUT --push_checkpoint--> Hub
"""

from .cards import CardInfo, ModelCardError, TokenFigures, render_model_card, token_figures
from .converters import (
    CONVERTERS,
    CheckpointConverter,
    ConvertedCheckpoint,
    LocalCheckpointExporter,
    NotAVidCompCheckpointError,
    SourceCheckpointError,
    UnknownConverterError,
    get_converter,
    register_converter,
)
from .export import ExportReport, export_checkpoint
from .hicom import HIComConverter, NotHIComError
from .llava_onevision import LlavaOnevisionConverter, NotLlavaOnevisionError
from .longvu import LongVUConverter, NotLongVUError
from .qwen_vl import NotQwenVLError, Qwen2_5_VLConverter, Qwen3VLConverter
from .layouts import (
    CheckpointKeysError,
    CheckpointLayout,
    CheckpointShapeError,
    LayoutError,
    apply_layout,
    check_state_dict,
)
from .publish import (
    HubOfflineError,
    HubPermissionError,
    HubTokenError,
    PublishError,
    check_push_ready,
    check_repo_id,
    push_checkpoint,
)
from .sources import CheckpointReadError, read_state_dict
from .swap import swap_components
from .verify import VerificationError, verify_checkpoint
from .writer import (
    OutputExistsError,
    SavedCheckpoint,
    atomic_output_dir,
    check_output_dir,
    save_checkpoint,
    write_checkpoint_files,
)

__all__ = [
    "CONVERTERS",
    "CardInfo",
    "CheckpointConverter",
    "CheckpointKeysError",
    "CheckpointLayout",
    "CheckpointReadError",
    "CheckpointShapeError",
    "ConvertedCheckpoint",
    "ExportReport",
    "HubOfflineError",
    "HubPermissionError",
    "HubTokenError",
    "LayoutError",
    "LlavaOnevisionConverter",
    "LongVUConverter",
    "LocalCheckpointExporter",
    "ModelCardError",
    "NotAVidCompCheckpointError",
    "NotLlavaOnevisionError",
    "NotLongVUError",
    "NotQwenVLError",
    "Qwen2_5_VLConverter",
    "Qwen3VLConverter",
    "OutputExistsError",
    "PublishError",
    "SavedCheckpoint",
    "SourceCheckpointError",
    "TokenFigures",
    "UnknownConverterError",
    "VerificationError",
    "apply_layout",
    "atomic_output_dir",
    "check_output_dir",
    "check_push_ready",
    "check_repo_id",
    "check_state_dict",
    "export_checkpoint",
    "get_converter",
    "push_checkpoint",
    "read_state_dict",
    "register_converter",
    "render_model_card",
    "save_checkpoint",
    "swap_components",
    "token_figures",
    "verify_checkpoint",
    "write_checkpoint_files",
]
