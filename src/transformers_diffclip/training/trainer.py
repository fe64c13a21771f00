# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Trainer glue: the logit-scale clamp, tower freezing, the gathered loss inside the forward, FSDP's shardable logit
scale, the original weight-decay groups and learning-rate schedule, zero-shot accuracy at every evaluation, the
training arguments of the recipe and `DiffCLIPTrainer`."""

import contextlib
import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import has_length
from transformers.utils import ModelOutput, logging

from ..core.distributed import rank_world
from ..core.text_files import load_class_names, load_templates
from ..modeling_diffclip import DiffCLIPModel
from .data import CAPTION, IMAGE
from .losses import (
    chunked_contrastive_backward,
    compute_retrieval_metrics,
    distributed_contrastive_loss,
    in_batch_retrieval_ranks,
)
from .shards import ImageTextShards, ShardLoader, StreamCountsCallback


logger = logging.get_logger(__name__)


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


# --------------------------------------------------------------------------------------------------
# The original learning-rate schedule
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Zero-shot accuracy during training
# --------------------------------------------------------------------------------------------------


class ZeroShotEvaluation:
    """Zero-shot top-1/top-5 accuracy on an ImageFolder tree, computed with the code of `diffclip eval zero-shot`
    ([`~transformers_diffclip.evaluation.evaluate_zero_shot`]), so the numbers logged during training are the
    numbers that command gives for the same model.

    The folder is scanned and the class names and templates are read once, here (a bad path fails before training
    starts). Every call rebuilds the classifier from the model's current text tower. With several processes the
    images are split between them and the hit counts summed.

    Args:
        data_dir: `DIR/<class folder>/**/<image>`.
        class_names: a class-name file (text, one per line; or JSON, see `key`), matched to the folders as
            `diffclip eval zero-shot --classnames` does; default: the folder names.
        templates: a template file with `{}` (text or JSON); default: the command's default template.
        key: the entry of JSON class-name/template files that hold several (e.g. `imagenet`).
        batch_size: images per batch.
        num_workers: DataLoader worker processes reading the images.
    """

    def __init__(self, data_dir, class_names=None, templates=None, key=None, batch_size: int = 64, num_workers=0):
        from ..evaluation import find_image_folder

        names = load_class_names(class_names, key) if class_names else None
        self.templates = load_templates(templates, key) if templates else None
        self.data = find_image_folder(data_dir, names, source=str(class_names or ""))
        self.batch_size, self.num_workers = batch_size, num_workers

    def __call__(self, model: torch.nn.Module, processor) -> dict[str, float]:
        """`{"zeroshot_top1": ..., "zeroshot_top5": ...}` (fractions) of `model` (unwrapped) now."""
        from ..evaluation import evaluate_zero_shot

        rank, world_size = rank_world()
        shard = dataclasses.replace(self.data, samples=self.data.samples[rank::world_size])
        device = next(model.parameters()).device
        counts = torch.zeros(3, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, images
        was_training = model.training
        model.eval()
        try:
            if shard.samples:
                kwargs = {} if self.templates is None else {"templates": self.templates}
                with torch.no_grad():
                    report = evaluate_zero_shot(
                        model, processor, shard, batch_size=self.batch_size, num_workers=self.num_workers, **kwargs
                    )
                count = report["num_images"]
                counts += torch.tensor([report["top1"] * count, report["top5"] * count, count], device=device)
        finally:
            model.train(was_training)
        if world_size > 1:
            torch.distributed.all_reduce(counts)
        top1, top5, count = counts.round().tolist()
        return {"zeroshot_top1": top1 / count, "zeroshot_top5": top5 / count}


# --------------------------------------------------------------------------------------------------
# Training arguments of the recipe
# --------------------------------------------------------------------------------------------------


@dataclass
class DiffCLIPTrainingArguments(TrainingArguments):
    """`TrainingArguments` and the arguments of contrastive pre-training that [`DiffCLIPTrainer`] reads."""

    contrastive_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Compute the contrastive loss of the whole batch holding activations for only this many pairs "
            "at a time (GradCache): same loss and gradients, one extra forward pass."
        },
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Pairs per contrastive batch over all processes (the negatives of each pair); sets "
            "--per_device_train_batch_size to this / number of processes."
        },
    )
    warmup_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Warm-up length in epochs of the training data (used unless --warmup_steps or --warmup_ratio "
            "is given: diffclip-pretrain sets 1 epoch, an explicit --warmup_steps still wins)."
        },
    )
    warmup_start_lr: float | None = field(
        default=None,
        metadata={
            "help": "Use the original schedule: linear warm-up from this learning rate, then cosine to "
            "--final_learning_rate (needs --lr_scheduler_type cosine)."
        },
    )
    final_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Use the original schedule: the cosine ends at this learning rate instead of 0."},
    )
    zero_shot_eval_dir: str | None = field(
        default=None,
        metadata={"help": "Image folder (one sub-folder per class): log zero-shot top-1/top-5 at every evaluation."},
    )
    zero_shot_classnames: str | None = field(
        default=None, metadata={"help": "Class names of --zero_shot_eval_dir (as `diffclip eval zero-shot`)."}
    )
    zero_shot_templates: str | None = field(
        default=None, metadata={"help": "Prompt templates of the zero-shot evaluation (text or JSON file)."}
    )
    zero_shot_key: str | None = field(
        default=None, metadata={"help": "Entry of JSON class-name/template files that hold several (e.g. imagenet)."}
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("contrastive_chunk_size", "global_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value}.")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"--warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        for name in ("warmup_start_lr", "final_learning_rate"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= self.learning_rate:
                raise ValueError(f"--{name} must be in [0, --learning_rate = {self.learning_rate}], got {value}.")
        scheduler = str(getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type))
        if self.uses_original_schedule and scheduler != "cosine":
            raise ValueError(
                "--warmup_start_lr/--final_learning_rate define the original cosine schedule; pass "
                f"--lr_scheduler_type cosine (got {self.lr_scheduler_type}), or leave them out (diffclip-pretrain "
                "sets them as its recipe: use diffclip-finetune, the same command without the recipe, for another "
                "schedule)."
            )
        for name in ("zero_shot_classnames", "zero_shot_templates", "zero_shot_key"):
            if getattr(self, name) is not None and self.zero_shot_eval_dir is None:
                raise ValueError(f"--{name} needs --zero_shot_eval_dir.")

    @property
    def uses_original_schedule(self) -> bool:
        return self.warmup_start_lr is not None or self.final_learning_rate is not None


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


def apply_global_batch_size(args) -> None:
    """With `--global_batch_size` (a [`DiffCLIPTrainingArguments`] field), set `per_device_train_batch_size` to
    `global_batch_size / world_size`. Idempotent; called before anything builds batches (the streamed training set
    makes its own) and again by [`DiffCLIPTrainer`]."""
    if not getattr(args, "global_batch_size", None):
        return
    world_size = max(args.world_size, 1)
    if args.global_batch_size % world_size:
        raise ValueError(
            f"--global_batch_size {args.global_batch_size} is not a multiple of the {world_size} processes."
        )
    per_device = args.global_batch_size // world_size
    if per_device != args.per_device_train_batch_size:
        logger.info(
            f"--global_batch_size {args.global_batch_size} over {world_size} process(es): "
            f"per_device_train_batch_size = {per_device}."
        )
    args.per_device_train_batch_size = per_device
