# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The one resumable, rank-sharded embed-to-disk of the package, shared by the tasks that write the embeddings of
many images to disk (evaluation's feature cache, `diffclip embed`; search's index folders, `diffclip index`).

- **Rank-sharded.** Under torchrun, process `rank` of `world` takes the items `rank, rank + world, ...`
  ([`rank_share`]); every process writes its own chunks.
- **Chunked.** Rows computed batch by batch are handed to the task's writer `chunk_size` at a time
  ([`ChunkedRows`]), so an interrupted run loses at most the chunk in progress.
- **Resumable.** A task counts the rows (or items) its chunks already hold and starts after them, numbering its new
  chunks after the old ones (`first_chunk`).
- **Put together once.** Every process finishes its chunks, then process 0 alone puts them together (the feature
  file, the FAISS index) while the others wait ([`finish_on_rank_zero`]).

What a chunk is on disk (safetensors parts, Parquet shards) is the task's: this module only decides which rows go
together and when.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from .distributed import barrier


Result = TypeVar("Result")
Rows = Mapping[str, Any]  # name -> a torch.Tensor or numpy array, one row per item


def rank_share(count: int, rank: int = 0, world: int = 1) -> range:
    """The positions, among `count` items, that process `rank` of `world` embeds: `rank, rank + world, ...`."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world) and world >= 1, got rank {rank} of {world}.")
    return range(rank, count, world)


def _concatenate(parts: list) -> Any:
    return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts)


class ChunkedRows:
    """Rows collected batch by batch and written `chunk_size` at a time by `write(index, arrays, records)`.

    `arrays` maps names to `(rows, ...)` tensors or arrays (all with one row per record), `records` are the rows'
    Python values (targets, ids, paths). Chunks are numbered from `first_chunk` (the chunks an earlier, interrupted
    run left). [`add`] writes every chunk that fills up; [`flush`] writes the rows left as one last, smaller chunk;
    [`take`] returns them without writing (a single process keeps its last rows in memory).
    """

    def __init__(
        self, write: Callable[[int, dict[str, Any], list], None], chunk_size: int, first_chunk: int = 0
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"The chunk size must be at least 1, got {chunk_size}.")
        self.write, self.chunk_size, self.next_chunk = write, chunk_size, first_chunk
        self.arrays: dict[str, list] = {}
        self.records: list = []

    def __len__(self) -> int:
        """The rows waiting to be written."""
        return len(self.records)

    def add(self, arrays: Rows, records: Sequence) -> None:
        """Add the rows of one batch; write every chunk that is full."""
        lengths = {name: len(value) for name, value in arrays.items()}
        if any(length != len(records) for length in lengths.values()):
            raise ValueError(f"Every array needs one row per record ({len(records)}), got {lengths}.")
        if self.records and set(arrays) != set(self.arrays):
            raise ValueError(f"Rows named {sorted(arrays)} added to rows named {sorted(self.arrays)}.")
        for name, value in arrays.items():
            self.arrays.setdefault(name, []).append(value)
        self.records.extend(records)
        while len(self.records) >= self.chunk_size:
            self._write(self.chunk_size)

    def flush(self) -> None:
        """Write the rows left, if any, as one chunk."""
        if self.records:
            self._write(len(self.records))

    def take(self) -> tuple[dict[str, Any], list]:
        """The rows left (`({name: array}, records)`), removed without being written."""
        arrays = {name: _concatenate(parts) for name, parts in self.arrays.items()} if self.records else {}
        records, self.arrays, self.records = self.records, {}, []
        return arrays, records

    def _write(self, size: int) -> None:
        arrays = {name: _concatenate(parts) for name, parts in self.arrays.items()}
        self.write(self.next_chunk, {name: value[:size] for name, value in arrays.items()}, self.records[:size])
        self.next_chunk += 1
        self.arrays = {name: [value[size:]] for name, value in arrays.items()}
        self.records = self.records[size:]


def finish_on_rank_zero(finish: Callable[[], Result], rank: int) -> Result | None:
    """Once every process has written its chunks: `finish()` on process 0 (put the chunks together) while the
    others wait, then every process goes on. Returns `finish()`'s result on process 0, `None` on the others."""
    barrier()  # every process has written its chunks
    result = finish() if rank == 0 else None
    barrier()  # what process 0 wrote is there for every process
    return result


__all__ = ["ChunkedRows", "finish_on_rank_zero", "rank_share"]
