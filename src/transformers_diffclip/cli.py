# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The `diffclip` command. Thin: each subcommand lives beside the library code it calls, which registers it here
through a `register_cli(subparsers)` function, so the command holds no logic a Python user would miss."""

import argparse
import importlib
import sys


# Modules that contribute subcommands, in the order `diffclip --help` lists them.
_SUBCOMMAND_MODULES = ("evaluation.cli", "interpret.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffclip",
        description="DiffCLIP (CLIP with differential attention): zero-shot classification, evaluation, "
        "attention maps.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in _SUBCOMMAND_MODULES:
        module = importlib.import_module(f"transformers_diffclip.{name}")
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, OSError) as error:
        command = " ".join(part for part in (args.command, getattr(args, "task", None)) if part)
        print(f"diffclip {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
