# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""[`build_index`]: embed the images of a source into an index folder and commit a FAISS index over them.

The build is resumable and incremental. Embeddings go to Parquet shards of `shard_size` rows as they are computed;
an interrupted build loses at most the shard in progress. A later run with the same folder reads the paths already
embedded (committed or not), embeds only the images it has not seen, and commits: the existing FAISS index gets the
new vectors added (no rebuild; `rebuild=True` chooses and trains the index again for the new size), or a new one is
built when there is none yet. New images get ids after the largest id used so far; an image keeps its id.

Several processes (`torchrun --nproc-per-node N -m transformers_diffclip.cli index ...`) split the new images
round-robin, each writing its own shards; process 0 commits after all have finished.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.distributed import joins_process_group, rank_world
from ..core.embed_to_disk import ChunkedRows, finish_on_rank_zero, rank_share
from ..core.images import is_url
from ..core.loading import load_model_and_processor
from ..export import check_same_backend
from .embed import embed_items, probe_embeddings
from .index import (
    DEFAULT_EXACT_BELOW,
    SearchIndex,
    build_faiss_index,
    new_faiss_index,
    read_faiss_index,
    write_faiss_index,
)
from .sources import canonical_item, list_images
from .store import (
    EMBEDDING_KINDS,
    FORMAT,
    FORMAT_VERSION,
    check_compatible,
    check_output,
    next_shard_name,
    read_manifest,
    read_shards,
    shard_names,
    write_manifest,
    write_shard,
    writer_lock,
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _world() -> tuple[int, int]:
    """`(rank, world)` in the process group [`build_index`] runs in (under torchrun, core's `joins_process_group`
    starts one over the CPU (gloo) for the barriers and ends it afterwards)."""
    return rank_world()


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _model_name(model_name: str | os.PathLike) -> str:
    name = os.fspath(model_name)
    return str(Path(name).expanduser().resolve()) if Path(name).expanduser().is_dir() else name


def shown_name(item: str) -> str:
    """An image's name as it can be printed and stored: a file name that is not UTF-8 (bytes Python keeps as
    surrogates) with those bytes written `\\xff`."""
    return item.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def storable_items(items: list[str], announce: bool = True) -> tuple[list[str], list[dict[str, str]]]:
    """`(items, refused)`: the items whose names can be stored (UTF-8), and a `{"path", "problem"}` for each that
    cannot (a file named with bytes that are not UTF-8), each named on stderr (when `announce`); skipped, so a
    rerun works."""
    kept, refused = [], []
    for item in items:
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            problem = "its name is not UTF-8 text, which the index cannot store; rename the file"
            refused.append({"path": shown_name(item), "problem": problem})
            if announce:
                print(f"warning: skipped {shown_name(item)}: {problem}", file=sys.stderr)
        else:
            kept.append(item)
    return kept, refused


def next_free_ids(folder: Path) -> tuple[set[str], int]:
    """What the index folder already holds (read under the writer lock): the canonical paths embedded so far,
    committed or not, and the first id not yet given. Stored paths are canonical already; only relative ones, stored
    by older versions relative to the folder their build ran in, are resolved (from this one)."""
    known = read_shards(folder, shard_names(folder), columns=("id", "path"))
    seen = {path if os.path.isabs(path) or is_url(path) else canonical_item(path) for path in known.paths}
    return seen, int(known.ids.max()) + 1 if len(known.ids) else 0


@joins_process_group
def build_index(
    model: str | os.PathLike,
    data: str | os.PathLike | Sequence[str],
    output: str | os.PathLike,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "float32",
    batch_size: int = 64,
    num_workers: int = 0,
    shard_size: int = 10_000,
    exact_below: int = DEFAULT_EXACT_BELOW,
    factory: str | None = None,
    rebuild: bool = False,
    progress: bool = True,
    loaded: tuple[Any, Any] | None = None,
) -> SearchIndex | None:
    """Embed the images of `data` (a folder, a list file, shards or a list; see [`sources.list_images`]) with
    `model`'s image tower into the index folder `output`, then commit a FAISS index over all of them.

    Args:
        model: the model's folder, Hub id or original checkpoint (loaded with the package's loader), also the name
            recorded in the manifest.
        loaded: an already loaded `(model, processor)` pair for `model` (skips loading).
        shard_size: embeddings per Parquet shard (the most an interruption loses).
        exact_below: index sizes below this get exact search; larger ones a compressed index.
        factory: a FAISS `index_factory` string that overrides the choice (inner product); checked on the model's
            dimension before any image is embedded.
        rebuild: build the FAISS index anew over everything instead of adding the new vectors to it.

    Returns the opened [`SearchIndex`] (on process 0; other processes of a distributed run get `None`). An index
    folder built with another model or embedding is refused before anything is written. One build writes into a
    folder at a time: a second waits for the first (see [`store.writer_lock`]).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}.")
    if exact_below < 0:
        raise ValueError(f"exact_below must be >= 0, got {exact_below}.")
    folder = Path(output)
    check_output(folder, locked=False)  # and again under the lock
    rank, world = _world()
    items, refused = storable_items(list_images(data), announce=rank == 0)
    name = _model_name(model)
    if loaded is None:
        loaded = load_model_and_processor(model, device, dtype, revision=revision, trust_remote_code=trust_remote_code)
    network, processor = loaded
    probes = probe_embeddings(network, processor)
    if factory is not None:
        new_faiss_index(factory, int(probes[0].shape[0]))
    # Everything decided from here on (which images are new, their ids, the shard names) comes from what the folder
    # holds under its writer lock, taken by process 0 for all the processes of a distributed build.
    with writer_lock(folder) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            check_output(folder)
        _barrier(world)  # the other processes wait while process 0 waits for the lock
        manifest = _open_manifest(folder, name, revision, network, probes, rank, world)
        seen, first_id = next_free_ids(folder)
        pending = [item for item in items if item not in seen]
        mine = list(rank_share(len(pending), rank, world))
        _barrier(world)  # every process has listed the shards before any writes a new one

        failed: list[dict[str, str]] = list(refused)

        def write(_, arrays: dict, records: list) -> None:
            """One Parquet shard of `(id, path)` records and their vectors (named by the shards the folder holds)."""
            ids, paths = [i for i, _ in records], [path for _, path in records]
            write_shard(folder, next_shard_name(folder, rank), ids, paths, arrays["vectors"])

        shards = ChunkedRows(write, shard_size)

        if mine:
            batches = embed_items(network, processor, [pending[p] for p in mine], batch_size, num_workers)
            total = (len(mine) + batch_size - 1) // batch_size
            shown = progress and rank == 0
            for positions, vectors, bad in tqdm(
                batches, disable=not shown, file=sys.stderr, total=total, desc="Embedding images", unit="batch"
            ):
                for position, problem in bad:
                    failed.append({"path": pending[mine[position]], "problem": problem})
                    print(f"warning: skipped {pending[mine[position]]}: {problem}", file=sys.stderr)
                if positions:
                    if not np.isfinite(vectors).all():
                        raise ValueError(
                            "The model gave non-finite image embeddings (NaN or infinity); nothing committed."
                        )
                    shards.add({"vectors": vectors}, [(first_id + mine[p], pending[mine[p]]) for p in positions])
            shards.flush()
        # process 0 commits once every process has written its shards; the others end when the commit is done
        finish_on_rank_zero(lambda: _commit(folder, manifest, exact_below, factory, rebuild, failed), rank)
    return SearchIndex(folder) if rank == 0 else None


def _open_manifest(folder: Path, name: str, revision, network, probes, rank: int, world: int) -> dict:
    """The folder's manifest, checked against the model (both towers), or a new one written by process 0."""
    probe, probe_text = probes
    manifest = read_manifest(folder)
    if manifest is not None:
        text_checked = check_compatible(manifest, name, "image", probe, probe_text, folder)
        if not text_checked and rank == 0 and name == manifest["model"]:
            manifest["probe_text"] = [float(x) for x in probe_text]  # an older manifest: recorded at the commit
        check_same_backend(manifest.get("backend"), network, f"The index in {folder}")
    elif rank == 0:
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": name,
            "revision": revision,
            "model_type": getattr(network.config, "model_type", None),
            "embedding": "image",
            "embedding_description": EMBEDDING_KINDS["image"],
            "dim": int(probe.shape[0]),
            "probe": [float(x) for x in probe],
            "probe_text": [float(x) for x in probe_text],
            "backend": getattr(network, "backend", None),  # the ONNX backend's {backend, precision, ...}; torch: None
            "count": 0,
            "shards": [],
            "index": None,
            "created": _now(),
        }
        folder.mkdir(parents=True, exist_ok=True)
        write_manifest(folder, manifest)
    _barrier(world)
    return manifest if rank == 0 else read_manifest(folder)


def _commit(folder: Path, manifest: dict, exact_below: int, factory: str | None, rebuild: bool, failed) -> None:
    """Add the shards not yet in the FAISS index to it (or build it), write it under a new name, then the
    manifest that points to it, then remove the old index file."""
    names = shard_names(folder)
    committed = list(manifest.get("shards") or [])
    new = [name for name in names if name not in committed]
    old = manifest.get("index")
    if old and not new and not rebuild and factory is None:
        manifest["failed"] = failed
        write_manifest(folder, manifest)
        return
    if old and not rebuild and factory is None:
        index = read_faiss_index(folder, old)
        if index.ntotal != manifest["count"]:
            raise ValueError(f"The index in {folder} is damaged ({old['file']}); run again with --rebuild.")
        rows = read_shards(folder, new, dim=manifest["dim"])
        index.add_with_ids(np.ascontiguousarray(rows.embeddings), rows.ids)
        info = dict(old, ntotal=int(index.ntotal))
        if info["kind"] == "compressed":
            info["recall_measured_at"] = old.get("recall_measured_at", old["ntotal"])
    else:
        rows = read_shards(folder, names, dim=manifest["dim"])
        if not len(rows.ids):
            raise ValueError(f"No image of the source could be read, so {folder} has nothing to index.")
        index, info = build_faiss_index(rows.ids, rows.embeddings, exact_below=exact_below, factory=factory)
    info["file"] = f"index-{int(index.ntotal):09d}.faiss"
    info["bytes"] = write_faiss_index(index, folder / info["file"])
    manifest.update(count=int(index.ntotal), shards=names, index=info, updated=_now(), failed=failed)
    write_manifest(folder, manifest)
    for stale in folder.glob("index-*.faiss"):  # the previous index, and any left by an interrupted commit
        if stale.name != info["file"]:
            stale.unlink(missing_ok=True)


__all__ = ["build_index"]
