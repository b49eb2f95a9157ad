r"""
Model cards rendered from the templates in `model_cards/`, with every figure computed from the checkpoint.

The template is the preset whose sampler and compressor the checkpoint uses (`baseline.md`, ...), or `custom.md`
for any other combination. The YAML front matter is built with huggingface_hub's `ModelCardData`.
"""

import importlib.resources
import math
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from huggingface_hub import ModelCard, ModelCardData
from transformers import ProcessorMixin

from ..modeling import VidCompForConditionalGeneration
from ..presets import PRESETS


DEFAULT_TAGS = ("video-llm", "video-text-to-text", "token-compression", "transformers-vidcomp")
# Marks randomly initialised checkpoints, so a later `vidcomp export` of one still says so.
RANDOM_WEIGHTS_TAG = "random-weights"


class ModelCardError(ValueError):
    """The checkpoint lacks something its card must state."""


@dataclass
class CardInfo:
    r"""
    What a card says that the checkpoint itself cannot: where the weights came from and under which terms.

    Args:
        source: one sentence on the weights' origin, for example "Converted from `Vision-CAIR/LongVU_Qwen2_7B`."
        base_model: Hub ids of the models the weights derive from.
        license: an SPDX-style Hub license id.
        datasets: Hub ids of the training datasets, where known.
        extra_tags: tags added to the defaults.
        trained: False for randomly initialised weights, which the card then says loudly.
        training: what was and was not trained, on which data, and held-out accuracy (Markdown), if known.
    """

    source: str
    base_model: list[str] = field(default_factory=list)
    license: str = "apache-2.0"
    datasets: list[str] = field(default_factory=list)
    extra_tags: list[str] = field(default_factory=list)
    trained: bool = True
    training: str = ""


# Marks checkpoints of the `-real` presets (SmolLM2 + the tower trained here), so `vidcomp export` states their training.
REAL_WEIGHTS_TAG = "vidcomp-real"


@dataclass(frozen=True)
class TokenFigures:
    r"""The worst case of one video's path to the LLM, from the checkpoint's config and processor."""

    video: str
    decode_fps: float | None
    max_decoded_frames: int
    max_kept_frames: int
    grid_h: int
    grid_w: int
    tokens_per_video: int
    token_budget: int | None

    @property
    def patch_tokens(self) -> int:
        """What the LLM would read without sampling or compression: every patch of every decoded frame."""
        return self.max_decoded_frames * self.grid_h * self.grid_w

    @property
    def compression_ratio(self) -> float:
        return self.patch_tokens / self.tokens_per_video


# Without a frame cap in the processor, the card describes an hour of video, the long end of what users bring.
REFERENCE_SECONDS = 3600


def token_figures(model: VidCompForConditionalGeneration, processor: ProcessorMixin) -> TokenFigures:
    r"""
    Computes the tokens one video costs from the sampler's and compressor's own bounds, for the longest video the
    processor lets through (its frame cap), or for an hour of video at the processor's rate if it has no cap.
    """
    config = model.config
    video_processor = processor.video_processor
    patch_size = config.vision_config.patch_size
    size = video_processor.size
    # Qwen's processors size frames by a pixel budget: the bound is the largest (square) frame it allows, in merged
    # tokens, and the compressor reads one grid per temporal patch of frames.
    qwen = hasattr(video_processor, "largest_token_grid")
    if qwen:
        grid_h, grid_w = video_processor.largest_token_grid()
    else:
        grid_h, grid_w = size["height"] // patch_size, size["width"] // patch_size
    fps, max_decoded = video_processor.fps, video_processor.num_frames
    if qwen and max_decoded is None:
        max_decoded = video_processor.max_frames
    sampler = model.model.sampler
    if sampler.selects_frames_at_decode:
        fps, max_decoded = sampler.config.decode_fps, math.ceil(sampler.config.decode_fps * REFERENCE_SECONDS)
        video = "a one-hour video (the sampler scans it all as thumbnails and decodes only the frames it keeps)"
    elif max_decoded is not None:
        video = f"the longest video the processor lets through (its {max_decoded}-frame cap)"
    elif fps is not None:
        max_decoded = math.ceil(fps * REFERENCE_SECONDS)
        video = "a one-hour video (the processor has no frame cap)"
    else:
        raise ModelCardError(
            "The video processor decodes every frame (no `fps`, no `num_frames`), so a card cannot state what a "
            "video costs. Set `fps` or `num_frames` on the video processor."
        )
    kept = sampler.max_kept_frames(max_decoded)
    budget = model.model.compressor_token_budget(config.video_token_budget)
    scenes = sampler.max_scenes(max_decoded)
    units = -(-kept // config.vision_config.temporal_patch_size) if qwen else kept
    tokens = model.model.compressor.max_tokens(units, grid_h, grid_w, token_budget=budget, num_scenes=scenes)
    tokens += int(config.video_newline)
    return TokenFigures(
        video=video,
        decode_fps=fps,
        max_decoded_frames=max_decoded,
        max_kept_frames=kept,
        grid_h=grid_h,
        grid_w=grid_w,
        tokens_per_video=tokens,
        token_budget=config.video_token_budget,
    )


def card_template_name(model: VidCompForConditionalGeneration) -> str:
    r"""
    The template of the preset this model runs: of the presets with its sampler and compressor (and a template), the
    first whose settings it all has (so a `fila-paper` model gets the paper's card and a `fila` model its own), else
    the first with its methods, else `custom`.
    """
    sampler, compressor = model.config.sampler_config, model.config.compressor_config
    candidates = [
        name for name, preset in PRESETS.items()
        if (preset.sampler_config["model_type"], preset.compressor_config["model_type"])
        == (sampler.model_type, compressor.model_type) and (templates_dir() / f"{name}.md").is_file()
    ]
    exact = [
        name for name in candidates
        if has_settings(sampler, PRESETS[name].sampler_config)
        and has_settings(compressor, PRESETS[name].compressor_config)
    ]
    return (exact or candidates or ["custom"])[0]


def has_settings(config, settings: dict) -> bool:
    """Whether `config` has every value of `settings`, nested configs compared key by key."""
    for key, value in settings.items():
        actual = getattr(config, key, None)
        if isinstance(value, dict) and not isinstance(actual, dict):
            if actual is None or not has_settings(actual, value):
                return False
        elif actual != value:
            return False
    return True


def templates_dir() -> Path:
    r"""
    `model_cards/` of the source tree (editable installs), or its copy inside the installed package (wheels).
    """
    packaged = Path(str(importlib.resources.files("transformers_vidcomp"))) / "model_cards"
    source_tree = Path(__file__).resolve().parents[3] / "model_cards"
    for candidate in (packaged, source_tree):
        if (candidate / "_base.md").is_file():
            return candidate
    raise FileNotFoundError(f"Model card templates not found in {packaged} or {source_tree}; reinstall the package.")


def render_model_card(
    model: VidCompForConditionalGeneration,
    processor: ProcessorMixin,
    info: CardInfo,
    repo_id: str,
    template: str | None = None,
) -> ModelCard:
    r"""
    Renders the card of a checkpoint.

    Args:
        model: the model being written, whose config gives every figure.
        processor: its processor, which gives the decoding rate and frame cap.
        info: provenance and license.
        repo_id: the Hub id (or local folder) the usage snippets load from.
        template: a template name in `model_cards/`; chosen from the model's methods by default.
    """
    template = template or card_template_name(model)
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="video-text-to-text",
        base_model=info.base_model or None,
        license=info.license,
        datasets=info.datasets or None,
        tags=[*DEFAULT_TAGS, *info.extra_tags, *([] if info.trained else [RANDOM_WEIGHTS_TAG])],
    )
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    config = model.config
    body = environment.get_template(f"{template}.md").render(
        repo_id=repo_id,
        info=info,
        figures=token_figures(model, processor),
        sampler=config.sampler_config,
        compressor=config.compressor_config,
        sampler_class=type(model.model.sampler).__name__,
        compressor_class=type(model.model.compressor).__name__,
        vision=config.vision_config,
        text=config.text_config,
        num_parameters=model.num_parameters(),
        timestamps_in_prompt=getattr(processor, "timestamps_in_prompt", False),
        paper=PRESETS[template].paper if template in PRESETS else None,
    )
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
