r"""Synthetic test videos made from real photographs, with scene cuts at known times.

Two kinds: the short demo video (`make_demo_video`, one panning scene per photograph, hard cuts), and long "haystack"
videos for needle-retention tests (`plan_haystack`, `render_haystack`, `iter_haystack_chunks`,
`write_haystack_video`): scenes of many photographs with pans, zooms, hard cuts and dissolves, and a "needle" (a
photograph used nowhere else) at a known depth. A haystack is first *planned* (scene boundaries, motions,
transitions and needle frames, no pixels), then rendered scene by scene, so an hour of video streams to a file
without ever being held in memory.
"""

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# scikit-image ships these in its wheel; grey ones are repeated to RGB. `retina` is left out: it is the default needle.
HAYSTACK_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "camera", "moon", "brick", "grass", "gravel", "coins", "page", "text",
)
NEEDLE_PHOTO = "retina"


def load_photos(names: tuple[str, ...] = DEFAULT_PHOTOS) -> list[np.ndarray]:
    """RGB uint8 photographs that scikit-image ships inside its wheel (no download)."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError(
            "The demo video is made from scikit-image's sample photographs: pip install 'transformers-vidcomp[demo]', "
            "or pass a video file of your own."
        ) from error
    photos = [as_uint8(getattr(data, name)()) for name in names]
    return [np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p[..., :3] for p in photos]


def as_uint8(image: np.ndarray) -> np.ndarray:
    """A scikit-image picture as uint8: masks (`horse` is boolean) become black and white, floats in [0, 1] scale."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool or np.issubdtype(image.dtype, np.floating):
        return np.rint(image.astype(np.float64) * 255).clip(0, 255).astype(np.uint8)
    raise ValueError(f"Unsupported picture type {image.dtype}.")


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


def write_video(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: int) -> None:
    r"""
    Encodes uint8 RGB frames as H.264 with PyAV: one `(num_frames, height, width, 3)` array, or an iterable of such
    chunks (for example `iter_haystack_chunks`), encoded as they arrive so a long video is never held whole.
    """
    import av

    chunks = [frames] if isinstance(frames, np.ndarray) else frames
    with av.open(os.fspath(path), mode="w") as container:
        stream = None
        for chunk in chunks:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height = chunk.shape[2], chunk.shape[1]
                stream.pix_fmt = "yuv420p"
            for frame in chunk:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if stream is not None:
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


class HaystackSpecError(ValueError):
    """A haystack or needle specification cannot be rendered (too short, depth outside [0, 1], unknown photograph)."""


@dataclass(frozen=True)
class Motion:
    r"""
    A camera move over one photograph, as a crop window that moves linearly during the scene.

    Args:
        scale (`tuple[float, float]`): crop height as a fraction of the largest crop of the photograph's aspect, at
            the first and the last frame (falling: a zoom in; rising: a zoom out).
        x (`tuple[float, float]`), y (`tuple[float, float]`): where the crop sits in the room left beside it, from
            0 (left / top edge) to 1 (right / bottom edge), at the first and the last frame: a pan.
    """

    scale: tuple[float, float]
    x: tuple[float, float]
    y: tuple[float, float]


@dataclass(frozen=True)
class Scene:
    r"""
    One shot of a haystack: `photo` seen through `motion` for `num_frames` frames, the first at output frame `start`.
    A scene that dissolves into the next overlaps it by the dissolve's length.
    """

    photo: str
    start: int
    num_frames: int
    motion: Motion

    @property
    def end(self) -> int:
        return self.start + self.num_frames


@dataclass(frozen=True)
class Transition:
    r"""
    The change from scene `index - 1` to scene `index`. A `"cut"` has `length` 0 and `start` is the new scene's
    first frame. A `"dissolve"` blends the two scenes over `length` frames from `start`: frame `start + k` is
    `(1 - a) * old + a * new` with `a = (k + 1) / (length + 1)`, rounded to uint8.
    """

    index: int
    kind: str
    start: int
    length: int


@dataclass
class HaystackPlan:
    r"""
    Everything about a haystack video except its pixels: render it with `render_haystack` or `iter_haystack_chunks`.

    Args:
        num_frames (`int`), fps (`float`), width (`int`), height (`int`): the video's size.
        scenes (`list[Scene]`): the haystack's shots in order; scene `k + 1` starts where scene `k` ends, or
            `Transition.length` frames earlier for a dissolve.
        transitions (`list[Transition]`): one per scene after the first.
        needle (`Scene`, *optional*): the needle's shot; its frames replace the haystack's, with hard cuts on both
            sides. The haystack's own scenes and transitions are listed as if the needle were not there.
        photos (`dict[str, np.ndarray]`): the photographs by name, shrunk for rendering.
    """

    num_frames: int
    fps: float
    width: int
    height: int
    scenes: list[Scene]
    transitions: list[Transition]
    needle: Scene | None = None
    photos: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def needle_frames(self) -> np.ndarray:
        r"""Indices of the needle's frames, shape `(needle_length,)` (empty without a needle)."""
        if self.needle is None:
            return np.zeros(0, dtype=np.int64)
        return np.arange(self.needle.start, self.needle.end)

    @property
    def needle_times(self) -> np.ndarray:
        """Times of the needle's frames in seconds."""
        return self.needle_frames / self.fps

    @property
    def timestamps(self) -> np.ndarray:
        """Time of every frame in seconds, shape `(num_frames,)`."""
        return np.arange(self.num_frames) / self.fps

    def describe(self) -> dict:
        """A JSON-ready description: scene boundaries, transitions and the needle's frames and times."""
        return {
            "num_frames": self.num_frames,
            "fps": self.fps,
            "size": [self.height, self.width],
            "scenes": [{"photo": s.photo, "start": s.start, "end": s.end} for s in self.scenes],
            "transitions": [{"kind": t.kind, "start": t.start, "length": t.length} for t in self.transitions],
            "needle": None if self.needle is None else {
                "photo": self.needle.photo,
                "frames": self.needle_frames.tolist(),
                "times": self.needle_times.tolist(),
                "depth": self.needle.start / max(1, self.num_frames - self.needle.num_frames),
            },
        }


def random_motion(rng: np.random.Generator, zoom: float) -> Motion:
    """A pan in a random direction with a zoom in or out by `zoom` (a fraction of the crop's height)."""
    scale = (1.0, 1.0 - zoom) if rng.random() < 0.5 else (1.0 - zoom, 1.0)
    x, y = rng.random(2), rng.random(2)
    return Motion(scale=scale, x=(float(x[0]), float(x[1])), y=(float(y[0]), float(y[1])))


def plan_haystack(
    num_frames: int,
    fps: float = 1.0,
    width: int = 64,
    height: int = 48,
    photos: tuple[str, ...] = HAYSTACK_PHOTOS,
    scene_seconds: tuple[float, float] = (4.0, 12.0),
    dissolve_probability: float = 0.4,
    dissolve_frames: int = 2,
    zoom: float = 0.3,
    needle_depth: float | None = None,
    needle_frames: int = 1,
    needle_photo: str = NEEDLE_PHOTO,
    seed: int = 0,
) -> HaystackPlan:
    r"""
    Plans a haystack of `num_frames` frames: scenes of `photos` (in a seeded random order, no photograph twice in a
    row) lasting `scene_seconds` each, joined by hard cuts or, with `dissolve_probability`, by dissolves of
    `dissolve_frames` frames; and, if `needle_depth` is given, a needle of `needle_frames` frames of
    `needle_photo` starting at frame `round(needle_depth * (num_frames - needle_frames))`.

    The same `seed` and sizes give the same haystack whatever the needle, so needles at several depths hide in one
    haystack. The photographs are loaded and shrunk once here (`shrink_photo`) and kept on the plan for rendering.
    """
    if num_frames < 1:
        raise HaystackSpecError(f"A haystack needs at least 1 frame, got num_frames={num_frames}.")
    if dissolve_frames < 1 or not 0.0 <= dissolve_probability <= 1.0:
        raise HaystackSpecError(
            f"dissolve_frames must be at least 1 and dissolve_probability in [0, 1], got {dissolve_frames} and "
            f"{dissolve_probability}."
        )
    if needle_depth is not None and not 0.0 <= needle_depth <= 1.0:
        raise HaystackSpecError(f"needle_depth is a fraction of the video and must lie in [0, 1], got {needle_depth}.")
    if needle_depth is not None and not 1 <= needle_frames <= num_frames:
        raise HaystackSpecError(f"needle_frames must lie in [1, num_frames={num_frames}], got {needle_frames}.")
    if needle_depth is not None and needle_photo in photos:
        raise HaystackSpecError(f"The needle's photograph {needle_photo!r} is also in the haystack; pick another.")
    if len(photos) < 2:
        raise HaystackSpecError("A haystack needs at least two photographs, so that consecutive scenes differ.")
    rng = np.random.default_rng(seed)
    # A dissolve needs a frame of each scene on both of its sides.
    shortest = max(2 * dissolve_frames + 2, round(scene_seconds[0] * fps))
    longest = max(shortest, round(scene_seconds[1] * fps))
    scenes, transitions, start, previous = [], [], 0, -1
    while start < num_frames:
        choice = int(rng.integers(len(photos) - 1)) if previous >= 0 else int(rng.integers(len(photos)))
        choice = choice + (choice >= previous) if previous >= 0 else choice
        length = min(int(rng.integers(shortest, longest + 1)), num_frames - start)
        scenes.append(Scene(photos[choice], start, length, random_motion(rng, zoom)))
        previous = choice
        dissolve = rng.random() < dissolve_probability
        overlap = dissolve_frames if dissolve and length >= shortest else 0
        start += length - overlap
        if start < num_frames:
            kind = "dissolve" if overlap else "cut"
            transitions.append(Transition(len(scenes), kind, start, overlap))
    needle = None
    if needle_depth is not None:
        needle_start = round(needle_depth * (num_frames - needle_frames))
        needle = Scene(needle_photo, needle_start, needle_frames, random_motion(rng, zoom / 3))
    names = {scene.photo for scene in scenes} | ({needle.photo} if needle else set())
    return HaystackPlan(
        num_frames, fps, width, height, scenes, transitions, needle,
        photos={
            name: shrink_photo(photo, width, height, zoom)
            for name, photo in zip(sorted(names), load_photos(tuple(sorted(names))))
        },
    )


def crop_boxes(motion: Motion, num_frames: int, photo_height: int, photo_width: int, aspect: float) -> np.ndarray:
    r"""
    The crop window of every frame of a scene, `(num_frames, 4)` as `(left, top, width, height)` in pixels of the
    photograph: the largest window of the output's `aspect` scaled by `motion.scale`, placed by `motion.x/y`.
    """
    progress = np.linspace(0.0, 1.0, num_frames)
    full_h = min(photo_height, photo_width / aspect)
    crop_h = full_h * np.interp(progress, [0.0, 1.0], motion.scale)
    crop_w = crop_h * aspect
    left = (photo_width - crop_w) * np.interp(progress, [0.0, 1.0], motion.x)
    top = (photo_height - crop_h) * np.interp(progress, [0.0, 1.0], motion.y)
    return np.stack([left, top, crop_w, crop_h], axis=1)


def shrink_photo(photo: np.ndarray, width: int, height: int, zoom: float) -> np.ndarray:
    r"""
    The photograph shrunk (bilinear with antialiasing) so that its smallest crop under a `zoom` is about twice the
    output's `height`: bilinear sampling from it then hardly aliases, and every scene samples a small image.
    """
    import torch
    import torch.nn.functional as F

    full_h = min(photo.shape[0], photo.shape[1] * height / width)
    shrink = min(1.0, 2.0 * height / (full_h * (1.0 - zoom)))
    if shrink >= 1.0:
        return photo
    size = (max(1, round(photo.shape[0] * shrink)), max(1, round(photo.shape[1] * shrink)))
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    return image.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def render_motion(photo: np.ndarray, motion: Motion, num_frames: int, width: int, height: int) -> np.ndarray:
    r"""
    All frames of one scene at once, `(num_frames, height, width, 3)` uint8: one bilinear `grid_sample` over the
    crop windows of `crop_boxes`. Shrink large photographs first (`shrink_photo`) so zoomed-out frames do not alias.
    """
    import torch
    import torch.nn.functional as F

    boxes = crop_boxes(motion, num_frames, *photo.shape[:2], aspect=width / height)
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    # Crop edges in photograph pixels -> the affine map of grid_sample's [-1, 1] coordinates (align_corners=False).
    left, top, crop_w, crop_h = torch.from_numpy(boxes).float().unbind(1)
    theta = torch.zeros(num_frames, 2, 3)
    theta[:, 0, 0] = crop_w / photo.shape[1]
    theta[:, 0, 2] = (2 * left + crop_w) / photo.shape[1] - 1
    theta[:, 1, 1] = crop_h / photo.shape[0]
    theta[:, 1, 2] = (2 * top + crop_h) / photo.shape[0] - 1
    grid = F.affine_grid(theta, [num_frames, 3, height, width], align_corners=False)
    frames = F.grid_sample(image.expand(num_frames, -1, -1, -1), grid, mode="bilinear", align_corners=False)
    return frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def render_plan_scene(plan: HaystackPlan, scene: Scene) -> np.ndarray:
    """The frames of one scene of `plan` alone, before any dissolve: `(scene.num_frames, height, width, 3)` uint8."""
    return render_motion(plan.photos[scene.photo], scene.motion, scene.num_frames, plan.width, plan.height)


def dissolve(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    r"""Blends `(length, H, W, 3)` uint8 tails of the old scene into the heads of the new one (see `Transition`)."""
    alpha = (np.arange(1, len(old) + 1) / (len(old) + 1))[:, None, None, None]
    return np.rint((1.0 - alpha) * old + alpha * new).astype(np.uint8)


def iter_haystack_chunks(plan: HaystackPlan) -> Iterator[np.ndarray]:
    r"""
    The haystack's frames in order, one chunk per scene (`(frames, height, width, 3)` uint8, at most the longest
    scene), with dissolves blended and the needle written over its frames. Only one scene is held at a time.
    """
    needle = render_plan_scene(plan, plan.needle) if plan.needle is not None else None
    emitted, pending = 0, None  # pending: the previous scene's tail awaiting the next scene's head
    for index, scene in enumerate(plan.scenes):
        frames = render_plan_scene(plan, scene)
        if pending is not None:
            frames[: len(pending)] = dissolve(pending, frames[: len(pending)])
        following = plan.transitions[index] if index < len(plan.transitions) else None
        overlap = following.length if following is not None else 0
        chunk, pending = frames[: len(frames) - overlap], (frames[len(frames) - overlap :] if overlap else None)
        if needle is not None:
            first, last = max(plan.needle.start, emitted), min(plan.needle.end, emitted + len(chunk))
            if first < last:
                chunk[first - emitted : last - emitted] = needle[first - plan.needle.start : last - plan.needle.start]
        emitted += len(chunk)
        yield chunk


def render_haystack(plan: HaystackPlan) -> np.ndarray:
    """All frames of a planned haystack, `(num_frames, height, width, 3)` uint8."""
    return np.concatenate(list(iter_haystack_chunks(plan)))


def write_haystack_video(path: str | os.PathLike, plan: HaystackPlan) -> None:
    """Streams a planned haystack to an H.264 file scene by scene (fps rounded to an integer frame rate)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_video(path, iter_haystack_chunks(plan), round(plan.fps))


def make_haystack(num_frames: int, **plan_kwargs) -> tuple[np.ndarray, HaystackPlan]:
    """Plans (see `plan_haystack`, same keywords) and renders a haystack: its frames and its plan."""
    plan = plan_haystack(num_frames, **plan_kwargs)
    return render_haystack(plan), plan
