r"""
TransNetV2 (Souček & Lokoč, "TransNet V2: An effective deep network architecture for fast shot transition
detection", 2020), written for Transformers.

Activations stay channels-last, `(videos, frames, height, width, channels)`, throughout: the (2+1)D convolutions then
run as 2D convolutions in the layout oneDNN prefers (per frame for the spatial part, over time x pixels for the
temporal part) without any copy between them, frozen batch norms fold into the temporal weights, and the final
per-frame flatten is free. Weights keep the original 3D-convolution shapes, so the published checkpoint maps onto this
model by renaming only.

`predict_frames` has two modes (see `TransNetV2Config.inference_windows`): the published 100-frame windows, through
`forward`, and streaming (`StreamingStack`, `StreamingDilatedCell`), where the clip passes through the network a
chunk at a time and each cell keeps only the frames of context its dilated temporal convolutions still need. There
a cell's four spatial convolutions run as one (they read the same input), and every temporal convolution reads a
channels-last `(1, channels, frames, pixels)` window whose batch stride oneDNN accepts as is (with `[None]` added after
the permutation instead of before, the stride reads as not channels-last: the window is copied and convolved in a
path several times slower).
"""


from collections.abc import Iterable, Iterator
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


def banded_similarity(features: torch.Tensor, radius: int, chunk: int = 1024) -> torch.Tensor:
    r"""
    Dot products of each frame with its `2 * radius + 1` neighbours, zero beyond the ends of the clip, `chunk` frames
    at a time so a long clip never expands to `frames x dim x window`.

    Args:
        features (`torch.FloatTensor` of shape `(batch_size, num_frames, dim)`).

    Returns:
        `torch.FloatTensor` of shape `(batch_size, num_frames, 2 * radius + 1)`, where entry `[b, t, k]` compares frame
        `t` with frame `t + k - radius`.
    """
    padded = F.pad(features, (0, 0, radius, radius))
    neighbours = padded.unfold(1, 2 * radius + 1, 1)  # (batch, frames, dim, window), a view
    return torch.cat(
        [
            torch.einsum("btd,btdw->btw", features[:, start : start + chunk], neighbours[:, start : start + chunk])
            for start in range(0, features.shape[1], chunk)
        ],
        dim=1,
    )


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
            # In place: a fresh tensor (the concatenation, or the batch norm's output, which its backward does not read).
            hidden_states = F.relu(hidden_states, inplace=True)
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
        # In place unless the stack has one cell, whose output is also the residual.
        hidden_states = F.relu(hidden_states, inplace=hidden_states is not first) + first
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


class FrameQueue:
    r"""
    Frames along dimension 0, kept as the tensors they arrived in (views, never copied or concatenated), so a streaming
    layer can read any run of recent frames across chunk boundaries.
    """

    def __init__(self):
        self.pieces: list[torch.Tensor] = []
        self.length = 0

    def append(self, frames: torch.Tensor) -> None:
        if len(frames):
            self.pieces.append(frames)
            self.length += len(frames)

    def spans(self, start: int, count: int) -> Iterator[tuple[int, torch.Tensor]]:
        r"""Frames `start` to `start + count` as `(position from start, view)` pairs, one per piece they fall in."""
        offset = 0
        for piece in self.pieces:
            low, high = max(start, offset), min(start + count, offset + len(piece))
            if low < high:
                yield low - start, piece[low - offset : high - offset]
            offset += len(piece)

    def drop(self, count: int) -> None:
        r"""Forgets the first `count` frames."""
        self.length -= count
        while count and count >= len(self.pieces[0]):
            count -= len(self.pieces.pop(0))
        if count:
            self.pieces[0] = self.pieces[0][count:]


class StreamingDilatedCell:
    r"""
    Runs one [`TransNetV2DilatedCell`] (eval mode) over a clip that arrives a chunk at a time, computing every frame
    once. The branches' spatial convolutions read the same input, so they run as one convolution with their filters
    concatenated. Each branch keeps the spatial outputs its temporal convolution still needs; outputs lag the input by
    the largest dilation. Zero frames stand for the zero padding of the clip's ends, so the result equals the cell over
    the whole clip at once.
    """

    def __init__(self, cell: TransNetV2DilatedCell, height: int, width: int):
        self.height, self.width, self.activation = height, width, cell.activation
        self.dilations = [branch.dilation for branch in cell.branches]
        self.reach = max(self.dilations)
        self.spatial_weight = torch.cat([branch.spatial.weight[:, :, 0] for branch in cell.branches]).contiguous(
            memory_format=torch.channels_last
        )
        scale = cell.norm.weight * torch.rsqrt(cell.norm.running_var + cell.norm.eps)
        shift = cell.norm.bias - cell.norm.running_mean * scale
        self.temporal = [
            ((branch.temporal.weight[..., 0] * part_scale[:, None, None, None]).contiguous(), part_shift)
            for branch, part_scale, part_shift in zip(cell.branches, scale.split(cell.filters), shift.split(cell.filters))
        ]
        # Per branch, its spatial outputs `(frames, height * width, 2 * filters)` from `dilation` frames before the
        # next output (zeros at first: the clip's padding).
        self.caches = [scale.new_zeros(d, height * width, 2 * cell.filters) for d in self.dilations]
        self.arrived = self.emitted = 0

    def push(self, frames: torch.Tensor | None) -> torch.Tensor:
        r"""
        Takes the next input frames `(n, H, W, C_in)`, or `None` once the clip has ended, and returns the outputs
        `(m, H, W, filters * num_dilations)` that are now complete, in order.
        """
        if frames is None:
            spatial = self.caches[0].new_zeros(self.reach, self.height * self.width, self.spatial_weight.shape[0])
        else:
            # Channels-last in, channels-last out: `(n, C, H, W)` is `(n, H * W, C)` in memory.
            spatial = F.conv2d(frames.permute(0, 3, 1, 2), self.spatial_weight, padding=1).permute(0, 2, 3, 1).flatten(1, 2)
        self.arrived += len(spatial)
        ready = self.arrived - self.reach - self.emitted  # outputs whose whole temporal context has arrived
        self.caches = [torch.cat([cache, part]) for cache, part in zip(self.caches, spatial.chunk(len(self.caches), -1))]
        if ready <= 0:
            return spatial.new_zeros(0, self.height, self.width, sum(len(bias) for _, bias in self.temporal))
        outputs = []
        for cache, dilation, (weight, bias) in zip(self.caches, self.dilations, self.temporal):
            # `[None]` before the permutation keeps the batch stride large, so oneDNN sees a channels-last tensor
            # (`permute(...)[None]` would give it a stride that reads as non-channels-last, and a copy).
            window = cache[: ready + 2 * dilation][None].permute(0, 3, 1, 2)
            outputs.append(F.conv2d(window, weight, bias, dilation=(dilation, 1))[0].permute(1, 2, 0))
        self.caches = [cache[ready:] for cache in self.caches]
        self.emitted += ready
        hidden_states = torch.cat(outputs, dim=-1)
        if self.activation:
            hidden_states.relu_()
        return hidden_states.view(ready, self.height, self.width, -1)


class StreamingStack:
    r"""A [`TransNetV2Stack`] over a clip arriving in chunks: its cells in turn, the residual aligned, then pooling."""

    def __init__(self, stack: TransNetV2Stack, height: int, width: int):
        self.cells = [StreamingDilatedCell(cell, height, width) for cell in stack.cells]
        self.pending_first = FrameQueue()  # first-cell outputs whose residual partner has not arrived yet

    def push(self, frames: torch.Tensor | None) -> torch.Tensor:
        r"""Next input frames `(n, H, W, C)`, or `None` at the end; returns the pooled outputs now complete."""
        hidden_states = self.cells[0].push(frames)
        self.pending_first.append(hidden_states)
        for cell in self.cells[1:]:
            hidden_states = cell.push(hidden_states)
            if frames is None:
                hidden_states = torch.cat([hidden_states, cell.push(None)])
        hidden_states = F.relu(hidden_states, inplace=len(self.cells) > 1)  # a one-cell stack's output is its residual
        for position, first in self.pending_first.spans(0, len(hidden_states)):
            hidden_states[position : position + len(first)] += first
        self.pending_first.drop(len(hidden_states))
        return F.avg_pool2d(hidden_states.permute(0, 3, 1, 2), kernel_size=2).permute(0, 2, 3, 1)


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
            logits = self.streaming_logits(frames.split(self.config.window_frames))
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

    def streaming_logits(self, chunks: Iterable[torch.Tensor]) -> torch.Tensor:
        r"""
        The network over the whole clip (padded like the reference: 25 copies of the first frame before, 25 of the last
        after), fed as consecutive uint8 pieces `(n, 27, 48, 3)`: each frame goes through every convolution once, each layer keeping only the frames of context its temporal
        convolutions need. Memory grows with the clip only by a few per-frame vectors (about 7 KB a frame). Inference
        only (batch norms folded). Returns `(2, T)` logits.
        """
        config = self.config
        height, width, streams = config.frame_height, config.frame_width, []
        for stack in self.stacks:
            streams.append(StreamingStack(stack, height, width))
            height, width = height // 2, width // 2
        lookup, fc_weight = config.lookup_dim, self.fc.weight
        histograms, means, flat_part = [], [[] for _ in streams], []
        num_frames = 0
        for chunk in tqdm(self.padded_pieces(chunks), desc="shot detection", unit="piece", disable=None):
            num_frames += len(chunk)
            histograms.append(self.color_histograms.histograms(chunk[None])[0])
            hidden_states = chunk.to(fc_weight.dtype) / 255.0
            for stream, stack_means in zip(streams, means):
                hidden_states = stream.push(hidden_states)
                stack_means.append(hidden_states.mean(dim=(1, 2)))
            flat_part.append(hidden_states.flatten(1) @ fc_weight[:, 2 * lookup :].T)
        # The clip has ended: each stack takes the previous stack's last outputs, then flushes its own.
        hidden_states = None
        for stream, stack_means in zip(streams, means):
            last = [] if hidden_states is None else [stream.push(hidden_states)]
            hidden_states = torch.cat([*last, stream.push(None)])
            stack_means.append(hidden_states.mean(dim=(1, 2)))
        flat_part.append(hidden_states.flatten(1) @ fc_weight[:, 2 * lookup :].T)

        pooled = torch.cat([torch.cat(stack_means) for stack_means in means], dim=-1)
        embeddings = F.normalize(self.frame_similarity.projection(pooled), dim=-1)
        similarity = self.frame_similarity.fc(banded_similarity(embeddings[None], self.frame_similarity.radius)[0])
        histogram = torch.cat(histograms).to(fc_weight.dtype)
        colour = self.color_histograms.fc(banded_similarity(histogram[None], self.color_histograms.radius)[0])
        # fc over [colour, similarity, flattened features], the last part already applied chunk by chunk.
        hidden = F.relu(
            F.relu(colour) @ fc_weight[:, :lookup].T
            + F.relu(similarity) @ fc_weight[:, lookup : 2 * lookup].T
            + torch.cat(flat_part)
            + self.fc.bias
        )
        logits = torch.stack([self.transition_head(hidden)[:, 0], self.many_hot_head(hidden)[:, 0]])
        return logits[:, 25 : num_frames - 25]

    def padded_pieces(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The pieces of a clip with 25 copies of its first frame before and of its last after, checked and on device."""
        first = last = None
        for chunk in chunks:
            chunk = torch.as_tensor(chunk)
            if chunk.ndim == 4 and len(chunk) == 0:
                continue
            self.check_thumbnails(chunk, batched=False)
            chunk = chunk.to(self.device)
            if first is None:
                first = chunk[:1]
                yield first.expand(25, -1, -1, -1)
            last = chunk[-1:]
            yield chunk
        if last is None:
            raise InvalidThumbnailsError("TransNetV2 got a clip with no frames; it needs at least one.")
        yield last.expand(25, -1, -1, -1)

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
