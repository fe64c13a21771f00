# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The `diffclip` command. Thin: each subcommand lives beside the library code it calls, which registers it here
through a `register_cli(subparsers)` function, so the command holds no logic a Python user would miss."""

import argparse
import importlib
import sys

from .core.errors import DEBUG_ENV, DEBUG_FLAG, run_command


# Modules that contribute subcommands, in the order `diffclip --help` lists them.
_SUBCOMMAND_MODULES = ("evaluation.cli", "interpret.cli", "search.cli", "demo.cli", "export.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffclip",
        description="DiffCLIP (CLIP with differential attention): zero-shot classification, evaluation, "
        "attention maps, image search and a demo page.",
    )
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help=f"show the traceback of an error (also with {DEBUG_ENV}=1); without it bad input is one line and exit "
        "code 2",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(f"transformers_diffclip.{name}")
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    # --debug anywhere on the line (before or after the subcommand)
    debug = DEBUG_FLAG in argv
    args = parser.parse_args([argument for argument in argv if argument != DEBUG_FLAG])
    command = " ".join(part for part in ("diffclip", args.command, getattr(args, "task", None)) if part)
    return run_command(command, lambda: args.func(args), debug=debug or args.debug)


if __name__ == "__main__":
    sys.exit(main())
