"""`generate()` keeps GenerationMixin's contract: it returns the prompt as the caller gave it, then the new tokens."""

import pytest
import torch
from conftest import random_videos
from transformers import TextIteratorStreamer, TextStreamer

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
GREEDY = dict(do_sample=False)


def prompts(processor, texts, padding_side):
    return processor.tokenizer([TEMPLATE.format(t) for t in texts], padding=True, padding_side=padding_side,
                               return_tensors="pt")


def videos(frame_counts, seed=0):
    pixels, counts, times = random_videos(frame_counts, seed=seed)
    return dict(pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)


@pytest.fixture()
def model_and_processor(tiny):
    model, processor = tiny
    model.generation_config.max_new_tokens = None  # lengths below come from each call alone
    return model, processor


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_each_row_is_the_prompt_as_given_then_the_new_tokens(model_and_processor, padding_side):
    model, processor = model_and_processor
    # Two videos in the first prompt, one in the second, of different lengths.
    text = prompts(processor, ["<video><video>Which differs?", "<video>What happens in this one?"], padding_side)
    out = model.generate(**text, **videos([6, 3, 9]), max_new_tokens=5, min_new_tokens=5, **GREEDY)
    width = text["input_ids"].shape[1]
    assert out.shape == (2, width + 5)
    assert out[:, :width].tolist() == text["input_ids"].tolist()
    assert not (out[:, width:] == model.config.video_token_id).any()
    if padding_side == "left":  # each row's new tokens are those it generates alone
        for row, (frames, video_ids) in enumerate([(slice(0, 9), [0, 1]), (slice(9, 18), [2])]):
            alone = prompts(processor, [["<video><video>Which differs?", "<video>What happens in this one?"][row]],
                            "left")
            pixels, counts, times = random_videos([6, 3, 9])
            single = model.generate(**alone, pixel_values_videos=pixels[frames], video_num_frames=counts[video_ids],
                                    video_timestamps=times[frames], max_new_tokens=5, min_new_tokens=5, **GREEDY)
            assert single[0, alone["input_ids"].shape[1]:].tolist() == out[row, width:].tolist()


def test_a_prompt_given_expanded_comes_back_as_given(model_and_processor):
    model, processor = model_and_processor
    text = prompts(processor, ["<video>What is shown?"], "left")
    video = videos([4])
    first = model(**text, **video)
    expanded, mask, _ = model.model.expand_video_placeholders(text["input_ids"], text["attention_mask"], None,
                                                              first.video_outputs.token_counts)
    out = model.generate(input_ids=expanded, attention_mask=mask, **video, max_new_tokens=3, **GREEDY)
    unexpanded = model.generate(**text, **video, max_new_tokens=3, **GREEDY)
    assert out[:, : expanded.shape[1]].tolist() == expanded.tolist()
    assert out[:, expanded.shape[1]:].tolist() == unexpanded[:, text["input_ids"].shape[1]:].tolist()


def test_dict_output_sequences_scores_and_logits_line_up_with_the_new_tokens(model_and_processor):
    model, processor = model_and_processor
    text = prompts(processor, ["<video>What is shown?", "<video>Describe the scene, please."], "left")
    out = model.generate(**text, **videos([5, 7]), max_new_tokens=4, min_new_tokens=4, return_dict_in_generate=True,
                         output_scores=True, output_logits=True, **GREEDY)
    width = text["input_ids"].shape[1]
    assert out.sequences[:, :width].tolist() == text["input_ids"].tolist()
    assert len(out.scores) == len(out.logits) == out.sequences.shape[1] - width == 4
    for step, logits in enumerate(out.logits):  # greedy: each new token is its step's argmax
        assert logits.argmax(-1).tolist() == out.sequences[:, width + step].tolist()


def test_beam_copies_each_start_with_their_own_prompt(model_and_processor):
    model, processor = model_and_processor
    text = prompts(processor, ["<video>What is shown?", "<video>Describe the scene, please."], "left")
    out = model.generate(**text, **videos([5, 7]), max_new_tokens=3, num_beams=2, num_return_sequences=2,
                         return_dict_in_generate=True, output_scores=True, **GREEDY)
    width = text["input_ids"].shape[1]
    assert out.sequences.shape[0] == 4
    assert out.sequences[:, :width].tolist() == text["input_ids"].repeat_interleave(2, 0).tolist()
    assert out.sequences.shape[1] - width == len(out.scores)


def test_lengths_count_the_prompt_as_given(model_and_processor):
    model, processor = model_and_processor
    text = prompts(processor, ["<video>What is shown?"], "left")
    video = videos([6])  # 96 video tokens behind one placeholder
    width = text["input_ids"].shape[1]
    assert model.generate(**text, **video, max_length=width + 3, min_length=width + 3, **GREEDY).shape[1] == width + 3
    stop = model.generate(**text, **video, max_new_tokens=4, min_new_tokens=4, **GREEDY)[0, width]
    # eos_token_id keeps its meaning: generation ends at it (min_new_tokens permitting).
    ended = model.generate(**text, **video, max_new_tokens=6, eos_token_id=int(stop), **GREEDY)
    assert ended.shape[1] == width + 1 and ended[0, -1] == stop
    held = model.generate(**text, **video, max_new_tokens=6, min_new_tokens=3, eos_token_id=int(stop), **GREEDY)
    assert held.shape[1] >= width + 3 and stop not in held[0, width: width + 2].tolist()


def test_text_streamer_with_skip_prompt_prints_exactly_the_new_tokens(model_and_processor, capsys):
    model, processor = model_and_processor
    text = prompts(processor, ["<video>What is shown?"], "left")
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True)
    out = model.generate(**text, **videos([6]), max_new_tokens=6, min_new_tokens=6, streamer=streamer, **GREEDY)
    printed = capsys.readouterr().out
    assert printed == processor.tokenizer.decode(out[0, text["input_ids"].shape[1]:]) + "\n"


@pytest.mark.parametrize("skip_prompt", [True, False])
def test_iterator_streamer_sees_the_prompt_as_given(model_and_processor, skip_prompt):
    model, processor = model_and_processor
    text = prompts(processor, ["<video>What is shown?"], "left")
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=skip_prompt)
    out = model.generate(**text, **videos([6]), max_new_tokens=5, min_new_tokens=5, streamer=streamer, **GREEDY)
    streamed = "".join(streamer)
    width = text["input_ids"].shape[1]
    expected = processor.tokenizer.decode(out[0] if not skip_prompt else out[0, width:])
    assert streamed == expected
    assert streamed.count("<video>") == (0 if skip_prompt else 1)


def test_expanded_token_sources_map_logits_rows_back_to_text_and_videos(model_and_processor):
    model, processor = model_and_processor
    text = prompts(processor, ["<video><video>Which differs?", "<video>What happens?"], "left")
    labels = text["input_ids"].masked_fill(text["attention_mask"] == 0, -100)
    out = model(**text, **videos([6, 3, 9]), labels=labels)
    counts = out.video_outputs.token_counts
    sources = model.expanded_token_sources(text["input_ids"], counts, text["attention_mask"])
    assert sources.text_position.shape == out.logits.shape[:2] == out.labels.shape
    expanded, _, _ = model.model.expand_video_placeholders(text["input_ids"], text["attention_mask"], None, counts)
    rows, columns = torch.nonzero(sources.text_position >= 0, as_tuple=True)
    # Every text row of the logits is a token of the prompt as given, once each, in order.
    assert expanded[rows, columns].tolist() == text["input_ids"][rows, sources.text_position[rows, columns]].tolist()
    assert int((sources.text_position >= 0).sum()) == int(text["attention_mask"].sum()) - 3
    for video, count in enumerate(counts.tolist()):
        positions = sources.video_index == video
        assert int(positions.sum()) == count
        assert sources.video_token_index[positions].tolist() == list(range(count))
    assert set(sources.video_index[1].tolist()) == {-1, 2}  # the second prompt holds the third video only
    assert ((sources.video_index >= 0) == (expanded == model.config.video_token_id)).all()
    # The labels the loss used are the caller's, at their text rows; video rows carry none.
    assert out.labels[rows, columns].tolist() == labels[rows, sources.text_position[rows, columns]].tolist()
    assert (out.labels[sources.video_index >= 0] == -100).all()
