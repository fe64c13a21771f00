# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Images of a split in preprocessed batches, in order, for every layout: image files through evaluation.data's
`DataLoader`, webdataset shards through [`_WebdatasetBatches`] (several workers, the order kept)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .data import image_loader
from .splits import Split
from .wds_splits import iterate_webdataset


def image_batches(
    split: Split,
    image_processor,
    batch_size: int = 64,
    num_workers: int = 0,
    start: int = 0,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, list[Any]]]:
    """`(pixel_values, targets)` batches of the samples `rank, rank + world, ...` of `split` (all by default), in
    order, from the `start`-th of those on, read by a `DataLoader` with `num_workers` (webdataset shards: every
    worker reads the shards in order and decodes its own batches)."""
    if split.sources is not None:
        sources = split.sources[rank::world][start:]
        targets = split.targets[rank::world][start:]
        for pixel_values, rows in image_loader(sources, image_processor, None, batch_size, num_workers):
            yield pixel_values, [targets[row] for row in rows.tolist()]
        return
    if num_workers == 0:
        yield from _WebdatasetBatches(split, image_processor, batch_size, start, rank, world)
        return
    loader = torch.utils.data.DataLoader(
        _WebdatasetBatches(split, image_processor, batch_size, start, rank, world),
        batch_size=None,
        num_workers=num_workers,
    )
    yield from loader


class _WebdatasetBatches(torch.utils.data.IterableDataset):
    """Batches of a webdataset split in order, also from several `DataLoader` workers: worker `w` of `W` decodes
    only the batches `w, w + W, ...` (it skips the other samples without decoding them), and the `DataLoader` takes
    one batch from each worker in turn, which restores the order."""

    def __init__(self, split: Split, image_processor, batch_size: int, start: int, rank: int, world: int):
        self.split, self.image_processor, self.batch_size = split, image_processor, batch_size
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[Any]]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)

        def keep(j: int) -> bool:
            return (j // self.batch_size) % workers == worker

        images, targets = [], []
        for image, target in iterate_webdataset(self.split, self.start, self.rank, self.world, keep):
            images.append(image)
            targets.append(target)
            if len(images) == self.batch_size:
                yield self.image_processor(images=images, return_tensors="pt")["pixel_values"], targets
                images, targets = [], []
        if images:
            yield self.image_processor(images=images, return_tensors="pt")["pixel_values"], targets


__all__ = ["image_batches"]
