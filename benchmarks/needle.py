r"""
Needle retention of every sampler and compressor preset, with no trained LLM (issue 8, item 3).

Long haystack videos of real photographs (pans, zooms, cuts, dissolves; `demo_video.plan_haystack`) hide a needle
photograph at known depths. For each sampler and frame budget: is the needle kept (recall), and what fraction of its
frames. For each compressor, shown a clip with the needle in it: how many output tokens derive from needle frames,
against the needle's fair share. Writes `needle.md`, `needle.json` and `needle_heatmap.png` (LongVU's needle figure:
depth against length, one panel per sampler and budget) to `--out-dir`. The logic lives in
`transformers_vidcomp.evaluation.needle`, importable for a sampler of your own.

    python benchmarks/needle.py [--lengths 1 5 15 60] [--depths 0.1 0.3 0.5 0.7 0.9] [--budgets 8 16 32 64]
        [--needle-frames 1] [--out-dir needle-results]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from transformers_vidcomp.evaluation.needle import (
    COMPRESSOR_PRESETS,
    RANDOM_WEIGHTS_NOTE,
    SAMPLER_PRESETS,
    needle_markdown,
    plot_needle_heatmap,
    run_needle,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--lengths", type=float, nargs="+", default=[1, 5, 15, 60], help="video lengths in minutes")
    parser.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 64], help="frames kept")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_PRESETS), choices=list(SAMPLER_PRESETS))
    parser.add_argument("--compressors", nargs="+", default=list(COMPRESSOR_PRESETS), choices=list(COMPRESSOR_PRESETS))
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--needle-frames", type=int, default=1)
    parser.add_argument("--clip-frames", type=int, default=32, help="uniform frames around the needle for compressors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("needle-results"))
    args = parser.parse_args()

    print(f"torch threads: {torch.get_num_threads()}")
    print(RANDOM_WEIGHTS_NOTE)
    start = time.perf_counter()
    result = run_needle(
        lengths_minutes=args.lengths, depths=args.depths, budgets=args.budgets, samplers=args.samplers,
        compressors=args.compressors, fps=args.fps, needle_frames=args.needle_frames, clip_frames=args.clip_frames,
        seed=args.seed, progress=print,
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    markdown = needle_markdown(result)
    (args.out_dir / "needle.md").write_text(markdown)
    (args.out_dir / "needle.json").write_text(json.dumps(result, indent=1))
    plot_needle_heatmap(result, args.out_dir / "needle_heatmap.png")
    print(markdown)
    print("seconds per component: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    written = ", ".join(str(args.out_dir / name) for name in ("needle.md", "needle.json", "needle_heatmap.png"))
    print(f"total {time.perf_counter() - start:.1f} s; wrote {written}")


if __name__ == "__main__":
    main()
