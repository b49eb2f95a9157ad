import warnings

import pytest
import torch

from conftest import random_videos
from transformers_vidcomp import InvalidVideoInputError, TokenBudgetError


def prompt_ids(processor, questions, padding_side):
    texts = [f"<|im_start|>user\n<video>{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
    return processor.tokenizer(texts, padding=True, padding_side=padding_side, return_tensors="pt")


def test_forward_on_videos_of_different_lengths(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([20, 5])
    text = prompt_ids(processor, ["What is shown?", "Describe the scene, please."], "right")
    out = model(**text, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)
    # 16 frames kept of 20, all 5 of 5; 8x8 patches pooled to 4x4 = 16 tokens per frame
    assert out.video_outputs.token_counts.tolist() == [16 * 16, 5 * 16]
    longest = int(text["attention_mask"].sum(1).max()) - 1 + 256
    assert out.logits.shape[:2] == (2, longest)


def test_batched_forward_equals_one_video_at_a_time(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([9, 3])
    text = prompt_ids(processor, ["What is shown?", "Describe the scene, please."], "right")
    labels = text["input_ids"].masked_fill(text["attention_mask"] == 0, -100)
    batched = model(**text, labels=labels, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)
    splits = list(zip(torch.split(pixels, [9, 3]), torch.split(times, [9, 3])))
    for row, (video_pixels, video_times) in enumerate(splits):
        length = int(text["attention_mask"][row].sum())
        single = model(
            input_ids=text["input_ids"][row : row + 1, :length],
            pixel_values_videos=video_pixels,
            video_num_frames=torch.tensor([len(video_pixels)]),
            video_timestamps=video_times,
        )
        valid = batched.labels[row] != -100
        n = single.logits.shape[1]
        torch.testing.assert_close(batched.logits[row, :n], single.logits[0], atol=1e-5, rtol=1e-4)
        assert valid.sum() == length - 1  # every text token but the placeholder keeps its label


def test_expansion_masks_video_labels_and_respects_left_padding(tiny):
    model, processor = tiny
    inner = model.model
    video = model.config.video_token_id
    ids = torch.tensor([[0, 0, 7, video, 8], [7, 9, video, 8, 10]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    labels = ids.masked_fill(mask == 0, -100)
    new_ids, new_mask, new_labels = inner.expand_video_placeholders(ids, mask, labels, torch.tensor([3, 1]))
    assert new_ids.tolist()[0][-5:] == [7, video, video, video, 8]
    assert new_mask.tolist() == [[0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]]
    assert new_ids.tolist()[1][2:] == [7, 9, video, 8, 10]
    assert (new_labels[new_ids == video] == -100).all()
    assert (new_labels[new_mask == 0] == -100).all()
    # Already-expanded input is left alone.
    again = inner.expand_video_placeholders(new_ids, new_mask, None, torch.tensor([3, 1]))
    assert again[0] is new_ids


def test_placeholder_count_mismatch_is_a_clear_error(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([4, 4])
    text = prompt_ids(processor, ["one video only"], "right")
    with pytest.raises(InvalidVideoInputError, match="1 video placeholder tokens in 1 runs for 2 videos"):
        model(**text, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)


def test_videos_without_input_ids_are_a_clear_error(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([4])
    embeds = model.get_input_embeddings()(prompt_ids(processor, ["What is shown?"], "left")["input_ids"])
    video = dict(pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)
    for call in (model.forward, model.generate):
        with pytest.raises(ValueError, match="Videos need input_ids"):
            call(inputs_embeds=embeds, **video)


@pytest.mark.parametrize(
    "pixels, match",
    [
        (torch.randn(4, 64, 64), "shape"),
        (torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8), "normalised floats"),
    ],
)
def test_wrong_pixel_shape_or_dtype_is_a_clear_error(tiny, pixels, match):
    model, processor = tiny
    text = prompt_ids(processor, ["q"], "right")
    with pytest.raises(InvalidVideoInputError, match=match):
        model(**text, pixel_values_videos=pixels, video_num_frames=torch.tensor([4]))


def test_zero_budget_is_rejected(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([4])
    text = prompt_ids(processor, ["q"], "right")
    with pytest.raises(TokenBudgetError):
        model(**text, pixel_values_videos=pixels, video_num_frames=counts, video_token_budget=0)


def test_budget_bounds_the_tokens_per_video(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([20, 5])
    text = prompt_ids(processor, ["a", "b"], "right")
    out = model(**text, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times,
                video_token_budget=100)
    assert out.video_outputs.token_counts.tolist() == [96, 80]


def test_generate_batch_of_two_videos_matches_single_generation(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([12, 4], seed=1)
    text = prompt_ids(processor, ["What is shown?", "Describe the scene, please."], "left")
    batched = model.generate(**text, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times,
                             max_new_tokens=6, do_sample=False)
    for row, (video_pixels, video_times) in enumerate(zip(torch.split(pixels, [12, 4]), torch.split(times, [12, 4]))):
        length = int(text["attention_mask"][row].sum())
        single = model.generate(
            input_ids=text["input_ids"][row : row + 1, -length:],
            pixel_values_videos=video_pixels,
            video_num_frames=torch.tensor([len(video_pixels)]),
            video_timestamps=video_times,
            max_new_tokens=6,
            do_sample=False,
        )
        assert batched[row, -6:].tolist() == single[0, -6:].tolist()


def test_generate_feeds_one_token_per_step_through_the_cache_and_matches_uncached_generation(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([6], seed=2)
    text = prompt_ids(processor, ["What is shown?"], "left")
    video = dict(pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)
    step_lengths = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: step_lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        cached = model.generate(**text, **video, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    finally:
        hook.remove()
    uncached = model.generate(**text, **video, max_new_tokens=5, do_sample=False, min_new_tokens=5, use_cache=False)
    # Prefill takes the prompt with the video's 6 x 16 tokens; every later step only the newest token, read from `cache`.
    assert step_lengths[0] == text["input_ids"].shape[1] - 1 + 6 * 16 and step_lengths[1:] == [1] * 4
    assert cached.tolist() == uncached.tolist()


@pytest.mark.parametrize("name", ["cache", "past_key_values"])  # the name before Transformers 5.24 still works
def test_a_step_on_the_cache_of_a_prefix_equals_the_full_forward(tiny, name):
    model, _ = tiny
    ids = torch.randint(5, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        prefix = model(input_ids=ids[:, :7], use_cache=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step = model(input_ids=ids[:, 7:], position_ids=torch.tensor([[7]]), use_cache=True, **{name: prefix.cache})
    torch.testing.assert_close(step.logits[:, -1], full, atol=1e-5, rtol=1e-4)
    assert step.cache.get_seq_length() == 8
    renamed = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    if name == "cache":
        assert not renamed
    else:  # the warning names our model, not the LLM inside it
        assert any("VidCompForConditionalGeneration.forward" in message for message in renamed), renamed


def test_the_model_refuses_a_transformers_older_than_the_cache_rename():
    import subprocess
    import sys

    script = (
        "import importlib.metadata as metadata\n"
        "real = metadata.version\n"
        "metadata.version = lambda name: '5.23.0' if name == 'transformers' else real(name)\n"
        "import transformers_vidcomp\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0
    assert "transformers>=5.24.0.dev0 is required" in result.stderr and "pip install -U transformers" in result.stderr


def test_beam_search_and_several_sequences_give_each_copy_its_own_videos(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([6, 3, 9], seed=4)
    texts = [
        "<|im_start|>user\n<video><video>Which differs?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\n<video>What happens in this one?<|im_end|>\n<|im_start|>assistant\n",
    ]
    text = processor.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
    video = dict(pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)
    first_step = dict(max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    beams = model.generate(**text, **video, num_beams=2, num_return_sequences=2, **first_step)
    # Each copy starts with its own prompt, as given: one placeholder per video.
    assert beams.sequences[:, :-1].tolist() == text["input_ids"].repeat_interleave(2, 0).tolist()
    for row, (frames, videos) in enumerate([(slice(0, 9), [0, 1]), (slice(9, 18), [2])]):
        alone = processor.tokenizer(texts[row : row + 1], return_tensors="pt")
        video = dict(pixel_values_videos=pixels[frames], video_num_frames=counts[videos], video_timestamps=times[frames])
        single = model.generate(**alone, **video, **first_step)  # no copies, so no expansion
        for copy in (2 * row, 2 * row + 1):  # every copy read exactly its own prompt's videos
            torch.testing.assert_close(beams.logits[0][copy], single.logits[0][0], atol=1e-4, rtol=1e-4)


def test_chunked_prefill_and_pre_encoded_videos_give_the_same_first_step(tiny):
    from transformers_vidcomp.modeling.modeling_vidcomp import VidCompVideoFeatures

    model, processor = tiny
    pixels, counts, times = random_videos([5, 9], seed=1)
    text = prompt_ids(processor, ["What is this?", "Describe it, please."], "left")
    video = dict(pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)
    first_step = dict(max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    reference = model.generate(**text, **video, **first_step).logits[0]
    # The prompt is longer than a chunk (16 tokens), so the videos' rows are split between chunks.
    for options in ({"prefill_chunk_size": 16}, {"prefill_chunk_size": 16, "num_beams": 2}):
        chunked = model.generate(**text, **video, **first_step, **options).logits[0]
        copies = options.get("num_beams", 1)
        torch.testing.assert_close(chunked, reference.repeat_interleave(copies, 0), atol=1e-4, rtol=1e-4)
    instruction = model.model.instruction_condition(text["input_ids"], text["attention_mask"], num_videos=2)
    encoded = model.model.get_video_features(pixels, counts, times, instruction=instruction)
    pre_encoded = model.generate(**text, mm_encoder_outputs={"video": encoded}, **first_step).logits[0]
    torch.testing.assert_close(pre_encoded, reference, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not both"):
        model.generate(**text, **video, mm_encoder_outputs={"video": encoded}, max_new_tokens=1)
    rows = VidCompVideoFeatures(pooler_output=encoded.pooler_output[:3])  # a chunk's rows, for a prompt of more tokens
    with pytest.raises(InvalidVideoInputError, match="for 3 rows of video features"):
        model(input_ids=torch.full((1, 4), model.config.video_token_id), mm_encoder_outputs={"video": rows})


def test_generate_first_token_is_the_forward_argmax(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([7])
    text = prompt_ids(processor, ["What is shown?"], "left")
    logits = model(**text, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times).logits
    generated = model.generate(**text, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times,
                               max_new_tokens=1, do_sample=False)
    assert generated[0, -1] == logits[0, -1].argmax()


def test_eager_sdpa_and_flex_attention_agree(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([6, 3])
    text = prompt_ids(processor, ["What is shown?", "Describe the scene, please."], "right")
    logits = {}
    for implementation in ("eager", "sdpa", "flex_attention"):
        model.set_attn_implementation(implementation)
        assert model.model.vision_tower.config._attn_implementation == implementation
        assert model.model.language_model.config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(
                **text, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times
            ).logits
    torch.testing.assert_close(logits["sdpa"], logits["eager"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits["flex_attention"], logits["eager"], atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    model, processor = tiny
    model.train()
    pixels, counts, times = random_videos([5, 2])
    text = prompt_ids(processor, ["What is shown?", "Describe it."], "right")
    labels = text["input_ids"].masked_fill(text["attention_mask"] == 0, -100)

    def gradients():
        model.zero_grad()
        model(**text, labels=labels, pixel_values_videos=pixels, video_num_frames=counts,
              video_timestamps=times).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert model.model.language_model.is_activation_checkpointing
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and any("vision_tower" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_training_takes_the_loss_from_the_supervised_logits_alone(tiny):
    model, processor = tiny
    pixels, counts, times = random_videos([5, 2])
    text = prompt_ids(processor, ["What is shown?", "Describe it, please."], "right")
    labels = torch.full_like(text["input_ids"], -100)
    labels[0, 8:11], labels[1, 9:12] = text["input_ids"][0, 8:11], text["input_ids"][1, 9:12]
    inputs = dict(**text, labels=labels, pixel_values_videos=pixels, video_num_frames=counts, video_timestamps=times)

    def loss_and_gradients(**options):
        model.zero_grad()
        out = model(**inputs, **options)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    skipped, skipped_grads = loss_and_gradients()
    assert skipped.logits is None  # the default when training with labels
    full, full_grads = loss_and_gradients(skip_logits=False)
    assert full.logits is not None
    torch.testing.assert_close(skipped.loss, full.loss, atol=1e-6, rtol=1e-5)
    for name in full_grads:
        torch.testing.assert_close(skipped_grads[name], full_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    # Trainer's token-count normalisation reaches both paths alike
    items = torch.tensor(10)
    torch.testing.assert_close(model(**inputs, num_items_in_batch=items).loss,
                               model(**inputs, num_items_in_batch=items, skip_logits=False).loss, atol=1e-6, rtol=1e-5)
    model.eval()
    assert model(**inputs).logits is not None
    with pytest.raises(ValueError, match="needs `labels`"):
        model(**{k: v for k, v in inputs.items() if k != "labels"}, skip_logits=True)


def test_flash_attention_flag_is_declared_and_selectable_only_with_the_kernel(tiny):
    model, _ = tiny
    assert model._supports_flash_attn and model._supports_sdpa and model._supports_flex_attn
    if not torch.cuda.is_available():
        with pytest.raises((ImportError, ValueError)):
            model.set_attn_implementation("flash_attention_2")


def test_frames_without_timestamps_are_taken_one_second_apart(tiny):
    model, _ = tiny
    features = model.model.get_video_features(torch.randn(5, 3, 64, 64), torch.tensor([3, 2]))
    assert features.token_timestamps.view(5, 16)[:, 0].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert features.token_frame_index.view(5, 16)[:, 0].tolist() == [0, 1, 2, 0, 1]


def test_a_tied_text_config_ties_the_composite():
    from transformers_vidcomp import VidCompConfig
    from transformers_vidcomp.tiny import TINY_TEXT, TINY_VISION

    config = VidCompConfig(vision_config=TINY_VISION, text_config={**TINY_TEXT, "tie_word_embeddings": True})
    assert config.tie_word_embeddings


def test_a_budget_without_room_beside_the_video_newline_is_refused(tiny):
    model, _ = tiny
    model.config.video_newline = True
    model.model.video_newline = torch.nn.Parameter(torch.zeros(model.config.text_config.hidden_size))
    pixels = torch.randn(2, 3, 64, 64)
    with pytest.raises(TokenBudgetError, match="leaves no room for frame tokens next to the video newline"):
        model.model.get_video_features(pixels, torch.tensor([2]), video_token_budget=1)
    features = model.model.get_video_features(pixels, torch.tensor([2]), video_token_budget=17)
    assert features.token_counts.tolist() == [17]  # one frame of 16 tokens, then the newline
    assert features.token_frame_index[-1] == -1
