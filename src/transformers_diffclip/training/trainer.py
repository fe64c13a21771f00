# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Trainer glue: the logit-scale clamp, tower freezing, the gathered loss inside the forward, FSDP's shardable logit
scale, the original weight-decay groups and `DiffCLIPTrainer`."""

import contextlib
import re

import torch
from transformers import Trainer, TrainerCallback
from transformers.utils import ModelOutput

from ..modeling_diffclip import DiffCLIPModel
from .data import CAPTION, IMAGE
from .losses import compute_retrieval_metrics, distributed_contrastive_loss, retrieval_ranks
from .shards import ImageTextShards, ShardLoader, StreamCountsCallback


# --------------------------------------------------------------------------------------------------
# Trainer glue
# --------------------------------------------------------------------------------------------------


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


def freeze_towers(model: DiffCLIPModel, vision: bool = False, text: bool = False) -> None:
    """Freeze the vision tower (LiT-style locked image tower) and/or the text tower, each with its projection. The
    logit scale stays trainable."""
    modules = []
    if vision:
        modules += [model.vision_model, model.visual_projection]
    if text:
        modules += [model.text_model, model.text_projection]
    for module in modules:
        module.requires_grad_(False)


def _replace_loss(module, args, output):
    # A module-level function (not a closure), so that a compiled model sees the same hook at every step.
    if isinstance(output, ModelOutput) and output.get("loss") is not None:
        output["loss"] = distributed_contrastive_loss(output.image_embeds, output.text_embeds, module.logit_scale)
    return output


@contextlib.contextmanager
def gathered_loss_hook(model: torch.nn.Module):
    """Within this context, a forward of `model` with `return_loss=True` returns [`distributed_contrastive_loss`]
    (negatives from every process) as its `loss` instead of the model's own single-process loss."""

    handle = model.register_forward_hook(_replace_loss)
    try:
        yield
    finally:
        handle.remove()


def _logit_scale_as_scalar(module, state_dict, prefix, local_metadata):
    key = prefix + "logit_scale"
    if key in state_dict and state_dict[key].shape == (1,):
        state_dict[key] = state_dict[key].reshape(())


def _logit_scale_as_vector(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    key = prefix + "logit_scale"
    if key in state_dict and state_dict[key].dim() == 0:
        state_dict[key] = state_dict[key].reshape(1)


def make_logit_scale_shardable(model: DiffCLIPModel) -> DiffCLIPModel:
    """Store `model.logit_scale` as a 1-element vector instead of a scalar, in place, for FSDP.

    FSDP (1 and 2) refuses 0-dimensional parameters ("Change logit_scale to a 1D tensor with numel equal to 1").
    The forward broadcasts either shape the same way. State dicts keep the scalar: `state_dict()` (and so
    `save_pretrained` and Trainer checkpoints) writes it as a scalar and `load_state_dict` accepts a scalar, so saved
    folders load into an ordinary `DiffCLIPModel`. [`DiffCLIPTrainer`] calls this when FSDP is enabled.
    """
    parameter = model.logit_scale
    if parameter.dim() == 0:
        model.logit_scale = torch.nn.Parameter(parameter.detach().reshape(1), requires_grad=parameter.requires_grad)
        model.register_state_dict_post_hook(_logit_scale_as_scalar)
        model.register_load_state_dict_pre_hook(_logit_scale_as_vector)
    return model


_WRAPPER_PREFIXES = re.compile(r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod|module)\.")


def _canonical_name(name: str) -> str:
    """A parameter name without the prefixes that DDP, FSDP, activation checkpointing and torch.compile add."""
    previous = None
    while previous != name:
        previous, name = name, _WRAPPER_PREFIXES.sub(r"\1", name)
    return name


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters that weight decay applies to in the original recipe (SLIP): every tensor of 2 or
    more dimensions — matrices, embeddings, the patch convolution — and the class token (a 1 × 1 × W tensor there,
    a vector here). Not biases, norm weights, λ vectors or the logit scale."""
    return {
        _canonical_name(name)
        for name, parameter in model.named_parameters()
        if parameter.dim() >= 2 or name.endswith("class_embedding")
    }


class DiffCLIPTrainer(Trainer):
    """`Trainer` for contrastive image–text training of [`DiffCLIPModel`].

    Differences from the stock `Trainer`, each through one of its extension points:

    - `compute_loss`: [`distributed_contrastive_loss`] — negatives gathered with gradient from every process —
      computed in the model's forward through [`gathered_loss_hook`];
    - with FSDP, [`make_logit_scale_shardable`] is applied to the model;
    - a [`LogitScaleClampCallback`] is added (pass `clamp_logit_scale=False` to leave it out);
    - `get_decay_parameter_names`: the original weight-decay groups ([`decay_parameter_names`]);
    - `prediction_step` returns retrieval ranks, and `compute_metrics` defaults to [`compute_retrieval_metrics`],
      so `evaluate()` reports in-batch retrieval accuracy and recall@5 next to the loss;
    - the data collator's `image` and `caption` columns survive `remove_unused_columns`;
    - a streamed training set ([`ImageTextShards`]) gets its own [`ShardLoader`] (it splits itself across processes
      and workers), and its sample counts (`train_skipped_samples`, ...) are logged with the loss.

    Use it with a [`DiffCLIPDataCollator`] and datasets made by [`prepare_image_caption_dataset`].
    """

    def __init__(self, *args, clamp_logit_scale: bool = True, **kwargs):
        kwargs.setdefault("compute_metrics", compute_retrieval_metrics)
        super().__init__(*args, **kwargs)
        # The loss is a per-batch mean computed here, not by the model from `num_items_in_batch`: the Trainer
        # divides it by the gradient-accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        if self.is_fsdp_enabled:
            make_logit_scale_shardable(self.accelerator.unwrap_model(self.model))
        self._decay_names = decay_parameter_names(self.model)
        callbacks = self.callback_handler.callbacks
        if clamp_logit_scale and not any(isinstance(c, LogitScaleClampCallback) for c in callbacks):
            self.add_callback(LogitScaleClampCallback())
        if isinstance(self.train_dataset, ImageTextShards):
            self.add_callback(StreamCountsCallback())

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in (IMAGE, CAPTION) if c not in self._signature_columns]

    def get_train_dataloader(self):
        if isinstance(self.train_dataset, ImageTextShards):
            args = self.args
            return ShardLoader(
                self.train_dataset,
                num_workers=args.dataloader_num_workers,
                pin_memory=args.dataloader_pin_memory,
                prefetch_factor=args.dataloader_prefetch_factor,
                multiprocessing_context=getattr(args, "dataloader_multiprocessing_context", None),
            )
        return super().get_train_dataloader()

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        loader = self.callback_handler.train_dataloader
        if "loss" in logs and isinstance(loader, ShardLoader):  # a training log: every process is here
            logs.update(loader.log_metrics(self.args.device))
        super().log(logs, *args, **kwargs)

    def get_decay_parameter_names(self, model) -> list[str]:
        return [name for name, _ in model.named_parameters() if _canonical_name(name) in self._decay_names]

    def _forward(self, model, inputs):
        """The model's forward with the loss replaced by [`distributed_contrastive_loss`].

        The loss is computed by a forward hook on the unwrapped model, i.e. inside the forward of whatever wraps it
        (DDP, FSDP): only there are the parameters guaranteed whole — FSDP reshards them when its forward returns.
        """
        inputs = {k: v for k, v in inputs.items() if k != "return_loss"}
        with gathered_loss_hook(self.accelerator.unwrap_model(model)):
            return model(**inputs, return_loss=True, return_dict=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = self._forward(model, inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = self._forward(model, inputs)
            loss = outputs.loss.detach()
            if prediction_loss_only:
                return loss, None, None
            ranks = retrieval_ranks(outputs.image_embeds, outputs.text_embeds)
        # `compute_metrics` runs only when labels are present: the pair indices stand in for them.
        return loss, ranks, torch.arange(ranks.shape[0], device=ranks.device)
