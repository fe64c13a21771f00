# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The `diffclip-finetune` and `diffclip-pretrain` commands: parse the flags (or one .json/.yaml file of them) into
the arguments of [`~training.run.run`], run it, and turn bad input into a message and exit status 2."""

import sys
from pathlib import Path

from transformers import HfArgumentParser

from ..core.distributed import end_process_group
from ..core.errors import debug_requested, run_command, without_debug_flag
from .arguments import PRETRAINING_RECIPE, DataTrainingArguments, DiffCLIPTrainingArguments, ModelArguments
from .run import launch_defaults, run


_DESCRIPTIONS = {
    "diffclip-finetune": "Fine-tune DiffCLIP on image-caption pairs with transformers' Trainer (every "
    "TrainingArguments flag works). Runs unchanged under `torchrun --nproc_per_node N` and `accelerate launch`.",
    "diffclip-pretrain": "Pre-train DiffCLIP (or the CLIP baseline) with the original recipe as defaults: AdamW "
    "betas (0.9, 0.98), eps 1e-8, weight decay 0.5 on matrices, learning rate 5e-4 with 1 warm-up epoch from 1e-6 "
    "and a cosine to 1e-5, 40 epochs, global batch 4096, no gradient clipping, bf16, logit scale clamped to ln 100, "
    "RandomResizedCrop(224, scale=(0.5, 1.0)) on training images. "
    "The same flags as diffclip-finetune; any default can be overridden.",
}


def build_parser(prog: str = "diffclip-finetune") -> HfArgumentParser:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, DiffCLIPTrainingArguments))
    parser.prog = prog
    parser.description = _DESCRIPTIONS[prog]
    parser.set_defaults(**_defaults(prog))
    return parser


def _defaults(prog: str) -> dict:
    """What the command's arguments default to beyond TrainingArguments: the recipe for `diffclip-pretrain`, and
    `use_cpu` when several processes were launched on a machine without GPUs ([`launch_defaults`])."""
    return {**(PRETRAINING_RECIPE if prog == "diffclip-pretrain" else {}), **launch_defaults()}


def parse_arguments(argv: list[str] | None = None, prog: str = "diffclip-finetune"):
    """`(model_args, data_args, training_args)` from command-line arguments or from one .json/.yaml file of them;
    for `diffclip-pretrain`, what they leave out comes from [`PRETRAINING_RECIPE`]."""
    parser = build_parser(prog)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        path = Path(argv[0]).expanduser().resolve()
        if path.suffix == ".json":
            import json

            parse, errors = json.loads, (json.JSONDecodeError,)
        else:
            import yaml

            parse, errors = yaml.safe_load, (yaml.YAMLError,)
        try:
            values = parse(path.read_text(encoding="utf-8"))
        except (*errors, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a readable arguments file: {' '.join(str(error).split())}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of flag names to values, not {type(values).__name__}.")
        return parser.parse_dict({**_defaults(prog), **values})
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None, prog: str = "diffclip-finetune") -> int:
    """Bad input ends with one line and exit code 2, no traceback (`--debug` or `DIFFCLIP_DEBUG=1` shows it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    argv = without_debug_flag(argv)

    def command() -> int:
        run(*parse_arguments(argv, prog))
        end_process_group()
        return 0

    return run_command(prog, command, debug=debug)


def pretrain_main(argv: list[str] | None = None) -> int:
    """`diffclip-pretrain`: `diffclip-finetune` with [`PRETRAINING_RECIPE`] as defaults."""
    return main(argv, prog="diffclip-pretrain")


if __name__ == "__main__":
    sys.exit(main())
