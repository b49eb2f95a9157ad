r"""
Verification of a written checkpoint folder before anything is published.

The folder is reloaded in a fresh interpreter where `transformers_vidcomp` cannot be imported, exactly as a Hub user
would load it (`trust_remote_code=True`, offline, an empty module cache), and runs a forward pass on a short video
through its own processor. Its logits must match those of the in-memory model the folder was written from.
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, ProcessorMixin

from ..demo_video import write_video


class VerificationError(RuntimeError):
    """The written folder does not load, or does not reproduce the source model's outputs."""


VERIFICATION_QUESTION = "What happens in this video?"
VERIFICATION_SECONDS = 2

RELOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["transformers_vidcomp"] = None  # the folder must stand on its own
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, video, question, dtype, out = sys.argv[1:6]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype=getattr(torch, dtype))
    model.eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits
    save_file({"logits": logits.float().contiguous(), "input_ids": inputs["input_ids"]}, out)
    """
)


def write_verification_video(path: str | os.PathLike, fps: int = 8) -> Path:
    r"""
    A 2-second clip of moving colour gradients, made with numpy alone so verification needs no sample data. Its
    frames differ from one another, so samplers and compressors that look at content have something to decide.
    """
    height, width = 64, 96
    num_frames = VERIFICATION_SECONDS * fps
    t = np.arange(num_frames)[:, None, None] / num_frames
    y = np.linspace(0.0, 1.0, height)[None, :, None]
    x = np.linspace(0.0, 1.0, width)[None, None, :]
    channels = [np.sin(2 * np.pi * (x + t)), np.cos(2 * np.pi * (y - 2 * t)), np.sin(2 * np.pi * (x * y + 3 * t))]
    frames = (np.stack(np.broadcast_arrays(*channels), axis=-1) * 127.5 + 127.5).astype(np.uint8)
    write_video(path, frames, fps)
    return Path(path)


def verify_checkpoint(
    folder: str | os.PathLike,
    model: PreTrainedModel,
    processor: ProcessorMixin,
    atol: float = 1e-5,
    timeout: float = 1800,
) -> float:
    r"""
    Reloads `folder` in a clean subprocess and compares its logits on a short video with `model`'s.

    Returns:
        The largest absolute logit difference.

    Raises:
        VerificationError: the folder failed to load or run, or a logit differs by more than `atol`.
    """
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="vidcomp-verify-") as work:
        work = Path(work)
        video = write_verification_video(work / "verify.mp4")
        messages = [
            {"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": VERIFICATION_QUESTION}]}
        ]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            expected = model(**inputs.to(model.device)).logits.float().cpu()
        model.train(was_training)

        out = work / "reloaded.safetensors"
        # A private module cache: code cached from an earlier folder of the same name must not stand in for ours.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(work / "modules")}
        try:
            result = subprocess.run(
                [
                    sys.executable, "-c", RELOAD_SCRIPT,
                    str(folder), str(video), VERIFICATION_QUESTION, str(model.dtype).removeprefix("torch."), str(out),
                ],
                capture_output=True, text=True, env=env, cwd=work, timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise VerificationError(
                f"Reloading the written folder and running it on a {VERIFICATION_SECONDS}-second video took more than "
                f"{timeout:g} s; nothing was kept."
            ) from error
        if result.returncode != 0:
            raise VerificationError(
                f"The written folder did not load and run with trust_remote_code=True in a clean interpreter:\n"
                f"{result.stderr[-4000:]}"
            )
        reloaded = load_file(out)
    if not torch.equal(reloaded["input_ids"], inputs["input_ids"].cpu()):
        raise VerificationError(
            "The saved processor tokenises the verification prompt differently from the source processor "
            f"({reloaded['input_ids'].shape[1]} vs {inputs['input_ids'].shape[1]} tokens)."
        )
    if reloaded["logits"].shape != expected.shape:
        raise VerificationError(
            f"The reloaded model returns logits of shape {tuple(reloaded['logits'].shape)}, the source model "
            f"{tuple(expected.shape)}."
        )
    max_difference = (reloaded["logits"] - expected).abs().max().item()
    if not max_difference <= atol:
        raise VerificationError(
            f"The reloaded model's logits differ from the source model's by up to {max_difference:.3g} (tolerance "
            f"{atol:g}). The weights or config were not written faithfully."
        )
    return max_difference
