# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Class-name and prompt-template files: plain text (one entry per line, or `folder<TAB>name`) or the JSON files of
the original SLIP-style evaluation (`slip_labels.json`, `slip_templates.json`, one list per dataset key)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


# A label is one class name or a list of synonyms (SLIP's fer2013 entries are lists); a class with synonyms gets
# the average over all synonyms × templates, and is shown by its first name.
Label = str | Sequence[str]


def read_text_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"File not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return [line for line in lines if line]


def _read_json_entry(path: Path, key: str | None) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if isinstance(data, dict) and key is None and not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path} holds several lists; pick one with --key (one of: {', '.join(sorted(data))}).")
    if key is not None:
        if not isinstance(data, dict):
            raise ValueError(f"--key {key!r} was given but {path} holds a {type(data).__name__}, not an object.")
        if key not in data:
            raise ValueError(f"{path} has no key {key!r}; its keys are: {', '.join(sorted(data))}.")
        data = data[key]
    return data


def check_label(label: Any, where: str) -> Label:
    if isinstance(label, str) and label.strip():
        return label.strip()
    if isinstance(label, (list, tuple)) and label and all(isinstance(s, str) and s.strip() for s in label):
        return [s.strip() for s in label]
    raise ValueError(f"{where}: a class name must be a non-empty string or a non-empty list of them, got {label!r}.")


def load_class_names(path: str | os.PathLike, key: str | None = None) -> list[Label] | dict[str, Label]:
    """Class names from a file.

    - plain text: one class name per line (blank lines skipped), or `folder<TAB>name` lines mapping the folders of
      an ImageFolder tree to class names;
    - JSON: a list of names, an object `{folder: name}` (string values), or an object of such lists/objects keyed
      by dataset (the original `slip_labels.json`), of which `key` picks one. A name may be a list of synonyms (in a
      list, or in a mapping picked by `key`).

    Returns a list, or a dict from folder name to class name for the mapping forms.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Class-name file not found: {path}")
    if path.suffix.lower() == ".json":
        data = _read_json_entry(path, key)
        if isinstance(data, dict):
            names = {str(folder): check_label(name, f"{path} [{folder!r}]") for folder, name in data.items()}
        elif isinstance(data, list):
            names = [check_label(name, f"{path} entry {i}") for i, name in enumerate(data)]
        else:
            raise ValueError(f"{path}: expected a list of class names or a {{folder: name}} object.")
    else:
        lines = read_text_lines(path)
        with_tab = [("\t" in line) for line in lines]
        if any(with_tab) and not all(with_tab):
            bad = lines[with_tab.index(False)]
            raise ValueError(f"{path} mixes `folder<TAB>name` lines with plain lines (e.g. {bad!r}).")
        if all(with_tab) and lines:
            names = {}
            for line in lines:
                folder, _, name = line.partition("\t")
                names[folder.strip()] = check_label(name, f"{path} line {line!r}")
        else:
            names = lines
    if not names:
        raise ValueError(f"The class-name file {path} is empty.")
    return names


def check_templates(templates: Sequence[str]) -> list[str]:
    """Validate prompt templates: non-empty strings, each with a `{}` where the class name goes."""
    templates = list(templates)
    if not templates:
        raise ValueError("The template list is empty.")
    for template in templates:
        if not isinstance(template, str) or "{}" not in template:
            raise ValueError(f"Template {template!r} has no '{{}}' placeholder for the class name.")
    return templates


def load_templates(path: str | os.PathLike, key: str | None = None) -> list[str]:
    """Prompt templates from a plain text file (one per line) or a JSON list / object of lists (the original
    `slip_templates.json`, where `key` picks a dataset)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Template file not found: {path}")
    if path.suffix.lower() == ".json":
        data = _read_json_entry(path, key)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of templates.")
    else:
        data = read_text_lines(path)
    if not data:
        raise ValueError(f"The template file {path} is empty.")
    return check_templates(data)


__all__ = [
    "Label",
    "check_label",
    "check_templates",
    "load_class_names",
    "load_templates",
]
