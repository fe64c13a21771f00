# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The logit-scale clamp of the original recipe, as a `TrainerCallback`."""

import torch
from transformers import TrainerCallback


def _logit_scale_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "logit_scale"]


class LogitScaleClampCallback(TrainerCallback):
    """Clamps the model's `logit_scale` (a log) to at most `max_value` after every optimizer step, as the original
    training did (ln 100: similarities are scaled by at most 100).

    `max_value` defaults to the model's `config.max_logit_scale`. The clamp is elementwise on the parameter's data,
    so it also works where the parameter is sharded (FSDP with `use_orig_params`, FSDP2).
    """

    def __init__(self, max_value: float | None = None):
        self.max_value = max_value

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        max_value = self.max_value
        if max_value is None:
            config = getattr(model, "config", None)
            max_value = getattr(config, "max_logit_scale", None)
        if max_value is None:
            return
        with torch.no_grad():
            for parameter in _logit_scale_parameters(model):
                parameter.data.clamp_(max=max_value)
