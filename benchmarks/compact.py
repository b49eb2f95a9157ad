r"""
The compact compressor (arXiv:2602.17869, supplement §1.3): its size at the paper's width, and batching, in one run.

- Parameters at d = 1408 (ViT-G/14), for the encoder (the compressor), the encoder with its symmetric decoder, and
  the same with a temporal kernel of 2, against the paper's "approximately 65 million" for the overall structure.
- Tokens per video against LLaVA-OneVision's 2x2 pooling (`spatial_pool`), for the benchmark's videos.
- Time of one batched call over videos padded to the longest one (ours), as a ratio against calling the same
  module once per video (the baseline), for videos of equal and of unequal length. Padding costs the frames
  added to shorter videos; the loop costs one call per video. Outputs must agree.

    python benchmarks/compact.py [--dim 1152] [--grid 27] [--repeats 3]
"""

import argparse
import statistics
import time

import torch

from transformers_vidcomp import PackedFrames
from transformers_vidcomp.modeling import (
    CompactAutoencoderConfig,
    CompactCompressor,
    CompactCompressorConfig,
    CompactVideoAutoencoder,
    SpatialPoolCompressor,
    SpatialPoolCompressorConfig,
)

PAPER_PARAMETERS = 65e6


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def report_parameters() -> None:
    with torch.device("meta"):
        encoder = CompactCompressor(CompactCompressorConfig(hidden_size=1408))
        autoencoder = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=1408))
        short = CompactVideoAutoencoder(CompactAutoencoderConfig(hidden_size=1408, temporal_kernel_size=2))
    print("parameters at d=1408 (ViT-G/14), paper: ~65M for the overall structure")
    for name, module in [
        ("encoder (compressor), kernels 3x3 / 3", encoder),
        ("encoder + decoder, kernels 3x3 / 3", autoencoder),
        ("encoder + decoder, kernels 3x3 / 2", short),
    ]:
        print(f"  {name:40s} {count(module):>12,d}  ({count(module) / PAPER_PARAMETERS:.2f}x the paper's 65M)")


def videos(frame_counts: list[int], grid: int, dim: int) -> PackedFrames:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(sum(frame_counts), grid, grid, dim, generator=generator)
    times = torch.cat([torch.arange(n, dtype=torch.float32) for n in frame_counts])
    return PackedFrames(values, torch.tensor(frame_counts), times)


def timed(functions, repeats: int) -> list[float]:
    """Median time of each function; runs alternate, so a load change on a shared machine hits them alike."""
    times = [[] for _ in functions]
    for repeat in range(repeats + 1):
        for function, spent in zip(functions, times):
            start = time.perf_counter()
            function()
            if repeat:  # the first round warms up
                spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=1152, help="feature width (SigLIP-so400m: 1152)")
    parser.add_argument("--grid", type=int, default=27, help="patches per side (SigLIP-so400m/14 at 384: 27)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    report_parameters()

    model = CompactCompressor(CompactCompressorConfig(hidden_size=args.dim)).eval()
    pool = SpatialPoolCompressor(SpatialPoolCompressorConfig())
    print(f"\nd={args.dim}, {args.grid}x{args.grid} patches per frame, {torch.get_num_threads()} threads")
    for frame_counts in ([16, 16, 16, 16], [32, 32], [4, 8, 12, 32]):
        features = videos(frame_counts, args.grid, args.dim)
        singles = [PackedFrames(v, torch.tensor([len(v)]), torch.arange(float(len(v)))) for v in features.split()]
        layout = model.layout(features.frame_counts)
        with torch.no_grad():
            batched = model(features)
            looped = [model(single) for single in singles]
            pooled = pool(features)
            ours, loop = timed([lambda: model(features), lambda: [model(single) for single in singles]], args.repeats)
        error = (batched.tokens - torch.cat([o.tokens for o in looped])).abs().max().item()
        reduction = pooled.token_counts.sum().item() / batched.token_counts.sum().item()
        print(
            f"  frames {frame_counts}: tokens {batched.token_counts.tolist()} "
            f"({features.values.shape[0] * args.grid**2 / batched.token_counts.sum().item():.0f}x fewer than "
            f"patches, {reduction:.1f}x fewer than spatial_pool); batched {ours:.2f}s vs per-video loop "
            f"{loop:.2f}s: speed-up {loop / ours:.2f}x ({layout.num_rows} row(s) of {layout.row_length} frames); "
            f"max |batched - loop| {error:.1e}"
        )


if __name__ == "__main__":
    main()
