"""Pre-training with the original recipe: a fresh model from a config learns, the recipe's defaults, the original
learning-rate schedule (and a resumed run that continues it), zero-shot accuracy logged at every evaluation, the
paper's variants as configs, and the errors of the model/processor arguments.

Tiny models (width 32, 2 layers, 32-pixel images) on solid-colour squares whose captions name the colour.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import (  # noqa: F401 (one_thread: autouse)
    COLOURS,
    colour_image,
    cpu_run_flags,
    one_thread,
    tiny_config,
    tiny_processor,
)
from PIL import Image
from transformers import AutoConfig, AutoModel, CLIPConfig, TrainerCallback, default_data_collator, set_seed

import transformers_diffclip as td
from transformers_diffclip import training
from transformers_diffclip.training import cli as training_cli


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEMPLATE = "a photo of a {} square"


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """train.csv (4 squares per colour), validation.csv (1 per colour), a zero-shot image folder (2 per colour) with
    JSON class-name and template files keyed 'colours', a tiny config file and a processor folder."""
    root = tmp_path_factory.mktemp("recipe")
    (root / "images").mkdir()
    train, validation = [], []
    for index, (name, rgb) in enumerate(COLOURS.items()):
        for copy in range(5):
            path = root / "images" / f"{name}_{copy}.png"
            colour_image(rgb, 100 * index + copy).save(path)
            (validation if copy == 4 else train).append(f"{path},{TEMPLATE.format(name)}\n")
        (root / "zero_shot" / name).mkdir(parents=True)
        for copy in range(2):
            colour_image(rgb, 5000 + 100 * index + copy).save(root / "zero_shot" / name / f"{copy}.png")
    (root / "train.csv").write_text("image_path,caption\n" + "".join(train))
    (root / "validation.csv").write_text("image_path,caption\n" + "".join(validation))
    (root / "classnames.json").write_text(json.dumps({"colours": list(COLOURS), "other": ["x"]}))
    (root / "templates.json").write_text(json.dumps({"colours": [TEMPLATE], "other": ["{}"]}))
    tiny_config().to_json_file(root / "tiny_config.json")
    tiny_processor(32).save_pretrained(root / "processor")
    return root


def run_flags(output_dir, **extra) -> list[str]:
    return cpu_run_flags(output_dir, **{"bf16": "false", **extra})  # diffclip-pretrain's bf16 needs a GPU here


def zero_shot_flags(toy: Path) -> list[str]:
    return [
        "--zero_shot_eval_dir", str(toy / "zero_shot"),
        "--zero_shot_classnames", str(toy / "classnames.json"),
        "--zero_shot_templates", str(toy / "templates.json"),
        "--zero_shot_key", "colours",
    ]  # fmt: skip


def zero_shot_by_hand(model, processor, toy: Path) -> float:
    """Top-1 accuracy on the zero-shot folder, written out: argmax over the colours of cos(image, prompt)."""
    names = list(COLOURS)
    images, targets = [], []
    for index, name in enumerate(names):
        for copy in range(2):
            images.append(Image.open(toy / "zero_shot" / name / f"{copy}.png").convert("RGB"))
            targets.append(index)
    inputs = processor(text=[TEMPLATE.format(n) for n in names], images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    return (logits.argmax(dim=1) == torch.tensor(targets)).float().mean().item()


# --------------------------------------------------------------------------------------------------
# From scratch, with the recipe, zero-shot logged
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(toy, tmp_path_factory):
    """diffclip-pretrain from the tiny config: 32 pairs, global batch 16 (2 steps per epoch), 30 epochs, one
    warm-up epoch, evaluation (zero-shot only: no validation data) every 20 steps."""
    output_dir = tmp_path_factory.mktemp("pretrained")
    argv = ["--config_name", str(toy / "tiny_config.json"), "--processor_name", str(toy / "processor")]
    argv += ["--train_file", str(toy / "train.csv")] + zero_shot_flags(toy)
    argv += run_flags(
        output_dir,
        global_batch_size="16",
        num_train_epochs="30",
        learning_rate="2e-3",
        logging_steps="1",
        eval_strategy="steps",
        eval_steps="20",
        per_device_eval_batch_size="8",
    )
    assert training_cli.pretrain_main(argv) == 0
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return output_dir, state["log_history"]


def test_fresh_model_learns_from_scratch_with_the_recipe(pretrained, toy):
    output_dir, history = pretrained
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 60  # 32 pairs / global batch 16 = 2 steps per epoch, 30 epochs
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
    assert max(rates) <= 2e-3 and rates[-1] >= 1e-5  # the cosine ends at final_learning_rate, not 0
    model = AutoModel.from_pretrained(output_dir).eval()
    processor = td.DiffCLIPProcessor.from_pretrained(output_dir)
    assert zero_shot_by_hand(model, processor, toy) >= 0.75


def test_zero_shot_accuracy_is_logged_at_every_evaluation(pretrained, toy, tmp_path):
    output_dir, history = pretrained
    evaluations = [entry for entry in history if "eval_zeroshot_top1" in entry]
    assert [entry["step"] for entry in evaluations] == [20, 40, 60]
    assert all(0 <= e["eval_zeroshot_top1"] <= e["eval_zeroshot_top5"] <= 1 for e in evaluations)
    assert evaluations[-1]["eval_zeroshot_top5"] == 1.0  # 8 classes: top-5 of a trained model
    model = AutoModel.from_pretrained(output_dir).eval()
    processor = td.DiffCLIPProcessor.from_pretrained(output_dir)
    assert evaluations[-1]["eval_zeroshot_top1"] == pytest.approx(zero_shot_by_hand(model, processor, toy))

    # With validation data, one evaluation reports the in-batch retrieval metrics and zero-shot accuracy together.
    argv = ["--model_name_or_path", str(output_dir), "--do_eval", "--validation_file", str(toy / "validation.csv")]
    argv += zero_shot_flags(toy) + run_flags(tmp_path / "eval", per_device_eval_batch_size="8")
    assert training_cli.main(argv) == 0
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert {"eval_loss", "eval_i2t_accuracy", "eval_zeroshot_top1", "eval_zeroshot_top5"} <= set(results)
    assert results["eval_zeroshot_top1"] == pytest.approx(evaluations[-1]["eval_zeroshot_top1"])


def test_fresh_model_is_the_models_own_initialisation(toy):
    args = training.ModelArguments(config_name=str(toy / "tiny_config.json"), processor_name=str(toy / "processor"))
    set_seed(3)
    model, processor = training.load_training_model_and_processor(args)
    set_seed(3)
    expected = td.DiffCLIPModel(tiny_config())
    assert isinstance(model, td.DiffCLIPModel) and isinstance(processor, td.DiffCLIPProcessor)
    for (name, a), b in zip(model.named_parameters(), expected.parameters()):
        assert torch.equal(a, b), name
    set_seed(4)
    other, _ = training.load_training_model_and_processor(args)
    assert not torch.equal(other.visual_projection.weight, model.visual_projection.weight)


@pytest.mark.parametrize("differential", [True, False], ids=["diffclip", "clip_baseline"])
def test_fresh_model_from_config_name_is_initialised_as_the_original(toy, tmp_path, differential):
    """`--config_name` gives the authors' initialisation of that variant, checked against the facts written out in
    tests/remote_code/init_facts.py (ORIGINAL_MODEL.md), not against the model's own code."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote_code"))
    import init_facts

    config = td.DiffCLIPConfig(**init_facts.stats_config_kwargs(differential, differential))
    config.to_json_file(tmp_path / "config.json")
    set_seed(0)
    model, _ = training.load_training_model_and_processor(
        training.ModelArguments(config_name=str(tmp_path / "config.json"), processor_name=str(toy / "processor"))
    )
    assert init_facts.statistics_problems(model, model.config.text_config, model.config.vision_config) == []


# --------------------------------------------------------------------------------------------------
# The recipe's defaults and the original schedule
# --------------------------------------------------------------------------------------------------


def test_pretrain_defaults_are_the_original_recipe(toy, tmp_path):
    cpu = ["--output_dir", str(tmp_path), "--use_cpu", "true"]  # bf16 needs a GPU unless the CPU is asked for
    _, _, args = training_cli.parse_arguments(["--config_name", "c", *cpu], "diffclip-pretrain")
    assert (args.learning_rate, args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (5e-4, 0.9, 0.98, 1e-8)
    assert (args.weight_decay, args.global_batch_size, args.num_train_epochs, args.warmup_epochs) == (0.5, 4096, 40, 1)
    assert (args.warmup_start_lr, args.final_learning_rate, args.max_grad_norm) == (1e-6, 1e-5, 0.0)
    assert args.bf16 is True and args.do_train is True and str(args.lr_scheduler_type.value) == "cosine"
    _, _, finetune = training_cli.parse_arguments(["--model_name_or_path", "m", "--output_dir", str(tmp_path)])
    assert finetune.learning_rate == 5e-5 and finetune.global_batch_size is None and finetune.bf16 is False
    # A JSON file of arguments takes the recipe for what it leaves out.
    path = tmp_path / "args.json"
    values = {"config_name": "c", "output_dir": str(tmp_path), "use_cpu": True, "learning_rate": 1e-4}
    path.write_text(json.dumps(values))
    _, _, from_file = training_cli.parse_arguments([str(path)], "diffclip-pretrain")
    assert from_file.learning_rate == 1e-4 and from_file.adam_beta2 == 0.98 and from_file.weight_decay == 0.5

    # The optimizer Trainer builds from them: AdamW, decay 0.5 on matrices only.
    _, _, args = training_cli.parse_arguments(
        ["--config_name", "c", "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"],
        "diffclip-pretrain",
    )
    model = td.DiffCLIPModel(tiny_config())
    trainer = training.DiffCLIPTrainer(model=model, args=args, train_dataset=[{}], data_collator=lambda rows: rows)
    assert args.per_device_train_batch_size == 4096  # one process: the whole global batch
    optimizer = trainer.create_optimizer()
    assert type(optimizer).__name__ == "AdamW"
    names = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-8 and group["lr"] == 5e-4
        for parameter in group["params"]:
            matrix = parameter.dim() >= 2 or names[id(parameter)].endswith("class_embedding")
            assert group["weight_decay"] == (0.5 if matrix else 0.0), names[id(parameter)]


def slip_schedule(base, start, final, epochs, steps_per_epoch, warmup_epochs) -> np.ndarray:
    """The original (SLIP `utils.cosine_scheduler`) per-step learning rates, written out."""
    warmup = warmup_epochs * steps_per_epoch
    rest = np.arange(epochs * steps_per_epoch - warmup)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * rest / len(rest)))
    return np.concatenate([np.linspace(start, base, warmup), cosine])


class RateRecorder(TrainerCallback):
    def __init__(self):
        self.rates = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append([group["lr"] for group in optimizer.param_groups])


def random_rows(count: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(count):
        input_ids = torch.randint(1, 300, (8,), generator=generator)
        input_ids[-1] = 49407
        rows.append({"input_ids": input_ids, "pixel_values": torch.randn(3, 32, 32, generator=generator)})
    return rows


def schedule_run(output_dir, resume=None, **extra):
    recorder = RateRecorder()
    args = training.DiffCLIPTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        num_train_epochs=3,
        learning_rate=5e-4,
        lr_scheduler_type="cosine",
        warmup_epochs=1,
        warmup_start_lr=1e-6,
        final_learning_rate=1e-5,
        weight_decay=0.5,
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        **extra,
    )
    set_seed(0)
    model = td.DiffCLIPModel(tiny_config())
    rows, collator = random_rows(16), default_data_collator
    trainer = training.DiffCLIPTrainer(
        model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[recorder]
    )
    trainer.train(resume_from_checkpoint=resume)
    return model, recorder.rates


def test_original_schedule_and_a_resumed_run(tmp_path):
    model, rates = schedule_run(tmp_path / "straight", save_strategy="steps", save_steps=6)
    # 16 rows / batch 4 = 4 steps per epoch; 3 epochs; 1 warm-up epoch from 1e-6; cosine to 1e-5.
    expected = slip_schedule(5e-4, 1e-6, 1e-5, epochs=3, steps_per_epoch=4, warmup_epochs=1)
    assert len(rates) == 12 and all(len(set(r)) == 1 for r in rates)  # every parameter group alike
    np.testing.assert_allclose([r[0] for r in rates], expected, rtol=1e-12, atol=0)
    assert rates[3][0] == 5e-4 and rates[-1][0] > 1e-5  # the warm-up reaches the base rate; the cosine ends above 1e-5

    resumed, resumed_rates = schedule_run(
        tmp_path / "resumed", resume=str(tmp_path / "straight" / "checkpoint-6"), save_strategy="no"
    )
    np.testing.assert_allclose([r[0] for r in resumed_rates], expected[6:], rtol=1e-12, atol=0)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def test_explicit_warmup_steps_win_over_warmup_epochs(tmp_path):
    """diffclip-pretrain sets --warmup_epochs 1; an explicit --warmup_steps is not silently ignored."""
    _, rates = schedule_run(tmp_path / "steps", save_strategy="no", warmup_steps=2)
    warmup = np.linspace(1e-6, 5e-4, 2)
    rest = np.arange(12 - 2)
    cosine = 1e-5 + 0.5 * (5e-4 - 1e-5) * (1 + np.cos(np.pi * rest / len(rest)))
    np.testing.assert_allclose([r[0] for r in rates], np.concatenate([warmup, cosine]), rtol=1e-12, atol=0)


def test_original_learning_rate_edges():
    assert training.original_learning_rate(0, 1.0, 1, 10, start_lr=0.1, final_lr=0.01) == 0.1
    assert training.original_learning_rate(1, 1.0, 1, 10, start_lr=0.1, final_lr=0.01) == 1.0
    assert training.original_learning_rate(10, 1.0, 1, 10, start_lr=0.1, final_lr=0.01) == 0.01
    middle = training.original_learning_rate(4, 1.0, 0, 8, start_lr=0.0, final_lr=0.0)
    assert middle == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


# --------------------------------------------------------------------------------------------------
# The paper's variants as configs; bad arguments
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text_differential, vision_differential, schedule, parameters",
    [
        ("diffclip_vitb16", True, True, "constant", 149_629_185),  # ORIGINAL_MODEL.md: DiffCLIP ViT-B/16
        ("diffclip_star_vitb16", True, True, "depth", 149_629_185),  # DiffCLIP*: λ_init by depth
        # DiffCLIP†: DiffCLIP less the text tower's λ vectors and RMSNorm weights, 12 layers × (4·64 + 2·64)
        ("diffclip_dagger_vitb16", False, True, "constant", 149_629_185 - 12 * 384),
        ("clip_vitb16", False, False, "constant", 149_619_969),  # ORIGINAL_MODEL.md: the CLIP baseline
    ],
)
def test_example_configs_are_the_paper_variants(name, text_differential, vision_differential, schedule, parameters):
    config = AutoConfig.from_pretrained(EXAMPLES / "configs" / f"{name}.json")
    assert isinstance(config, td.DiffCLIPConfig)
    assert config.text_config.use_differential_attention is text_differential
    assert config.vision_config.use_differential_attention is vision_differential
    assert config.text_config.lambda_init_schedule == config.vision_config.lambda_init_schedule == schedule
    assert config.vision_config.layer_norm_eps == (1e-5 if vision_differential else 1e-6)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == parameters


def test_model_arguments_errors(toy, tmp_path, capsys):
    base = ["--train_file", str(toy / "train.csv"), "--do_train"] + run_flags(tmp_path / "out", max_steps="1")
    config, processor = str(toy / "tiny_config.json"), str(toy / "processor")
    cases = [
        (["--config_name", config, "--model_name_or_path", processor], "not both and not neither"),
        ([], "not both and not neither"),
        (["--config_name", config], "--processor_name"),  # a lone config file: no processor beside it
        (["--config_name", str(tmp_path / "nowhere.json"), "--processor_name", processor], "--config_name"),
        (["--config_name", config, "--processor_name", processor, "--zero_shot_key", "x"], "needs --zero_shot_eval"),
        (
            ["--config_name", config, "--processor_name", processor, "--zero_shot_eval_dir", str(tmp_path / "no")],
            "not found",
        ),
        (["--config_name", config, "--processor_name", processor, "--warmup_start_lr", "1e-6"], "cosine"),
    ]
    CLIPConfig().to_json_file(tmp_path / "clip.json")
    cases.append((["--config_name", str(tmp_path / "clip.json"), "--processor_name", processor], "CLIPConfig"))
    for extra, message in cases:
        assert training_cli.main(extra + base) == 2, extra
        assert message in capsys.readouterr().err, (extra, message)


@pytest.mark.parametrize(
    "script, config", [("pretrain_cc3m_diffclip.sh", "diffclip_vitb16"), ("pretrain_cc3m_clip.sh", "clip_vitb16")]
)
def test_example_scripts_launch_the_recipe(script, config, tmp_path):
    """The two commands of the paper's comparison differ only in the config; torchrun is replaced by a stub that
    records its arguments."""
    import os
    import subprocess

    stub = tmp_path / "bin" / "torchrun"
    stub.parent.mkdir()
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$RECORD"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "RECORD": str(tmp_path / "argv"), "GPUS": "2"}
    done = subprocess.run(["bash", str(EXAMPLES / script), "--seed", "7"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:5] == ["--standalone", "--nproc_per_node", "2", "--no-python", "diffclip-pretrain"]
    flags = dict(zip(argv[5::2], argv[6::2]))
    assert Path(flags["--config_name"]) == EXAMPLES / "configs" / f"{config}.json"
    assert flags["--train_shards"] == "data/cc3m/{00000..00331}.tar" and flags["--train_num_samples"] == "2576776"
    assert flags["--seed"] == "7" and flags["--output_dir"] == f"runs/{config}_cc3m"
    assert "--zero_shot_eval_dir" not in flags  # only with IMAGENET set
