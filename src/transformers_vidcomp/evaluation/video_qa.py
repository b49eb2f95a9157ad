r"""Multiple-choice video questions: the one prompt format that training and evaluation share."""

import string
from collections.abc import Sequence


def format_multiple_choice(question: str, options: Sequence[str]) -> str:
    r"""
    The text shown to the model for a multiple-choice question: the question, one option per line after its letter
    (A, B, C, ...), and the instruction to answer with the letter. Training prompts and `vidcomp eval` both use it, so
    a model is evaluated on exactly the format it learned.

    >>> print(format_multiple_choice("Which photograph appears?", ["a cat", "a rocket"]))
    Which photograph appears?
    A. a cat
    B. a rocket
    Answer with the option's letter.
    """
    if not 2 <= len(options) <= 26:
        raise ValueError(f"A multiple-choice question needs 2 to 26 options, got {len(options)}.")
    lines = [question, *(f"{letter}. {option}" for letter, option in zip(string.ascii_uppercase, options))]
    return "\n".join([*lines, "Answer with the option's letter."])
