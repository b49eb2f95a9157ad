r"""
Decoding sampled frames from long, real-sized videos: ours against Transformers' loader, decord, torchcodec and two
PyAV floors, in one run.

    python benchmarks/decode.py            # --quick: 5-minute 720p30 H.264, keyframes every 1 s and 8 s
    python benchmarks/decode.py --full     # 5 and 60 minutes, 720p30 and 1080p30, H.264 and HEVC, 1 s and 8 s

Files are generated once (a pan across photographs, in the cache folder `--videos`, x264 and x265 at `veryfast` with
B-frames). Every measurement runs in its own process, which reports its wall time and its peak resident memory, and
returns the frames as RGB arrays. Requests:

- `32 frames`: 32 uniformly spaced frames (`VidCompVideoProcessor.sample_frames`), ours scaled to 384x384.
- `1 fps`: one frame a second, ours scaled to 384x384.
- `thumbnails`: the adaptive sampler's first pass, 48x27 at 10 fps (`decode_thumbnails`).

Contenders: `ours` (`decode_video` / `decode_thumbnails`); `transformers` (`load_video(backend="pyav")`, full size);
`decord` (`VideoReader.get_batch`, when installed; at 64x36 for thumbnails, the
smallest 16:9 size its scaler takes); `torchcodec` (`get_frames_at`, when it
loads); and the floors, plain PyAV loops: `seek floor` (seek to the keyframe before each frame, decode to it, convert
it), `decode floor` (decode every frame, convert none) and `decode + convert floor` (decode every frame, convert the
kept ones as ours does). Ratios are against the floor each target names: 32 frames against the seek floor, 1 fps and
thumbnails against decode + convert. Writes `benchmarks/results/decode.{json,md,png}`.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


RESULTS = Path(__file__).parent / "results"
REQUESTS = ("32 frames", "1 fps", "thumbnails")
CONTENDERS = ("ours", "transformers", "decord", "torchcodec", "seek floor", "decode floor", "decode + convert floor")
# The floor each request's target is a ratio to.
TARGET_FLOOR = {"32 frames": "seek floor", "1 fps": "decode + convert floor", "thumbnails": "decode + convert floor"}
SIZE, THUMBNAIL, THUMBNAIL_FPS = 384, (27, 48), 10.0
FPS = 30
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
CODECS = {"h264": "libx264", "hevc": "libx265"}


def video_name(minutes: float, resolution: str, codec: str, keyframe_seconds: int) -> str:
    return f"{minutes:g}min_{resolution}{FPS}_{codec}_key{keyframe_seconds}s.mp4"


def file_matrix(full: bool, minutes: list[float] | None) -> list[str]:
    if not full:
        return [video_name(m, "720p", "h264", k) for m in minutes or [5] for k in (1, 8)]
    return [
        video_name(m, resolution, codec, k)
        for m in minutes or [5, 60] for resolution in RESOLUTIONS for codec in CODECS for k in (1, 8)
    ]


def parse_name(name: str) -> tuple[float, str, str, int]:
    minutes, shape, codec, key = Path(name).stem.split("_")
    return float(minutes.removesuffix("min")), shape.removesuffix(str(FPS)), codec, int(key[3:-1])


def generate(path: Path) -> None:
    r"""
    Encodes a pan across scikit-image's photographs (a new photograph every 4 s) at 30 fps: crops of a texture
    prepared once in YUV 4:2:0, so generating costs no per-frame colour conversion. Written to a temporary name and
    renamed, so an interrupted run leaves no half file in the cache.
    """
    import av
    from PIL import Image

    from transformers_vidcomp.demo_video import load_photos

    minutes, resolution, codec, keyframe_seconds = parse_name(path.name)
    width, height = RESOLUTIONS[resolution]
    planes = []
    for photo in load_photos():
        texture = np.asarray(Image.fromarray(photo).resize((2 * width, 2 * height), Image.BILINEAR))
        yuv = av.VideoFrame.from_ndarray(texture, format="rgb24").reformat(format="yuv420p").to_ndarray()
        luma = yuv[: 2 * height]
        chroma = yuv[2 * height :].reshape(2, height, width)
        planes.append((luma, chroma))
    keyint = str(keyframe_seconds * FPS)
    params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
    options = {"preset": "veryfast"}
    options.update({"x264-params": params} if codec == "h264" else {"x265-params": f"{params}:log-level=error"})
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream(CODECS[codec], rate=FPS)
        stream.width, stream.height, stream.pix_fmt, stream.options = width, height, "yuv420p", options
        scene = 4 * FPS
        frame = np.empty((height * 3 // 2, width), dtype=np.uint8)
        for k in range(round(minutes * 60 * FPS)):
            luma, chroma = planes[(k // scene) % len(planes)]
            x, y = (2 * (k % scene)) % width & ~1, (k % scene) % height & ~1
            frame[:height] = luma[y : y + height, x : x + width]
            frame[height:] = chroma[:, y // 2 : y // 2 + height // 2, x // 2 : x // 2 + width // 2].reshape(-1, width)
            picture = av.VideoFrame.from_ndarray(frame, format="yuv420p")
            picture.pts = k
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    partial.rename(path)


# --- one measurement, in a child process -------------------------------------------------------------------------


def wanted_ordinals(path: str, request: str) -> tuple[np.ndarray, float]:
    """The frames a request asks for (ordinals), and the stream's frame rate."""
    import av

    from transformers.video_utils import VideoMetadata

    from transformers_vidcomp.processors import VidCompVideoProcessor

    with av.open(path) as container:
        stream = container.streams.video[0]
        total, rate = stream.frames, float(stream.average_rate)
    metadata = VideoMetadata(total_num_frames=total, fps=rate)
    if request == "32 frames":
        return VidCompVideoProcessor(num_frames=32, fps=None).sample_frames(metadata), rate
    if request == "1 fps":
        return VidCompVideoProcessor(num_frames=None, fps=1.0).sample_frames(metadata), rate
    return np.arange(0, total, round(rate / THUMBNAIL_FPS)), rate


def sampler_for(ordinals: np.ndarray):
    return lambda metadata=None, **kwargs: ordinals


def prepare(contender: str, request: str, path: str):
    r"""
    Imports what `contender` needs and returns the call to time, which decodes the request's frames and returns how
    many it produced: imports (torch alone takes seconds) are not what is measured.
    """
    import av

    ordinals, rate = wanted_ordinals(path, request)
    thumbnails = request == "thumbnails"
    height, width = THUMBNAIL if thumbnails else (SIZE, SIZE)

    if contender == "ours":
        from transformers_vidcomp.processors.video_processing_vidcomp import decode_thumbnails, decode_video

        if thumbnails:
            return lambda: len(decode_thumbnails(path, fps=THUMBNAIL_FPS, width=width, height=height, progress=False).frames)
        size = (height, width)
        return lambda: len(decode_video(path, sample_indices_fn=sampler_for(ordinals), size=size, progress=False)[0])
    if contender == "transformers":
        from transformers.video_utils import load_video

        return lambda: len(load_video(path, backend="pyav", sample_indices_fn=sampler_for(ordinals))[0])
    if contender == "decord":
        import decord

        # decord's scaler fails at 48x27 and 48x28 (it pads rows to 64 pixels), so its thumbnails are 64x36.
        size = {"width": 64, "height": 36} if thumbnails else {}

        def run() -> int:
            reader = decord.VideoReader(path, ctx=decord.cpu(0), **size)
            return len(reader.get_batch(list(ordinals)).asnumpy())

        return run
    if contender == "torchcodec":
        from torchcodec.decoders import VideoDecoder

        return lambda: len(VideoDecoder(path).get_frames_at(ordinals.tolist()).data)
    if contender == "seek floor":
        return lambda: seek_floor(path, ordinals, rate)
    return lambda: decode_floor(path, ordinals, (height, width) if contender == "decode + convert floor" else None)


def open_threaded(path: str):
    import av

    container = av.open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = 0
    return container, stream


def seek_floor(path: str, ordinals: np.ndarray, rate: float) -> int:
    """Seeks to the keyframe before each frame, decodes up to it and converts it to full-size RGB."""
    container, stream = open_threaded(path)
    frames = []
    with container:
        for target in (ordinals / rate / stream.time_base).astype(np.int64) + (stream.start_time or 0):
            container.seek(int(target), stream=stream, backward=True, any_frame=False)
            frame = next(f for f in container.decode(stream) if f.pts >= target)
            frames.append(frame.to_ndarray(format="rgb24"))
    return len(frames)


def decode_floor(path: str, ordinals: np.ndarray, size: tuple[int, int] | None) -> int:
    """Decodes every frame; with `size`, converts the kept ones to RGB at that size, as ours does."""
    container, stream = open_threaded(path)
    keep = np.zeros(int(ordinals.max()) + 1, dtype=bool)
    keep[ordinals] = True
    kept, seen = 0, 0
    with container:
        for frame in container.decode(stream):
            if size is not None and seen < len(keep) and keep[seen]:
                frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation="BICUBIC").to_ndarray()
                kept += 1
            seen += 1
    return kept if size is not None else seen


def child(contender: str, request: str, path: str) -> None:
    try:
        call = prepare(contender, request, path)
        before = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = before.ru_utime + before.ru_stime
        start = time.perf_counter()
        frames = call()
    except ImportError as error:
        print(json.dumps({"unavailable": f"{type(error).__name__}: {error}"}))
        return
    except Exception as error:  # noqa: BLE001  (a contender that fails is reported, the run goes on)
        print(json.dumps({"unavailable": f"{type(error).__name__}: {str(error)[:200]}"}))
        return
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = usage.ru_utime + usage.ru_stime - cpu_before
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
                      "frames": frames}))


def run_child(contender: str, request: str, path: Path, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", contender, request, str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"unavailable": f"over the {timeout:.0f} s limit"}
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"unavailable": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


# --- the run -------------------------------------------------------------------------------------------------------


def contenders_for(request: str) -> list[str]:
    if request == "thumbnails":  # full-size frames at 10 fps would not fit in memory for Transformers' loader
        return ["ours", "decord", "decode floor", "decode + convert floor"]
    return list(CONTENDERS)


def table(results: dict) -> list[str]:
    r"""A markdown row per file and request: each contender's wall seconds and peak RSS, then ours against the floor
    the request's target names, in wall time and in CPU time (which other processes on the machine do not inflate)."""
    lines = [
        "| file | request | " + " | ".join(CONTENDERS) + " | ours / floor | ours / floor, CPU |",
        "|---|---|" + "---:|" * (len(CONTENDERS) + 2),
    ]
    for name, requests in results.items():
        for request, row in requests.items():
            cells = []
            for contender in CONTENDERS:
                cell = row.get(contender)
                if cell is None:
                    cells.append("")
                elif "seconds" not in cell:
                    cells.append("n/a")
                else:
                    cells.append(f"{cell['seconds']:.2f} s, {cell['peak_rss_mib'] / 1024:.2f} GiB")
            floor, ours = row.get(TARGET_FLOOR[request], {}), row.get("ours", {})
            ratios = [
                f"{ours[key] / floor[key]:.2f}x" if key in ours and key in floor else ""
                for key in ("seconds", "cpu_seconds")
            ]
            lines.append(f"| {Path(name).stem} | {request} | " + " | ".join(cells + ratios) + " |")
    return lines


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(Path(name).stem, request, row) for name, requests in results.items() for request, row in requests.items()]
    figure, axis = plt.subplots(figsize=(max(8, 1.6 * len(rows)), 5))
    width = 0.8 / len(CONTENDERS)
    for c, contender in enumerate(CONTENDERS):
        seconds = [row.get(contender, {}).get("seconds", np.nan) for _, _, row in rows]
        axis.bar(np.arange(len(rows)) + c * width, seconds, width, label=contender)
    axis.set_xticks(np.arange(len(rows)) + 0.4, [f"{name}\n{request}" for name, request, _ in rows], fontsize=7)
    axis.set_ylabel("seconds (lower is better)")
    axis.set_yscale("log")
    axis.set_title(f"Decoding sampled frames, {os.cpu_count()} cores")
    axis.legend(fontsize=8, ncol=4)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the default: 5-minute 720p H.264 files")
    parser.add_argument("--full", action="store_true", help="the whole matrix, 5 and 60 minutes")
    parser.add_argument("--minutes", type=float, nargs="+", help="lengths to run instead of the matrix's")
    parser.add_argument("--files", nargs="+", help="file names from the matrix to run (see --list)")
    parser.add_argument("--list", action="store_true", help="print the matrix's file names and stop")
    parser.add_argument("--requests", nargs="+", default=list(REQUESTS), choices=REQUESTS)
    parser.add_argument("--videos", type=Path, default=Path(tempfile.gettempdir()) / "vidcomp_decode_benchmark")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one measurement may take")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, help="re-render the table and plot from a decode.json and stop")
    parser.add_argument("--child", nargs=3, metavar=("CONTENDER", "REQUEST", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.render:
        write_results(json.loads(args.render.read_text()), args.out)
        return
    names = args.files or file_matrix(args.full, args.minutes)
    if args.list:
        print("\n".join(names))
        return
    args.videos.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        path = args.videos / name
        if not path.exists():
            print(f"generating {path} ...", flush=True)
            start = time.perf_counter()
            generate(path)
            print(f"  {time.perf_counter() - start:.0f} s", flush=True)
        results[name] = {}
        for request in args.requests:
            row = results[name][request] = {}
            for contender in contenders_for(request):
                row[contender] = run_child(contender, request, path, args.timeout)
                cell = row[contender]
                figure = f"{cell['seconds']:.2f} s" if "seconds" in cell else cell["unavailable"]
                print(f"{name} | {request} | {contender}: {figure}", flush=True)
    write_results(results, args.out)


def write_results(results: dict, out: Path) -> None:
    lines = [f"Decoding on {os.cpu_count()} cores ({platform.processor() or platform.machine()}): wall seconds and "
             "peak RSS per measurement, each in its own process.", "", *table(results)]
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.json").write_text(json.dumps(results, indent=1))
    (out / "decode.md").write_text("\n".join(lines) + "\n")
    plot(results, out / "decode.png")


if __name__ == "__main__":
    main()
