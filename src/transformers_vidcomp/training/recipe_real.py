r"""
The recipe that trains the `-real` presets' vision tower and connector against a frozen SmolLM2-135M-Instruct, on
2 CPU cores, with `Trainer`:

1. Name alignment (`align_to_names`): the tower and projector learn, frame by frame, to put each photograph's frames
   at the LLM's own input embedding of its name's keyword (`keyword_embeddings`: " coffee" for "a cup of coffee"),
   the token the options spell it with. A contrastive loss over the pool's keywords separates the photographs and a
   squared-error term puts the tokens at the embedding's place and norm, so a video token reads to the frozen LLM
   like the word in its options. Frames are rendered in memory with the haystack's camera moves; no LLM forward
   runs, so this costs seconds.
2. Question answering (`vidcomp finetune --stage vision+connector`): language-model loss on the answer letters of
   synthetic video QA (`evaluation.video_qa`), the aligned tower and projector frozen. A frozen 135M LLM cannot
   match video tokens to lettered options by itself (nor names given as text: `benchmarks/answer_bound.py`), so
   low-rank adapters on all its linear layers (`lora_rank`, through `peft`) learn that: first on the questions
   with each video described in text by the keyword of each frame the sampler keeps (`described_examples`,
   `--describe-steps`), where the binding is learnt at all within the budget, then on the videos. They are merged
   into the LLM's weights afterwards and ship as their low-rank factors beside the tower.

A preset with compressor parts of its own is trained on the baseline's tower and adapters by step 1 run through the
compressor (`VideoNameAlignment`, `vidcomp finetune --stage compressor+projector --align-steps N`): one-photograph
clips go the whole video path and every token it returns is put at the photograph's keyword.
"""

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from ..demo_video import load_photos, random_motion, render_motion, shrink_photo
from ..evaluation.video_qa import PHOTO_NAMES


# Every linear layer of a Llama block, as in the runs that learnt the letter binding (README, "A model that answers").
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class KeywordError(ValueError):
    """A name has no word of its own to align its photograph's frames to."""


def keyword_tokens(tokenizer, names: list[str]) -> list[int]:
    r"""
    The keyword token of each name: its last word-initial token, tokenised as options show it (after a space), that
    no other name has (" coffee" for "a cup of coffee", " tissue" for "stained tissue under a microscope" beside
    "a cell under a microscope", " checker" for "a checkerboard"). Word-initial, so that keywords written one after
    another in text tokenise back to themselves.
    """
    spelled = [tokenizer(" " + name, add_special_tokens=False)["input_ids"] for name in names]
    uses = Counter(token for tokens in spelled for token in set(tokens))
    keywords = []
    for name, tokens in zip(names, spelled):
        own = [token for token in tokens if uses[token] == 1 and tokenizer.decode([token]).startswith(" ")]
        if not own:
            raise KeywordError(
                f"The name {name!r} has no word of its own among {names}: every word of it starts another name too. "
                "Rename it with a word no other name uses (the word its frames are aligned to)."
            )
        keywords.append(own[-1])
    return keywords


def keyword_embeddings(model, tokenizer, names: list[str]) -> torch.Tensor:
    """The LLM's input embedding of each name's keyword (`keyword_tokens`), `(len(names), hidden)`, detached."""
    return model.get_input_embeddings().weight[keyword_tokens(tokenizer, names)].detach()


def described_examples(
    path: str | os.PathLike, tokenizer, frames_per_video: int | None = None, include_last: bool = False
) -> list[dict]:
    r"""
    The questions of a QA manifest (`evaluation.video_qa`) as chat examples whose video is replaced by text: the
    keywords name alignment puts its frames at. Step 2 answers these first, so the adapters learn to bind options to
    letters where the match is exact, then carry it over to the video tokens.

    Args:
        frames_per_video (`int`, *optional*):
            Describe the frames the uniform sampler keeps (from the rows' `scene_frames`): one keyword per video
            token, so a photograph on screen for one kept frame is one word here too, as the LLM will see it.
            Without it, one keyword per scene (the rows' `scenes`).
        include_last (`bool`, *optional*, defaults to `False`):
            The uniform sampler's `include_last`: whether the kept frames run to the last one.
    """
    from ..modeling.components_vidcomp import uniform_keep_mask
    from .finetune import TrainingDataError, qa_messages, read_json_lines

    path = Path(path)
    needed = ("scenes", "scene_frames") if frames_per_video else ("scenes",)
    rows = []
    for number, row in read_json_lines(path):
        missing = [key for key in needed if not isinstance(row, dict) or key not in row]
        if missing:
            raise TrainingDataError(
                f"{path}:{number} has no `{'`, `'.join(missing)}`: describing videos in text needs a QA manifest "
                "whose rows list their video's photographs in screen order, as vidcomp make-qa writes them."
            )
        rows.append(row)
    if not rows:
        raise TrainingDataError(f"{path} holds no questions.")
    tokens = keyword_tokens(tokenizer, list(PHOTO_NAMES.values()))
    words = dict(zip(PHOTO_NAMES, tokenizer.batch_decode([[token] for token in tokens])))
    examples = []
    for row in rows:
        shown = row["scenes"]
        if frames_per_video:
            shown = np.repeat(row["scenes"], row["scene_frames"])
            position = torch.arange(len(shown))
            kept = uniform_keep_mask(
                position, torch.full_like(position, len(shown)), torch.full_like(position, frames_per_video),
                include_last=include_last,
            )
            shown = shown[kept.numpy()]
        example = qa_messages(row, path.parent)
        example["messages"][0]["content"][0] = {"type": "text", "text": "".join(words[photo] for photo in shown) + "\n"}
        examples.append(example)
    return examples


class FrameDataset(torch.utils.data.Dataset):
    r"""
    Frames of the photographs of `photos` seen through random camera moves, rendered at `aspect` (the training
    videos' 4:3) and resized to the tower's `size` as the video processor resizes decoded frames: `pixel_values`
    `(3, size, size)` rescaled and normalised with the processor's settings, and the photograph's index as `labels`.
    Each item is drawn from its index, so the set is the same in every run.
    """

    def __init__(self, photos: list[str], video_processor, length: int, size: int, seed: int = 0, aspect: float = 4 / 3):
        self.photos, self.length, self.size, self.seed = photos, length, size, seed
        self.width = round(size * aspect)
        self.pictures = [shrink_photo(p, self.width, size, 0.3) for p in load_photos(tuple(photos))]
        self.scale = float(video_processor.rescale_factor)
        self.mean = torch.tensor(video_processor.image_mean).view(3, 1, 1)
        self.std = torch.tensor(video_processor.image_std).view(3, 1, 1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        label = int(rng.integers(len(self.photos)))
        frame = render_motion(self.pictures[label], random_motion(rng, 0.3), 2, self.width, self.size)[int(rng.integers(2))]
        pixels = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
        pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False)[0]
        return {"pixel_values": (pixels.clamp(0, 255) * self.scale - self.mean) / self.std, "labels": label}


class NameScores(nn.Module):
    r"""
    Scores tokens `(n, hidden)` against the frozen name embeddings by cosine similarity, scaled by a learned
    temperature: the logits of name alignment's cross-entropy.
    """

    def __init__(self, prototypes: torch.Tensor):
        super().__init__()
        self.register_buffer("prototypes", F.normalize(prototypes, dim=-1))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.log_scale.exp() * F.normalize(tokens, dim=-1) @ self.prototypes.T
        return {"loss": F.cross_entropy(logits, labels) if labels is not None else None, "logits": logits}


class NameAlignment(nn.Module):
    r"""
    Wraps a VidComp model's tower and projector for step 1: each frame's tokens, pooled and projected, are scored
    against the name embeddings (`NameScores`).
    """

    def __init__(self, vidcomp_model, prototypes: torch.Tensor):
        super().__init__()
        self.inner = vidcomp_model.model
        self.scores = NameScores(prototypes)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        features = self.inner.encode_frames(pixel_values).mean(dim=(1, 2))
        return self.scores(self.inner.multi_modal_projector(features), labels)


class VideoNameAlignment(nn.Module):
    r"""
    Step 1 for a compressor, whose tokens need not be one frame's (HICom's global queries, FiLA's fused scenes, the
    compact compressor's 3D groups): clips of one photograph each go the whole way a video goes, the question as the
    instruction (`get_video_features`: sampler, tower, compressor, projector), and every video token is scored
    against the name embeddings (`NameScores`) with its clip's label. Whatever a compressor mixes, the tokens of a
    one-photograph clip should all read as its name.
    """

    def __init__(self, vidcomp_model, prototypes: torch.Tensor):
        super().__init__()
        self.inner = vidcomp_model.model
        self.scores = NameScores(prototypes)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        pixel_values_videos: torch.FloatTensor,
        video_num_frames: torch.LongTensor,
        video_timestamps: torch.FloatTensor | None = None,
        video_sizes: torch.LongTensor | None = None,
        guide_input_ids: torch.LongTensor | None = None,
        guide_attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
    ) -> dict:
        instruction = self.inner.instruction_condition(
            input_ids, attention_mask, guide_input_ids=guide_input_ids, guide_attention_mask=guide_attention_mask
        )
        video = self.inner.get_video_features(
            pixel_values_videos, video_num_frames, video_timestamps, instruction=instruction, video_sizes=video_sizes
        )
        token_labels = None if labels is None else torch.repeat_interleave(labels, video.token_counts)
        # Tokens of no frame (a newline after each video) separate videos; they name no photograph.
        of_a_frame = video.token_frame_index >= 0
        return self.scores(
            video.pooler_output[of_a_frame], None if token_labels is None else token_labels[of_a_frame]
        )


@dataclass
class AlignmentCollator:
    def __call__(self, items: list[dict]) -> dict:
        return {
            "pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "labels": torch.tensor([item["labels"] for item in items]),
        }


class ClipDataset(torch.utils.data.Dataset):
    r"""
    Clips of one photograph of `photos` each, seen through a random camera move as in the QA videos: `frames`
    `(num_frames, height, width, 3)` uint8 at the videos' size, the question "which appears" with four of the
    pool's names as options in random order (`prompt`), and the photograph's index as `labels`. Each item is drawn
    from its index.
    """

    def __init__(
        self, photos: list[str], length: int, num_frames: int, width: int = 96, height: int = 72, seed: int = 0
    ):
        self.photos, self.length, self.num_frames, self.seed = photos, length, num_frames, seed
        self.width, self.height = width, height
        self.pictures = [shrink_photo(p, width, height, 0.3) for p in load_photos(tuple(photos))]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        from ..evaluation.video_qa import QUESTIONS, format_multiple_choice

        rng = np.random.default_rng([self.seed, index])
        label = int(rng.integers(len(self.photos)))
        others = rng.choice([p for i, p in enumerate(self.photos) if i != label], size=3, replace=False).tolist()
        options = [PHOTO_NAMES[p] for p in rng.permutation([self.photos[label], *others])]
        frames = render_motion(self.pictures[label], random_motion(rng, 0.3), self.num_frames, self.width, self.height)
        return {"frames": frames, "prompt": format_multiple_choice(QUESTIONS["appears"], options), "labels": label}


@dataclass
class ClipAlignmentCollator:
    r"""Prepares `ClipDataset` items as the model's processor prepares a question about a video, every frame kept."""

    processor: object

    def __call__(self, items: list[dict]) -> dict:
        conversations = [
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": item["prompt"]}]}]
            for item in items
        ]
        texts = self.processor.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
        batch = self.processor(
            text=texts, videos=[item["frames"] for item in items], padding=True, do_sample_frames=False,
            return_tensors="pt",
        )
        return {**batch, "labels": torch.tensor([item["labels"] for item in items])}


def align_to_names(
    model, processor, steps: int, batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0,
    photos: list[str] | None = None, quiet: bool = False, through_compressor: bool = False,
    clip_frames: int = 16,
) -> list[float]:
    r"""
    Step 1 of the recipe, with `Trainer`: returns the loss of every step.

    Args:
        through_compressor (`bool`, *optional*, defaults to `False`):
            Align the tokens the whole video path returns (`VideoNameAlignment`, on `batch_size` clips of
            `clip_frames` frames) rather than each frame's pooled tower tokens (`NameAlignment`, on `batch_size`
            frames): for a compressor with trainable parts, the tower trained already.
    """
    import tempfile

    photos = photos or list(PHOTO_NAMES)
    prototypes = keyword_embeddings(model, processor.tokenizer, [PHOTO_NAMES[p] for p in photos])
    if through_compressor:
        wrapper = VideoNameAlignment(model, prototypes)
        dataset = ClipDataset(photos, steps * batch_size, clip_frames, seed=seed)
        collator = ClipAlignmentCollator(processor)
    else:
        wrapper = NameAlignment(model, prototypes)
        size = model.config.vision_config.image_size
        dataset = FrameDataset(photos, processor.video_processor, steps * batch_size, size, seed)
        collator = AlignmentCollator()
    with tempfile.TemporaryDirectory(prefix="vidcomp-align-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=learning_rate,
            lr_scheduler_type="cosine", warmup_steps=min(20, steps // 10), logging_steps=1, save_strategy="no",
            report_to=[], remove_unused_columns=False, use_cpu=not torch.cuda.is_available(), seed=seed,
            disable_tqdm=quiet,
        )
        trainer = Trainer(model=wrapper, args=args, train_dataset=dataset, data_collator=collator)
        trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


# Low-rank adapters on the LLM's attention: injected for training, merged for use, shipped as their factors.
def add_lora(model, rank: int, alpha: float | None = None) -> None:
    """Injects LoRA adapters of `rank` into the LLM's attention projections (`LORA_TARGETS`) with `peft`."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:
        raise ImportError("Training with --lora-rank needs peft: pip install 'transformers-vidcomp[train]'.") from error
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=list(LORA_TARGETS), lora_dropout=0.0)
    inject_adapter_in_model(config, model.model.language_model)


def merge_lora(model) -> dict[str, torch.Tensor]:
    r"""
    Merges every injected LoRA adapter into its base linear layer, puts the plain layer back, and returns the
    adapters as `{"<linear>.lora_delta_A": A, "<linear>.lora_delta_B": scaling * B}` so that `W += B @ A`, in
    bfloat16: adapters on every linear layer of the 30 blocks would take 20 MB in float32, and the merged
    weights differ from float32 factors' by under 1% of the adapters' change. The merge uses the bfloat16 factors,
    so the model returned is the one the factors rebuild.
    """
    from peft.tuners.lora import LoraLayer

    factors = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            adapter = module.active_adapters[0]
            a = module.lora_A[adapter].weight.detach().to(torch.bfloat16)
            b = (module.lora_B[adapter].weight * module.scaling[adapter]).detach().to(torch.bfloat16)
            base = module.get_base_layer()
            with torch.no_grad():
                base.weight += (b.float() @ a.float()).to(base.weight.dtype)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, base)
            factors[f"{name}.lora_delta_A"] = a.contiguous()
            factors[f"{name}.lora_delta_B"] = b.contiguous()
    return factors


def apply_lora_factors(model, state: dict[str, torch.Tensor]) -> None:
    """Adds shipped LoRA factors (`merge_lora`'s) into the LLM's weights: `W += B @ A` for each adapted layer."""
    with torch.no_grad():
        for key in [k for k in state if k.endswith(".lora_delta_A")]:
            linear = key[: -len(".lora_delta_A")]
            weight = model.get_submodule(linear).weight
            weight += (state[f"{linear}.lora_delta_B"].float() @ state[key].float()).to(weight.dtype)


def loss_plot(curves: dict[str, list[float]], path) -> None:
    """One panel per training step's loss curve, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.5), squeeze=False)
    for axis, (title, losses) in zip(axes[0], curves.items()):
        axis.plot(range(1, len(losses) + 1), losses, lw=0.8)
        if len(losses) >= 10:
            window = max(2, len(losses) // 20)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            axis.plot(range(window, len(losses) + 1), smooth, lw=2)
        axis.set(title=title, xlabel="step", ylabel="loss")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


__all__ = [
    "FrameDataset",
    "KeywordError",
    "ClipAlignmentCollator",
    "ClipDataset",
    "NameAlignment",
    "NameScores",
    "VideoNameAlignment",
    "add_lora",
    "align_to_names",
    "apply_lora_factors",
    "described_examples",
    "keyword_embeddings",
    "keyword_tokens",
    "loss_plot",
    "merge_lora",
]
