# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The `diffclip-llava align|tune` command (LLaVA-1.5's two training stages; every TrainingArguments flag works;
runs unchanged under `torchrun` and `accelerate launch`) and `diffclip eval pope`."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import debug_requested, positive_int, run_command, without_debug_flag


_STAGE_HELP = {
    "align": "stage 1, feature alignment: only the projector trains (vision tower and language model frozen) on "
    "image-caption rows in the plain template; defaults lr 1e-3, global batch 256, 1 epoch, warm-up 3%, cosine.",
    "tune": "stage 2, instruction tuning: the projector and the language model train (--unfreeze_vision: the tower "
    "too) on conversations in the language model's chat template, loss on the assistant's turns; defaults lr 2e-5, "
    "global batch 128.",
}
_USAGE = "usage: diffclip-llava {align,tune} --output_dir DIR --data_path FILE [flags]  (diffclip-llava STAGE --help)"


def build_parser(stage: str):
    from transformers import HfArgumentParser

    from .recipe import STAGE_DEFAULTS, AssistantDataArguments, AssistantModelArguments, AssistantTrainingArguments

    parser = HfArgumentParser((AssistantModelArguments, AssistantDataArguments, AssistantTrainingArguments))
    parser.prog = f"diffclip-llava {stage}"
    parser.description = f"Train a LLaVA assistant with a DiffCLIP vision tower, {_STAGE_HELP[stage]}"
    parser.set_defaults(**STAGE_DEFAULTS[stage])
    return parser


def main(argv: list[str] | None = None) -> int:
    """`diffclip-llava STAGE FLAGS`: bad input is one line and exit code 2 (`--debug` shows the traceback)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    argv = without_debug_flag(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE + "\n\n" + "\n".join(f"  {stage}: {text}" for stage, text in _STAGE_HELP.items()))
        return 0 if argv else 2
    stage, flags = argv[0], argv[1:]
    if stage not in _STAGE_HELP:
        print(f"diffclip-llava: error: unknown stage {stage!r}; use align or tune.\n{_USAGE}", file=sys.stderr)
        return 2

    def command() -> int:
        from .recipe import train_stage

        train_stage(stage, *build_parser(stage).parse_args_into_dataclasses(args=flags))
        return 0

    return run_command(f"diffclip-llava {stage}", command, debug=debug)


# ------------------------------------------------------------------------------------- diffclip eval pope


def _run_pope(args: argparse.Namespace) -> int:
    from ..core.files import check_output_file, json_text, write_json
    from ..core.loading import resolve_device, resolve_dtype
    from .build import load_assistant
    from .pope import evaluate_pope, pope_files

    if args.output:
        check_output_file(args.output)
    pope_files(args.data, args.splits)  # a missing file before the model loads
    model, processor = load_assistant(args.model)
    model = model.to(device=resolve_device(args.device), dtype=resolve_dtype(args.dtype)).eval()

    def progress(split: str, result: dict) -> None:
        figures = ", ".join(f"{key[5:]} {result[key]:.4f}" for key in result if key.startswith("pope_"))
        print(f"{split}: {figures} ({result['num_questions']} questions)", file=sys.stderr)

    splits = evaluate_pope(
        model, processor, args.data, args.image_folder, args.splits, args.batch_size, args.max_new_tokens, progress
    )
    report = {"model": args.model, "data": str(args.data), "splits": splits}
    if args.output:
        write_json(args.output, report)
    print(
        json_text(report)
        if args.json
        else "\n".join(
            f"{split}: " + ", ".join(f"{key} {value:.4f}" for key, value in result.items() if key.startswith("pope_"))
            for split, result in splits.items()
        )
    )
    return 0


def register_pope_cli(tasks: argparse._SubParsersAction) -> None:
    """Add `diffclip eval pope` to `diffclip eval`'s tasks."""
    from .pope import POPE_SPLITS

    pope = tasks.add_parser(
        "pope",
        help="object hallucination of an assistant (POPE: yes/no questions, scored as its authors do)",
        description="POPE with an assistant saved by diffclip-llava: each question of coco_pope_{random,popular,"
        "adversarial}.json with ' Answer the question using a single word or phrase.', greedy; accuracy, "
        "precision, recall, F1 and yes-ratio per file, and every answer.",
    )
    pope.add_argument("--model", required=True, help="an assistant folder written by diffclip-llava")
    pope.add_argument("--data", required=True, metavar="DIR", help="folder of the three coco_pope_*.json files")
    pope.add_argument("--image-folder", metavar="DIR", help="where the questions' images are (default: --data)")
    pope.add_argument("--splits", nargs="+", default=list(POPE_SPLITS), choices=POPE_SPLITS, help="files to ask")
    pope.add_argument("--batch-size", type=positive_int, default=8, help="questions per generate call (default: 8)")
    pope.add_argument("--max-new-tokens", type=positive_int, default=32, help="answer length limit (default: 32)")
    pope.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    pope.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    pope.add_argument("--output", metavar="FILE", help="write the report here (JSON, written atomically)")
    pope.add_argument("--json", action="store_true", help="print the whole report as JSON")
    pope.set_defaults(func=_run_pope)


if __name__ == "__main__":
    sys.exit(main())
