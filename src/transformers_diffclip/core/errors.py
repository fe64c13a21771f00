# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""How every command ends on an error: bad input (a missing or damaged file, a bad value, a refused pickle, an
unreadable image, ...) is one line `PROG: error: MESSAGE` on stderr and exit code 2; an unexpected failure is one
line and exit code 1; an interrupt exit code 130. No traceback unless `--debug` is given or `DIFFCLIP_DEBUG=1` is
set in the environment (then the exception propagates)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


DEBUG_ENV = "DIFFCLIP_DEBUG"
DEBUG_FLAG = "--debug"
# What bad input raises: ImageError, ConversionError, UnicodeDecodeError and JSON errors are ValueErrors.
BAD_INPUT_ERRORS = (FileNotFoundError, ValueError, OSError)
BAD_INPUT, UNEXPECTED, INTERRUPTED = 2, 1, 130


def _bare_debug_flags(argv: list[str]) -> list[int]:
    """Positions of `--debug` given alone. `--debug OPTION` (a value follows) is left alone: the training commands'
    TrainingArguments have a `--debug` flag of their own that takes one."""
    return [
        index
        for index, argument in enumerate(argv)
        if argument == DEBUG_FLAG and (index + 1 == len(argv) or argv[index + 1].startswith("-"))
    ]


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether tracebacks are shown: `DIFFCLIP_DEBUG` set (not 0/false/no), or a bare `--debug` in `argv`."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no") or (
        argv is not None and bool(_bare_debug_flags(argv))
    )


def without_debug_flag(argv: list[str]) -> list[str]:
    """`argv` without its bare `--debug` flags (see [`debug_requested`])."""
    bare = set(_bare_debug_flags(argv))
    return [argument for index, argument in enumerate(argv) if index not in bare]


def positive_int(text: str) -> int:
    """An argparse `type` for flags that take a count (batch sizes, top-k): an integer of at least 1, or argparse's
    usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def run_command(prog: str, function: Callable[[], int | None], debug: bool = False) -> int:
    """Run `function` as the command `prog`: its return value (default 0) is the exit code; errors end as the module
    docstring says."""
    debug = debug or debug_requested()
    try:
        return int(function() or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BAD_INPUT_ERRORS as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return BAD_INPUT
    except Exception as error:
        if debug:
            raise
        print(
            f"{prog}: unexpected error: {type(error).__name__}: {error} (pass {DEBUG_FLAG} or set {DEBUG_ENV}=1 for "
            "the traceback)",
            file=sys.stderr,
        )
        return UNEXPECTED


__all__ = [
    "BAD_INPUT_ERRORS",
    "DEBUG_ENV",
    "DEBUG_FLAG",
    "debug_requested",
    "positive_int",
    "run_command",
    "without_debug_flag",
]
