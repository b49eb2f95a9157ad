"""The `video-text-to-text` pipeline in process: batching and generation options."""

import numpy as np
import pytest
from transformers import pipeline

from transformers_vidcomp.tiny import build_tiny


@pytest.fixture(scope="module")
def pipe():
    model, processor = build_tiny("baseline", seed=0)  # its own tokenizer: the pipeline pads it on the left
    return pipeline("video-text-to-text", model=model, processor=processor)


def videos(*frame_counts: int) -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [generator.integers(0, 255, (count, 64, 64, 3), dtype=np.uint8) for count in frame_counts]


def test_a_batch_answers_as_each_video_alone(pipe):
    clips, questions = videos(6, 9), ["What happens?", "Describe the second clip in a few words, please."]
    batched = pipe(videos=clips, text=questions, max_new_tokens=4, batch_size=2)
    alone = [pipe(videos=clip, text=question, max_new_tokens=4) for clip, question in zip(clips, questions)]
    assert pipe.tokenizer.padding_side == "left"
    assert [answer[0]["generated_text"] for answer in batched] == [answer[0]["generated_text"] for answer in alone]


def test_beam_search_and_several_answers(pipe):
    answers = pipe(videos=videos(5)[0], text="What happens?", max_new_tokens=3,
                   generate_kwargs={"num_beams": 2, "num_return_sequences": 2})
    assert len(answers) == 2 and all(isinstance(answer["generated_text"], str) for answer in answers)
