# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The arguments of `diffclip-finetune` and `diffclip-pretrain`: the model ([`ModelArguments`]), the data
([`DataTrainingArguments`]), the training arguments of the recipe ([`DiffCLIPTrainingArguments`]) and the global
batch size rule; [`PRETRAINING_RECIPE`], the defaults of `diffclip-pretrain`."""

from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.utils import logging

from .data import IMAGE_AUGMENTATIONS


logger = logging.get_logger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "DiffCLIP model to fine-tune: a folder or Hub id with a DiffCLIP config and weights."},
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": "Train a fresh model (random weights, initialised as the original training code does) from this "
            "DiffCLIP config: a config.json file, a folder or a Hub id. Instead of --model_name_or_path."
        },
    )
    processor_name: str | None = field(
        default=None,
        metadata={
            "help": "Processor (image processor + tokenizer): a folder or Hub id; defaults to --model_name_or_path "
            "(or the folder of --config_name).",
            "aliases": ["--processor_name_or_path"],
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache Hub downloads and datasets."})
    freeze_vision_model: bool = field(
        default=False, metadata={"help": "Freeze the vision tower and its projection (LiT: locked image tower)."}
    )
    freeze_text_model: bool = field(default=False, metadata={"help": "Freeze the text tower and its projection."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel: 'eager', 'sdpa', 'flash_attention_2', ... (default: sdpa)."}
    )


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A `datasets` dataset: a Hub id, a local folder, or a builder such as 'imagefolder'."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Data folder for --dataset_name (e.g. an imagefolder with metadata.jsonl)."}
    )
    train_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines file of training pairs."})
    validation_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines file of validation pairs."})
    image_column: str | None = field(
        default=None, metadata={"help": "Column of image paths or images (default: 'image_path', else 'image')."}
    )
    caption_column: str = field(default="caption", metadata={"help": "Column of captions."})
    image_root: str | None = field(
        default=None,
        metadata={
            "help": "Folder that relative image paths are relative to (default: the folder of --train_file / "
            "--validation_file, else the current directory)."
        },
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Longest caption in tokens, longer ones are cut (default: 77)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation rows."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for the row check."})
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "Skip rows with a missing or unreadable image or an empty caption, and report how many."},
    )
    train_shards: str | None = field(
        default=None,
        metadata={
            "help": "webdataset shards of training pairs, streamed (img2dataset's layout: KEY.jpg|jpeg|png|webp with "
            "KEY.txt): brace patterns, several joined with '::', local paths or URLs, e.g. "
            "'data/cc3m-{00000..00331}.tar'. Needs --train_num_samples."
        },
    )
    validation_shards: str | None = field(
        default=None, metadata={"help": "webdataset shards of validation pairs (read in full at each evaluation)."}
    )
    train_num_samples: int | None = field(
        default=None,
        metadata={
            "help": "Samples in one epoch of --train_shards (a stream has no length), e.g. img2dataset's count."
        },
    )
    shuffle_buffer: int = field(
        default=5000,
        metadata={"help": "Samples in each data-loader worker's shuffle buffer for --train_shards (0: no shuffle)."},
    )
    max_bad_sample_fraction: float = field(
        default=0.01,
        metadata={
            "help": "Stop when more than this fraction of the --train_shards samples a process has read does not "
            "decode or lacks an image or a caption (such samples are skipped and counted)."
        },
    )
    image_augmentation: str | None = field(
        default=None,
        metadata={
            "help": "Training image augmentation: 'random_resized_crop' (the original recipe: RandomResizedCrop "
            "scale (0.5, 1.0), then ImageNet normalisation) or 'none' (the processor's resize and centre crop). "
            "Default: random_resized_crop with --train_shards, none for files and datasets (fine-tuning).",
            "choices": list(IMAGE_AUGMENTATIONS),
        },
    )


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


# The pre-training recipe of the released models (ORIGINAL_MODEL.md, the authors' SLIP-style `main.py`): the
# defaults of `diffclip-pretrain`. Every one can still be overridden on the command line.
PRETRAINING_RECIPE = {
    "do_train": True,
    "num_train_epochs": 40,
    "global_batch_size": 4096,
    "learning_rate": 5e-4,
    "lr_scheduler_type": "cosine",
    "warmup_epochs": 1.0,
    "warmup_start_lr": 1e-6,
    "final_learning_rate": 1e-5,
    "adam_beta1": 0.9,
    "adam_beta2": 0.98,
    "adam_epsilon": 1e-8,
    "weight_decay": 0.5,
    "max_grad_norm": 0.0,  # the original clips no gradients
    "bf16": True,
    "image_augmentation": "random_resized_crop",  # for files and datasets too (shards have it by default)
}
