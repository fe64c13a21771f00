# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune DiffCLIP with transformers' `Trainer`, on one process or many (torchrun, accelerate: DDP, FSDP).

Modules: `losses` (the contrastive loss with negatives from every process, in-batch retrieval ranks), `data`
(checking rows, lazy image loading, the training augmentation, the collator), `shards` (streamed webdataset shards:
the split across processes and workers, shuffles, bad samples, resuming), `trainer` (logit-scale clamp callback,
`DiffCLIPTrainer`), `cli` (the `diffclip-finetune` command).

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

from .cli import DataTrainingArguments, ModelArguments, build_parser, load_image_caption_splits, main, run
from .data import (
    CAPTION,
    IMAGE,
    DiffCLIPDataCollator,
    ImageCaptionTransform,
    RandomResizedCropTransform,
    open_image,
    prepare_image_caption_dataset,
    random_resized_crop_box,
)
from .losses import (
    compute_retrieval_metrics,
    distributed_contrastive_loss,
    gather_with_grad,
    retrieval_ranks,
)
from .shards import ImageTextShards, ShardLoader, StreamCountsCallback, expand_shards
from .trainer import (
    DiffCLIPTrainer,
    LogitScaleClampCallback,
    decay_parameter_names,
    freeze_towers,
    gathered_loss_hook,
    make_logit_scale_shardable,
)


__all__ = [
    "CAPTION",
    "IMAGE",
    "DataTrainingArguments",
    "DiffCLIPDataCollator",
    "DiffCLIPTrainer",
    "ImageCaptionTransform",
    "ImageTextShards",
    "LogitScaleClampCallback",
    "ModelArguments",
    "RandomResizedCropTransform",
    "ShardLoader",
    "StreamCountsCallback",
    "build_parser",
    "compute_retrieval_metrics",
    "decay_parameter_names",
    "distributed_contrastive_loss",
    "expand_shards",
    "freeze_towers",
    "gather_with_grad",
    "gathered_loss_hook",
    "load_image_caption_splits",
    "main",
    "make_logit_scale_shardable",
    "open_image",
    "prepare_image_caption_dataset",
    "random_resized_crop_box",
    "retrieval_ranks",
    "run",
]
