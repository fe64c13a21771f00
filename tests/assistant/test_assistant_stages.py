"""The two stages through the installed `diffclip-llava`, on one process and on two (torchrun, gloo): what each
stage trains and what it leaves bit-identical, the loss falling on a toy set, the saved assistant reloading and
generating, the stage defaults, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _tiny import write_diffclip, write_language_model, write_toy_data
from transformers import AutoModelForImageTextToText, set_seed

from transformers_diffclip import DiffCLIPModel
from transformers_diffclip.assistant import STAGE_DEFAULTS, build_assistant


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
QUIET = ["--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--seed", "0"]
TWO_PROCESSES = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return {
        "diffclip": write_diffclip(root / "diffclip"),
        "lm": write_language_model(root / "lm"),
        **write_toy_data(root / "data"),
    }


def _run(stage, output_dir, flags, processes=1):
    command = (TWO_PROCESSES if processes == 2 else []) + ["diffclip-llava", stage, "--output_dir", str(output_dir)]
    command += [*QUIET, *flags] + (["--ddp_backend", "gloo"] if processes == 2 else [])
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=400)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return done


def _align(parts, output_dir, processes=1, per_device=4, epochs=6, learning_rate="1e-2"):
    flags = ["--vision_model", str(parts["diffclip"]), "--language_model", str(parts["lm"])]
    flags += ["--data_path", str(parts["align"]), "--image_folder", str(parts["images"])]
    flags += ["--per_device_train_batch_size", str(per_device), "--global_batch_size", "8"]
    flags += ["--num_train_epochs", str(epochs), "--learning_rate", learning_rate]
    return _run("align", output_dir, flags, processes)


def _tune(parts, start, output_dir, *extra, processes=1):
    flags = [
        "--model_name_or_path",
        str(start),
        "--data_path",
        str(parts["tune"]),
        "--image_folder",
        str(parts["images"]),
    ]
    flags += ["--per_device_train_batch_size", "4", "--global_batch_size", "8", "--num_train_epochs", "2"]
    flags += ["--learning_rate", "1e-3", *extra]
    return _run("tune", output_dir, flags, processes)


def _weights(folder):
    return AutoModelForImageTextToText.from_pretrained(folder).state_dict()


def _changed(before, after, prefix):
    names = [name for name in before if name.startswith(prefix)]
    assert names, prefix
    return {name: not torch.equal(before[name], after[name]) for name in names}


@pytest.mark.slow
def test_align_trains_the_projector_alone_and_tune_leaves_the_tower(parts, tmp_path):
    _align(parts, tmp_path / "aligned", epochs=8, learning_rate="0.1")
    # what the command started from: the same build, seeded as Trainer seeds it (--seed 0)
    set_seed(0)
    start, _ = build_assistant(parts["diffclip"], parts["lm"])
    before, aligned = start.state_dict(), _weights(tmp_path / "aligned")
    assert sorted(before) == sorted(aligned)
    moved = {name for name in before if not torch.equal(before[name], aligned[name])}
    projector = {name for name in before if name.startswith("model.multi_modal_projector.")}
    assert moved == projector  # every projector tensor changed, nothing else did
    # the tower is DiffCLIP's, read independently from its folder
    diffclip = DiffCLIPModel.from_pretrained(parts["diffclip"]).state_dict()
    for name, tensor in diffclip.items():
        if name.startswith("vision_model."):
            assert torch.equal(aligned[f"model.vision_tower.{name}"], tensor), name

    losses = [
        entry["loss"]
        for entry in json.loads((tmp_path / "aligned" / "trainer_state.json").read_text())["log_history"]
        if "loss" in entry
    ]
    assert len(losses) == 8 and losses[-1] < 0.95 * losses[0], losses

    _tune(parts, tmp_path / "aligned", tmp_path / "tuned")
    tuned = _weights(tmp_path / "tuned")
    assert not any(_changed(aligned, tuned, "model.vision_tower.").values())
    assert all(_changed(aligned, tuned, "model.multi_modal_projector.").values())
    language = _changed(aligned, tuned, "model.language_model.layers.")
    assert sum(language.values()) == len(language)
    assert _changed(aligned, tuned, "lm_head.")["lm_head.weight"]

    # the saved assistant reloads with the Auto classes and generates
    from _tiny import COLOURS, colour_image
    from transformers import AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "tuned").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "tuned")
    prompt = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>\nis there a red square ?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = processor(
        images=[colour_image(COLOURS["red"])], text=[prompt], return_tensors="pt", add_special_tokens=False
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.slow
def test_tune_with_unfreeze_vision_trains_the_tower(parts, tmp_path):
    _align(parts, tmp_path / "aligned", epochs=1)
    _tune(parts, tmp_path / "aligned", tmp_path / "tuned", "--unfreeze_vision", "true", "--learning_rate", "1e-2")
    changed = _changed(_weights(tmp_path / "aligned"), _weights(tmp_path / "tuned"), "model.vision_tower.")
    # what feeds hidden_states[-2] of the 2-layer tower trains: the embeddings and layer 0 (layer 1 and the final
    # norm are after the selected layer and get no gradient)
    feeding = [name for name in changed if ".embeddings." in name or ".encoder.layers.0." in name]
    assert len(feeding) > 10 and all(changed[name] for name in feeding)


@pytest.mark.slow
def test_two_processes_align_as_one_and_tune_keeps_the_tower(parts, tmp_path):
    """torchrun, 2 processes × 4 rows = the global batch of 8 that one process reaches with 2 accumulation steps:
    the same projector (to float rounding); stage 2 on two processes (a text-only row included) leaves the tower
    bit-identical."""
    _align(parts, tmp_path / "one", epochs=2)
    _align(parts, tmp_path / "two", processes=2, epochs=2)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    _tune(parts, tmp_path / "two", tmp_path / "tuned", processes=2)
    tuned = _weights(tmp_path / "tuned")
    assert not any(_changed(two, tuned, "model.vision_tower.").values())
    assert all(_changed(two, tuned, "model.multi_modal_projector.").values())


def test_stage_defaults_are_llava_15s():
    align, tune = STAGE_DEFAULTS["align"], STAGE_DEFAULTS["tune"]
    assert (align["learning_rate"], align["global_batch_size"], align["weight_decay"]) == (1e-3, 256, 0.0)
    assert (tune["learning_rate"], tune["global_batch_size"]) == (2e-5, 128)
    for stage in (align, tune):
        assert (stage["num_train_epochs"], stage["warmup_steps"], stage["lr_scheduler_type"]) == (1, 0.03, "cosine")


def test_parser_takes_the_stage_defaults():
    from transformers_diffclip.assistant.cli import build_parser

    model_args, data_args, training_args = build_parser("align").parse_args_into_dataclasses(
        args=["--output_dir", "x", "--data_path", "d.json", "--vision_model", "v", "--language_model", "l"]
    )
    assert training_args.learning_rate == 1e-3 and training_args.global_batch_size == 256
    assert training_args.warmup_steps == 0.03 and training_args.lr_scheduler_type == "cosine"
    *_, tuned = build_parser("tune").parse_args_into_dataclasses(args=["--output_dir", "x", "--data_path", "d.json"])
    assert tuned.learning_rate == 2e-5 and tuned.global_batch_size == 128


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--data_path", "nowhere.json", "--model_name_or_path", "x"], "no such file"),
        (["--vision_model", "v"], "Pass --model_name_or_path"),
        (["--global_batch_size", "6"], "not a multiple"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(parts, tmp_path, flags, message):
    base = {"--data_path": str(parts["align"]), "--image_folder": str(parts["images"])}
    base.update(dict(zip(flags[::2], flags[1::2])))
    if "--model_name_or_path" not in base and "--vision_model" not in base:
        base.update({"--vision_model": str(parts["diffclip"]), "--language_model": str(parts["lm"])})
    if base.get("--vision_model") == "v":
        base.pop("--language_model", None)
        base["--model_name_or_path"] = str(parts["lm"])
    command = ["diffclip-llava", "align", "--output_dir", str(tmp_path / "out"), *QUIET]
    command += [part for item in base.items() for part in item] + ["--per_device_train_batch_size", "4"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=200)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr
    assert not (tmp_path / "out" / "config.json").exists()
