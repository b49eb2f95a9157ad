r"""Configuration of TransNetV2, the shot-transition detector of Souček & Lokoč (2020)."""


from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class TransNetV2Config(PreTrainedConfig):
    r"""
    TransNetV2 reads 48x27 RGB thumbnails and scores each frame's probability of being a shot transition. The
    defaults are the published network (about 7.6M parameters).

    filters (`int`, *optional*, defaults to 16):
        Filters of each dilated branch in the first stack; every further stack doubles them.
    num_stacks (`int`, *optional*, defaults to 3):
        Stacks of dilated cells; each ends with 2x2 spatial average pooling.
    cells_per_stack (`int`, *optional*, defaults to 2):
        Dilated cells per stack. A cell runs parallel (2+1)D convolutions, one per temporal dilation, and
        concatenates them.
    num_dilations (`int`, *optional*, defaults to 4):
        Parallel branches per cell, with temporal dilations 1, 2, 4, ... `2 ** (num_dilations - 1)`.
    hidden_size (`int`, *optional*, defaults to 1024):
        Width of the dense layer before the two classification heads.
    similarity_dim (`int`, *optional*, defaults to 128):
        Width of the projection in which frame-to-frame cosine similarities of the stacks' features are taken.
    lookup_window (`int`, *optional*, defaults to 101):
        How many neighbouring frames (odd, centred on the frame) the learned-feature and colour-histogram
        similarities compare each frame with.
    lookup_dim (`int`, *optional*, defaults to 128):
        Width of the dense layers that read those similarity windows.
    dropout (`float`, *optional*, defaults to 0.5):
        Dropout before the heads, active only in training.
    batch_norm_eps (`float`, *optional*, defaults to 1e-3):
        Epsilon of the cells' batch normalisation (TensorFlow's default, which the weights were trained with).
    frame_height (`int`, *optional*, defaults to 27):
        Thumbnail height the network was trained on.
    frame_width (`int`, *optional*, defaults to 48):
        Thumbnail width the network was trained on.
    inference_windows (`str`, *optional*, defaults to `"reference"`):
        How `predict_frames` splits a long video:

        - `"reference"`: the published procedure, 100-frame windows every 50 frames, keeping the middle 50 outputs of
          each. Its outputs equal the original package's. The network's temporal receptive field
          (`receptive_field`, ±98 frames) is wider than the 25 to 74 frames of context this leaves, so outputs depend
          on where windows fall: drop a clip's first 10 frames and outputs change far beyond 98 frames from the cut
          (`benchmarks/transnetv2.py` prints by how much). No other window placement, in particular long windows
          overlapping by the receptive field, can therefore give the package's outputs.
        - `"streaming"`: the clip streams through the network `window_frames` frames at a time, every frame through
          every convolution once, each layer keeping only the few frames of context its temporal convolutions need.
          The outputs are the network's over the whole clip at once (padded like the reference: 25 copies of the
          first frame before, of the last after), independent of any window placement and shift-equivariant beyond
          the receptive field from the clip's ends; they differ from the reference procedure's by up to about 0.1
          near transitions. Computes each frame once where the reference computes it twice: about 3x the original
          package's network speed on one thread (`benchmarks/transnetv2.py` measures two cores, decode included).
    window_frames (`int`, *optional*, defaults to 50):
        Frames per step of the `"streaming"` mode. The result does not depend on it (beyond float rounding); 50 was
        the fastest on a 2-core AMD EPYC (25 and 100 within 10%), larger steps leaving the caches.
    windows_per_batch (`int`, *optional*, defaults to 1):
        Windows per forward call in the `"reference"` mode, which bounds memory on long videos.
    threshold (`float`, *optional*, defaults to 0.5):
        Probability above which a frame is a transition, for `predictions_to_scenes` and the adaptive sampler.
    """

    model_type = "vidcomp_transnetv2"

    filters: int = 16
    num_stacks: int = 3
    cells_per_stack: int = 2
    num_dilations: int = 4
    hidden_size: int = 1024
    similarity_dim: int = 128
    lookup_window: int = 101
    lookup_dim: int = 128
    dropout: float = 0.5
    batch_norm_eps: float = 1e-3
    frame_height: int = 27
    frame_width: int = 48
    inference_windows: Literal["reference", "streaming"] = "reference"
    window_frames: int = 50
    windows_per_batch: int = 1
    threshold: float = 0.5

    def __post_init__(self, **kwargs):
        if self.lookup_window < 1 or self.lookup_window % 2 == 0:
            raise ValueError(f"lookup_window must be a positive odd number of frames, got {self.lookup_window}.")
        for name in ("filters", "num_stacks", "cells_per_stack", "num_dilations", "window_frames", "windows_per_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if min(self.frame_height, self.frame_width) < 2**self.num_stacks:
            raise ValueError(
                f"Frames of {self.frame_width}x{self.frame_height} are too small for {self.num_stacks} stacks, each of "
                f"which halves them: both sides need at least {2**self.num_stacks} pixels."
            )
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold is a probability strictly between 0 and 1, got {self.threshold}.")
        super().__post_init__(**kwargs)

    @property
    def dilations(self) -> list[int]:
        return [2**i for i in range(self.num_dilations)]

    @property
    def receptive_field(self) -> int:
        r"""Frames on each side that one output reads: every cell's largest dilation, then the similarity lookup."""
        return self.num_stacks * self.cells_per_stack * self.dilations[-1] + self.lookup_window // 2


__all__ = ["TransNetV2Config"]
