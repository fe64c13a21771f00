# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""CLIP_benchmark's webdataset layout (`<root>/<split>/nshards.txt`, `0.tar` ..., `classnames.txt`,
`dataset_type.txt`): the split, its samples in order, their number. Shards are read by core.shards."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.shards import decode_image, sample_keys, shard_samples
from ..core.text_files import read_text, read_text_lines
from .splits import Split, file_fingerprint, subfolders


def _read_lines(path: Path) -> list[str] | None:
    return read_text_lines(path) if path.is_file() else None


# nshards.txt is read as at most this many digits: a count is checked against the shards present before use.
_MAX_COUNT_DIGITS = 9


def _shard_count(folder: Path, name: str, split: str) -> int:
    """The number of shards `nshards.txt` states: a positive integer, and `0.tar` ... `N-1.tar` all present (the
    folder is listed once; the count is never used to build anything before it is checked)."""
    path = folder / "nshards.txt"
    text = read_text(path).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_COUNT_DIGITS and int(text) > 0):
        shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
        raise ValueError(f"{path} must hold the number of shards, a positive integer; it holds {shown}.")
    count = int(text)
    present = {entry.name for entry in os.scandir(folder) if entry.name.endswith(".tar") and entry.is_file()}
    if count > len(present):
        raise FileNotFoundError(
            f"{path} says {name} ({split}) has {count} shards, but {folder} holds {len(present)} .tar file(s)."
        )
    missing = [f"{i}.tar" for i in range(count) if f"{i}.tar" not in present]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {count} shards of {name} ({split}) are missing from {folder}: "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}."
        )
    return count


def webdataset_split(root: Path, name: str, split: str) -> Split:
    folder = root / split
    if not (folder / "nshards.txt").is_file():
        found = [sub.name for sub in subfolders(root) if (sub / "nshards.txt").is_file()]
        raise ValueError(
            f"{name} has no {split!r} split in CLIP_benchmark's webdataset layout ({split}/nshards.txt); its splits: "
            f"{', '.join(found) or 'none'}."
        )
    shards = [str(folder / f"{i}.tar") for i in range(_shard_count(folder, name, split))]
    dataset_type = ((_read_lines(root / "dataset_type.txt") or ["classification"])[0]).lower()
    if dataset_type == "multilabel":
        raise ValueError(f"{name} is a multilabel dataset (dataset_type.txt); the paper's protocols have none.")
    task = "retrieval" if dataset_type == "retrieval" else "classification"
    class_names = _read_lines(root / "classnames.txt") if task == "classification" else None
    if task == "classification" and not class_names:
        raise ValueError(f"{name} is a classification set in webdataset layout but has no classnames.txt.")
    templates = _read_lines(root / "zeroshot_classification_templates.txt")
    return Split(
        dataset=name,
        split=split,
        task=task,
        layout="webdataset",
        fingerprint=file_fingerprint(shards, root),
        shards=shards,
        class_names=class_names,
        templates=templates,
    )


def _wds_target(sample: dict, task: str, shard: str) -> Any:
    key = sample.get("__key__")
    if task == "retrieval":
        if "txt" not in sample:
            raise ValueError(f"Sample {key} in {shard} has no 'txt' captions (a retrieval set).")
        captions = [line.strip() for line in sample["txt"].decode("utf-8").splitlines() if line.strip()]
        if not captions:
            raise ValueError(f"Sample {key} in {shard} has an empty 'txt'.")
        return captions
    if "cls" not in sample:
        raise ValueError(f"Sample {key} in {shard} has no 'cls' class index (a classification set).")
    try:
        return int(sample["cls"].decode("utf-8").strip())
    except ValueError as error:
        raise ValueError(f"Sample {key} in {shard}: 'cls' is not an integer: {error}") from error


def iterate_webdataset(
    split: Split, start: int = 0, rank: int = 0, world: int = 1, keep: Callable[[int], bool] | None = None
) -> Iterator[tuple[Image.Image, Any]]:
    """`(image, target)` of the samples `rank, rank + world, ...` of a webdataset split (all of them by default), in
    shard order, from the `start`-th of those on, and of those only the `j`-th for which `keep(j)` (samples skipped
    are neither read nor decoded). Shards are read by core.shards (its member size limit, one error per shard)."""
    before = 0  # samples in the shards before this one

    def wanted(number: int) -> bool:  # `number`: the sample's position in the whole split
        if number % world != rank or number // world < start:
            return False
        return keep is None or bool(keep(number // world - start))

    for shard in split.shards:
        offset = before
        count = 0
        for sample in shard_samples(shard, keep=lambda j, offset=offset: wanted(offset + j)):
            count += 1
            if not wanted(offset + count - 1):
                continue
            target = _wds_target(sample, split.task, shard)
            if split.task == "classification" and not 0 <= target < len(split.class_names):
                raise ValueError(
                    f"Sample {sample.get('__key__')} in {shard} has class {target}, outside the "
                    f"{len(split.class_names)} classes of classnames.txt."
                )
            yield decode_image(sample), target
        before += count


def count_webdataset_samples(split: Split) -> int:
    """The number of samples in a webdataset split (core.shards reads the tar headers only; each key once)."""
    return sum(len(sample_keys(shard, with_image=False)) for shard in split.shards)


__all__ = ["count_webdataset_samples", "iterate_webdataset", "webdataset_split"]
