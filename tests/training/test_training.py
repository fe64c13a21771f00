"""Fine-tuning DiffCLIP with Trainer: learning, distributed equivalence, checkpoints, saved folders, bad data.

Tiny models (width 32, 2 layers, 4 heads, 32-pixel images, 8-pixel patches) on toy data made here: solid-colour
squares whose captions name the colour.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import (  # noqa: F401 (one_thread: autouse)
    COLOURS,
    assert_gradients_close,
    colour_image,
    cpu_run_flags,
    one_thread,
    tiny_processor,
)
from PIL import Image
from transformers import AutoModel, TrainerCallback, TrainingArguments

import transformers_diffclip as td
from transformers_diffclip import training
from transformers_diffclip.modeling_diffclip import contrastive_loss
from transformers_diffclip.training import cli as training_cli


WORKER = Path(__file__).resolve().parent / "training_ddp_worker.py"

TEMPLATE = "a photo of a {} square"
# transformers 5.23 renamed `gradient_checkpointing` (still an alias) to `activation_checkpointing`.
CHECKPOINTING_FLAG = (
    "activation_checkpointing"
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    else "gradient_checkpointing"
)
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def tiny_config(**overrides) -> td.DiffCLIPConfig:
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    return td.DiffCLIPConfig(
        text_config=dict(tower),
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
        **overrides,
    )


@pytest.fixture(scope="session")
def processor():
    """The tiny tokenizer of tests/_helpers.py (no file from ../shared needed) and 32-pixel images."""
    return tiny_processor(image_size=32)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, processor) -> Path:
    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    td.DiffCLIPModel(tiny_config()).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """train.csv (6 jittered squares per colour), validation.jsonl (one clean square per colour), and the same two
    splits as an imagefolder with metadata.jsonl; image paths are relative to the data files."""
    root = tmp_path_factory.mktemp("toy_data")
    (root / "images").mkdir()
    train_rows, validation_rows = [], []
    for index, (name, rgb) in enumerate(COLOURS.items()):
        for copy in range(6):
            path = f"images/{name}_{copy}.png"
            colour_image(rgb, seed=100 * index + copy).save(root / path)
            train_rows.append((path, TEMPLATE.format(name)))
        path = f"images/{name}_clean.png"
        colour_image(rgb).save(root / path)
        validation_rows.append((path, TEMPLATE.format(name)))
    with open(root / "train.csv", "w") as handle:
        handle.write("image_path,caption\n" + "".join(f"{p},{c}\n" for p, c in train_rows))
    with open(root / "validation.jsonl", "w") as handle:
        handle.writelines(json.dumps({"image_path": p, "caption": c}) + "\n" for p, c in validation_rows)
    for split, rows in (("train", train_rows), ("validation", validation_rows)):
        folder = root / "imagefolder" / split
        folder.mkdir(parents=True)
        with open(folder / "metadata.jsonl", "w") as handle:
            for path, caption in rows:
                name = Path(path).name
                Image.open(root / path).save(folder / name)
                handle.write(json.dumps({"file_name": name, "caption": caption}) + "\n")
    return root


def common_flags(output_dir, **extra) -> list[str]:
    return cpu_run_flags(output_dir, **{"logging_strategy": "no", **extra})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, model_dir, toy_data):
    """diffclip-finetune on the CSV (train) and JSON Lines (validation) files."""
    output_dir = tmp_path_factory.mktemp("trained")
    argv = ["--model_name_or_path", str(model_dir), "--do_train", "--do_eval"]
    argv += ["--train_file", str(toy_data / "train.csv"), "--validation_file", str(toy_data / "validation.jsonl")]
    argv += common_flags(
        output_dir,
        max_steps="50",
        per_device_train_batch_size="16",
        per_device_eval_batch_size="8",
        learning_rate="3e-3",
        weight_decay="0.0",
        warmup_steps="3",
    )
    assert training_cli.main(argv) == 0
    results = json.loads((output_dir / "all_results.json").read_text())
    return output_dir, results


def direct_logits(model, processor, images, captions) -> torch.Tensor:
    inputs = processor(text=captions, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**inputs).logits_per_image


# --------------------------------------------------------------------------------------------------
# Learning, evaluation, the saved folder
# --------------------------------------------------------------------------------------------------


def test_tiny_model_learns_colours_through_trainer(trained, processor, toy_data, model_dir):
    output_dir, results = trained
    assert results["eval_i2t_accuracy"] >= 0.9, results
    # The metric against a direct computation: argmax over the 8 captions of each clean validation square.
    model = AutoModel.from_pretrained(output_dir).eval()
    images = [Image.open(toy_data / f"images/{name}_clean.png") for name in COLOURS]
    logits = direct_logits(model, processor, images, [TEMPLATE.format(name) for name in COLOURS])
    accuracy = (logits.argmax(dim=1) == torch.arange(len(COLOURS))).float().mean().item()
    assert accuracy == pytest.approx(results["eval_i2t_accuracy"])
    assert results["train_skipped_rows"] == 0
    # The untrained model does not already know colours (guards against an eval that cannot fail).
    untrained = AutoModel.from_pretrained(model_dir).eval()
    untrained_logits = direct_logits(untrained, processor, images, [TEMPLATE.format(name) for name in COLOURS])
    assert (untrained_logits.argmax(dim=1) == torch.arange(len(COLOURS))).float().mean().item() < 0.9


def test_imagefolder_with_metadata_evaluates_like_the_files(trained, toy_data, tmp_path):
    output_dir, results = trained
    argv = ["--model_name_or_path", str(output_dir), "--do_eval", "--dataset_name", "imagefolder"]
    argv += ["--data_dir", str(toy_data / "imagefolder")]
    argv += common_flags(tmp_path / "eval", per_device_eval_batch_size="8")
    assert training_cli.main(argv) == 0
    imagefolder_results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    for key in ("eval_i2t_accuracy", "eval_t2i_accuracy", "eval_loss"):
        assert imagefolder_results[key] == pytest.approx(results[key], abs=1e-5), key


_LOAD_WITHOUT_PACKAGE = r"""
import json, sys
sys.modules["transformers_diffclip"] = None  # the package must not be importable: remote code only
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

folder, data = sys.argv[1], sys.argv[2]
names = json.loads(sys.argv[3])
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert "transformers_diffclip" not in type(model).__module__.split(".")[0], type(model).__module__
images = [Image.open(f"{data}/images/{name}_clean.png") for name in names]
inputs = processor(text=[f"a photo of a {n} square" for n in names], images=images, return_tensors="pt", padding=True)
with torch.no_grad():
    logits = model(**inputs).logits_per_image
classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True, device="cpu")
top = [
    classifier(image, candidate_labels=names, hypothesis_template="a photo of a {} square")[0]["label"]
    for image in images
]
print(json.dumps({"logits": logits.tolist(), "top": top}))
"""


@pytest.mark.slow
def test_saved_folder_loads_without_the_package(trained, processor, toy_data, tmp_path):
    output_dir, _ = trained
    names = list(COLOURS)
    env = {**SUBPROCESS_ENV, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_PACKAGE, str(output_dir), str(toy_data), json.dumps(names)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    model = AutoModel.from_pretrained(output_dir).eval()
    images = [Image.open(toy_data / f"images/{name}_clean.png") for name in names]
    expected = direct_logits(model, processor, images, [TEMPLATE.format(name) for name in names])
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, atol=1e-4, rtol=1e-4)
    expected_top = [names[i] for i in expected.argmax(dim=1).tolist()]
    assert loaded["top"] == expected_top
    assert sum(a == b for a, b in zip(loaded["top"], names)) >= 7


# --------------------------------------------------------------------------------------------------
# Distributed: two processes under torchrun == one process on the concatenated batch
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_concatenated_batch(model_dir, toy_data, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(WORKER), str(model_dir), str(toy_data), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=240)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    assert all(r["world_size"] == 2 for r in ranks)

    # Trainer step under DDP: each process saw 3 different pairs.
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    model.train()
    inputs = {k: torch.cat([r["inputs"][k] for r in ranks]) for k in ("input_ids", "attention_mask", "pixel_values")}
    assert len({tuple(row) for row in inputs["pixel_values"].flatten(1).tolist()}) == 6
    output = model(**inputs, return_loss=True)
    output.loss.backward()
    # Each process's loss is the mean over its own rows of the global-batch loss terms.
    logits = output.logits_per_image.detach()
    targets = torch.arange(6)
    per_row = (
        torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        + torch.nn.functional.cross_entropy(logits.t(), targets, reduction="none")
    ) / 2
    for rank, record in enumerate(ranks):
        torch.testing.assert_close(record["loss"], per_row[3 * rank : 3 * rank + 3].mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, output.loss.detach(), atol=1e-5, rtol=0)
    # DDP's averaged gradients equal the single-process gradients of the concatenated batch, on both processes.
    expected = {name: p.grad for name, p in model.named_parameters()}
    for record in ranks:
        assert set(record["grads"]) == set(expected)
        for name, grad in record["grads"].items():
            assert_gradients_close(grad, expected[name], name)
    assert expected["logit_scale"].abs() > 0

    # The same step under FSDP (FULL_SHARD over the two processes): same loss and gradients; the clamp reaches the
    # shard that holds the logit scale, and the state dict holds it as the scalar an ordinary model loads.
    for record in ranks:
        fsdp = record["fsdp"]
        torch.testing.assert_close(fsdp["loss"], record["loss"], atol=1e-5, rtol=1e-5)
        assert set(fsdp["grads"]) == set(expected)
        for name, grad in fsdp["grads"].items():
            torch.testing.assert_close(
                grad.reshape(expected[name].shape), expected[name], atol=1e-5, rtol=1e-5, msg=name
            )
        assert fsdp["state_dict"]["logit_scale"].shape == () and fsdp["state_dict"]["logit_scale"].item() == 1.0
    assert sorted(r["fsdp"]["logit_scale_shard"][0].numel() for r in ranks) == [0, 1]  # really sharded
    plain = AutoModel.from_pretrained(model_dir)
    plain.load_state_dict(ranks[0]["fsdp"]["state_dict"])
    assert plain.logit_scale.item() == 1.0

    # The loss function alone with unequal local batches (2 and 3 rows), in float64.
    image = torch.cat([r["uneven"]["image_embeds"] for r in ranks]).requires_grad_(True)
    text = torch.cat([r["uneven"]["text_embeds"] for r in ranks]).requires_grad_(True)
    scale = ranks[0]["uneven"]["logit_scale"].clone().requires_grad_(True)
    logits_per_text = scale.exp() * text @ image.t()
    reference = contrastive_loss(logits_per_text)
    reference.backward()
    torch.testing.assert_close(sum(r["uneven"]["loss"] for r in ranks) / 2, reference.detach())
    # Each process gets the summed gradient of its rows; averaged over processes (as DDP does for parameters)
    # that is the single-process gradient.
    torch.testing.assert_close(torch.cat([r["uneven"]["image_grad"] for r in ranks]) / 2, image.grad)
    torch.testing.assert_close(torch.cat([r["uneven"]["text_grad"] for r in ranks]) / 2, text.grad)
    torch.testing.assert_close(sum(r["uneven"]["scale_grad"] for r in ranks) / 2, scale.grad)


# --------------------------------------------------------------------------------------------------
# Trainer glue: loss, gradient checkpointing, resuming, clamp, freezing, weight decay
# --------------------------------------------------------------------------------------------------


def toy_dataset(toy_data, rows=None):
    import datasets

    dataset = datasets.load_dataset("csv", data_files=str(toy_data / "train.csv"), split="train")
    if rows is not None:
        dataset = dataset.select(range(rows))
    prepared, _ = training.prepare_image_caption_dataset(dataset, image_root=toy_data)
    return prepared


class GradCatcher(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def make_trainer(model, processor, dataset, output_dir, callbacks=(), **args) -> training.DiffCLIPTrainer:
    defaults = {
        "per_device_train_batch_size": 8,
        "max_steps": 1,
        "learning_rate": 1e-3,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
        "max_grad_norm": 0.0,
    }
    return training.DiffCLIPTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(output_dir), **{**defaults, **args}),
        train_dataset=dataset,
        data_collator=training.DiffCLIPDataCollator(processor),
        callbacks=list(callbacks),
    )


def test_single_process_loss_is_the_model_loss(model_dir, processor, toy_data):
    model = AutoModel.from_pretrained(model_dir)
    collator = training.DiffCLIPDataCollator(processor)
    batch = collator([toy_dataset(toy_data)[i] for i in range(0, 48, 5)])
    assert batch["return_loss"] is True and batch["pixel_values"].shape == (10, 3, 32, 32)
    output = model(**batch)
    loss = training.distributed_contrastive_loss(output.image_embeds, output.text_embeds, model.logit_scale)
    torch.testing.assert_close(loss, output.loss)


def test_gradient_checkpointing_gives_the_same_gradients(model_dir, processor, toy_data, tmp_path):
    dataset = toy_dataset(toy_data)
    grads = {}
    for checkpointing in (False, True):
        model = AutoModel.from_pretrained(model_dir)
        catcher = GradCatcher()
        flag = {CHECKPOINTING_FLAG: checkpointing}
        trainer = make_trainer(model, processor, dataset, tmp_path / str(checkpointing), [catcher], **flag)
        trainer.train()
        layer = model.vision_model.encoder.layers[0]
        assert layer.gradient_checkpointing is checkpointing
        grads[checkpointing] = catcher.grads
    assert set(grads[True]) == set(grads[False]) and len(grads[True]) == len(list(model.parameters()))
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_resuming_from_a_checkpoint_continues_the_run(model_dir, processor, toy_data, tmp_path):
    dataset = toy_dataset(toy_data)
    args = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "learning_rate": 3e-3, "weight_decay": 0.1}
    straight = AutoModel.from_pretrained(model_dir)
    make_trainer(straight, processor, dataset, tmp_path / "straight", **args).train()
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert (checkpoint / "optimizer.pt").is_file()

    resumed = AutoModel.from_pretrained(model_dir)  # weights come from the checkpoint
    trainer = make_trainer(resumed, processor, dataset, tmp_path / "resumed", **args)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert trainer.state.global_step == 4
    midway = AutoModel.from_pretrained(checkpoint)
    moved = sum(not torch.equal(a, b) for a, b in zip(midway.parameters(), resumed.parameters()))
    assert moved > 0
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


class ScaleRecorder(TrainerCallback):
    """Records the logit scale at the end of every step (after every callback's `on_optimizer_step`)."""

    def __init__(self):
        self.values = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.values.append(model.logit_scale.item())


def test_logit_scale_is_clamped_after_every_optimizer_step(model_dir, processor, toy_data, tmp_path):
    ceiling = torch.tensor(math.log(100.0)).item()  # ln 100 in float32
    model = AutoModel.from_pretrained(model_dir)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(300.0))
    recorder = ScaleRecorder()
    trainer = make_trainer(model, processor, toy_dataset(toy_data), tmp_path, [recorder], max_steps=3)
    trainer.train()
    assert recorder.values[0] == ceiling  # ln 300 minus one small Adam step, clamped
    assert len(recorder.values) == 3 and all(value <= ceiling for value in recorder.values)

    below = AutoModel.from_pretrained(model_dir)  # ln(1/0.07) < ln 100: only the optimizer moves it
    start = below.logit_scale.item()
    recorder = ScaleRecorder()
    make_trainer(below, processor, toy_dataset(toy_data), tmp_path / "b", [recorder], max_steps=2).train()
    assert recorder.values[0] != start and max(recorder.values) < ceiling - 0.5

    unclamped = AutoModel.from_pretrained(model_dir)
    with torch.no_grad():
        unclamped.logit_scale.fill_(math.log(300.0))
    trainer = training.DiffCLIPTrainer(
        model=unclamped,
        args=TrainingArguments(
            output_dir=str(tmp_path / "c"), max_steps=1, use_cpu=True, report_to="none", save_strategy="no"
        ),
        train_dataset=toy_dataset(toy_data),
        data_collator=training.DiffCLIPDataCollator(processor),
        clamp_logit_scale=False,
    )
    trainer.train()
    assert unclamped.logit_scale.item() > math.log(250.0)


def test_locked_image_tower_stays_fixed(model_dir, processor, toy_data, tmp_path):
    model = AutoModel.from_pretrained(model_dir)
    training.freeze_towers(model, vision=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    make_trainer(model, processor, toy_dataset(toy_data), tmp_path, max_steps=2).train()
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("vision_model.", "visual_projection."))
        assert torch.equal(parameter, before[name]) == frozen, name


def test_weight_decay_groups_follow_the_original_recipe(model_dir, processor, toy_data, tmp_path):
    model = AutoModel.from_pretrained(model_dir)
    trainer = make_trainer(model, processor, toy_dataset(toy_data), tmp_path, weight_decay=0.5)
    decayed = set(trainer.get_decay_parameter_names(model))
    assert "logit_scale" not in decayed
    assert "vision_model.embeddings.class_embedding" in decayed
    for name, parameter in model.named_parameters():
        if name.endswith(("bias", "lambda_q1", "lambda_k2", "diff_norm.weight", "layer_norm1.weight")):
            assert name not in decayed, name
        if parameter.dim() == 2:
            assert name in decayed, name
    assert training.trainer._canonical_name("_fsdp_wrapped_module.text_model._fsdp_wrapped_module.x") == "text_model.x"


# --------------------------------------------------------------------------------------------------
# Bad data
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def bad_csv(tmp_path, toy_data) -> Path:
    (tmp_path / "garbage.png").write_bytes(b"this is not an image")
    rows = [
        (str(toy_data / "images/red_0.png"), "a red square"),
        (str(tmp_path / "missing.png"), "a missing square"),
        (str(toy_data / "images/blue_0.png"), ""),
        (str(tmp_path / "garbage.png"), "a garbage square"),
        (str(toy_data / "images/green_0.png"), "a green square"),
    ]
    path = tmp_path / "bad.csv"
    path.write_text("image_path,caption\n" + "".join(f"{p},{c}\n" for p, c in rows))
    return path


def load_csv(path):
    import datasets

    return datasets.load_dataset("csv", data_files=str(path), split="train", cache_dir=str(path.parent / "cache"))


def test_bad_rows_are_named(bad_csv):
    with pytest.raises(ValueError) as error:
        training.prepare_image_caption_dataset(load_csv(bad_csv))
    message = str(error.value)
    assert "3 of 5 rows of the train split" in message
    assert "row 1: Image not found" in message and "missing.png" in message
    assert "row 2: empty caption" in message
    assert "row 3: Cannot read image" in message and "garbage.png" in message
    assert "row 0" not in message and "row 4" not in message
    assert "--skip_bad_rows" in message


def test_skip_bad_rows_skips_and_counts(bad_csv):
    dataset, skipped = training.prepare_image_caption_dataset(load_csv(bad_csv), skip_bad_rows=True)
    assert skipped == 3
    assert [row["caption"] for row in dataset] == ["a red square", "a green square"]
    assert all(isinstance(row["image"], Image.Image) for row in dataset)


def test_wrong_column_name_is_named(bad_csv):
    with pytest.raises(ValueError, match=r"--caption_column 'text' is not a column .* 'image_path', 'caption'"):
        training.prepare_image_caption_dataset(load_csv(bad_csv), caption_column="text")
    with pytest.raises(ValueError, match=r"no image column.*'image_path', 'image'.*--image_column"):
        training.prepare_image_caption_dataset(load_csv(bad_csv).rename_column("image_path", "file"))


def test_command_reports_bad_data(bad_csv, model_dir, tmp_path, capsys):
    argv = ["--model_name_or_path", str(model_dir), "--do_train", "--train_file", str(bad_csv)]
    argv += common_flags(tmp_path / "out", max_steps="1", per_device_train_batch_size="2")
    assert training_cli.main(argv + ["--image_column", "path"]) == 2
    assert "--image_column 'path' is not a column of the train split" in capsys.readouterr().err
    assert training_cli.main(argv) == 2
    assert "row 1: Image not found" in capsys.readouterr().err
    assert training_cli.main(argv + ["--skip_bad_rows"]) == 0
    assert "skipped 3 bad row(s) of the train split" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "train_results.json").read_text())["train_skipped_rows"] == 3


def test_image_that_fails_to_decode_later(tmp_path, processor, toy_data):
    import datasets

    good = toy_data / "images/red_0.png"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:80])  # a valid header, then nothing
    rows = {"image_path": [str(good), str(truncated)], "caption": ["a red square", "a cut square"]}
    dataset, skipped = training.prepare_image_caption_dataset(datasets.Dataset.from_dict(rows))
    assert skipped == 0 and len(dataset) == 2  # the header check passes
    with pytest.raises(ValueError, match=r"Cannot read image .*truncated.png.*--skip_bad_rows"):
        dataset[1]
    # --skip_bad_rows decodes every image in the check: the truncated row is dropped, and counted, there
    lenient, skipped = training.prepare_image_caption_dataset(datasets.Dataset.from_dict(rows), skip_bad_rows=True)
    assert skipped == 1 and len(lenient) == 1
    # an image that breaks after the check becomes None, and the collator drops its row
    copy = tmp_path / "copy.png"
    copy.write_bytes(good.read_bytes())
    rows = {"image_path": [str(good), str(copy)], "caption": ["a red square", "a copied square"]}
    lenient, skipped = training.prepare_image_caption_dataset(datasets.Dataset.from_dict(rows), skip_bad_rows=True)
    assert skipped == 0
    copy.write_bytes(good.read_bytes()[:80])
    batch = training.DiffCLIPDataCollator(processor)([lenient[0], lenient[1]])
    assert batch["pixel_values"].shape[0] == 1 and batch["input_ids"].shape[0] == 1
