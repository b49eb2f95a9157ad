import json
import string

import numpy as np
import pytest

from transformers_vidcomp.demo_video import render_haystack, render_plan_scene
from transformers_vidcomp.evaluation.video_qa import (
    PHOTO_NAMES,
    QASpecError,
    QUESTION_TYPES,
    format_multiple_choice,
    frame_photos,
    generate_qa_items,
    write_qa_set,
)
from transformers_vidcomp.evaluation.video_qa_eval import read_manifest


def test_format_multiple_choice():
    text = format_multiple_choice("Which?", ["a cat", "a horse", "a rocket"])
    assert text == "Which?\nA. a cat\nB. a horse\nC. a rocket\nAnswer with the option's letter."
    with pytest.raises(QASpecError, match="2 to 26 options"):
        format_multiple_choice("Which?", ["a cat"])


def test_required_names():
    expected = {
        "astronaut": "an astronaut", "coffee": "a cup of coffee", "chelsea": "a cat", "rocket": "a rocket",
        "horse": "a horse", "hubble_deep_field": "a field of galaxies", "retina": "a retina",
        "immunohistochemistry": "stained tissue under a microscope",
    }
    assert {k: PHOTO_NAMES[k] for k in expected} == expected
    assert len(set(PHOTO_NAMES.values())) == len(PHOTO_NAMES)


def test_ground_truth_matches_the_plan():
    items = list(generate_qa_items(12, seed=3, needle_seconds=(1.0, 2.0), seconds=(20.0, 40.0)))
    seen_types = set()
    for spec, plan, rows in items:
        shown = frame_photos(plan)
        order = list(dict.fromkeys(shown))
        for row in rows:
            seen_types.add(row["type"])
            assert row["answer"] in string.ascii_uppercase[: len(row["options"])]
            correct = row["options"][string.ascii_uppercase.index(row["answer"])]
            assert len(set(row["options"])) == len(row["options"]) == 4
            names_in_video = {PHOTO_NAMES[p] for p in order}
            if row["type"] == "appears":
                assert correct in names_in_video
                assert sum(option in names_in_video for option in row["options"]) == 1
            elif row["type"] == "first":
                assert correct == PHOTO_NAMES[shown[0]]
            elif row["type"] == "last":
                assert correct == PHOTO_NAMES[shown[-1]]
            elif row["type"] == "count":
                assert int(correct) == len(order)
            elif row["type"] == "at_time":
                seconds = float(row["question"].split(" at ")[1].split(" seconds")[0])
                assert correct == PHOTO_NAMES[shown[round(seconds * plan.fps)]]
            elif row["type"] == "needle":
                assert correct == PHOTO_NAMES[plan.needle.photo]
                assert sum(option in names_in_video for option in row["options"]) == 1
                assert shown.count(plan.needle.photo) == plan.needle.num_frames
                assert 0.0 <= row["depth"] <= 1.0
    assert seen_types == set(QUESTION_TYPES)


def test_frame_photos_agree_with_rendered_pixels():
    r"""Every frame outside a dissolve is, pixel for pixel, a frame of a shot of the photograph `frame_photos` names."""
    _, plan, _ = next(generate_qa_items(1, seed=1, photos_per_video=(3, 3), seconds=(30.0, 30.0),
                                        needle_seconds=(1.0, 1.0)))
    frames = render_haystack(plan)
    shown = frame_photos(plan)
    shots = [*plan.scenes, plan.needle]
    rendered = [render_plan_scene(plan, shot) for shot in shots]
    in_dissolve = {t.start + k for t in plan.transitions for k in range(t.length)}
    checked = 0
    for i in sorted(set(range(plan.num_frames)) - in_dissolve):
        owners = [shot.photo for shot, pixels in zip(shots, rendered)
                  if shot.start <= i < shot.end and np.array_equal(pixels[i - shot.start], frames[i])]
        assert shown[i] in owners, (i, shown[i], owners)
        checked += 1
    assert checked > plan.num_frames // 2 and plan.needle.photo in shown


def test_generation_is_reproducible_and_seeds_differ():
    first = [rows for _, _, rows in generate_qa_items(4, seed=7)]
    again = [rows for _, _, rows in generate_qa_items(4, seed=7)]
    other = [rows for _, _, rows in generate_qa_items(4, seed=8)]
    assert first == again
    assert first != other


def test_bad_specs():
    with pytest.raises(QASpecError, match="Unknown question type"):
        next(generate_qa_items(1, types=("colour",)))
    with pytest.raises(QASpecError, match="plain-English name"):
        next(generate_qa_items(1, pool=("astronaut", "kidney")))
    with pytest.raises(QASpecError, match="too few absent"):
        next(generate_qa_items(1, pool=("astronaut", "coffee", "rocket", "horse", "moon")))


def test_write_qa_set_manifest(tmp_path):
    manifest = write_qa_set(tmp_path / "qa", 2, seed=0, progress=False, seconds=(4.0, 6.0), photos_per_video=(2, 3))
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert lines and all(
        {"video", "question", "options", "answer", "type", "depth", "id"} <= set(line) for line in lines
    )
    assert not (tmp_path / "qa" / ".manifest.jsonl.partial").exists()
    for line in lines:  # scenes: screen order, the same photograph never twice in a row, ending on the last answer
        scenes = line["scenes"]
        assert all(a != b for a, b in zip(scenes, scenes[1:])) and list(dict.fromkeys(scenes)) == line["photos"]
        assert len(line["scene_frames"]) == len(scenes) and min(line["scene_frames"]) >= 1
        assert sum(line["scene_frames"]) == round(line["duration"] * 2.0)
        if line["type"] in ("first", "last"):
            shown = scenes[0] if line["type"] == "first" else scenes[-1]
            assert line["options"]["ABCD".index(line["answer"])] == PHOTO_NAMES[shown]
    items = read_manifest(manifest)  # the evaluator's reader: ids kept, videos resolved against the manifest's folder
    assert [item.id for item in items] == [str(line["id"]) for line in lines]
    import av

    for item, line in zip(items, lines):
        with av.open(item.video) as container:
            stream = container.streams.video[0]
            assert sum(1 for _ in container.decode(stream)) == round(line["duration"] * 2.0)
