r"""Synthetic test videos made from real photographs, with scene cuts at known times."""

import os
from pathlib import Path

import numpy as np

DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def load_photos(names: tuple[str, ...] = DEFAULT_PHOTOS) -> list[np.ndarray]:
    """RGB uint8 photographs that scikit-image ships inside its wheel (no download)."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError(
            "The demo video is made from scikit-image's sample photographs: pip install 'transformers-vidcomp[demo]', "
            "or pass a video file of your own."
        ) from error
    return [getattr(data, name)()[..., :3] for name in names]


def render_scene(photo: np.ndarray, num_frames: int, width: int, height: int, zoom: float) -> np.ndarray:
    r"""
    A slow pan with a zoom across `photo`, as `(num_frames, height, width, 3)` uint8, cropped and resized with
    PIL. The crop window shrinks by `zoom` and slides from left to right over the scene.
    """
    from PIL import Image

    photo_h, photo_w = photo.shape[:2]
    image = Image.fromarray(photo)
    aspect = width / height
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i, progress in enumerate(np.linspace(0.0, 1.0, num_frames)):
        crop_h = photo_h * (1.0 - zoom * progress)
        crop_w = min(photo_w, crop_h * aspect)
        crop_h = crop_w / aspect
        left = (photo_w - crop_w) * progress
        top = (photo_h - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        frames[i] = np.asarray(image.resize((width, height), Image.BILINEAR, box=box))
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int) -> None:
    """Encodes `(num_frames, height, width, 3)` uint8 frames as H.264 with PyAV."""
    import av

    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def make_demo_video(
    path: str | os.PathLike,
    seconds_per_scene: float = 2.0,
    fps: int = 10,
    width: int = 160,
    height: int = 120,
    photos: tuple[str, ...] = DEFAULT_PHOTOS,
) -> list[float]:
    r"""
    Writes a video of one panning, zooming scene per photograph, with hard cuts between them.

    Returns:
        The times of the cuts in seconds.
    """
    frames_per_scene = max(1, round(seconds_per_scene * fps))
    scenes = [
        render_scene(photo, frames_per_scene, width, height, zoom=0.3) for photo in load_photos(photos)
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.concatenate(scenes), fps)
    return [i * frames_per_scene / fps for i in range(1, len(scenes))]
