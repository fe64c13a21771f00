# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-1.5's two training stages on transformers' `Trainer` (one process, torchrun, accelerate):

- `align` (stage 1, feature alignment): the vision tower and the language model frozen, only the projector trains;
  image–caption rows in the "plain" template; learning rate 1e-3, global batch 256, 1 epoch, 3 % warm-up, cosine,
  no weight decay ([`STAGE_DEFAULTS`]);
- `tune` (stage 2, instruction tuning): the projector and the language model train (the vision tower too with
  `unfreeze_vision`); conversations in the language model's chat template, the loss on the assistant's turns only;
  learning rate 2e-5, global batch 128.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import Trainer, TrainingArguments, set_seed
from transformers.utils import logging

from ..training import save_final_model
from .build import DEFAULT_VISION_FEATURE_LAYER, build_assistant, load_assistant
from .data import AssistantDataCollator, ConversationDataset, prepare_conversations, read_conversations


logger = logging.get_logger(__name__)

STAGES = ("align", "tune")
TEMPLATE_OF_STAGE = {"align": "plain", "tune": "chat"}
# LLaVA-1.5's scripts (pretrain.sh, finetune.sh); any of them can be overridden on the command line.
_COMMON = {
    "num_train_epochs": 1,
    "warmup_steps": 0.03,
    "lr_scheduler_type": "cosine",
    "weight_decay": 0.0,
    "save_strategy": "no",
    "logging_steps": 1,
    "report_to": "none",
}
STAGE_DEFAULTS = {
    "align": {**_COMMON, "learning_rate": 1e-3, "global_batch_size": 256},
    # a batch of text-only rows leaves the projector without gradients on that process: DDP must allow it
    "tune": {**_COMMON, "learning_rate": 2e-5, "global_batch_size": 128, "ddp_find_unused_parameters": True},
}


@dataclass
class AssistantModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "An assistant saved by diffclip-llava to go on from (stage 2 takes stage 1's output)."},
    )
    vision_model: str | None = field(
        default=None,
        metadata={
            "help": "Vision tower of a new assistant: a DiffCLIP folder, an authors' id "
            "(hammh0a/DiffCLIP_ViTB16_CC12M; the CLIP baseline hammh0a/ViTB16_CC12M) or a transformers CLIP "
            "model. With --language_model."
        },
    )
    language_model: str | None = field(
        default=None, metadata={"help": "Causal language model of a new assistant: a folder or Hub id."}
    )
    vision_feature_layer: str = field(
        default=str(DEFAULT_VISION_FEATURE_LAYER),
        metadata={"help": "Vision layer(s) the projector reads: an index (-2: LLaVA-1.5) or a comma-separated list."},
    )
    vision_feature_select_strategy: str = field(
        default="default",
        metadata={"help": "'default' drops the class token, 'full' keeps it.", "choices": ["default", "full"]},
    )
    unfreeze_vision: bool = field(default=False, metadata={"help": "Stage 2: train the vision tower too."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache Hub downloads."})


@dataclass
class AssistantDataArguments:
    data_path: str = field(
        metadata={"help": "LLaVA data file: a JSON list (blip_laion_cc_sbu_558k.json, llava_v1_5_mix665k.json)."}
    )
    image_folder: str | None = field(
        default=None, metadata={"help": "Folder that the rows' image paths start from (default: the file's folder)."}
    )
    max_length: int = field(default=2048, metadata={"help": "Longest row in tokens (longer rows are cut)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Skip rows with a missing or unreadable image or a malformed conversation."}
    )


@dataclass
class AssistantTrainingArguments(TrainingArguments):
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Rows per optimizer step over every process: gradient_accumulation_steps becomes "
            "global_batch_size / (per_device_train_batch_size x processes)."
        },
    )


def apply_global_batch(args: AssistantTrainingArguments) -> None:
    """Set `gradient_accumulation_steps` so that a step sees `global_batch_size` rows (LLaVA's batches are fixed
    globally, whatever the number of GPUs and their memory)."""
    if not args.global_batch_size:
        return
    per_step = args.per_device_train_batch_size * max(args.world_size, 1)
    if args.global_batch_size % per_step:
        raise ValueError(
            f"--global_batch_size {args.global_batch_size} is not a multiple of per_device_train_batch_size "
            f"{args.per_device_train_batch_size} x {max(args.world_size, 1)} process(es)."
        )
    args.gradient_accumulation_steps = args.global_batch_size // per_step


def parse_feature_layer(text: str) -> int | list[int]:
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--vision_feature_layer {text!r}: an integer or a comma-separated list of them.") from None
    return layers[0] if len(layers) == 1 else layers


def set_trainable(model, stage: str, unfreeze_vision: bool = False) -> list[str]:
    """Freeze what `stage` keeps fixed; the names of the parameters that train. `align`: the projector alone;
    `tune`: the projector and the language model (and its head), the vision tower with `unfreeze_vision`."""
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}; the stages are {', '.join(STAGES)}.")
    trains = {"model.multi_modal_projector."}
    if stage == "tune":
        trains |= {"model.language_model.", "lm_head."}
        if unfreeze_vision:
            trains.add("model.vision_tower.")
    trained = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(tuple(trains)))
        if parameter.requires_grad:
            trained.append(name)
    return trained


def load_for_stage(stage: str, model_args: AssistantModelArguments):
    """The assistant a stage starts from: a saved one (`model_name_or_path`) or a new one built from
    `vision_model` and `language_model`."""
    new = model_args.vision_model is not None or model_args.language_model is not None
    if new == (model_args.model_name_or_path is not None) or (
        new and (model_args.vision_model is None or model_args.language_model is None)
    ):
        raise ValueError(
            "Pass --model_name_or_path (a saved assistant), or --vision_model and --language_model (a new one), "
            "not both."
        )
    if model_args.model_name_or_path is not None:
        return load_assistant(model_args.model_name_or_path, model_args.cache_dir)
    if stage == "tune":
        logger.warning("diffclip-llava tune on a new assistant: its projector was not aligned by stage 1 (align).")
    return build_assistant(
        model_args.vision_model,
        model_args.language_model,
        parse_feature_layer(model_args.vision_feature_layer),
        model_args.vision_feature_select_strategy,
        model_args.cache_dir,
    )


def train_stage(
    stage: str,
    model_args: AssistantModelArguments,
    data_args: AssistantDataArguments,
    training_args: AssistantTrainingArguments,
) -> dict:
    """Run one stage and save the assistant (model and processor) into `output_dir`; returns the train metrics,
    `train_skipped_rows` among them."""
    from pathlib import Path

    logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)
    training_args.remove_unused_columns = False  # the collator reads the rows whole
    apply_global_batch(training_args)
    template = TEMPLATE_OF_STAGE[stage]
    image_folder = data_args.image_folder or str(Path(data_args.data_path).expanduser().resolve().parent)
    with training_args.main_process_first(desc="reading and checking the data"):
        rows = read_conversations(data_args.data_path)
        if data_args.max_train_samples is not None:
            rows = rows[: data_args.max_train_samples]
        rows, skipped = prepare_conversations(rows, image_folder, template, data_args.skip_bad_rows)
    model, processor = load_for_stage(stage, model_args)
    set_trainable(model, stage, model_args.unfreeze_vision)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed layers still need a graph
    collator = AssistantDataCollator(
        processor, template, model.config.image_seq_length, data_args.max_length, image_folder
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=ConversationDataset(rows),
        data_collator=collator,
        processing_class=processor,
    )
    result = trainer.train()
    save_final_model(trainer, training_args.output_dir)
    metrics = {**result.metrics, "train_skipped_rows": skipped}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()  # trainer_state.json: the logged losses
    if skipped:
        print(f"diffclip-llava {stage}: skipped {skipped} bad row(s) (--skip_bad_rows)")
    return metrics


__all__ = [
    "STAGES",
    "STAGE_DEFAULTS",
    "AssistantDataArguments",
    "AssistantModelArguments",
    "AssistantTrainingArguments",
    "apply_global_batch",
    "load_for_stage",
    "parse_feature_layer",
    "set_trainable",
    "train_stage",
]
