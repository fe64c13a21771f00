"""`diffclip eval suite` end to end on tiny datasets in every published form and two tiny random models: the files
it writes, each image encoded once per model, OOD class masks, the report's tables, bad suite files (exit code 2),
an interrupted run leaving no report; and the single-task commands and `diffclip embed`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from _paper_data import (
    ForwardCounter,
    one_thread,  # noqa: F401 (autouse fixture)
    tiny_model,
    write_image,
    write_karpathy,
    write_mmvp,
    write_split_folders,
    write_wds_classification,
    write_wds_retrieval,
)

from transformers_diffclip import cli
from transformers_diffclip.evaluation.datasets import open_split
from transformers_diffclip.evaluation.paper_tasks import variant_columns
from transformers_diffclip.evaluation.suite import ModelEntry, load_suite, run_suite


CLASSES = ("cat", "dog", "car", "tree", "boat")


def _imagenet_like(root: Path) -> dict[str, Path]:
    wnids = [f"n0000{i}" for i in range(6)]
    seed = 5000
    for wnid in wnids:
        for i in range(2):
            seed += 1
            write_image(root / "val" / wnid / f"{i}.png", seed)
    for wnid in wnids[1:4]:  # a 3-class variant, as ImageNet-A's 200 of 1000
        seed += 1
        write_image(root / "a" / wnid / "0.png", seed)
    for index in range(6):  # V2: numbered folders
        seed += 1
        write_image(root / "v2" / str(index) / "0.png", seed)
    return {"val": root / "val", "a": root / "a", "v2": root / "v2"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    models = {}
    for name, seed in (("clip", 0), ("diffclip", 1)):
        folder = root / name
        models[name] = (folder, *tiny_model(folder, seed=seed))
    imagenet = _imagenet_like(root / "imagenet")
    labels = root / "imagenet_names.json"
    labels.write_text(json.dumps({"imagenet": ["tench", "goldfish", "shark", "cock", "hen", "ostrich"]}))
    suite = {
        "datasets": {
            "pets": str(write_wds_classification(root / "wds_pets", CLASSES, {"train": 30, "test": 10})),
            "fruit": str(write_split_folders(root / "fruit", classes=("a", "b", "c", "d", "e"), train=6, test=2)),
            "imagenet": {"data": str(imagenet["val"]), "classnames": str(labels), "key": "imagenet"},
            "imagenet_a": str(imagenet["a"]),
            "imagenet_v2": str(imagenet["v2"]),
            "flickr8k": str(write_karpathy(root / "flickr")),
            "coco": str(write_wds_retrieval(root / "wds_coco")),
            "mmvp": str(write_mmvp(root / "MMVP_VLM")),
        },
        "tasks": {
            "linear_probe": ["pets", "fruit"],
            "few_shot": ["pets", "fruit"],
            "zeroshot": ["pets"],
            "ood": {"reference": "imagenet", "datasets": ["imagenet_a", "imagenet_v2"]},
            "retrieval": ["flickr8k", "coco"],
            "mmvp": ["mmvp"],
        },
        "episodes": 40,
        "probe_max_iter": 20,  # lgssl's 1,000 L-BFGS iterations take minutes on random features
        "bootstrap": {"resamples": 1000, "seed": 0},
        "cache_dir": str(root / "cache"),
    }
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return root, models, path


@pytest.mark.slow
def test_suite_runs_every_task_and_encodes_each_image_once(world, tmp_path):
    root, models, path = world
    suite = load_suite(path)
    suite.cache_dir = str(tmp_path / "cache")
    suite.models = [ModelEntry("CLIP", str(models["clip"][0])), ModelEntry("DiffCLIP", str(models["diffclip"][0]))]
    counters = {}

    def load(name, revision):
        key = "clip" if name == str(models["clip"][0]) else "diffclip"
        _, model, processor = models[key]
        counters["CLIP" if key == "clip" else "DiffCLIP"] = ForwardCounter(model)
        return model, processor

    outputs = run_suite(suite, load, tmp_path / "out")
    # images: pets 40, fruit 40, imagenet 12 + 3 + 6, flickr 3 (test), coco 4, mmvp 18
    assert counters["CLIP"].images == counters["DiffCLIP"].images == 40 + 40 + 21 + 3 + 4 + 18
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([f"{t}.json" for t in suite.tasks] + ["report.md", "mmvp_radar.png", "ood_difference.png"])
    probe = json.loads((tmp_path / "out" / "linear_probe.json").read_text())
    pets = probe["models"][1]["results"]["pets"]
    for key in (
        "lp_acc1",
        "lp_mean_per_class_recall",
        "lp_metric",
        "lp_best_cost",
        "model",
        "revision",
        "feature_kind",
        "seed",
    ):
        assert key in pets
    assert pets["lp_metric_name"] == "mean_per_class_recall" and pets["feature_kind"] == "pre_projection"
    few = json.loads((tmp_path / "out" / "few_shot.json").read_text())["models"][0]["results"]["fruit"]
    assert few["fewshot_episodes"] == 40 and 0 <= few["fewshot_acc_mean"] <= 100
    comparison = probe["comparisons"][0]
    assert (comparison["first"], comparison["second"]) == ("CLIP", "DiffCLIP")
    interval = comparison["datasets"]["pets"]["correct"]
    assert interval["low"] <= interval["difference"] <= interval["high"] and "p_value" in interval["mcnemar"]
    mmvp = json.loads((tmp_path / "out" / "mmvp.json").read_text())["models"][0]["results"]["mmvp"]
    assert len(mmvp["mmvp_per_category"]) == 9
    ood = json.loads((tmp_path / "out" / "ood.json").read_text())["models"][0]["results"]["ood"]
    assert ood["datasets"]["imagenet_a"]["num_classes"] == 3 and ood["datasets"]["imagenet_v2"]["num_classes"] == 6
    expected_average = (ood["datasets"]["imagenet_a"]["acc1"] + ood["datasets"]["imagenet_v2"]["acc1"]) / 2
    assert ood["ood_average"] == pytest.approx(expected_average)
    retrieval = json.loads((tmp_path / "out" / "retrieval.json").read_text())["models"][0]["results"]["coco"]
    assert 0 <= retrieval["image_retrieval_recall@5"] <= 1 and retrieval["num_captions"] == 8
    report = (tmp_path / "out" / "report.md").read_text()
    for heading in ("Table 1 — linear probe", "Table 1 — few-shot", "Table 2 — retrieval", "Figure 3", "Figure 4"):
        assert heading in report
    assert "DiffCLIP − CLIP" in report
    assert (tmp_path / "out" / "mmvp_radar.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run of the same models reads every feature from the cache
    outputs_again = run_suite(suite, load, tmp_path / "out2")
    assert counters["CLIP"].images == 0 and counters["DiffCLIP"].images == 0
    assert outputs_again["linear_probe"]["models"] == outputs["linear_probe"]["models"]


def test_variant_columns_by_wordnet_id_number_and_name(world):
    root, _, _ = world
    reference = open_split(root / "imagenet" / "val", "test")
    assert variant_columns(reference, open_split(root / "imagenet" / "a", "test")) == [1, 2, 3]
    assert variant_columns(reference, open_split(root / "imagenet" / "v2", "test")) == list(range(6))


def test_published_numbers_sit_beside_the_measured_ones(world, tmp_path):
    root, models, path = world
    suite = load_suite(path)
    suite.tasks = {"zeroshot": ["pets"]}
    suite.cache_dir = str(tmp_path / "cache")
    suite.models = [
        ModelEntry("CLIP", str(models["clip"][0]), published="hammh0a/ViTB16_CC12M"),
        ModelEntry("DiffCLIP", str(models["diffclip"][0]), published="hammh0a/DiffCLIP_ViTB16_CC12M"),
    ]
    run_suite(
        suite, lambda name, _: models["clip" if name == str(models["clip"][0]) else "diffclip"][1:], tmp_path / "out"
    )
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| DiffCLIP *paper* |" in report


def _main(argv) -> int:
    return cli.main([str(a) for a in argv])


def test_bad_suite_files_exit_2_naming_the_valid_names(world, tmp_path, capsys):
    root, models, path = world
    bad = tmp_path / "bad.yaml"
    flags = ["--model", models["clip"][0], "--model", models["diffclip"][0], "--output-dir", tmp_path / "out"]
    for task, names, expected in (
        ("linear_probing", ["pets"], "few_shot, linear_probe, mmvp, ood, pope, retrieval, zeroshot"),
        ("few_shot", ["pets", "cifar11"], "cifar11"),
    ):
        config = yaml.safe_load(path.read_text())
        config["tasks"][task] = names
        bad.write_text(yaml.safe_dump(config))
        assert _main(["eval", "suite", bad, *flags]) == 2
        error = capsys.readouterr().err
        assert expected in error and "error" in error
    assert not (tmp_path / "out").exists()


def test_interrupted_suite_writes_no_report(world, tmp_path):
    root, models, path = world
    suite = load_suite(path)
    suite.tasks = {"zeroshot": ["pets"]}
    suite.cache_dir = str(tmp_path / "cache")
    suite.models = [ModelEntry("CLIP", str(models["clip"][0])), ModelEntry("DiffCLIP", str(models["diffclip"][0]))]
    calls = []

    def load(name, revision):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return models["clip"][1:]

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, load, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_single_task_commands_and_embed(world, tmp_path, capsys):
    root, models, path = world
    folder = models["diffclip"][0]
    common = ["--model", folder, "--device", "cpu", "--no-progress", "--cache-dir", tmp_path / "cache"]
    pets = root / "wds_pets"
    probe_flags = ["--max-iter", "20", "--output", tmp_path / "lp.json"]
    assert _main(["eval", "linear-probe", "--data", pets, *probe_flags, *common]) == 0
    probe = json.loads((tmp_path / "lp.json").read_text())
    assert probe["model"] == str(folder) and probe["feature_kind"] == "pre_projection" and probe["seed"] == 0
    assert set(probe) >= {"lp_acc1", "lp_mean_per_class_recall", "lp_metric", "lp_best_cost", "revision"}
    assert (
        _main(["eval", "few-shot", "--data", pets, "--episodes", "30", "--output", tmp_path / "fs.json", *common]) == 0
    )
    few = json.loads((tmp_path / "fs.json").read_text())
    assert few["fewshot_episodes"] == 30 and {"fewshot_acc_mean", "fewshot_acc_std"} <= set(few)
    assert _main(["eval", "mmvp", "--data", root / "MMVP_VLM", "--output", tmp_path / "mmvp.json", *common]) == 0
    mmvp = json.loads((tmp_path / "mmvp.json").read_text())
    assert len(mmvp["mmvp_per_category"]) == 9 and "mmvp_average" in mmvp
    assert (
        _main(["embed", "--data", root / "fruit", "--split", "train", "--output", tmp_path / "f.safetensors", *common])
        == 0
    )
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "f.safetensors"))
    assert tensors["pre_projection"].shape == (30, 32) and tensors["projected"].shape == (30, 16)
    assert torch.isfinite(tensors["projected"]).all()
    capsys.readouterr()
    # the wrong layout, and a class-name list that does not fit: exit code 2 with the reason
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "readme.txt").write_text("x")
    assert _main(["eval", "linear-probe", "--data", tmp_path / "odd", *common]) == 2
    assert "none of the dataset layouts" in capsys.readouterr().err
    names = tmp_path / "names.txt"
    names.write_text("one\ntwo\n")
    assert _main(["eval", "few-shot", "--data", pets, "--classnames", names, *common]) == 2
    assert "2 class names given for the 5 classes" in capsys.readouterr().err


def test_the_paper_suite_example_is_valid():
    suite = load_suite(Path(__file__).resolve().parents[2] / "examples" / "paper_suite.yaml")
    assert [m.model for m in suite.models] == ["hammh0a/ViTB16_CC12M", "hammh0a/DiffCLIP_ViTB16_CC12M"]
    assert len(suite.tasks["linear_probe"]) == 9 and suite.tasks["few_shot"] == suite.tasks["linear_probe"]
    assert suite.tasks["ood"] == {
        "reference": "imagenet",
        "datasets": ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"],
    }
    assert suite.datasets["pets"].data == "wds/vtab/pets" and suite.resamples == 1000


@pytest.mark.slow
def test_embed_under_torchrun_matches_one_process(world, tmp_path):
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    root, models, _ = world
    folder = models["diffclip"][0]
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    flags = [
        "embed",
        "--data",
        str(root / "wds_pets"),
        "--split",
        "train",
        "--model",
        str(folder),
        "--device",
        "cpu",
        "--no-progress",
        "--batch-size",
        "4",
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "transformers_diffclip.cli",
        *flags,
        "--cache-dir",
        str(tmp_path / "c2"),
        "--output",
        str(tmp_path / "two.safetensors"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _main([*flags, "--cache-dir", tmp_path / "c1", "--output", tmp_path / "one.safetensors"]) == 0
    two, one = load_file(str(tmp_path / "two.safetensors")), load_file(str(tmp_path / "one.safetensors"))
    assert two["projected"].shape == (30, 16)
    torch.testing.assert_close(two["projected"], one["projected"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two["pre_projection"], one["pre_projection"], rtol=1e-5, atol=1e-6)


def test_wrong_kind_of_dataset_fails_before_any_model_loads(world, tmp_path):
    root, models, path = world
    suite = load_suite(path)
    suite.tasks = {"zeroshot": ["pets"], "retrieval": ["pets"]}  # pets is a classification set
    suite.models = [ModelEntry("CLIP", str(models["clip"][0])), ModelEntry("DiffCLIP", str(models["diffclip"][0]))]
    loaded = []
    with pytest.raises(ValueError, match="'pets'.*classification set; this task needs retrieval"):
        run_suite(suite, lambda name, revision: loaded.append(name), tmp_path / "out")
    assert loaded == [] and not (tmp_path / "out").exists()


def test_output_is_checked_before_the_data_and_the_model(world, tmp_path, capsys, monkeypatch):
    from transformers_diffclip.evaluation import suite_cli

    root, models, path = world
    loaded = []
    monkeypatch.setattr(suite_cli, "load_model_from_args", lambda *a, **k: loaded.append(a))
    odd = tmp_path / "odd"  # a folder in no dataset layout: read after --output, so its error must not show
    odd.mkdir()
    (odd / "readme.txt").write_text("x")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    common = ["--model", models["diffclip"][0], "--device", "cpu", "--no-progress", "--no-cache"]
    for command in (["eval", "linear-probe"], ["eval", "few-shot"], ["eval", "mmvp"], ["embed"]):
        assert _main([*command, "--data", odd, "--output", folder, *common]) == 2, command
        error = capsys.readouterr().err
        assert f"--output {folder}: it is a folder" in error and "dataset layouts" not in error, command
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    flags = ["--model", models["clip"][0], "--model", models["diffclip"][0], "--output-dir", not_a_folder]
    assert _main(["eval", "suite", tmp_path / "missing.yaml", *flags]) == 2
    error = capsys.readouterr().err
    assert "--output-dir" in error and f"{not_a_folder} is not a folder" in error and "missing.yaml" not in error
    assert loaded == [] and not_a_folder.read_text() == "x"


def test_a_dataset_spec_reads_each_split_once(tmp_path, monkeypatch):
    from transformers_diffclip.evaluation import paper_tasks

    opened = []

    def counting_open_split(data, split, *args, **kwargs):
        opened.append(split)
        return open_split(data, split, *args, **kwargs)

    monkeypatch.setattr(paper_tasks, "open_split", counting_open_split)
    spec = paper_tasks.DatasetSpec(name="fruit", data=str(write_split_folders(tmp_path / "fruit")))
    spec.check(("train", "test"), "classification")
    train, test = spec.split("train"), spec.split("test")
    assert spec.split("train") is train and train.split == "train" and test.split == "test"
    assert sorted(opened) == ["test", "train"]


def test_suite_command_models_replace_the_files_and_load_through_the_core_loader(world, tmp_path, monkeypatch):
    """`eval suite --model NAME=PATH` replaces the file's models (none here) and hands the task a typed loader (the
    command's --device/--dtype/--trust-remote-code), which loads each model through `core.loading` with its
    revision: no argparse Namespace below the command."""
    from transformers_diffclip.core import loading
    from transformers_diffclip.evaluation import suite as suite_module

    root, models, path = world
    config = yaml.safe_load(path.read_text())
    config["tasks"] = {"zeroshot": ["pets"]}
    config["models"] = [{"name": "ignored", "model": str(tmp_path / "not-a-model")}]
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(config))
    real, loaded = loading.load_model_and_processor, []

    def spy(name, device=None, dtype="float32", revision=None, trust_remote_code=False, dual_encoder=True):
        loaded.append((str(name), str(device), dtype, revision, trust_remote_code))
        return real(name, device, dtype, revision, trust_remote_code, dual_encoder)

    monkeypatch.setattr(loading, "load_model_and_processor", spy)
    real_run, loaders = suite_module.run_suite, []

    def run_suite(suite, load_model, *args, **kwargs):
        loaders.append(load_model)
        return real_run(suite, load_model, *args, **kwargs)

    monkeypatch.setattr(suite_module, "run_suite", run_suite)
    flags = ["--model", f"CLIP={models['clip'][0]}", "--model", f"DiffCLIP={models['diffclip'][0]}"]
    flags += [
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--trust-remote-code",
        "--no-progress",
        "--output-dir",
        tmp_path / "out",
    ]
    assert _main(["eval", "suite", small, *flags]) == 0
    # (--trust-remote-code changes nothing for DiffCLIP, a registered type: it only has to reach the loader)
    assert loaders == [loading.ModelLoader(device="cpu", dtype="float32", trust_remote_code=True)]
    assert loaded == [(str(models[key][0]), "cpu", "float32", None, True) for key in ("clip", "diffclip")]
    assert "| DiffCLIP |" in (tmp_path / "out" / "report.md").read_text()


def test_under_torchrun_the_processes_share_every_split_the_tasks_read(world):
    """`eval suite` under torchrun encodes, before any task, every split whose images its tasks read (each once);
    a split left out would be encoded later by process 0 alone."""
    from transformers_diffclip.evaluation.suite import _model_splits

    _, _, path = world
    splits = _model_splits(load_suite(path))
    got = [(Path(split.dataset).name, split.split) for split in splits]
    # few_shot and linear_probe: pets, fruit (train, test); mmvp; ood: imagenet val, a, v2; retrieval: flickr8k, coco
    expected = [("wds_pets", "train"), ("wds_pets", "test"), ("fruit", "train"), ("fruit", "test")]
    expected += [("MMVP_VLM", "test"), ("val", "test"), ("a", "test"), ("v2", "test")]
    expected += [("dataset_flickr8k.json", "test"), ("wds_coco", "test")]
    assert sorted(got) == sorted(expected)
