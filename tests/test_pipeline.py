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


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from transformers_vidcomp.demo_video import make_demo_video

    path = tmp_path_factory.mktemp("pipeline") / "clip.mp4"
    make_demo_video(path, seconds_per_scene=0.5, fps=10, width=96, height=64, photos=("coffee", "rocket"))
    return str(path)


def chat_about(video, question="What happens?"):
    return [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": question}]}]


def generate_idiom(pipe, chat, max_new_tokens):
    inputs = pipe.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True,
                                                return_tensors="pt")
    out = pipe.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return pipe.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_every_call_form_of_image_text_to_text_gives_the_generate_idioms_answer(pipe, clip):
    chat = chat_about(clip)
    expected = generate_idiom(pipe, chat, 4)
    assert expected  # a non-empty answer, so the comparisons below can fail
    as_first_argument = pipe(chat, max_new_tokens=4)
    as_text = pipe(text=chat, generate_kwargs={"max_new_tokens": 4})
    as_pair = pipe(videos=clip, text="What happens?", max_new_tokens=4)
    as_dict = pipe({"video": clip, "text": "What happens?"}, max_new_tokens=4)
    for answer in (as_first_argument, as_text, as_pair, as_dict):
        assert [a["generated_text"] for a in answer] == [expected]
    batched = pipe([chat, chat_about(clip, "Describe the second scene in a few words.")], batch_size=2,
                   max_new_tokens=4)
    assert len(batched) == 2 and batched[0][0]["generated_text"] == expected
    assert batched[1][0]["generated_text"] == generate_idiom(
        pipe, chat_about(clip, "Describe the second scene in a few words."), 4)
    pairs = pipe([{"video": clip, "text": "What happens?"}] * 2, max_new_tokens=4)
    assert [a[0]["generated_text"] for a in pairs] == [expected, expected]


def test_return_full_text_appends_the_assistant_turn_to_the_chat(pipe, clip):
    chat = chat_about(clip)
    full = pipe(chat, max_new_tokens=4, return_full_text=True)[0]["generated_text"]
    assert full == chat + [{"role": "assistant", "content": generate_idiom(pipe, chat, 4)}]


@pytest.mark.parametrize("call", [
    lambda pipe, clip: pipe(videos=clip),
    lambda pipe, clip: pipe(),
    lambda pipe, clip: pipe(videos=[clip, clip]),
])
def test_a_call_without_a_question_names_the_accepted_forms(pipe, clip, call):
    with pytest.raises(ValueError, match=r"needs a question about the video.*pipe\(chat\).*pipe\(videos=video, text="):
        call(pipe, clip)


def test_a_chat_beside_videos_is_refused(pipe, clip):
    with pytest.raises(ValueError, match="Put each video in the chat"):
        pipe(videos=clip, text=chat_about(clip))
