r"""`benchmarks/answer_bound.py`: the option scores it ranks by, against one unpadded forward per option."""

import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

import answer_bound  # noqa: E402


def test_description_names_photographs_in_order():
    assert answer_bound.description(["horse", "chelsea"]) == "The video shows a horse, then a cat."


def test_option_scores_match_one_forward_per_option(tiny):
    tokenizer = tiny[1].tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(config).eval()
    prompt = tokenizer("Which of these photographs appears?", return_tensors="pt")["input_ids"]
    options = ["a cat", "a field of galaxies", "stained tissue under a microscope", "gravel"]
    with torch.no_grad():
        scores = answer_bound.option_scores(model, tokenizer, prompt, options)
        for option, score in zip(options, scores):
            reply = tokenizer(option, add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = torch.cat([prompt, reply], dim=1)
            log_probs = model(input_ids=ids).logits.log_softmax(-1)[0, prompt.shape[1] - 1 : -1]
            expected = log_probs.gather(-1, reply[0, :, None]).mean()
            torch.testing.assert_close(score, expected, atol=1e-5, rtol=1e-5)
    assert len({round(float(s), 4) for s in scores}) == len(options)  # a ranking, not ties
