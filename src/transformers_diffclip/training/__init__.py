# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Train DiffCLIP with transformers' `Trainer`, from a checkpoint or from scratch, on one process or many (torchrun,
accelerate: DDP, FSDP).

Modules: `losses` (the contrastive loss with negatives from every process, the same loss in chunks for batches
larger than memory (GradCache), in-batch retrieval ranks), `data` (checking rows, lazy image loading, the
training augmentation, the collator), `shards` (streamed webdataset shards: the split across processes and
workers, shuffles, bad samples, resuming), `trainer` (`DiffCLIPTrainer`, the Trainer glue), `arguments`
(`DiffCLIPTrainingArguments`), `callbacks` (the logit-scale clamp), `fsdp` (the shardable logit scale), `schedule`
(the original learning-rate schedule), `zero_shot` (zero-shot accuracy at every evaluation), `saving` (the final
save and the rescue of the weights when it fails), `run` (what the
commands do with their arguments; [`PRETRAINING_RECIPE`], the recipe of the released models, is the defaults of
`diffclip-pretrain`) and `cli` (the `diffclip-finetune` and `diffclip-pretrain` commands, `training.cli.main`).

The recipe of the released models (ORIGINAL_MODEL.md) is kept where it is a property of the training step:

- the loss is the symmetric cross-entropy over `exp(logit_scale) · cos(image, text)`, with the embeddings of every
  process as negatives, gathered *with* gradient, so loss and gradients equal those of one process running the whole
  global batch (see [`distributed_contrastive_loss`]);
- the logit scale is clamped to at most `config.max_logit_scale` (ln 100) after every optimizer step
  ([`LogitScaleClampCallback`]);
- weight decay applies to matrices and the class token only, not to biases, norms, λ vectors or the logit scale
  ([`DiffCLIPTrainer.get_decay_parameter_names`]).

The loss is computed inside the model's forward (a forward hook, [`gathered_loss_hook`]), where DDP and FSDP have
the parameters whole; under FSDP the scalar logit scale is stored as a 1-element vector, since FSDP refuses scalar
parameters ([`make_logit_scale_shardable`]; saved files keep the scalar).

Everything else (optimizer, schedule, mixed precision, gradient accumulation, checkpointing, logging, the
distributed engine) is the standard `TrainingArguments`. Gradient accumulation accumulates gradients, not
negatives: each micro-batch is contrasted against the micro-batches of the same step on the other processes.
"""

from .arguments import PRETRAINING_RECIPE, DataTrainingArguments, DiffCLIPTrainingArguments, ModelArguments
from .callbacks import LogitScaleClampCallback
from .data import (
    CAPTION,
    IMAGE,
    DiffCLIPDataCollator,
    ImageCaptionTransform,
    RandomResizedCropTransform,
    prepare_image_caption_dataset,
    random_resized_crop_box,
)
from .fsdp import make_logit_scale_shardable
from .losses import (
    chunked_contrastive_backward,
    compute_retrieval_metrics,
    distributed_contrastive_loss,
    gather_with_grad,
    in_batch_retrieval_ranks,
    split_batch,
)
from .run import (
    load_image_caption_splits,
    load_training_model_and_processor,
    run,
    save_final_model,
)
from .schedule import get_original_schedule, original_learning_rate
from .shards import ImageTextShards, ShardLoader, StreamCountsCallback, expand_shards
from .trainer import DiffCLIPTrainer, decay_parameter_names, freeze_towers, gathered_loss_hook
from .zero_shot import ZeroShotEvaluation


__all__ = [
    "CAPTION",
    "DataTrainingArguments",
    "DiffCLIPDataCollator",
    "DiffCLIPTrainer",
    "DiffCLIPTrainingArguments",
    "IMAGE",
    "ImageCaptionTransform",
    "ImageTextShards",
    "LogitScaleClampCallback",
    "ModelArguments",
    "PRETRAINING_RECIPE",
    "RandomResizedCropTransform",
    "ShardLoader",
    "StreamCountsCallback",
    "ZeroShotEvaluation",
    "chunked_contrastive_backward",
    "compute_retrieval_metrics",
    "decay_parameter_names",
    "distributed_contrastive_loss",
    "expand_shards",
    "freeze_towers",
    "gather_with_grad",
    "gathered_loss_hook",
    "get_original_schedule",
    "load_image_caption_splits",
    "load_training_model_and_processor",
    "make_logit_scale_shardable",
    "original_learning_rate",
    "prepare_image_caption_dataset",
    "random_resized_crop_box",
    "in_batch_retrieval_ranks",
    "run",
    "save_final_model",
    "split_batch",
]
