"""Writing checkpoint folders: atomic output, Hub-ready files. Converters for published checkpoints live here."""

from .writer import OutputExistsError, atomic_output_dir, save_checkpoint

__all__ = ["OutputExistsError", "atomic_output_dir", "save_checkpoint"]
