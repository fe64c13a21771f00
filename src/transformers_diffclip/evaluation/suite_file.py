# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The suite file of `diffclip eval suite` ([`load_suite`], [`parse_suite`]): YAML without aliases, at most
`MAX_SUITE_BYTES`, every key typed and bounded and named with the file when it is wrong, relative paths taken from
the file's folder. What the file holds is [`Suite`]; running it is [`suite.run_suite`]."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.text_files import read_text
from .features import FEATURE_KINDS
from .few_shot import MAX_EPISODES, check_episodes
from .linear_probe import MAX_ITER
from .paper_tasks import DatasetSpec, dataset_spec
from .significance import DEFAULT_RESAMPLES, MIN_RESAMPLES


TASKS = ("linear_probe", "few_shot", "zeroshot", "ood", "retrieval", "mmvp", "pope")
# Tasks of the assistants (`assistants:`), not of the dual encoders (`models:`).
ASSISTANT_TASKS = ("pope",)
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
    "assistants",
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
    assistants: list[ModelEntry] = field(default_factory=list)


# A suite file is a few kilobytes; anything far larger is not one.
MAX_SUITE_BYTES = 1 << 20
# Bounds of the suite's numbers (the paper's: 5,000 episodes, 1,000 L-BFGS iterations, 1,000 resamples).
MAX_PROBE_ITER = 100_000
MAX_RESAMPLES = 1_000_000
_SHOWN = 60


def _names(items) -> str:
    return ", ".join(sorted(items))


def shown(value: Any) -> str:
    """`repr(value)` cut to a few dozen characters: an error never echoes a whole parsed value."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _integer(source: str, key: str, value: Any, low: int, high: int, flag: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        named = f"'{key}'" + (f" (or {flag})" if flag else "")
        raise ValueError(f"{source}: {named} must be an integer from {low:,} to {high:,}, got {shown(value)}.")
    return value


def _text(source: str, key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{source}: {key!r} must be a string (a path or name), got {shown(value)}.")
    return value


def _dataset_list(task: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value) and value:
        return list(value)
    raise ValueError(f"Task {task!r}: expected a list of dataset names, got {shown(value)}.")


def _from_folder(value: str | None, base: Path | None) -> str | None:
    """A `./` or `../` path of the suite file, taken from the file's folder (Hub ids and absolute paths as written)."""
    if base is not None and isinstance(value, str) and value.startswith(("./", "../")):
        return str((base / value).resolve())
    return value


def check_settings(suite: Suite) -> None:
    """The suite's numbers within their bounds (file values and command-line overrides), before any work."""
    check_episodes(suite.episodes, f"{suite.source}: 'episodes' (or --episodes)")
    _integer(suite.source, "bootstrap.resamples", suite.resamples, MIN_RESAMPLES, MAX_RESAMPLES, "--resamples")


def parse_suite(config: Mapping[str, Any], source: str = "the suite file", base: Path | None = None) -> Suite:
    """Check a suite file's content (see the module docstring): unknown tasks, datasets, keys and feature kinds
    are errors that list the valid names."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: expected a mapping with 'datasets' and 'tasks'.")
    unknown = sorted(shown(key) for key in set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {_names(TOP_LEVEL_KEYS)}.")
    raw_datasets = config.get("datasets") or {}
    if not isinstance(raw_datasets, Mapping):
        raise ValueError(f"{source}: 'datasets' must map names to data.")
    datasets = {}
    for name, entry in raw_datasets.items():
        spec = dataset_spec(str(name), entry)
        for attribute in ("data", "classnames", "templates", "image_root"):
            setattr(spec, attribute, _from_folder(getattr(spec, attribute), base))
        datasets[str(name)] = spec
    tasks = config.get("tasks") or {}
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"{source}: 'tasks' must name at least one of: {_names(TASKS)}.")
    bad_tasks = sorted(shown(task) for task in set(tasks) - set(TASKS))
    if bad_tasks:
        raise ValueError(f"{source}: unknown task(s) {', '.join(bad_tasks)}; valid tasks: {_names(TASKS)}.")
    checked = {}
    for task, value in tasks.items():
        if task == "ood":
            if not isinstance(value, Mapping) or "reference" not in value or "datasets" not in value:
                raise ValueError(f"{source}: task 'ood' needs 'reference' (ImageNet) and 'datasets' (its variants).")
            _text(source, "tasks.ood.reference", value["reference"])
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
    models = _model_entries(config, "models", source, base)
    assistants = _model_entries(config, "assistants", source, base)
    if "pope" in checked and not assistants:
        raise ValueError(f"{source}: task 'pope' compares assistants: name them under 'assistants'.")
    feature_kind = config.get("feature_kind", "pre_projection")
    if feature_kind not in FEATURE_KINDS:
        raise ValueError(f"{source}: unknown feature_kind {shown(feature_kind)}; valid: {_names(FEATURE_KINDS)}.")
    bootstrap = config.get("bootstrap") or {}
    if not isinstance(bootstrap, Mapping) or set(bootstrap) - {"resamples", "seed"}:
        raise ValueError(f"{source}: 'bootstrap' must be a mapping {{resamples: N, seed: S}}, got {shown(bootstrap)}.")
    suite = Suite(
        models=models,
        datasets=datasets,
        tasks=checked,
        feature_kind=feature_kind,
        seed=_integer(source, "seed", config.get("seed", 0), 0, 2**63 - 1),
        episodes=_integer(source, "episodes", config.get("episodes", 5000), 1, MAX_EPISODES),
        probe_max_iter=_integer(source, "probe_max_iter", config.get("probe_max_iter", MAX_ITER), 1, MAX_PROBE_ITER),
        resamples=_integer(
            source, "bootstrap.resamples", bootstrap.get("resamples", DEFAULT_RESAMPLES), MIN_RESAMPLES, MAX_RESAMPLES
        ),
        bootstrap_seed=_integer(source, "bootstrap.seed", bootstrap.get("seed", 0), 0, 2**63 - 1),
        cache_dir=_from_folder(_text(source, "cache_dir", config.get("cache_dir")), base),
        source=source,
        assistants=assistants,
    )
    return suite


def _loader(yaml):
    """PyYAML's safe loader without aliases: `*name` (which can expand a few hundred bytes into gigabytes) is an
    error at the line it is on."""

    class SuiteLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"line {mark.line + 1}: aliases (*name) are not accepted in suite files; write the value out"
                )
            return super().compose_node(parent, index)

    return SuiteLoader


def shown_yaml_error(error: Exception) -> str:
    """A YAML error on one bounded line."""
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _model_entries(config: Mapping[str, Any], key: str, source: str, base: Path | None) -> list[ModelEntry]:
    """The `models:` (or `assistants:`) entries of a suite file: typed, their paths taken from the file's folder."""
    entries = config.get(key) or []
    if not isinstance(entries, list):
        raise ValueError(f"{source}: '{key}' must be a list of {{name, model}} entries, got {shown(entries)}.")
    models = []
    for number, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise ValueError(f"{source}: {key}[{number}] needs a 'model' (folder or Hub id).")
        allowed = {"name", "model", "revision", "published"}
        if set(entry) - allowed:
            unknown_keys = _names(shown(k) for k in set(entry) - allowed)
            raise ValueError(f"{source}: {key}[{number}] has unknown key(s) {unknown_keys}.")
        for field_name in allowed:
            _text(source, f"{key}[{number}].{field_name}", entry.get(field_name))
        models.append(
            ModelEntry(
                str(entry.get("name") or entry["model"]),
                _from_folder(entry["model"], base),
                entry.get("revision"),
                _from_folder(entry.get("published"), base),
            )
        )
    return models


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and check a suite YAML file (relative paths in it start from its folder)."""
    try:
        import yaml
    except ImportError as error:
        raise OSError("Suite files are YAML: pip install 'transformers-diffclip[eval]' (PyYAML).") from error

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Suite file not found: {path}")
    if path.stat().st_size > MAX_SUITE_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size} bytes: a suite file is at most {MAX_SUITE_BYTES} bytes.")
    try:
        config = yaml.load(read_text(path), Loader=_loader(yaml))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {shown_yaml_error(error)}") from error
    return parse_suite(config, str(path), base=path.parent)


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


__all__ = [
    "ASSISTANT_TASKS",
    "MAX_PROBE_ITER",
    "MAX_RESAMPLES",
    "MAX_SUITE_BYTES",
    "TASKS",
    "TOP_LEVEL_KEYS",
    "ModelEntry",
    "Suite",
    "check_settings",
    "load_suite",
    "parse_suite",
    "shown",
    "shown_yaml_error",
]
