# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The files of an index folder, every one written atomically:

- `manifest.json`: what the index is (model, revision, embedding kind, dimension, the model's *probe* embeddings of
  a fixed image and a fixed text, one per tower), which embedding shards its search index covers (`shards`,
  `count`) and the search index itself (`index`: file, kind, FAISS factory string, recall@10 against exact search).
  It is written last: a folder whose manifest points to a search index always has that index complete. Every
  manifest is validated when read ([`read_manifest`]): the file names it holds must be names of this folder's
  files (no path leads out of the folder), and counts, dimension and probes must be what they say.
- `.diffclip-index.lock`: held by the one build writing into the folder ([`writer_lock`]); gone when none is.
- `embeddings/part-RRR-NNNNNN.parquet`: the embeddings in Parquet shards (`id` int64, `path` string, `embedding`
  fixed-size list of float32), written by process `RRR` as the build goes; a shard is complete or absent.
- `index-<count>.faiss`: the FAISS index of the first `count` embeddings; a new file per commit, the old one removed
  after the manifest points to the new one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write_bytes, exclusive_lock, write_json


MANIFEST_NAME = "manifest.json"
EMBEDDINGS_DIR = "embeddings"
FORMAT = "diffclip-search-index"
FORMAT_VERSION = 1
EMBEDDING_KINDS = {"image": "the model's projected image embedding (get_image_features), L2-normalised, float32"}
LOCK_NAME = ".diffclip-index.lock"
PROBE_COSINE = 0.99  # the least cosine between a model's probe embedding and the stored one (another device, dtype)
_SHARD_NAME = re.compile(r"^part-(\d{3})-(\d{6})\.parquet$")
INDEX_FILE = re.compile(r"^index-\d{9}\.faiss$")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise ImportError(
            'Search indexes need pyarrow and faiss-cpu: pip install "transformers-diffclip[search]"'
        ) from error
    return pyarrow


@dataclass
class Shard:
    ids: np.ndarray
    paths: list[str]
    embeddings: np.ndarray


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of `folder`, or `None` when there is none; a manifest that is not ours, or is damaged (see
    [`validate_manifest`]), is a `ValueError`."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the index manifest {path}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not the manifest of a diffclip search index.")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: index format version {manifest.get('version')} is not supported by this version "
            f"(it reads version {FORMAT_VERSION})."
        )
    validate_manifest(manifest, path)
    return manifest


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _vector(value: Any, dim: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == dim
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)
    )


def validate_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a damaged or edited manifest before anything it names is opened: `dim` and `count` whole numbers,
    the probes `dim` finite numbers, `shards` names of embedding shards and `index.file` the name of an index file,
    each a plain file name, so that no path taken from a manifest leads out of its folder. The offending values are
    not echoed (a manifest is not trusted text)."""

    def damaged(what: str) -> ValueError:
        return ValueError(f"The index manifest {path} is damaged: {what}. Build the index again into a new folder.")

    if not isinstance(manifest.get("model"), str) or not isinstance(manifest.get("embedding"), str):
        raise damaged("`model` and `embedding` must be strings")
    dim, count = manifest.get("dim"), manifest.get("count")
    if not _whole(dim, 1):
        raise damaged("`dim` is missing or not a positive whole number")
    if not _whole(count, 0):
        raise damaged("`count` is missing or not a whole number >= 0")
    if not _vector(manifest.get("probe"), dim):
        raise damaged(f"`probe` is missing or not {dim} finite numbers")
    if "probe_text" in manifest and not _vector(manifest["probe_text"], dim):
        raise damaged(f"`probe_text` is not {dim} finite numbers")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(n, str) and _SHARD_NAME.match(n) for n in shards):
        raise damaged("`shards` must list embedding shard names (part-RRR-NNNNNN.parquet) of its folder")
    if len(set(shards)) != len(shards):
        raise damaged("`shards` names a shard twice")
    info = manifest.get("index")
    if info is None:
        return
    if not isinstance(info, dict) or not isinstance(info.get("file"), str) or not INDEX_FILE.match(info["file"]):
        raise damaged("`index.file` must be the name of an index file of its folder (index-NNNNNNNNN.faiss)")
    if not isinstance(info.get("factory"), str) or info.get("kind") not in ("exact", "compressed"):
        raise damaged("`index.factory` must be a string and `index.kind` 'exact' or 'compressed'")
    if info.get("nprobe") is not None and not _whole(info["nprobe"], 1):
        raise damaged("`index.nprobe` must be a positive whole number or null")
    if "bytes" in info and not _whole(info["bytes"], 0):
        raise damaged("`index.bytes` must be a whole number")


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    return write_json(Path(folder) / MANIFEST_NAME, manifest)


def _cosine(stored: np.ndarray, probe: np.ndarray) -> float:
    return float(stored @ probe / max(np.linalg.norm(stored) * np.linalg.norm(probe), 1e-12))


def check_compatible(
    manifest: dict[str, Any],
    model: str,
    embedding: str,
    probe: np.ndarray,
    probe_text: np.ndarray,
    folder,
) -> bool:
    """Refuse to add to or query an index built with another model or another kind of embedding.

    Models are compared by what they compute, not by name, and both towers are compared: the embeddings of a fixed
    probe image (`probe`) and of a fixed probe text (`probe_text`) must match the ones stored (cosine >= 0.99, which
    allows another device or dtype), so a renamed copy of the same model is accepted, and a fine-tuned or different
    model is refused even under the same name, also one that shares the image tower but not the text tower.

    Returns whether the text tower was checked: a manifest written before text probes were stored has none (the
    caller warns; `build_index` with the index's own model records it)."""
    if manifest.get("embedding") != embedding:
        raise ValueError(
            f"The index in {folder} holds {manifest.get('embedding')!r} embeddings, not {embedding!r} embeddings; "
            "use another --output folder for another kind of embedding."
        )
    dim = int(probe.shape[0])
    if manifest["dim"] != dim:
        raise ValueError(
            f"The index in {folder} was built with model {manifest.get('model')!r} ({manifest['dim']}-d "
            f"embeddings); {model!r} gives {dim}-d embeddings. Use that model, or another --output folder."
        )
    towers = [("images", manifest["probe"], probe), ("text", manifest.get("probe_text"), probe_text)]
    for tower, stored, mine in towers:
        if stored is None:
            continue
        cosine = _cosine(np.asarray(stored, dtype=np.float32), mine)
        if not math.isfinite(cosine) or cosine < PROBE_COSINE:
            raise ValueError(
                f"The index in {folder} was built with model {manifest.get('model')!r} (revision "
                f"{manifest.get('revision') or 'main'}); {model!r} embeds {tower} differently (probe cosine "
                f"{cosine:.4f}). Use that model, or another --output folder."
            )
    return manifest.get("probe_text") is not None


def shard_names(folder: str | os.PathLike) -> list[str]:
    """The complete embedding shards of `folder` (temporary files of interrupted writes are not listed)."""
    directory = Path(folder) / EMBEDDINGS_DIR
    if not directory.is_dir():
        return []
    return sorted(name for name in os.listdir(directory) if _SHARD_NAME.match(name))


def next_shard_name(folder: str | os.PathLike, rank: int) -> str:
    numbers = [
        int(m.group(2)) for name in shard_names(folder) if (m := _SHARD_NAME.match(name)) and int(m.group(1)) == rank
    ]
    return f"part-{rank:03d}-{max(numbers, default=-1) + 1:06d}.parquet"


def write_shard(folder: str | os.PathLike, name: str, ids, paths, embeddings: np.ndarray) -> Path:
    """Write one Parquet shard atomically."""
    pa = _pyarrow()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = embeddings.shape[1]
    table = pa.table(
        {
            "id": pa.array(np.asarray(ids, dtype=np.int64)),
            "path": pa.array([str(p) for p in paths], type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), dim),
        }
    )
    buffer = io.BytesIO()
    pa.parquet.write_table(table, buffer)
    return atomic_write_bytes(Path(folder) / EMBEDDINGS_DIR / name, buffer.getvalue())


def read_shard(folder: str | os.PathLike, name: str, columns=("id", "path", "embedding")) -> Shard:
    pa = _pyarrow()
    path = Path(folder) / EMBEDDINGS_DIR / name
    try:
        table = pa.parquet.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"Cannot read the embedding shard {path}: {error}") from error
    ids = table.column("id").to_numpy() if "id" in columns else np.empty(0, np.int64)
    paths = table.column("path").to_pylist() if "path" in columns else []
    if "embedding" in columns:
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size
        embeddings = column.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    else:
        embeddings = np.empty((0, 0), np.float32)
    return Shard(ids=ids, paths=paths, embeddings=embeddings)


def read_shards(
    folder: str | os.PathLike, names, columns=("id", "path", "embedding"), dim: int | None = None
) -> Shard:
    """Several shards concatenated, in the order given, validated: every id once, every path a string, and (with
    `dim`) embeddings of that dimension. A shard replaced by a copy of another, or edited, is a `ValueError`."""
    shards = [read_shard(folder, name, columns) for name in names]
    if not shards:
        return Shard(np.empty(0, np.int64), [], np.empty((0, 0), np.float32))
    embeddings = [s.embeddings for s in shards]
    rows = Shard(
        ids=np.concatenate([s.ids for s in shards]).astype(np.int64),
        paths=[p for s in shards for p in s.paths],
        embeddings=np.concatenate(embeddings) if "embedding" in columns else embeddings[0],
    )
    damaged = f"The embedding shards of {folder} are damaged"
    if "id" in columns and len(np.unique(rows.ids)) != len(rows.ids):
        raise ValueError(
            f"{damaged}: {len(rows.ids) - len(np.unique(rows.ids))} id(s) appear twice (a shard replaced by a copy "
            "of another?). Build the index again into a new folder."
        )
    if "path" in columns and not all(isinstance(path, str) and path for path in rows.paths):
        raise ValueError(f"{damaged}: a row has no path. Build the index again into a new folder.")
    if dim is not None and "embedding" in columns and rows.embeddings.shape[1:] != (dim,):
        raise ValueError(
            f"{damaged}: they hold {rows.embeddings.shape[1]}-d embeddings, the manifest says {dim}-d. Build the "
            "index again into a new folder."
        )
    return rows


def check_output(folder: Path, locked: bool = True) -> None:
    """Refuse, before anything is written, an index folder that is a file, or a folder holding other files and no
    index manifest. Under the writer lock (`locked`) only the lock file is left aside; before it, every hidden file
    is (a build in progress may be between its lock and its first manifest, whose temporary file is hidden)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output {folder} is a file; give a folder for the index.")
    if not folder.is_dir() or read_manifest(folder) is not None:
        return
    ours = (lambda name: name == LOCK_NAME) if locked else (lambda name: name.startswith("."))
    if any(not ours(entry.name) for entry in folder.iterdir()):
        raise ValueError(
            f"--output {folder} is a folder that holds other files and no index manifest; give a new or empty folder "
            "(nothing was written)."
        )


@contextlib.contextmanager
def writer_lock(folder: Path, announce: bool = True) -> Iterator[None]:
    """One writer per index folder: hold the folder's lock (core's [`exclusive_lock`], released when the process
    ends, however it ends) while a build lists, embeds, writes and commits. A second build into the same folder waits
    for the first to finish (saying so on stderr when `announce`), then lists what the first committed, so ids and
    shard names are never given twice. A folder this created and left empty is removed with the lock."""

    def waiting() -> None:
        if announce:
            print(
                f"waiting: another `diffclip index` is writing to {folder}; continuing when it ends", file=sys.stderr
            )

    with exclusive_lock(folder / LOCK_NAME, waiting=waiting):
        yield


__all__ = [
    "EMBEDDINGS_DIR",
    "EMBEDDING_KINDS",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "Shard",
    "check_compatible",
    "check_output",
    "read_manifest",
    "read_shard",
    "read_shards",
    "shard_names",
    "validate_manifest",
    "write_manifest",
    "write_shard",
    "writer_lock",
]
