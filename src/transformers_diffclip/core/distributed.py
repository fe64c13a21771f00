# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""This process's place among the processes of a run (torchrun, accelerate), and the one place the package starts,
waits on and ends a process group: [`process_group`] (start when launched by torchrun and none runs yet, Gloo on the
CPU, NCCL on CUDA; end only what it started), [`barrier`], [`joins_process_group`] (the same for a function)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch


Result = TypeVar("Result")


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


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (or accelerate): `WORLD_SIZE` above 1."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def process_device(device: str | torch.device | None) -> str | torch.device | None:
    """The device this process should use for `device` (`auto`, `cuda`, `cpu`, `cuda:1`, ...): under torchrun with
    CUDA available, `auto` and `cuda` become this process's own GPU, `cuda:<LOCAL_RANK>`; anything else as given."""
    if launched_by_torchrun() and torch.cuda.is_available() and str(device) in ("auto", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


@contextmanager
def process_group(device: str | torch.device | None = None) -> Iterator[tuple[int, int]]:
    """Join the default process group for the block, when this process was launched by torchrun (`WORLD_SIZE` > 1)
    and no group runs yet: NCCL when `device` is a CUDA device (made this process's current device), else Gloo.
    Yields `(rank, world size)` (`(0, 1)` in a single process). On exit the group is destroyed only if this call
    started it; a group someone else started (accelerate, a caller's script) is left running."""
    started = False
    if launched_by_torchrun() and torch.distributed.is_available() and not torch.distributed.is_initialized():
        cuda = device is not None and str(device) != "auto" and torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(torch.device(device))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
        started = True
    try:
        yield rank_world()
    finally:
        if started and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def end_process_group() -> None:
    """End this process's part in the default process group (what the training commands do last, once their run has
    returned and the trainer and its DDP wrapper are gone): the wrapper's reducer holds the group, and gloo's group
    destructor deadlocks when that last reference goes after the group was destroyed (a process then hangs at exit,
    after saving), so the garbage goes first."""
    import gc

    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait until every process of the default group gets here; nothing to wait for in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def joins_process_group(function: Callable[..., Result]) -> Callable[..., Result]:
    """Run `function` inside [`process_group`] (Gloo: for the barriers of a library function that may be launched by
    torchrun, whatever device its model is on)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs) -> Result:
        with process_group():
            return function(*args, **kwargs)

    return wrapper


__all__ = [
    "barrier",
    "end_process_group",
    "joins_process_group",
    "launched_by_torchrun",
    "process_device",
    "process_group",
    "rank_world",
]
