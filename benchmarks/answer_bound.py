r"""
The ceiling the frozen LLM sets on the `-real` presets' answers (issue 17): SmolLM2-135M-Instruct is asked the
held-out video QA questions with the video replaced by a sentence that says exactly what it shows ("The video shows
a horse, then a retina, then a clock."), i.e. with perfect vision. No tower, connector or training is involved.

Two scorings:

- **letter**: the letter the model generates (greedy first token), as the targets are stated;
- **likelihood**: the option whose text, as the assistant's reply, has the highest mean log-probability.

    python benchmarks/answer_bound.py [--videos 60] [--seed 1001] [--out benchmarks/results/answer_bound.json]

Both near chance (measured: README, "Where the bound is") means no connector can reach the issue's targets
through this LLM without adapters that learn to bind options to letters.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from transformers_vidcomp.evaluation.video_qa import (
    PHOTO_NAMES,
    format_multiple_choice,
    frame_photos,
    generate_qa_items,
    in_order,
)
from transformers_vidcomp.real import real_llm_folder

RESULTS = Path(__file__).parent / "results" / "answer_bound.json"
TYPES = ("appears", "first", "last")


def description(photos: list[str]) -> str:
    """What a perfect tower would tell the LLM: the photographs in the order they are first shown."""
    return "The video shows " + ", then ".join(PHOTO_NAMES[p] for p in photos) + "."


def prompt_ids(tokenizer, text: str) -> torch.Tensor:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def option_scores(model, tokenizer, prompt: torch.Tensor, options: list[str]) -> torch.Tensor:
    r"""Mean log-probability of each option's text as the reply to `prompt` (`(1, length)`): `(num_options,)`."""
    replies = [tokenizer(option, add_special_tokens=False, return_tensors="pt")["input_ids"] for option in options]
    width = max(reply.shape[1] for reply in replies)
    ids = torch.full((len(options), prompt.shape[1] + width), tokenizer.pad_token_id or 0)
    mask = torch.zeros_like(ids)
    for row, reply in enumerate(replies):
        sequence = torch.cat([prompt[0], reply[0]])
        ids[row, : len(sequence)], mask[row, : len(sequence)] = sequence, 1
    log_probs = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)[:, prompt.shape[1] - 1 : -1]
    targets = ids[:, prompt.shape[1] :]
    picked = log_probs.gather(-1, targets[..., None])[..., 0] * mask[:, prompt.shape[1] :]
    return picked.sum(1) / mask[:, prompt.shape[1] :].sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=60, help="held-out videos (3 questions each)")
    parser.add_argument("--seed", type=int, default=1001, help="the held-out seed of weights/README.md")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    folder = real_llm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    letter_ids = {letter: tokenizer(letter, add_special_tokens=False)["input_ids"][0] for letter in "ABCD"}
    hits: dict[str, dict[str, list[bool]]] = {"letter": {}, "likelihood": {}}
    start = time.perf_counter()
    items = list(generate_qa_items(args.videos, seed=args.seed, types=TYPES))
    with torch.inference_mode():
        for _, plan, rows in tqdm(items, desc="questions with the video described in words"):
            said = description(in_order(frame_photos(plan)))
            for row in rows:
                prompt = prompt_ids(tokenizer, f"{said}\n{format_multiple_choice(row['question'], row['options'])}")
                generated = tokenizer.decode(model(input_ids=prompt).logits[0, -1].argmax()).strip()
                hits["letter"].setdefault(row["type"], []).append(generated[:1] == row["answer"])
                best = int(option_scores(model, tokenizer, prompt, row["options"]).argmax())
                hits["likelihood"].setdefault(row["type"], []).append("ABCD"[best] == row["answer"])
    accuracy = {
        scoring: {kind: {"accuracy": float(np.mean(h)), "items": len(h)} for kind, h in by_type.items()}
        for scoring, by_type in hits.items()
    }
    result = {"llm": "SmolLM2-135M-Instruct (frozen, no adapters)", "held_out_seed": args.seed,
              "videos": args.videos, "seconds": round(time.perf_counter() - start, 1), "accuracy": accuracy,
              "letter_ids": letter_ids}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| scoring | " + " | ".join(TYPES) + " |")
    print("|---|" + "---:|" * len(TYPES))
    for scoring, by_type in accuracy.items():
        print(f"| {scoring} | " + " | ".join(f"{by_type[kind]['accuracy']:.0%}" for kind in TYPES) + " |")


if __name__ == "__main__":
    main()
