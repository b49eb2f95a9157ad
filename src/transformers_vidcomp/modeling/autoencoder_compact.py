r"""
The autoencoder the compact compressor is pretrained in (arXiv:2602.17869, supplement §1.3-1.4): the compressor as
encoder, a symmetric decoder, and a feature-reconstruction loss, trained on frozen vision-encoder features before
the LLM stages.

The decoder mirrors the encoder block for block: residual blocks of two convolutional blocks each, the last
`num_downsampling_blocks` of which upsample VQGAN-style (nearest-neighbour x2 in T, H and W, then the block's
convolutions). Each upsampling crops its output to the size the matching encoder level had, so the reconstruction
has exactly the input's `(T, H, W)` and never predicts frames or patches past the video.

Loss: the mean squared error between the reconstruction and the input features, over every frame, patch and
channel of the batch (so longer videos weigh more), in float32.
"""

from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .components_vidcomp import PackedFrames
from .compressor_compact import (
    CompactCompressor,
    CompactCompressorConfig,
    CompactLayout,
    CompactResidualBlock,
    init_compact_weights,
)


@strict
class CompactAutoencoderConfig(CompactCompressorConfig):
    r"""
    The compact compressor's architecture (see [`CompactCompressorConfig`]), for the encoder and its mirror image,
    the decoder.
    """

    model_type = "vidcomp_compact_autoencoder"

    def to_compressor_config(self) -> CompactCompressorConfig:
        """The config of the encoder alone, as the compressor of a `VidCompConfig`."""
        fields = (
            "hidden_size", "num_residual_blocks", "num_downsampling_blocks", "bottleneck_ratio",
            "spatial_kernel_size", "temporal_kernel_size",
        )
        return CompactCompressorConfig(**{name: getattr(self, name) for name in fields})


@dataclass
class CompactAutoencoderOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        Mean squared error between `reconstruction` and the input features.
    reconstruction (`torch.FloatTensor` of shape `(total_frames, grid_h, grid_w, dim)`):
        The decoded features, packed like the input.
    latent (`torch.FloatTensor` of shape `(num_rows, dim, row_length / 4, ceil(grid_h / 4), ceil(grid_w / 4))`):
        The encoder's output, with the videos' temporal groups where [`CompactLayout`] placed them; its tokens
        are what [`CompactCompressor`] returns without a budget.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None


class CompactDecoder(nn.Module):
    r"""The encoder's mirror image: a plain residual block first, then the upsampling ones."""

    def __init__(self, config: CompactCompressorConfig):
        super().__init__()
        first_up = config.num_residual_blocks - config.num_downsampling_blocks
        self.blocks = nn.ModuleList(
            [
                CompactResidualBlock(config, resample="up" if i >= first_up else None)
                for i in range(config.num_residual_blocks)
            ]
        )

    def forward(self, latent: torch.Tensor, layout: CompactLayout, sizes: list[torch.Size]) -> torch.Tensor:
        r"""
        Args:
            latent (`torch.Tensor` of shape `(num_rows, dim, frames, height, width)`): the encoder's output.
            layout (`CompactLayout`): where the videos are.
            sizes (`list[torch.Size]`): `(frames, height, width)` of the encoder's tensor at each level, from the
                input to the latent ([`CompactCompressor.level_sizes`]).
        Returns:
            `torch.Tensor` of shape `(num_rows, dim, *sizes[0])`, zero outside the videos.
        """
        masks = [layout.mask(level, latent.dtype) for level in range(len(sizes))]
        level, hidden = len(sizes) - 1, latent
        for block in self.blocks:
            next_level = level - (block.resample == "up")
            hidden = block(hidden, masks[level], masks[next_level], sizes[next_level])
            level = next_level
        return hidden


class CompactVideoAutoencoder(PreTrainedModel):
    r"""
    Encoder ([`CompactCompressor`]) and decoder, trained to reconstruct a video's vision features from its
    64x fewer tokens. `Trainer` trains it directly: `forward` returns the loss. After training, the encoder is the
    compressor of a video LLM:

    ```python
    >>> autoencoder.compressor.save_pretrained("compact-compressor")
    >>> model = VidCompForConditionalGeneration.from_pretrained_parts(
    ...     vision_tower=..., language_model=..., compressor="compact-compressor"
    ... )
    ```

    The vision tower is not part of it: features come from a frozen tower, e.g. through
    `transformers_vidcomp.training.CompactPretrainCollator` (the `compressor-pretrain` stage).
    """

    config: CompactAutoencoderConfig
    config_class = CompactAutoencoderConfig
    base_model_prefix = "autoencoder"
    main_input_name = "video_features"
    input_modalities = ("video",)

    def __init__(self, config: CompactAutoencoderConfig):
        super().__init__(config)
        self.compressor = CompactCompressor(config.to_compressor_config())
        self.decoder = CompactDecoder(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        init_compact_weights(module)

    def forward(self, video_features: torch.FloatTensor, video_num_frames: torch.LongTensor) -> CompactAutoencoderOutput:
        r"""
        Args:
            video_features (`torch.FloatTensor` of shape `(total_frames, grid_h, grid_w, hidden_size)`):
                Vision-tower features of the frames of all videos, concatenated (`VidCompModel.encode_frames`).
            video_num_frames (`torch.LongTensor` of shape `(num_videos,)`): frames per video.
        """
        video_num_frames = torch.as_tensor(video_num_frames, device=video_features.device)
        # Times do not matter for reconstruction; PackedFrames still checks the counts against the features.
        features = PackedFrames(video_features, video_num_frames, video_features.new_zeros(video_features.shape[0]))
        self.compressor.check_features(features)
        layout = self.compressor.layout(video_num_frames)
        video, position = features.video_index(), features.position_in_video()
        hidden = layout.place(video_features.to(self.dtype), video, position)
        sizes = self.compressor.level_sizes(*hidden.shape[2:])
        latent = self.compressor.encode(hidden, layout)
        reconstruction = layout.take(self.decoder(latent, layout, sizes), video, position)
        loss = (reconstruction.float() - video_features.float()).square().mean()
        return CompactAutoencoderOutput(loss=loss, reconstruction=reconstruction, latent=latent)


__all__ = ["CompactAutoencoderConfig", "CompactAutoencoderOutput", "CompactVideoAutoencoder"]
