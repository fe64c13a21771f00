# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification and retrieval evaluation: the public names of `transformers_diffclip.evaluation`,
importable from here as before. The code lives in `evaluation/` (one module per job)."""

from .evaluation import *  # noqa: F403
from .evaluation import __all__ as _evaluation_names
from .evaluation.cli import register_cli
from .files import write_json


__all__ = [*_evaluation_names, "register_cli", "write_json"]
