# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`diffclip eval suite`: the paper's whole evaluation for two or more models from one YAML file.

```yaml
models:                      # optional; --model on the command line replaces them
  - {name: CLIP, model: hammh0a/ViTB16_CC12M}
  - {name: DiffCLIP, model: hammh0a/DiffCLIP_ViTB16_CC12M, published: hammh0a/DiffCLIP_ViTB16_CC12M}
feature_kind: pre_projection # linear probe and few-shot features (or projected)
seed: 0                      # few-shot episodes
episodes: 5000               # few-shot episodes
probe_max_iter: 1000         # L-BFGS iterations per linear-probe fit (lgssl: 1000)
bootstrap: {resamples: 1000, seed: 0}
datasets:
  cifar10: wds/cifar10
  imagenet: {data: /data/imagenet/val, classnames: slip_labels.json, key: imagenet, templates: ...}
tasks:
  linear_probe: [cifar10, ...]
  few_shot: [cifar10, ...]
  zeroshot: [imagenet]
  ood: {reference: imagenet, datasets: [imagenet_v2, imagenet_sketch, imagenet_a, imagenet_r]}
  retrieval: [flickr30k, flickr8k, mscoco]
  mmvp: [mmvp]
```

Every image is encoded once per model for the whole suite (the feature cache serves every later task). The suite
writes, only when every task has finished, one JSON per task (`<task>.json`: per model and dataset the task's
report, then every pair's comparison), `report.md` (evaluation.report_tables) and the charts; each file atomically.
Pairs are compared second-minus-first in the order the models are listed (DiffCLIP − CLIP with CLIP first).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.files import atomic_write_bytes, write_json
from ..core.text_files import read_text
from .features import FEATURE_KINDS, FeatureCache, default_cache_dir
from .linear_probe import MAX_ITER
from .paper_tasks import (
    DatasetSpec,
    ModelRun,
    dataset_spec,
    run_few_shot,
    run_linear_probe,
    run_mmvp,
    run_ood,
    run_retrieval,
    run_zero_shot,
)
from .significance import DEFAULT_RESAMPLES, mcnemar_exact, mean_per_class_statistic, paired_bootstrap


TASKS = ("linear_probe", "few_shot", "zeroshot", "ood", "retrieval", "mmvp")
TOP_LEVEL_KEYS = (
    "models",
    "datasets",
    "tasks",
    "feature_kind",
    "seed",
    "bootstrap",
    "cache_dir",
    "episodes",
    "probe_max_iter",
)


@dataclass
class ModelEntry:
    name: str
    model: str
    revision: str | None = None
    published: str | None = None


@dataclass
class Suite:
    models: list[ModelEntry]
    datasets: dict[str, DatasetSpec]
    tasks: dict[str, Any]
    feature_kind: str = "pre_projection"
    seed: int = 0
    episodes: int = 5000
    probe_max_iter: int = MAX_ITER
    resamples: int = DEFAULT_RESAMPLES
    bootstrap_seed: int = 0
    cache_dir: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)


def _names(items) -> str:
    return ", ".join(sorted(items))


def _dataset_list(task: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value) and value:
        return list(value)
    raise ValueError(f"Task {task!r}: expected a list of dataset names, got {value!r}.")


def parse_suite(config: Mapping[str, Any], source: str = "the suite file", base: Path | None = None) -> Suite:
    """Check a suite file's content (see the module docstring): unknown tasks, datasets, keys and feature kinds
    are errors that list the valid names."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: expected a mapping with 'datasets' and 'tasks'.")
    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {_names(TOP_LEVEL_KEYS)}.")
    raw_datasets = config.get("datasets") or {}
    if not isinstance(raw_datasets, Mapping):
        raise ValueError(f"{source}: 'datasets' must map names to data.")
    datasets = {}
    for name, entry in raw_datasets.items():
        spec = dataset_spec(str(name), entry)
        if base is not None:
            for attribute in ("data", "classnames", "templates", "image_root"):
                value = getattr(spec, attribute)
                if isinstance(value, str) and value.startswith(("./", "../")):
                    setattr(spec, attribute, str((base / value).resolve()))
        datasets[str(name)] = spec
    tasks = config.get("tasks") or {}
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"{source}: 'tasks' must name at least one of: {_names(TASKS)}.")
    bad_tasks = sorted(set(tasks) - set(TASKS))
    if bad_tasks:
        raise ValueError(f"{source}: unknown task(s) {', '.join(bad_tasks)}; valid tasks: {_names(TASKS)}.")
    checked = {}
    for task, value in tasks.items():
        if task == "ood":
            if not isinstance(value, Mapping) or "reference" not in value or "datasets" not in value:
                raise ValueError(f"{source}: task 'ood' needs 'reference' (ImageNet) and 'datasets' (its variants).")
            names = [value["reference"], *_dataset_list(task, value["datasets"])]
            checked[task] = {"reference": value["reference"], "datasets": names[1:]}
        else:
            names = _dataset_list(task, value)
            checked[task] = names
        missing = [n for n in names if n not in datasets]
        if missing:
            raise ValueError(
                f"{source}: task {task!r} names unknown dataset(s) {', '.join(missing)}; the datasets defined: "
                f"{_names(datasets) or 'none'}."
            )
    models = []
    for number, entry in enumerate(config.get("models") or []):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise ValueError(f"{source}: models[{number}] needs a 'model' (folder or Hub id).")
        allowed = {"name", "model", "revision", "published"}
        if set(entry) - allowed:
            raise ValueError(f"{source}: models[{number}] has unknown key(s) {_names(set(entry) - allowed)}.")
        models.append(
            ModelEntry(
                str(entry.get("name") or entry["model"]),
                str(entry["model"]),
                entry.get("revision"),
                entry.get("published"),
            )
        )
    feature_kind = config.get("feature_kind", "pre_projection")
    if feature_kind not in FEATURE_KINDS:
        raise ValueError(f"{source}: unknown feature_kind {feature_kind!r}; valid: {_names(FEATURE_KINDS)}.")
    bootstrap = config.get("bootstrap") or {}
    return Suite(
        models=models,
        datasets=datasets,
        tasks=checked,
        feature_kind=feature_kind,
        seed=int(config.get("seed", 0)),
        episodes=int(config.get("episodes", 5000)),
        probe_max_iter=int(config.get("probe_max_iter", MAX_ITER)),
        resamples=int(bootstrap.get("resamples", DEFAULT_RESAMPLES)),
        bootstrap_seed=int(bootstrap.get("seed", 0)),
        cache_dir=config.get("cache_dir"),
        source=source,
    )


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and check a suite YAML file (relative paths in it start from its folder)."""
    try:
        import yaml
    except ImportError as error:
        raise OSError("Suite files are YAML: pip install 'transformers-diffclip[eval]' (PyYAML).") from error

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Suite file not found: {path}")
    try:
        config = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    return parse_suite(config, str(path), base=path.parent)


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def _compare(samples_a: dict, samples_b: dict, resamples: int, seed: int) -> dict[str, Any]:
    """B − A for every per-sample measure the two share, in percentage points."""
    out = {}
    for key in ("correct", "values", "image_retrieval", "text_retrieval"):
        if key not in samples_a:
            continue
        a, b = samples_a[key], samples_b[key]
        statistic = None
        if key == "correct" and samples_a.get("metric") == "mean_per_class_recall":
            statistic = mean_per_class_statistic(samples_a["labels"])
        scale = 1.0 if key == "values" else 100.0
        interval = paired_bootstrap(b.double() * scale, a.double() * scale, resamples, seed, statistic=statistic)
        entry = {"measure": key, **interval}
        if key != "values":
            test = mcnemar_exact(b, a)
            entry["mcnemar"] = {
                "only_second": test["only_a"],
                "only_first": test["only_b"],
                "p_value": test["p_value"],
            }
        out[key] = entry
    return out


# What each task reads: the splits and the kind of data they must hold.
TASK_NEEDS = {
    "linear_probe": (("train", "test"), "classification"),
    "few_shot": (("train", "test"), "classification"),
    "zeroshot": (("test",), "classification"),
    "ood": (("test",), "classification"),
    "retrieval": (("test",), "retrieval"),
    "mmvp": (("test",), "mmvp"),
}


def check_datasets(suite: Suite) -> None:
    """Open every split the suite's tasks read, before any model loads (see `DatasetSpec.check`)."""
    for task, value in suite.tasks.items():
        names = [value["reference"], *value["datasets"]] if task == "ood" else value
        splits, kind = TASK_NEEDS[task]
        for name in names:
            suite.datasets[name].check(splits, kind)


def run_suite(
    suite: Suite,
    load_model: Callable[[str, str | None], tuple[torch.nn.Module, Any]],
    output_dir: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    probe_device: str | None = None,
    charts: bool = True,
    text_batch_size: int = 256,
) -> dict[str, Any]:
    """Run every task of `suite` for every model (loaded one at a time by `load_model(model, revision)`, e.g. a
    [`~core.loading.ModelLoader`]), then write the task
    JSONs, `report.md` and the charts into `output_dir`. Returns `{task: the task's JSON}`."""
    if len(suite.models) < 1:
        raise ValueError("The suite has no model: name them in the file's 'models' or with --model.")
    if charts and importlib.util.find_spec("matplotlib") is None:  # fail before hours of encoding, not after
        raise OSError("The suite's charts need matplotlib: pip install 'transformers-diffclip[eval]'.")
    check_datasets(suite)
    cache = FeatureCache(suite.cache_dir or default_cache_dir())
    results: dict[str, dict] = {task: {} for task in suite.tasks}
    samples: dict[str, dict] = {task: {} for task in suite.tasks}
    for entry in suite.models:
        model, processor = load_model(entry.model, entry.revision)
        run = ModelRun(
            model, processor, entry.model, entry.revision, cache, batch_size, text_batch_size, num_workers, progress
        )
        for task, value in suite.tasks.items():
            per_dataset, per_samples = {}, {}
            if task == "ood":
                report, sample = run_ood(
                    run, suite.datasets[value["reference"]], [suite.datasets[n] for n in value["datasets"]]
                )
                per_dataset["ood"], per_samples = report, sample
            else:
                for name in value:
                    spec = suite.datasets[name]
                    if task == "linear_probe":
                        report, sample = run_linear_probe(
                            run, spec, suite.feature_kind, max_iter=suite.probe_max_iter, device=probe_device
                        )
                    elif task == "few_shot":
                        report, sample = run_few_shot(run, spec, suite.feature_kind, suite.episodes, seed=suite.seed)
                    elif task == "zeroshot":
                        report, sample = run_zero_shot(run, spec)
                    elif task == "retrieval":
                        report, sample = run_retrieval(run, spec)
                    else:
                        report, sample = run_mmvp(run, spec)
                    per_dataset[name], per_samples[name] = report, sample
            results[task][entry.name] = per_dataset
            samples[task][entry.name] = per_samples
        del model, processor, run
    outputs = {}
    for task in suite.tasks:
        comparisons = []
        names = [m.name for m in suite.models]
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                per = {}
                for dataset, sample in samples[task][first].items():
                    per[dataset] = _compare(
                        sample, samples[task][second][dataset], suite.resamples, suite.bootstrap_seed
                    )
                comparisons.append({"first": first, "second": second, "difference": "second - first", "datasets": per})
        outputs[task] = {
            "task": task,
            "suite": suite.source,
            "models": [
                {
                    "name": m.name,
                    "model": m.model,
                    "revision": m.revision,
                    "published": m.published,
                    "results": results[task][m.name],
                }
                for m in suite.models
            ],
            "comparisons": comparisons,
            "bootstrap": {"resamples": suite.resamples, "seed": suite.bootstrap_seed, "confidence": 0.95},
        }
    from .report_tables import render_report, write_charts

    output_dir = Path(output_dir)
    report = render_report(suite, outputs)
    chart_files = write_charts(outputs, output_dir) if charts else []
    for task, content in outputs.items():
        write_json(output_dir / f"{task}.json", content)
    atomic_write_bytes(output_dir / "report.md", report.encode("utf-8"))
    outputs["_files"] = (
        [str(output_dir / f"{t}.json") for t in suite.tasks] + chart_files + [str(output_dir / "report.md")]
    )
    return outputs


__all__ = ["TASKS", "ModelEntry", "Suite", "check_datasets", "load_suite", "parse_suite", "run_suite"]
