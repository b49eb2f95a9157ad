r"""
FiLA-Video scene selection against scikit-learn's KMeans, on the same frame features, in one run.

For 1,000 to 10,000 frames of width 1152 (SigLIP-so400m), it times two comparisons:

- selection: our `FilaKMeansSampler` end to end (frame means, k-means++, Lloyd, representatives, supplements)
  against `sklearn.cluster.KMeans(k, init="k-means++", n_init=1)` (seeding and Lloyd, no selection);
- Lloyd alone, both started from the same (our k-means++) centres, where the clusterings must agree: it prints
  the adjusted Rand index and how many frames got another label. Both compute distances in float32, so a frame
  almost equidistant from two centres can fall either way (scikit-learn in float64 disagrees with itself in
  float32 on such frames too).

Target: selection at least as fast as scikit-learn's KMeans (ratio >= 1.0) on CPU, with the same clustering.

    python benchmarks/fila.py [--frames 1000 3000 10000] [--scenes 32] [--repeats 3]
"""

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

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
    print(f"{'':>7} {'selection vs KMeans (ms)':^36} {'Lloyd from the same centres (ms)':^36}")
    header = f"{'ours':>10} {'sklearn':>10} {'sklearn/ours':>13}"
    print(f"{'frames':>7} {header} {header} {'ARI':>7} {'frames labelled otherwise':>26}")
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

        points, valid = torch.from_numpy(features)[None], torch.ones(1, num_frames, dtype=torch.bool)
        init = kmeans_plus_plus(points, valid, args.scenes, torch.Generator().manual_seed(0))
        results = {}

        def our_lloyd():
            results["ours"] = batched_kmeans(points, valid, init)[1][0].numpy()

        def their_lloyd():
            results["theirs"] = KMeans(args.scenes, init=init[0].numpy(), n_init=1, max_iter=100, tol=1e-4).fit(
                features
            ).labels_

        for function in (ours, theirs, our_lloyd, their_lloyd):  # warm-up: thread pools, first-call allocations
            function()
        times = [best_time(function, args.repeats) * 1000 for function in (ours, theirs, our_lloyd, their_lloyd)]
        agreement = adjusted_rand_score(results["theirs"], results["ours"])
        differing = int((results["ours"] != results["theirs"]).sum())
        print(
            f"{num_frames:>7} {times[0]:>10.1f} {times[1]:>10.1f} {times[1] / times[0]:>13.2f}"
            f" {times[2]:>10.1f} {times[3]:>10.1f} {times[3] / times[2]:>13.2f} {agreement:>7.4f}"
            f" {differing:>26}"
        )


if __name__ == "__main__":
    main()
