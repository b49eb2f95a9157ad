"""A saved folder must load with trust_remote_code in an interpreter where transformers_vidcomp cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["transformers_vidcomp"] = None  # any import of our package now raises ImportError
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline

    checkpoint, video, component = sys.argv[1:4]
    pipe = pipeline(model=checkpoint, trust_remote_code=True)  # task inferred offline from custom_pipelines
    single = pipe(videos=video, text="What happens in this video?", max_new_tokens=4)
    chats = pipe(text=[[{"role": "user", "content": [{"type": "video", "path": video},
                                                      {"type": "text", "text": "Describe it."}]}]] * 2,
                 max_new_tokens=3)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    chat = [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": "Describe it."}]}]
    inputs = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    idiom = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    forms = {
        "chat": pipe(chat, max_new_tokens=3)[0]["generated_text"],
        "text=chat": pipe(text=chat, generate_kwargs={"max_new_tokens": 3})[0]["generated_text"],
        "chats, batch_size=2": [c[0]["generated_text"] for c in pipe([chat, chat], batch_size=2, max_new_tokens=3)],
        "full": pipe(chat, max_new_tokens=3, return_full_text=True)[0]["generated_text"],
    }
    sampler = AutoModel.from_pretrained(component, trust_remote_code=True)
    print(json.dumps({
        "task": pipe.task,
        "pipeline_class": type(pipe).__name__,
        "single": single,
        "chats": [c[0]["generated_text"] for c in chats],
        "idiom": idiom,
        "prompt_kept": out[0, :inputs["input_ids"].shape[1]].tolist() == inputs["input_ids"][0].tolist(),
        "forms": forms,
        "chat": chat,
        "model_class": type(model).__name__,
        "processor_class": type(processor).__name__,
        "sampler_class": type(sampler).__name__,
        "modules": sorted(m for m in sys.modules if "vidcomp" in m and sys.modules[m] is not None
                        and not m.startswith("__editable__")),  # setuptools' editable-install finder
    }))
    """
)


def test_saved_folder_loads_and_answers_without_the_package(tiny_checkpoint, demo_video, tmp_path):
    from transformers_vidcomp.modeling import UniformSampler, UniformSamplerConfig

    component_dir = tmp_path / "sampler"
    UniformSampler(UniformSamplerConfig(num_frames=4)).save_pretrained(component_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_checkpoint), str(demo_video[0]), str(component_dir)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["task"] == "video-text-to-text"
    assert report["pipeline_class"] == "VideoTextToTextPipeline"
    assert isinstance(report["single"][0]["generated_text"], str) and report["single"][0]["generated_text"]
    assert len(report["chats"]) == 2
    # Every call form answers as the generate idiom does, and generate returns the prompt as given.
    assert report["prompt_kept"] and report["idiom"]
    forms = report["forms"]
    assert forms["chat"] == forms["text=chat"] == report["idiom"] == report["chats"][0]
    assert forms["chats, batch_size=2"] == [report["idiom"]] * 2
    assert forms["full"] == report["chat"] + [{"role": "assistant", "content": report["idiom"]}]
    assert report["model_class"] == "VidCompForConditionalGeneration"
    assert report["processor_class"] == "VidCompProcessor"
    assert report["sampler_class"] == "UniformSampler"
    # Everything came from the dynamic module cache, none of it from our package.
    assert report["modules"] and all(m.startswith("transformers_modules") for m in report["modules"])


def test_checkpoint_folder_is_hub_ready(tiny_checkpoint):
    files = set(os.listdir(tiny_checkpoint))
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json",
            "chat_template.jinja", "tokenizer.json", "pipeline_vidcomp.py", "modeling_vidcomp.py",
            "configuration_vidcomp.py", "processing_vidcomp.py", "video_processing_vidcomp.py", "video_index.py"} <= files
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageTextToText",
                                       "AutoModelForMultimodalLM"}
    assert config["custom_pipelines"]["video-text-to-text"]["impl"] == "pipeline_vidcomp.VideoTextToTextPipeline"
    for name in files:
        if name.endswith(".py"):
            source = (tiny_checkpoint / name).read_text()
            assert "transformers_vidcomp" not in source, name
            assert "from .." not in source, name
