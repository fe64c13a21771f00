# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""What `diffclip-finetune` and `diffclip-pretrain` do: their data and model loading, and the run ([`run`]). Their
arguments are `arguments`; the commands themselves are `cli`."""

import codecs
import os
import sys
from pathlib import Path

from transformers import AutoConfig, AutoModel, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..configuration_diffclip import DiffCLIPConfig
from ..core.loading import inspect_model, load_model, load_processor
from ..modeling_diffclip import DiffCLIPModel
from ..original import resolve_pretrained
from .arguments import DataTrainingArguments, ModelArguments, apply_global_batch_size
from .data import (
    DiffCLIPDataCollator,
    RandomResizedCropTransform,
    prepare_image_caption_dataset,
)
from .saving import finished_training, save_final_model
from .shards import ImageTextShards, ShardLoader, expand_shards, resume_position
from .trainer import DiffCLIPTrainer, freeze_towers


_DATA_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


def _not_utf8(file: Path) -> str | None:
    """Where `file` stops being UTF-8 text ('it is not UTF-8 text (byte 0xe9 at offset 3)'), or None."""
    offset = 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                return (
                    f"it is not UTF-8 text (byte {error.object[error.start]:#04x} near offset {offset + error.start})"
                )
            offset += len(chunk)
    return None


def _data_file_split(path: str, split: str, cache_dir: str | None):
    import datasets

    file = Path(path).expanduser()
    builder = _DATA_FILE_BUILDERS.get(file.suffix.lower())
    if builder is None:
        raise ValueError(
            f"--{split}_file {path!r}: expected a .csv, .json or .jsonl file (JSON Lines: one object per line)."
        )
    if not file.is_file():
        raise FileNotFoundError(f"--{split}_file {path!r} does not exist.")
    try:
        return datasets.load_dataset(builder, data_files=str(file), split="train", cache_dir=cache_dir)
    except Exception as error:  # datasets wraps parser errors (UnicodeDecodeError, ArrowInvalid) in its own types
        problem = _not_utf8(file)
        if problem is None:
            cause = error
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
            problem = f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]}"
        raise ValueError(f"--{split}_file {path!r} cannot be read as {builder.upper()}: {problem}.") from error


def load_image_caption_splits(data_args: DataTrainingArguments, cache_dir: str | None = None) -> dict[str, tuple]:
    """Load the raw splits named by `data_args`: `{"train" | "validation": (dataset, image_root)}`, where `image_root`
    is the folder relative image paths of that split are relative to."""
    import datasets

    splits = {}
    if data_args.dataset_name is not None:
        loaded = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, data_dir=data_args.data_dir, cache_dir=cache_dir
        )
        for split, dataset in loaded.items():
            splits[split] = (dataset, data_args.image_root)
    for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file)):
        if path is not None:
            image_root = data_args.image_root or str(Path(path).expanduser().resolve().parent)
            splits[split] = (_data_file_split(path, split, cache_dir), image_root)
    if not splits:
        raise ValueError(
            "No data: pass --train_file/--validation_file, --dataset_name (and --data_dir), or --train_shards/"
            "--validation_shards."
        )
    return splits


def _check_shard_arguments(data_args: DataTrainingArguments) -> None:
    if data_args.train_shards is not None:
        if data_args.train_file is not None or data_args.dataset_name is not None:
            raise ValueError("Pass either --train_shards or --train_file/--dataset_name, not both.")
        if data_args.train_num_samples is None or data_args.train_num_samples <= 0:
            raise ValueError(
                "--train_shards needs --train_num_samples, the number of samples in one epoch (a stream has no length;"
                " img2dataset's stats give it)."
            )
    if data_args.validation_shards is not None and data_args.validation_file is not None:
        raise ValueError("Pass either --validation_shards or --validation_file, not both.")


def build_shard_datasets(
    data_args: DataTrainingArguments, training_args: TrainingArguments, processor
) -> tuple[ImageTextShards | None, ImageTextShards | None]:
    """The streamed training and validation sets named by --train_shards / --validation_shards (each `None` when
    not given or not needed). The training stream makes its own batches, with the recipe's augmentation unless
    --image_augmentation none."""
    _check_shard_arguments(data_args)
    train = validation = None
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    if training_args.do_train and data_args.train_shards is not None:
        transform = None
        if (data_args.image_augmentation or "random_resized_crop") == "random_resized_crop":
            transform = RandomResizedCropTransform.from_image_processor(processor.image_processor)
        collator = DiffCLIPDataCollator(processor, max_length=data_args.max_seq_length, image_transform=transform)
        train = ImageTextShards(
            expand_shards(data_args.train_shards, "--train_shards"),
            collator=collator,
            batch_size=training_args.per_device_train_batch_size,
            num_samples=data_args.train_num_samples,
            gradient_accumulation_steps=training_args.gradient_accumulation_steps,
            seed=seed,
            shuffle_buffer=data_args.shuffle_buffer,
            max_bad_sample_fraction=data_args.max_bad_sample_fraction,
        )
    if training_args.do_eval and data_args.validation_shards is not None:
        validation = ImageTextShards(
            expand_shards(data_args.validation_shards, "--validation_shards"), split_by_node=False
        )
    return train, validation


def _collator(processor, data_args: DataTrainingArguments, streamed_validation: bool) -> DiffCLIPDataCollator:
    """The Trainer's collator. A streamed validation set is read by the main process and its batches dispatched to
    the others by accelerate, which concatenates and splits tensors only: fixed-length captions, no flag."""
    if streamed_validation:
        return DiffCLIPDataCollator(processor, "max_length", data_args.max_seq_length, return_loss=False)
    return DiffCLIPDataCollator(processor, max_length=data_args.max_seq_length)


def _resume_stream(train: ImageTextShards, training_args: TrainingArguments, checkpoint: str | None) -> None:
    """Fast-forward a streamed training set to where `checkpoint` stopped, without decoding the samples trained on
    before; Trainer's own data skip (which would decode them) is turned off. With --ignore_data_skip the interrupted
    epoch starts over, as Trainer does for other data."""
    if checkpoint is None or training_args.ignore_data_skip:
        return
    accumulation = training_args.gradient_accumulation_steps
    epoch, batches_done, totals = resume_position(checkpoint, train.batches_per_epoch() // accumulation, accumulation)
    train.resume_at(epoch, batches_done, totals)
    training_args.ignore_data_skip = True


def _diffclip_config(config_name: str, cache_dir: str | None) -> DiffCLIPConfig:
    try:
        config = AutoConfig.from_pretrained(resolve_pretrained(config_name, cache_dir=cache_dir), cache_dir=cache_dir)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"--config_name {config_name!r}: cannot read a DiffCLIP config there ({error}).") from error
    if not isinstance(config, DiffCLIPConfig):
        raise ValueError(
            f"--config_name {config_name!r} holds a {type(config).__name__} (model_type {config.model_type!r}); "
            "diffclip training builds a DiffCLIPModel (model_type 'diffclip')."
        )
    return config


_PROCESSOR_HINT = (
    ". Pass --processor_name (a folder with one, e.g. a converted release), or save one there with "
    "`DiffCLIPProcessor.save_pretrained`."
)


def load_training_model_and_processor(model_args: ModelArguments) -> tuple[DiffCLIPModel, object]:
    """The model and processor that `model_args` name, through the package's one loader (`core.loading`): a
    pretrained model (`model_name_or_path`), or a fresh one from `config_name`, whose weights are initialised by the
    model's own `_init_weights` (the original training code's initialisation). Names go through
    [`resolve_pretrained`], so the authors' original-format checkpoints work too; no code from a model folder runs."""
    if (model_args.model_name_or_path is None) == (model_args.config_name is None):
        raise ValueError(
            "Pass --model_name_or_path (fine-tune a trained model) or --config_name (train a fresh model from a "
            "config), not both and not neither."
        )
    cache_dir = model_args.cache_dir
    kwargs = {}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.model_name_or_path is not None:
        source = model_args.model_name_or_path
        model = load_model(inspect_model(source, cache_dir=cache_dir), cache_dir=cache_dir, **kwargs)
        if not isinstance(model, DiffCLIPModel):
            raise ValueError(
                f"--model_name_or_path {source!r} holds a {type(model).__name__} "
                f"(model_type {model.config.model_type!r}); diffclip training trains a DiffCLIPModel "
                "(model_type 'diffclip')."
            )
    else:
        source = model_args.config_name
        model = AutoModel.from_config(_diffclip_config(source, cache_dir), **kwargs)
    processor_name = model_args.processor_name or source
    if model_args.processor_name is None and os.path.isfile(processor_name):
        processor_name = os.path.dirname(os.path.abspath(processor_name))  # the folder of a config.json
    path = resolve_pretrained(processor_name, cache_dir=cache_dir)
    processor = load_processor(path, processor_name, cache_dir=cache_dir, hint=_PROCESSOR_HINT)
    return model, processor


def _resume_checkpoint(training_args: TrainingArguments) -> str | None:
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None or checkpoint.lower() not in ("last", "latest", "true"):
        return checkpoint
    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if last is None:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint}: no checkpoint-* folder in {training_args.output_dir!r}."
        )
    return last


def _launched_processes() -> int:
    """How many processes torchrun or `accelerate launch` started for this run (their `WORLD_SIZE`); 1 otherwise."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def launch_defaults() -> dict:
    """Defaults of the training commands that depend on how they were launched: several processes on a machine
    without an accelerator (torchrun or `accelerate launch` on CPUs) train on the CPUs, as one data-parallel run
    (`use_cpu`, gloo). Without it Trainer finds no device to distribute over, and every process would train alone
    on all the data and write the same --output_dir."""
    import torch

    if _launched_processes() < 2:
        return {}
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, MPS, XPU, ...
    available = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return {} if available else {"use_cpu": True}


def _check_launch(training_args: TrainingArguments) -> None:
    """Refuse, before any work, a run whose processes would not train together."""
    launched = _launched_processes()
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(
            f"{launched} processes were launched, but the Trainer runs each one alone (world size "
            f"{training_args.world_size}): each would train on all the data and write the same --output_dir. On a "
            "machine without GPUs pass --use_cpu true (the default there); check the launcher's device settings."
        )


def _announce_replacement(training_args: TrainingArguments) -> None:
    """Say, before training, that a model already in --output_dir will be replaced at the end (the documented rule:
    an output folder is reused, its model replaced whole)."""
    output = Path(training_args.output_dir)
    if training_args.do_train and (output / "config.json").is_file() and training_args.process_index == 0:
        print(
            f"diffclip-finetune: {output} already holds a model; it stays intact until training ends and is then "
            "replaced by the new one.",
            file=sys.stderr,
        )


def run(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments) -> dict:
    """What `diffclip-finetune` and `diffclip-pretrain` do with parsed arguments; returns the train/eval metrics.
    `training_args` may be plain `TrainingArguments` or [`DiffCLIPTrainingArguments`] (the recipe's arguments)."""
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("Nothing to do: pass --do_train and/or --do_eval.")
    _check_launch(training_args)
    logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    model, processor = load_training_model_and_processor(model_args)
    _announce_replacement(training_args)
    freeze_towers(model, vision=model_args.freeze_vision_model, text=model_args.freeze_text_model)

    apply_global_batch_size(training_args)  # before the streamed training set makes its batches
    train_stream, validation_stream = build_shard_datasets(data_args, training_args, processor)
    streamed = {"train": train_stream, "validation": validation_stream}
    # evaluation on the zero-shot folder alone: no validation split is read
    has_validation = data_args.validation_file or data_args.dataset_name or data_args.validation_shards
    zero_shot_only = bool(getattr(training_args, "zero_shot_eval_dir", None)) and not has_validation
    prepared, skipped = {k: v for k, v in streamed.items() if v is not None}, {}
    file_splits = [
        (split, needed, limit)
        for split, needed, limit in (
            ("train", training_args.do_train, data_args.max_train_samples),
            ("validation", training_args.do_eval, data_args.max_eval_samples),
        )
        if needed and split not in prepared and not (split == "validation" and zero_shot_only)
    ]
    augmentation = None
    if data_args.image_augmentation == "random_resized_crop":  # files and `datasets`: only when asked for
        augmentation = RandomResizedCropTransform.from_image_processor(processor.image_processor)
    if file_splits:
        with training_args.main_process_first(desc="loading and checking the data"):
            raw_splits = load_image_caption_splits(data_args, model_args.cache_dir)
            for split, _, limit in file_splits:
                if split not in raw_splits:
                    if split == "validation" and getattr(training_args, "zero_shot_eval_dir", None):
                        continue  # a dataset without a validation split: evaluation is the zero-shot accuracy
                    flag = "--do_train" if split == "train" else "--do_eval"
                    raise ValueError(
                        f"{flag} needs a {split} split; the data has: {sorted(raw_splits)}. Pass --{split}_file, "
                        f"--{split}_shards, or a dataset with a '{split}' split."
                    )
                dataset, image_root = raw_splits[split]
                if limit is not None:
                    dataset = dataset.select(range(min(limit, len(dataset))))
                prepared[split], skipped[split] = prepare_image_caption_dataset(
                    dataset,
                    image_column=data_args.image_column,
                    caption_column=data_args.caption_column,
                    image_root=image_root,
                    skip_bad_rows=data_args.skip_bad_rows,
                    split=split,
                    num_proc=data_args.preprocessing_num_workers,
                    image_transform=augmentation if split == "train" else None,
                )
    checkpoint = _resume_checkpoint(training_args) if training_args.do_train else None
    if train_stream is not None:
        _resume_stream(train_stream, training_args, checkpoint)

    trainer = DiffCLIPTrainer(
        model=model,
        args=training_args,
        train_dataset=prepared.get("train"),
        eval_dataset=prepared.get("validation"),
        data_collator=_collator(processor, data_args, streamed_validation=validation_stream is not None),
        processing_class=processor,
    )
    results = {}
    if training_args.do_train:
        try:
            train_result = trainer.train(resume_from_checkpoint=checkpoint)
        except Exception as error:
            if not finished_training(trainer):
                raise
            save_final_model(trainer, training_args.output_dir, failure=error)  # rescues the weights, raises
            raise
        save_final_model(trainer, training_args.output_dir)
        metrics = dict(train_result.metrics)
        loader = trainer.callback_handler.train_dataloader
        if isinstance(loader, ShardLoader):
            metrics.update(loader.log_metrics(training_args.device))
        else:
            metrics["train_skipped_rows"] = skipped["train"]
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update({f"train_{k}" if not k.startswith("train_") else k: v for k, v in metrics.items()})
    if training_args.do_eval:
        metrics = trainer.evaluate()
        if "validation" in skipped:
            metrics["eval_skipped_rows"] = skipped["validation"]
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    for split, count in skipped.items():
        if count:
            print(f"diffclip-finetune: skipped {count} bad row(s) of the {split} split (--skip_bad_rows)")
    return results
