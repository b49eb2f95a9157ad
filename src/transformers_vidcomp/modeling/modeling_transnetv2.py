r"""
TransNetV2 (Souček & Lokoč, "TransNet V2: An effective deep network architecture for fast shot transition
detection", 2020), written for Transformers.

Activations stay channels-last, `(videos, frames, height, width, channels)`, throughout: the (2+1)D convolutions then
run as 2D convolutions in the layout oneDNN prefers (per frame for the spatial part, over time x pixels for the
temporal part) without any copy between them, frozen batch norms fold into the temporal weights, and the final
per-frame flatten is free. Weights keep the original 3D-convolution shapes, so the published checkpoint maps onto this
model by renaming only.
"""


from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_transnetv2 import TransNetV2Config


class InvalidThumbnailsError(ValueError):
    """Frames given to TransNetV2 are not a uint8 `(frames, 27, 48, 3)` RGB array, or hold no frame."""


@dataclass
class TransNetV2Output(ModelOutput):
    r"""
    transition_logits (`torch.FloatTensor` of shape `(batch_size, num_frames)`):
        Logit that each frame is a shot transition (the network's "one-hot" head, trained on transition centres).
    many_hot_logits (`torch.FloatTensor` of shape `(batch_size, num_frames)`):
        Logit that each frame lies anywhere inside a transition (the "many-hot" head, trained on whole gradual
        transitions).
    """

    transition_logits: torch.FloatTensor | None = None
    many_hot_logits: torch.FloatTensor | None = None


def banded_similarity(features: torch.Tensor, radius: int) -> torch.Tensor:
    r"""
    Dot products of each frame with its `2 * radius + 1` neighbours, zero beyond the ends of the clip.

    Args:
        features (`torch.FloatTensor` of shape `(batch_size, num_frames, dim)`).

    Returns:
        `torch.FloatTensor` of shape `(batch_size, num_frames, 2 * radius + 1)`, where entry `[b, t, k]` compares frame
        `t` with frame `t + k - radius`.
    """
    padded = F.pad(features, (0, 0, radius, radius))
    neighbours = padded.unfold(1, 2 * radius + 1, 1)  # (batch, frames, dim, window), a view
    return torch.einsum("btd,btdw->btw", features, neighbours)


class TransNetV2SeparableConv(nn.Module):
    r"""A (2+1)D convolution: a 3x3 spatial convolution to `2 * filters` channels, then a 3-tap temporal one."""

    def __init__(self, in_channels: int, filters: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.spatial = nn.Conv3d(in_channels, 2 * filters, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.temporal = nn.Conv3d(2 * filters, filters, (3, 1, 1), dilation=(dilation, 1, 1), padding=(dilation, 0, 0), bias=False)

    def forward(
        self, frames: torch.Tensor, batch: int, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""
        Args:
            frames (`torch.FloatTensor` of shape `(batch * T, C_in, H, W)`, channels-last in memory).
            scale, shift (`torch.FloatTensor` of shape `(filters,)`, *optional*): a frozen batch norm, folded into
                the temporal convolution.

        Returns:
            `torch.FloatTensor` of shape `(batch, filters, T, H * W)`, channels-last in memory.
        """
        spatial = F.conv2d(frames, self.spatial.weight[:, :, 0], padding=1)
        num_frames, channels, height, width = spatial.shape
        # (batch * T, C, H, W) channels-last is (batch, T, H * W, C) in memory: a temporal convolution is then a 2D one.
        spatial = spatial.permute(0, 2, 3, 1).reshape(batch, num_frames // batch, height * width, channels)
        weight = self.temporal.weight[..., 0]
        if scale is not None:
            weight = weight * scale[:, None, None, None]
        return F.conv2d(
            spatial.permute(0, 3, 1, 2), weight, shift, padding=(self.dilation, 0), dilation=(self.dilation, 1)
        )


class TransNetV2DilatedCell(nn.Module):
    r"""Parallel (2+1)D convolutions with temporal dilations 1, 2, 4, 8, concatenated and batch-normalised."""

    def __init__(self, config: TransNetV2Config, in_channels: int, filters: int, activation: bool):
        super().__init__()
        self.filters = filters
        self.branches = nn.ModuleList(TransNetV2SeparableConv(in_channels, filters, d) for d in config.dilations)
        self.norm = nn.BatchNorm3d(filters * len(self.branches), eps=config.batch_norm_eps)
        self.activation = activation

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        r"""`(N, T, H, W, C_in)` -> `(N, T, H, W, filters * num_dilations)`."""
        batch, frames, height, width, channels = hidden_states.shape
        per_frame = hidden_states.reshape(batch * frames, height, width, channels).permute(0, 3, 1, 2)
        if self.training:
            hidden_states = torch.cat([branch(per_frame, batch) for branch in self.branches], dim=1)
            hidden_states = self.norm(hidden_states.unflatten(-1, (height, width))).flatten(-2)
        else:
            scale = self.norm.weight * torch.rsqrt(self.norm.running_var + self.norm.eps)
            shift = self.norm.bias - self.norm.running_mean * scale
            hidden_states = torch.cat(
                [
                    branch(per_frame, batch, part_scale, part_shift)
                    for branch, part_scale, part_shift in zip(
                        self.branches, scale.split(self.filters), shift.split(self.filters)
                    )
                ],
                dim=1,
            )
        if self.activation:
            hidden_states = F.relu(hidden_states)
        return hidden_states.permute(0, 2, 3, 1).reshape(batch, frames, height, width, -1)


class TransNetV2Stack(nn.Module):
    r"""Dilated cells with a residual connection from the first cell's output, then 2x2 spatial average pooling."""

    def __init__(self, config: TransNetV2Config, in_channels: int, filters: int):
        super().__init__()
        width = filters * config.num_dilations
        self.cells = nn.ModuleList(
            TransNetV2DilatedCell(config, in_channels if i == 0 else width, filters, activation=i < config.cells_per_stack - 1)
            for i in range(config.cells_per_stack)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = first = self.cells[0](hidden_states)
        for cell in self.cells[1:]:
            hidden_states = cell(hidden_states)
        hidden_states = F.relu(hidden_states) + first
        batch, frames, height, width, channels = hidden_states.shape
        pooled = F.avg_pool2d(
            hidden_states.reshape(batch * frames, height, width, channels).permute(0, 3, 1, 2), kernel_size=2
        )
        return pooled.permute(0, 2, 3, 1).reshape(batch, frames, height // 2, width // 2, channels)


class TransNetV2FrameSimilarity(nn.Module):
    r"""Cosine similarities of each frame's spatially averaged stack features with its neighbours, read by a dense layer."""

    def __init__(self, config: TransNetV2Config, in_channels: int):
        super().__init__()
        self.radius = config.lookup_window // 2
        self.projection = nn.Linear(in_channels, config.similarity_dim)
        self.fc = nn.Linear(config.lookup_window, config.lookup_dim)

    def forward(self, stack_outputs: list[torch.Tensor]) -> torch.Tensor:
        r"""Stack outputs `(N, T, H_i, W_i, C_i)` -> `(N, T, lookup_dim)`."""
        pooled = torch.cat([output.mean(dim=(2, 3)) for output in stack_outputs], dim=-1)
        embeddings = F.normalize(self.projection(pooled), dim=-1)
        return F.relu(self.fc(banded_similarity(embeddings, self.radius)))


class TransNetV2ColorHistograms(nn.Module):
    r"""Similarities of each frame's 512-bin RGB histogram (3 bits per channel) with its neighbours, read by a dense layer."""

    def __init__(self, config: TransNetV2Config):
        super().__init__()
        self.radius = config.lookup_window // 2
        self.fc = nn.Linear(config.lookup_window, config.lookup_dim)

    @staticmethod
    def histograms(frames: torch.Tensor) -> torch.Tensor:
        r"""uint8 `(N, T, H, W, 3)` -> L2-normalised bin counts `(N, T, 512)`."""
        batch, num_frames = frames.shape[:2]
        top_bits = frames.reshape(batch * num_frames, -1, 3).long() >> 5
        bins = (top_bits[..., 0] << 6) + (top_bits[..., 1] << 3) + top_bits[..., 2]
        counts = torch.zeros(batch * num_frames, 512, device=frames.device)
        counts.scatter_add_(1, bins, torch.ones_like(bins, dtype=counts.dtype))
        return F.normalize(counts.view(batch, num_frames, 512), dim=-1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        histograms = self.histograms(frames).to(self.fc.weight.dtype)
        return F.relu(self.fc(banded_similarity(histograms, self.radius)))


class TransNetV2PreTrainedModel(PreTrainedModel):
    config: TransNetV2Config
    config_class = TransNetV2Config
    base_model_prefix = "transnetv2"
    main_input_name = "frames"
    input_modalities = ("video",)


class TransNetV2Model(TransNetV2PreTrainedModel):
    r"""
    Scores every frame of 48x27 RGB thumbnails for being a shot transition.

    ```python
    >>> model = TransNetV2Model.from_pretrained("path/to/transnetv2")
    >>> single, many = model.predict_frames(thumbnails)  # uint8 (T, 27, 48, 3) -> two float32 arrays (T,)
    >>> scenes = model.predictions_to_scenes(single)     # [[start, end], ...] frame indices, inclusive
    ```
    """

    def __init__(self, config: TransNetV2Config):
        super().__init__(config)
        widths = [config.filters * 2**i for i in range(config.num_stacks)]
        in_channels = [3] + [w * config.num_dilations for w in widths[:-1]]
        self.stacks = nn.ModuleList(TransNetV2Stack(config, c, w) for c, w in zip(in_channels, widths))
        stack_channels = [w * config.num_dilations for w in widths]
        self.frame_similarity = TransNetV2FrameSimilarity(config, sum(stack_channels))
        self.color_histograms = TransNetV2ColorHistograms(config)
        pooled_height = config.frame_height >> config.num_stacks
        pooled_width = config.frame_width >> config.num_stacks
        fc_width = stack_channels[-1] * pooled_height * pooled_width + 2 * config.lookup_dim
        self.fc = nn.Linear(fc_width, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.transition_head = nn.Linear(config.hidden_size, 1)
        self.many_hot_head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, frames: torch.Tensor, **kwargs) -> TransNetV2Output:
        r"""
        Args:
            frames (`torch.ByteTensor` of shape `(batch_size, num_frames, 27, 48, 3)`):
                RGB thumbnails, values 0-255.
        """
        self.check_thumbnails(frames, batched=True)
        hidden_states = frames.to(self.fc.weight.dtype) / 255.0
        stack_outputs = []
        for stack in self.stacks:
            hidden_states = stack(hidden_states)
            stack_outputs.append(hidden_states)
        features = torch.cat(
            [self.color_histograms(frames), self.frame_similarity(stack_outputs), hidden_states.flatten(2)], dim=-1
        )
        hidden = self.dropout(F.relu(self.fc(features)))
        return TransNetV2Output(
            transition_logits=self.transition_head(hidden).squeeze(-1),
            many_hot_logits=self.many_hot_head(hidden).squeeze(-1),
        )

    def check_thumbnails(self, frames: torch.Tensor, batched: bool) -> None:
        expected = (self.config.frame_height, self.config.frame_width, 3)
        shape = "(batch_size, frames, " if batched else "(frames, "
        shape += f"{expected[0]}, {expected[1]}, 3)"
        if frames.dtype != torch.uint8 or frames.ndim != (5 if batched else 4) or tuple(frames.shape[-3:]) != expected:
            raise InvalidThumbnailsError(
                f"TransNetV2 reads uint8 RGB thumbnails of shape {shape}, got {frames.dtype} of shape "
                f"{tuple(frames.shape)}. Decode at {expected[1]}x{expected[0]} (for example "
                "`frame.reformat(width=48, height=27, format='rgb24')` in PyAV) and keep the values 0-255."
            )
        if frames.shape[-4] == 0:
            raise InvalidThumbnailsError("TransNetV2 got a clip with no frames; it needs at least one.")

    @torch.no_grad()
    def predict_frames(self, frames: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        r"""
        Transition probabilities of every frame of a clip of any length, split into windows as
        `config.inference_windows` says.

        Args:
            frames (`np.ndarray` or `torch.Tensor` of shape `(num_frames, 27, 48, 3)`, uint8): the clip's thumbnails.

        Returns:
            Two `np.ndarray` of shape `(num_frames,)`, float32: the transition ("single") and the many-hot
            probabilities, as the original `predict_frames` returns them.
        """
        frames = torch.as_tensor(frames)
        self.check_thumbnails(frames, batched=False)
        frames = frames.to(self.device)
        if self.config.inference_windows == "reference":
            logits = self.reference_window_logits(frames)
        else:
            logits = self.receptive_field_window_logits(frames)
        single, many = torch.sigmoid(logits.float()).cpu().numpy()
        return single, many

    def reference_window_logits(self, frames: torch.Tensor) -> torch.Tensor:
        r"""
        The published procedure: 25 copies of the first frame before the clip and enough copies of the last after it to
        fill 100-frame windows every 50 frames; each window contributes its outputs 25 to 74. Returns `(2, T)` logits.
        """
        num_frames = len(frames)
        pad_end = 25 + 50 - (num_frames % 50 or 50)
        padded = torch.cat([frames[:1].expand(25, -1, -1, -1), frames, frames[-1:].expand(pad_end, -1, -1, -1)])
        windows = padded.unfold(0, 100, 50).permute(0, 4, 1, 2, 3)  # (num_windows, 100, H, W, 3), a view
        outputs = []
        # A bar on terminals only (`disable=None`): an hour at 10 fps is 720 windows.
        for batch in tqdm(windows.split(self.config.windows_per_batch), desc="shot detection", disable=None):
            output = self(batch.contiguous())
            outputs.append(torch.stack([output.transition_logits, output.many_hot_logits])[:, :, 25:75].flatten(1))
        return torch.cat(outputs, dim=1)[:, :num_frames]

    def receptive_field_window_logits(self, frames: torch.Tensor) -> torch.Tensor:
        r"""
        Windows of `window_frames` outputs, each read with `receptive_field` frames of context on both sides, so every
        output equals the network's over the whole clip (padded like the reference: 25 copies of the first frame
        before, 25 of the last after). Returns `(2, T)` logits.
        """
        num_frames, context, step = len(frames), self.config.receptive_field, self.config.window_frames
        padded = torch.cat([frames[:1].expand(25, -1, -1, -1), frames, frames[-1:].expand(25, -1, -1, -1)])
        outputs = []
        for start in tqdm(range(25, 25 + num_frames, step), desc="shot detection", disable=None):
            stop = min(start + step, 25 + num_frames)
            read_from, read_to = max(0, start - context), min(len(padded), stop + context)
            output = self(padded[None, read_from:read_to])
            logits = torch.stack([output.transition_logits[0], output.many_hot_logits[0]])
            outputs.append(logits[:, start - read_from : stop - read_from])
        return torch.cat(outputs, dim=1)

    def predictions_to_scenes(self, predictions: np.ndarray, threshold: float | None = None) -> np.ndarray:
        r"""
        Shots as `[start, end]` frame pairs (inclusive), exactly as the original `predictions_to_scenes`: a shot ends at
        the first frame of the next transition and the next begins after it. A clip predicted to be a transition
        throughout is one shot.

        Args:
            predictions (`np.ndarray` of shape `(num_frames,)`): transition probabilities.
            threshold (`float`, *optional*): defaults to `config.threshold`.

        Returns:
            `np.ndarray` of shape `(num_scenes, 2)`, int32.
        """
        threshold = self.config.threshold if threshold is None else threshold
        predictions = np.asarray(predictions)
        if predictions.ndim != 1 or len(predictions) == 0:
            raise InvalidThumbnailsError(
                f"predictions_to_scenes needs a non-empty 1-D array of probabilities, got shape {predictions.shape}."
            )
        transition = predictions > threshold
        changes = np.flatnonzero(transition[1:] != transition[:-1]) + 1
        rises, falls = changes[transition[changes]], changes[~transition[changes]]
        starts = np.concatenate([[0] if not transition[0] else [], falls]).astype(np.int32)
        ends = np.concatenate([rises, [len(transition) - 1] if not transition[-1] else []]).astype(np.int32)
        if len(starts) == 0:
            return np.array([[0, len(predictions) - 1]], dtype=np.int32)
        return np.stack([starts, ends], axis=1)


__all__ = ["InvalidThumbnailsError", "TransNetV2Model", "TransNetV2Output", "TransNetV2PreTrainedModel"]
