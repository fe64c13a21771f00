# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The training arguments of the recipe ([`DiffCLIPTrainingArguments`]) and the global batch size rule."""

from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import logging


logger = logging.get_logger(__name__)


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
