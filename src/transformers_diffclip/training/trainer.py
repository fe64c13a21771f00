# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Trainer glue: `DiffCLIPTrainer` (the gathered loss inside the forward, the original weight-decay groups, the
recipe's schedule and zero-shot evaluation, streamed shards), tower freezing and the gathered-loss hook. The pieces
it uses live by concern: `arguments` (`DiffCLIPTrainingArguments`), `callbacks` (the logit-scale clamp), `fsdp`
(the shardable logit scale), `schedule` (the original learning-rate schedule), `zero_shot` (zero-shot accuracy)."""

import contextlib
import functools
import re

import torch
from transformers import Trainer
from transformers.trainer_utils import has_length
from transformers.utils import ModelOutput, logging

from ..modeling_diffclip import DiffCLIPModel
from .arguments import DiffCLIPTrainingArguments, apply_global_batch_size
from .callbacks import LogitScaleClampCallback
from .data import CAPTION, IMAGE
from .fsdp import make_logit_scale_shardable
from .losses import (
    chunked_contrastive_backward,
    compute_retrieval_metrics,
    distributed_contrastive_loss,
    in_batch_retrieval_ranks,
)
from .schedule import get_original_schedule
from .shards import ImageTextShards, ShardLoader, StreamCountsCallback
from .zero_shot import ZeroShotEvaluation


logger = logging.get_logger(__name__)

__all__ = [
    "DiffCLIPTrainer",
    "DiffCLIPTrainingArguments",
    "LogitScaleClampCallback",
    "ZeroShotEvaluation",
    "apply_global_batch_size",
    "decay_parameter_names",
    "freeze_towers",
    "gathered_loss_hook",
    "get_original_schedule",
    "make_logit_scale_shardable",
]


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

    With [`DiffCLIPTrainingArguments`] it also follows the pre-training recipe's arguments:

    - `contrastive_chunk_size`: `training_step` runs [`chunked_contrastive_backward`] (GradCache);
    - `global_batch_size`: `per_device_train_batch_size` becomes `global_batch_size / world_size`;
    - `warmup_epochs`: the warm-up in epochs of the training dataloader (which needs a length);
    - `warmup_start_lr` / `final_learning_rate`: the original schedule ([`get_original_schedule`]);
    - `zero_shot_eval_dir` (...): every evaluation adds `eval_zeroshot_top1` / `eval_zeroshot_top5`
      ([`ZeroShotEvaluation`]), also without an `eval_dataset`.

    Use it with a [`DiffCLIPDataCollator`] and datasets made by [`prepare_image_caption_dataset`].
    """

    def __init__(self, *args, clamp_logit_scale: bool = True, zero_shot: ZeroShotEvaluation | None = None, **kwargs):
        kwargs.setdefault("compute_metrics", compute_retrieval_metrics)
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        apply_global_batch_size(training_args)
        if zero_shot is None and getattr(training_args, "zero_shot_eval_dir", None):
            zero_shot = ZeroShotEvaluation(
                training_args.zero_shot_eval_dir,
                training_args.zero_shot_classnames,
                training_args.zero_shot_templates,
                training_args.zero_shot_key,
                batch_size=training_args.per_device_eval_batch_size,
                num_workers=training_args.dataloader_num_workers,
            )
        self.zero_shot = zero_shot
        self._zero_shot_prefix = None
        eval_dataset = kwargs.get("eval_dataset", args[4] if len(args) > 4 else None)
        strategy = getattr(training_args, "eval_strategy", None)
        zero_shot_only = zero_shot is not None and eval_dataset is None and strategy not in (None, "no")
        if zero_shot_only:
            # Trainer refuses an evaluation strategy without an eval_dataset; here the zero-shot folder is the
            # evaluation data. The strategy is put back at once: the training loop reads it at every step.
            training_args.eval_strategy = "no"
        try:
            super().__init__(*args, **kwargs)
        finally:
            if zero_shot_only:
                training_args.eval_strategy = strategy
        if zero_shot is not None:
            if self.is_fsdp_enabled:
                raise ValueError(
                    "Zero-shot evaluation during training (--zero_shot_eval_dir) does not run under FSDP; evaluate "
                    "the saved checkpoints with `diffclip eval zero-shot` instead."
                )
            if not (hasattr(self.processing_class, "tokenizer") and hasattr(self.processing_class, "image_processor")):
                raise ValueError("Zero-shot evaluation needs the DiffCLIP processor as `processing_class`.")
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
            ranks = in_batch_retrieval_ranks(outputs.image_embeds, outputs.text_embeds)
        # `compute_metrics` runs only when labels are present: the pair indices stand in for them.
        return loss, ranks, torch.arange(ranks.shape[0], device=ranks.device)

    # --- the recipe -------------------------------------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        chunk_size = getattr(self.args, "contrastive_chunk_size", None)
        if not chunk_size:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        # DDP: reduce gradients once, after the last chunk. FSDP reduce-scatters each chunk's gradients into its
        # shards and sums them there, which is right without no_sync (and keeps the gradients sharded).
        no_sync = None if self.is_fsdp_enabled else functools.partial(self.accelerator.no_sync, model)
        loss = chunked_contrastive_backward(
            model,
            inputs,
            chunk_size,
            hooked_module=self.accelerator.unwrap_model(model),
            backward=self.accelerator.backward,
            no_sync=no_sync,
            forward_context=self.compute_loss_context_manager,
            loss_divisor=steps,
        )
        return loss / steps

    def _steps_per_epoch(self) -> int:
        dataloader = self.get_train_dataloader()
        if not has_length(dataloader):
            raise ValueError(
                "--warmup_epochs needs a training set of known length (for streamed shards: --train_num_samples); "
                "pass --warmup_steps instead."
            )
        return max(len(dataloader) // self.args.gradient_accumulation_steps, 1)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        args = self.args
        warmup_epochs = getattr(args, "warmup_epochs", None)
        original = getattr(args, "uses_original_schedule", False)
        if self.lr_scheduler is not None or (warmup_epochs is None and not original):
            return super().create_scheduler(num_training_steps, optimizer)
        explicit = bool(args.warmup_steps) or bool(getattr(args, "warmup_ratio", None))
        if warmup_epochs is not None and not explicit:
            warmup_steps = min(round(warmup_epochs * self._steps_per_epoch()), num_training_steps)
        else:
            warmup_steps = args.get_warmup_steps(num_training_steps)
        optimizer = self.optimizer if optimizer is None else optimizer
        if original:
            self.lr_scheduler = get_original_schedule(
                optimizer,
                warmup_steps,
                num_training_steps,
                start_lr=args.warmup_start_lr or 0.0,
                final_lr=args.final_learning_rate or 0.0,
            )
        else:
            from transformers import get_scheduler

            self.lr_scheduler = get_scheduler(
                args.lr_scheduler_type,
                optimizer=optimizer,
                num_warmup_steps=warmup_steps,
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=args.lr_scheduler_kwargs,
            )
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # --- zero-shot accuracy at every evaluation ---------------------------------------------------------------

    def _zero_shot_metrics(self, prefix: str) -> dict[str, float]:
        model = self.accelerator.unwrap_model(self.model)
        return {f"{prefix}_{k}": v for k, v in self.zero_shot(model, self.processing_class).items()}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if self.zero_shot is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if eval_dataset is None and self.eval_dataset is None:
            metrics = self._zero_shot_metrics(metric_key_prefix)
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics
        self._zero_shot_prefix = metric_key_prefix
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._zero_shot_prefix = None

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        if self._zero_shot_prefix is not None:
            output.metrics.update(self._zero_shot_metrics(self._zero_shot_prefix))
            self._zero_shot_prefix = None  # once per evaluate(), even over several eval datasets
        return output
