# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The files of an index folder, every one written atomically:

- `manifest.json`: what the index is (model, revision, embedding kind, dimension, the model's *probe* embedding),
  which embedding shards its search index covers (`shards`, `count`) and the search index itself (`index`: file,
  kind, FAISS factory string, recall@10 against exact search). It is written last: a folder whose manifest points
  to a search index always has that index complete.
- `embeddings/part-RRR-NNNNNN.parquet`: the embeddings in Parquet shards (`id` int64, `path` string, `embedding`
  fixed-size list of float32), written by process `RRR` as the build goes; a shard is complete or absent.
- `index-<count>.faiss`: the FAISS index of the first `count` embeddings; a new file per commit, the old one removed
  after the manifest points to the new one.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write_bytes, write_json


MANIFEST_NAME = "manifest.json"
EMBEDDINGS_DIR = "embeddings"
FORMAT = "diffclip-search-index"
FORMAT_VERSION = 1
EMBEDDING_KINDS = {"image": "the model's projected image embedding (get_image_features), L2-normalised, float32"}
_SHARD_NAME = re.compile(r"^part-(\d{3})-(\d{6})\.parquet$")


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
    """The manifest of `folder`, or `None` when there is none; a manifest that is not ours is a `ValueError`."""
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
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    return write_json(Path(folder) / MANIFEST_NAME, manifest)


def check_compatible(
    manifest: dict[str, Any], model: str, embedding: str, dim: int, probe: np.ndarray, folder
) -> None:
    """Refuse to add to or query an index built with another model or another kind of embedding.

    Models are compared by what they compute, not by name: the embedding of a fixed probe image must match the one
    stored (cosine >= 0.99, which allows another device or dtype), so a renamed copy of the same model is accepted
    and a fine-tuned or different model is refused even under the same name."""
    if manifest.get("embedding") != embedding:
        raise ValueError(
            f"The index in {folder} holds {manifest.get('embedding')!r} embeddings, not {embedding!r} embeddings; "
            "use another --output folder for another kind of embedding."
        )
    stored = np.asarray(manifest.get("probe", []), dtype=np.float32)
    if manifest.get("dim") != dim or stored.shape != probe.shape:
        raise ValueError(
            f"The index in {folder} was built with model {manifest.get('model')!r} ({manifest.get('dim')}-d "
            f"embeddings); {model!r} gives {dim}-d embeddings. Use that model, or another --output folder."
        )
    cosine = float(stored @ probe / max(np.linalg.norm(stored) * np.linalg.norm(probe), 1e-12))
    if not math.isfinite(cosine) or cosine < 0.99:
        raise ValueError(
            f"The index in {folder} was built with model {manifest.get('model')!r} (revision "
            f"{manifest.get('revision') or 'main'}); {model!r} embeds images differently (probe cosine "
            f"{cosine:.4f}). Use that model, or another --output folder."
        )


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


def read_shards(folder: str | os.PathLike, names, columns=("id", "path", "embedding")) -> Shard:
    """Several shards concatenated, in the order given."""
    shards = [read_shard(folder, name, columns) for name in names]
    if not shards:
        return Shard(np.empty(0, np.int64), [], np.empty((0, 0), np.float32))
    embeddings = [s.embeddings for s in shards]
    return Shard(
        ids=np.concatenate([s.ids for s in shards]).astype(np.int64),
        paths=[p for s in shards for p in s.paths],
        embeddings=np.concatenate(embeddings) if "embedding" in columns else embeddings[0],
    )


__all__ = [
    "EMBEDDINGS_DIR",
    "EMBEDDING_KINDS",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Shard",
    "check_compatible",
    "read_manifest",
    "read_shard",
    "read_shards",
    "shard_names",
    "write_manifest",
    "write_shard",
]
