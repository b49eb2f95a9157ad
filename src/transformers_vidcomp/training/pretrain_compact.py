r"""
Reconstruction pretraining of the compact compressor (arXiv:2602.17869, supplement §1.4, "Compressor
pretraining"): a [`CompactVideoAutoencoder`] learns to rebuild the features of a frozen vision encoder.

```python
>>> model, processor = ...  # a VidComp checkpoint whose vision tower will feed the compressor
>>> autoencoder = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=model.config.vision_config.hidden_size))
>>> apply_training_stage(autoencoder, "compressor-pretrain")
>>> trainer = Trainer(
...     model=autoencoder,
...     args=TrainingArguments(..., learning_rate=2e-5, remove_unused_columns=False),  # the paper's rate
...     train_dataset=[{"video": "clip.mp4"}, ...],
...     data_collator=CompactPretrainCollator(model, processor.video_processor),
... )
>>> trainer.train()
>>> autoencoder.compressor.save_pretrained("compact-compressor")  # a compressor part for from_pretrained_parts
```
"""

from dataclasses import dataclass
from typing import Any

import torch
from transformers import BaseVideoProcessor

from ..modeling import VidCompForConditionalGeneration


@dataclass
class CompactPretrainCollator:
    r"""
    Decodes a batch of videos, runs them through the frozen vision tower of a VidComp model, and returns the
    features packed for [`CompactVideoAutoencoder.forward`]: `video_features` of shape
    `(total_frames, grid_h, grid_w, dim)` and `video_num_frames` of shape `(num_videos,)`.

    The tower runs without gradients, in eval mode, with the model's own feature layers and select strategy
    (`VidCompModel.encode_frames`), so the compressor is pretrained on the features it will receive in the LLM.
    Frames are the processor's consecutive ones (its `fps` and `num_frames`); no sampler is applied.

    Args:
        model ([`VidCompForConditionalGeneration`]): whose vision tower makes the features; it is not trained.
        video_processor ([`BaseVideoProcessor`]): decodes and normalises the videos for that tower.
        processor_kwargs (`dict`, *optional*): extra arguments for the video processor, e.g. `{"num_frames": 16}`.
    """

    model: VidCompForConditionalGeneration
    video_processor: BaseVideoProcessor
    processor_kwargs: dict | None = None

    def __post_init__(self):
        if self.model.config.project_before_compression:
            raise ValueError(
                "This model projects frame features to the LLM's width before its compressor "
                "(project_before_compression=True), so the compressor's input depends on a projector that is "
                "trained later. Pretrain the compact compressor on a model that compresses the vision features "
                "themselves (project_before_compression=False)."
            )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if any("video" not in example for example in examples):
            raise ValueError(
                "Each compressor-pretraining example must be {'video': path, URL or frame array}, got keys "
                f"{sorted({key for example in examples for key in example})}. Under Trainer, set "
                "TrainingArguments(remove_unused_columns=False): the autoencoder takes features, not videos, so "
                "Trainer would otherwise drop the 'video' key."
            )
        batch = self.video_processor(
            videos=[example["video"] for example in examples], return_tensors="pt", **(self.processor_kwargs or {})
        )
        tower = self.model.model
        tower.vision_tower.eval()
        with torch.no_grad():
            pixels = batch["pixel_values_videos"].to(tower.vision_tower.device, tower.vision_tower.dtype)
            features = tower.encode_frames(pixels)
        return {"video_features": features, "video_num_frames": batch["video_num_frames"]}


__all__ = ["CompactPretrainCollator"]
