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
  pope: [pope]               # assistants (below), not models: POPE folders as datasets ({data, image_root})
assistants:                  # LLaVA assistants written by diffclip-llava, compared on the pope task
  - {name: CLIP-LLaVA, model: runs/clip-llava}
  - {name: DiffCLIP-LLaVA, model: runs/diffclip-llava}
```

Every image is encoded once per model for the whole suite (the feature cache serves every later task). The suite
writes, only when every task has finished, one JSON per task (`<task>.json`: per model and dataset the task's
report, then every pair's comparison), `report.md` (evaluation.report_tables) and the charts; each file atomically.
Pairs are compared second-minus-first in the order the models are listed (DiffCLIP − CLIP with CLIP first).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.distributed import rank_world
from ..core.files import atomic_write_bytes, write_json
from .features import FeatureCache, default_cache_dir
from .paper_tasks import (
    ModelRun,
    image_splits,
    run_few_shot,
    run_linear_probe,
    run_mmvp,
    run_ood,
    run_retrieval,
    run_zero_shot,
)
from .significance import (
    mcnemar_exact,
    mean_per_class_statistic,
    paired_bootstrap,
)
from .suite_file import (  # noqa: F401 (the suite file's names, re-exported)
    ASSISTANT_TASKS,
    TASKS,
    ModelEntry,
    Suite,
    check_settings,
    load_suite,
    parse_suite,
)


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
    "pope": ((), "pope"),  # a POPE folder: its three question files (assistant.pope_files)
}


def check_datasets(suite: Suite) -> None:
    """Open every split the suite's tasks read, before any model loads (see `DatasetSpec.check`)."""
    for task, value in suite.tasks.items():
        names = [value["reference"], *value["datasets"]] if task == "ood" else value
        splits, kind = TASK_NEEDS[task]
        for name in names:
            if task == "pope":
                from ..assistant import pope_files

                pope_files(suite.datasets[name].data)
            else:
                suite.datasets[name].check(splits, kind)


def _model_splits(suite: Suite) -> list:
    """Every split whose images the dual encoders' tasks read, each once, in the order the tasks read them."""
    splits = {}
    for task, value in suite.tasks.items():
        if task in ASSISTANT_TASKS:
            continue
        names = [value["reference"], *value["datasets"]] if task == "ood" else value
        for name in names:
            for split in image_splits(suite.datasets[name], task):
                splits.setdefault((split.dataset, split.split, split.fingerprint), split)
    return list(splits.values())


def _encode_on_every_process(
    suite: Suite,
    load_model,
    cache: FeatureCache,
    batch_size: int,
    num_workers: int,
    progress: bool,
    rank: int,
    world: int,
) -> None:
    """Under torchrun, before any task: every model's features of every split the tasks read, each process
    encoding its share (`rank, rank + world, ...`) and process 0 putting each split together in `cache`. All the
    waiting on one another happens here, so that process 0's tasks (hours of linear probes) keep no one waiting."""
    splits = _model_splits(suite)
    for entry in suite.models:
        model, processor = load_model(entry.model, entry.revision)
        run = ModelRun(
            model,
            processor,
            entry.model,
            entry.revision,
            cache,
            batch_size,
            num_workers=num_workers,
            progress=progress,
            processes=(rank, world),
        )
        for split in splits:
            run.features(split)
        del model, processor, run


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
    load_assistant: Callable[[ModelEntry], tuple[torch.nn.Module, Any]] | None = None,
) -> dict[str, Any]:
    """Run every task of `suite` for every model (loaded one at a time by `load_model(model, revision)`, e.g. a
    [`~core.loading.ModelLoader`]; the assistants of the `pope` task by `load_assistant`, default:
    `assistant.load_assistant` on CUDA when available), then write the task
    JSONs, `report.md` and the charts into `output_dir`. Returns `{task: the task's JSON}`.

    Under torchrun (a process group running: `diffclip eval suite` joins one) every process encodes its share of
    every split's images into the feature cache and process 0 puts each split together; then process 0 alone runs
    the tasks from the cached features (text encoding, linear probes, few-shot, pope, significance) and writes the
    files, while the other processes return `{}` having written nothing but their feature parts."""
    model_tasks = [task for task in suite.tasks if task not in ASSISTANT_TASKS]
    if model_tasks and len(suite.models) < 1:
        raise ValueError("The suite has no model: name them in the file's 'models' or with --model.")
    if charts and importlib.util.find_spec("matplotlib") is None:  # fail before hours of encoding, not after
        raise OSError("The suite's charts need matplotlib: pip install 'transformers-diffclip[eval]'.")
    check_settings(suite)  # command-line overrides too, before any work
    check_datasets(suite)
    cache = FeatureCache(suite.cache_dir or default_cache_dir())
    rank, world = rank_world()
    results: dict[str, dict] = {task: {} for task in suite.tasks}
    samples: dict[str, dict] = {task: {} for task in suite.tasks}
    if world > 1 and model_tasks:  # torchrun: every model's features first, shared by the processes
        _encode_on_every_process(suite, load_model, cache, batch_size, num_workers, progress, rank, world)
    if rank != 0:  # the other processes wrote their share of the features; process 0 does the rest
        return {}
    for entry in suite.models if model_tasks else []:
        model, processor = load_model(entry.model, entry.revision)
        run = ModelRun(
            model,
            processor,
            entry.model,
            entry.revision,
            cache,
            batch_size,
            text_batch_size,
            num_workers,
            progress,
            processes=(0, 1),  # under torchrun the features are cached by now: no process to wait for
        )
        for task, value in suite.tasks.items():
            if task in ASSISTANT_TASKS:
                continue
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
    if "pope" in suite.tasks:  # process 0 only
        results["pope"], samples["pope"] = _run_pope(suite, load_assistant, batch_size)
    outputs = {}
    for task in suite.tasks:
        entries = suite.assistants if task in ASSISTANT_TASKS else suite.models
        comparisons = []
        names = [m.name for m in entries]
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
                for m in entries
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


def _run_pope(suite: Suite, load_assistant, batch_size: int) -> tuple[dict, dict]:
    """Every assistant on every POPE dataset: `{name: {"<dataset>/<split>": report}}` and, per split, whether each
    answer is right (`correct`, for the paired bootstrap and McNemar test)."""
    from ..assistant import evaluate_pope
    from ..assistant import load_assistant as load_saved_assistant
    from ..core.loading import resolve_device

    results, samples = {}, {}
    for entry in suite.assistants:
        if load_assistant is not None:
            model, processor = load_assistant(entry)
        else:
            model, processor = load_saved_assistant(entry.model)
            model = model.to(resolve_device(None)).eval()
        results[entry.name], samples[entry.name] = {}, {}
        for name in suite.tasks["pope"]:
            spec = suite.datasets[name]
            report = evaluate_pope(model, processor, spec.data, spec.image_root, batch_size=min(batch_size, 16))
            labels = {q["question_id"]: q["label"] for q in _pope_labels(spec.data)}
            for split, result in report.items():
                key = f"{name}/{split}"
                results[entry.name][key] = result
                correct = [answer["answer"] == labels[split, answer["question_id"]] for answer in result["answers"]]
                samples[entry.name][key] = {"correct": torch.tensor(correct)}
        del model, processor
    return results, samples


def _pope_labels(data: str) -> list[dict]:
    from ..assistant import pope_files, read_pope_file

    return [
        {"question_id": (split, row["question_id"]), "label": row["label"]}
        for split, file in pope_files(data).items()
        for row in read_pope_file(file)
    ]


__all__ = [
    "TASKS",
    "ModelEntry",
    "Suite",
    "check_datasets",
    "check_settings",
    "load_suite",
    "parse_suite",
    "run_suite",
]
