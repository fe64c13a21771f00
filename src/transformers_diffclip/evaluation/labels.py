# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Class names and prompt templates as evaluation uses them: labels from the command line, filling templates,
synonyms and duplicate class names. Reading them from files is `core.text_files`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..core.text_files import Label


DEFAULT_TEMPLATE = "a photo of a {}."


def parse_label_list(text: str) -> list[str]:
    """Labels from a comma-separated string (`"cat,dog, a red car"`); surrounding spaces are dropped."""
    labels = [label.strip() for label in text.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise ValueError(f"The label list {text!r} is empty; give comma-separated labels such as 'cat,dog'.")
    return labels


def fill_template(template: str, name: str) -> str:
    """The prompt for one class name; same as `template.format(name)` for templates whose only braces are `{}`."""
    return template.replace("{}", name)


def synonyms(label: Label) -> list[str]:
    return [label] if isinstance(label, str) else list(label)


def display_name(label: Label) -> str:
    return label if isinstance(label, str) else label[0]


def label_key(label: Label) -> str | tuple[str, ...]:
    """What identifies a class when class lists are matched by name: the name, or the tuple of synonyms."""
    return label if isinstance(label, str) else tuple(label)


def duplicate_labels(labels: Sequence[Label]) -> list[str]:
    """The class names that appear more than once in `labels` (shown by their first name), in order of first
    appearance. Classes with one name get the same class embedding, so every image of either ties between them
    (the SLIP ImageNet list names "missile" and "sunglasses" twice each)."""
    counts = Counter(label_key(label) for label in labels)
    seen, duplicates = set(), []
    for label in labels:
        key = label_key(label)
        if counts[key] > 1 and key not in seen:
            seen.add(key)
            duplicates.append(display_name(label))
    return duplicates


__all__ = [
    "DEFAULT_TEMPLATE",
    "display_name",
    "duplicate_labels",
    "fill_template",
    "label_key",
    "parse_label_list",
    "synonyms",
]
