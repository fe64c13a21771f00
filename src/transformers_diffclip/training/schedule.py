# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The original (SLIP) learning-rate schedule: a linear warm-up from a start learning rate, then a cosine down to a
final one."""

import functools
import math

import torch


def original_learning_rate(
    step: int, base_lr: float, num_warmup_steps: int, num_training_steps: int, start_lr: float, final_lr: float
) -> float:
    """The learning rate of optimizer step `step` (0-based) in the original (SLIP) schedule: `num_warmup_steps`
    evenly spaced values from `start_lr` to `base_lr` (both ends included), then a cosine from `base_lr` down
    towards `final_lr` over the remaining steps (`final_lr` itself is reached one step after the last)."""
    if step < num_warmup_steps:
        if num_warmup_steps == 1:
            return start_lr
        return start_lr + (base_lr - start_lr) * step / (num_warmup_steps - 1)
    decay_steps = num_training_steps - num_warmup_steps
    if decay_steps <= 0 or step >= num_training_steps:
        return final_lr
    progress = (step - num_warmup_steps) / decay_steps
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * progress))


def _lr_factor(step, base_lr, **kwargs):
    return original_learning_rate(step, base_lr, **kwargs) / base_lr


def get_original_schedule(
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    start_lr: float = 0.0,
    final_lr: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` that sets every parameter group's learning rate to [`original_learning_rate`] of the group's
    initial learning rate; `scheduler.step()` after every optimizer step, as Trainer does."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        if group["initial_lr"] <= 0:
            raise ValueError("The original learning-rate schedule needs a positive --learning_rate.")
    kwargs = dict(
        num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, start_lr=start_lr, final_lr=final_lr
    )
    groups = optimizer.param_groups
    factors = [functools.partial(_lr_factor, base_lr=group["initial_lr"], **kwargs) for group in groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
