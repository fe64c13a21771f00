# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""One split of an evaluation dataset, [`Split`], and the fingerprint of its files that the feature cache records
(evaluation.datasets opens splits in every layout; evaluation.mmvp reads MMVP's)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Split:
    """One split of a dataset. `task`: `classification` (targets are class indices into `class_names`),
    `retrieval` (targets are lists of captions) or `images` (targets are row indices). Exactly one of `sources`
    (image paths, read by a `DataLoader`) and `shards` (webdataset tar files, streamed in order) is set."""

    dataset: str
    split: str
    task: str
    layout: str
    fingerprint: str
    sources: list[str] | None = None
    targets: list[Any] | None = None
    shards: list[str] | None = None
    class_names: list[Any] | None = None
    class_keys: list[str] | None = None  # folder names (WordNet ids for ImageNet folders), to map class lists
    templates: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int | None:
        return len(self.sources) if self.sources is not None else self.extra.get("num_samples")

    def describe(self) -> str:
        return f"{self.dataset} ({self.split})"


def _fingerprint(entries: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:24]


_DIGEST_CHUNK = 1 << 20


def content_digest(path: str | os.PathLike) -> str:
    """A digest of a file's bytes (BLAKE2b, read once in 1 MiB chunks); `-` for a path that is not a file."""
    if not os.path.isfile(path):
        return "-"
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while chunk := file.read(_DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(paths: Sequence[str], root: Path | None = None) -> str:
    """A fingerprint of the files of a split: each one's name (relative to `root`), size and a digest of its bytes,
    so that data changed in place (same names, same sizes) is noticed. It reads every byte of the split once when
    the split is opened (BLAKE2b: ~150 MB/s on a loaded 2-core machine, faster on an idle core; see
    docs/paper-evaluation.md)."""
    entries = []
    for path in paths:
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        entries.append(f"{os.path.relpath(path, root) if root else path}:{size}:{content_digest(path)}")
    return _fingerprint(entries)


def subfolders(folder: Path) -> list[Path]:
    """The sub-folders of `folder`, sorted, hidden ones left out."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


__all__ = ["Split", "content_digest", "file_fingerprint", "subfolders"]
