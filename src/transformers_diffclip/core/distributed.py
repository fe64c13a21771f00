# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""This process's place among the processes of a run (torchrun, accelerate)."""

from __future__ import annotations

import os

import torch


def rank_world(from_environment: bool = False) -> tuple[int, int]:
    """`(rank, world size)` of the default process group; `(0, 1)` when torch.distributed is not running.

    With `from_environment`, a process outside an initialised group (a data-loader worker started by `spawn`) reads
    the `RANK` and `WORLD_SIZE` that torchrun and accelerate set instead.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if from_environment:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return 0, 1


__all__ = ["rank_world"]
