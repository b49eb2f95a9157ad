r"""
FiLA-Video scene selection against scikit-learn's KMeans, on the same frame features, in one run.

For 1,000 to 10,000 frames of width 1152 (SigLIP-so400m), it times

- ours: `FilaKMeansSampler` end to end (frame means, k-means++, Lloyd, representatives, supplements), and
- the baseline: `sklearn.cluster.KMeans(k, init="k-means++", n_init=1)` alone (clustering only),

and checks that both cluster the same way: scikit-learn, started from our k-means++ centres, must return our labels.
Target: ours at least as fast (ratio >= 1.0) on CPU.

    python benchmarks/fila.py [--frames 1000 3000 10000] [--scenes 32] [--repeats 3]
"""

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import KMeans

from transformers_vidcomp import PackedFrames
from transformers_vidcomp.modeling import FilaKMeansSampler, FilaKMeansSamplerConfig
from transformers_vidcomp.modeling.sampler_fila import batched_kmeans, kmeans_plus_plus


def scene_features(num_frames: int, dim: int, num_scenes: int, seed: int = 0) -> np.ndarray:
    """Frame means of a video with `num_scenes` shots of random length: a scene vector plus per-frame noise."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, num_frames), size=num_scenes - 1, replace=False))
    scene_of_frame = np.searchsorted(cuts, np.arange(num_frames), side="right")
    centres = rng.normal(scale=3.0, size=(num_scenes, dim))
    return (centres[scene_of_frame] + rng.normal(size=(num_frames, dim))).astype(np.float32)


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--dim", type=int, default=1152)
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sampler = FilaKMeansSampler(FilaKMeansSamplerConfig(num_scenes=args.scenes, supplements_per_scene=2)).eval()
    print(f"torch threads: {torch.get_num_threads()}, k = {args.scenes}, dim = {args.dim}")
    print(f"{'frames':>7} {'ours (ms)':>10} {'sklearn (ms)':>13} {'sklearn/ours':>13} {'same clustering':>16}")
    for num_frames in args.frames:
        features = scene_features(num_frames, args.dim, args.scenes)
        packed = PackedFrames(
            torch.from_numpy(features)[:, None, None, :],
            torch.tensor([num_frames]),
            torch.arange(num_frames, dtype=torch.float32),
        )

        def ours():
            with torch.no_grad():
                sampler(packed, frame_features=packed)

        def theirs():
            KMeans(args.scenes, init="k-means++", n_init=1, max_iter=100, tol=1e-4, random_state=0).fit(features)

        ours(), theirs()  # warm-up: thread pools, first-call allocations
        our_time, their_time = best_time(ours, args.repeats), best_time(theirs, args.repeats)

        points, valid = torch.from_numpy(features)[None], torch.ones(1, num_frames, dtype=torch.bool)
        init = kmeans_plus_plus(points, valid, args.scenes, torch.Generator().manual_seed(0))
        _, labels = batched_kmeans(points, valid, init)
        reference = KMeans(args.scenes, init=init[0].numpy(), n_init=1, max_iter=100, tol=1e-4).fit(features)
        same = bool((labels[0].numpy() == reference.labels_).all())
        print(
            f"{num_frames:>7} {our_time * 1000:>10.1f} {their_time * 1000:>13.1f} {their_time / our_time:>13.2f}"
            f" {str(same):>16}"
        )


if __name__ == "__main__":
    main()
