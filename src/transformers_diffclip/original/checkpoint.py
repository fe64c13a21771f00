# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The original DiffCLIP / CLIP training checkpoints: their names, and safe reading.

The rest of `original/` builds on this module: `download` (a repo id to a local file), `key_map` (original
tensor names to [`DiffCLIPModel`] parameter names), `architecture` (the config a state dict implies).

A released file (`checkpoint_best.pt`) is a `torch.save` of a dict: `epoch`, `state_dict` (keys prefixed `module.`
by the data-parallel wrapper), `optimizer`, `scaler`, `best_acc1` and `args` (an `argparse.Namespace`). Only the
state dict is converted; the rest is dropped as soon as the file is read. The original layout of every tensor is
in `shared/reference/original_layout.json`.

Nothing here runs code from the checkpoint: files are read with `torch.load(weights_only=True)` and only
`argparse.Namespace` is allow-listed on top of what torch accepts by default (tensors and plain Python values).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch


ORIGINAL_PREFIX = "module."
CHECKPOINT_FILENAME = "checkpoint_best.pt"
# What a checkpoint may contain besides tensors and plain Python values (see the module docstring).
SAFE_GLOBALS = (argparse.Namespace,)
UNSAFE_PICKLE_FLAG = "--allow-unsafe-pickle"
# The authors' Hub repos: each holds one `checkpoint_best.pt` in the training format.
DEFAULT_MODEL_ID = "hammh0a/DiffCLIP_ViTB16_CC12M"
ORIGINAL_REPOS = (
    "hammh0a/DiffCLIP_ViTB16_CC3M",
    "hammh0a/DiffCLIP_ViTB16_CC12M",
    "hammh0a/ViTB16_CC3M",
    "hammh0a/ViTB16_CC12M",
)
# Released repo → the name of its model card.
RELEASED_REPOS = {repo: repo.split("/", 1)[1] for repo in ORIGINAL_REPOS}


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why and what to do."""


def _listing(names, limit: int = 20) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … and {len(names) - limit} more" if len(names) > limit else "")


# --------------------------------------------------------------------------------------------------
# Reading the file safely
# --------------------------------------------------------------------------------------------------


@dataclass
class OriginalCheckpoint:
    """The model weights of an original checkpoint (without the `module.` prefix) and its training arguments."""

    state_dict: dict[str, torch.Tensor]
    args: dict = field(default_factory=dict)
    epoch: int | None = None
    source: str = ""


def _unsafe_globals(path: Path) -> list[str]:
    """Every global the pickle inside a zip checkpoint refers to that torch's weights-only loader would refuse
    (read from the pickle's opcodes, without running anything)."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is None:
        return []
    try:
        allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in SAFE_GLOBALS}
        return [name for name in lister(str(path)) if name not in allowed]
    except Exception:  # not a zip checkpoint, or unreadable: the load error says enough
        return []


def _is_loaded_global(name: str) -> bool:
    """Whether `module.attribute` names an object of an already imported module (nothing is imported here)."""
    module, _, attribute = name.rpartition(".")
    return hasattr(sys.modules.get(module), attribute) if module in sys.modules else False


def _refusal(path: Path, error: Exception) -> ConversionError | None:
    """The error for a pickle the weights-only loader refused; None when the refusal looks like a damaged file."""
    # torch's message names builtins without their module (`GLOBAL exec`)
    named = [name if "." in name else f"builtins.{name}" for name in re.findall(r"GLOBAL ([\w.]+)", str(error))]
    refused = _unsafe_globals(path) or named
    if refused and all(name.startswith("torch.") and not _is_loaded_global(name) for name in refused):
        return None  # a torch name cut short (`torch._utils._reb`): a truncated legacy-format file
    if refused:
        what = f"it refers to {', '.join(f'`{name}`' for name in dict.fromkeys(refused))}, which "
    else:
        detail = str(error).strip().splitlines()
        what = f"it uses a pickle feature ({detail[-1] if detail else type(error).__name__}) that "
    return ConversionError(
        f"Refused to load {path}: {what}is not on the allow-list for DiffCLIP checkpoints (tensors, plain Python "
        "values and argparse.Namespace). Unpickling it could run arbitrary code from the file. If, and only if, you "
        "trust where the file comes from, convert it once with conversion/convert_diffclip_original_to_hf.py "
        f"{UNSAFE_PICKLE_FLAG} (only the converter has that flag; the diffclip commands and from_pretrained never "
        "unpickle unrestricted) and load the converted folder."
    )


def _torch_load(path: Path, weights_only: bool):
    """`torch.load` memory-mapped where the format allows it (so the optimizer state is never read into RAM)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
    # torch's legacy (non-zip) format cannot be memory-mapped
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def load_original_checkpoint(path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> OriginalCheckpoint:
    """Read an original checkpoint safely and return its model weights.

    Accepts the training container (`{"state_dict": ..., "args": Namespace, "optimizer": ...}`) or a bare state
    dict, with or without the `module.` prefix. Refuses a file whose pickle needs anything beyond tensors, plain
    values and `argparse.Namespace`, unless `allow_unsafe_pickle` (which runs the file's pickle unrestricted).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        if allow_unsafe_pickle:
            loaded = _torch_load(path, weights_only=False)
        else:
            with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                loaded = _torch_load(path, weights_only=True)
    except Exception as error:
        refused = isinstance(error, pickle.UnpicklingError) and not allow_unsafe_pickle
        refusal = _refusal(path, error) if refused else None
        if refusal is not None:
            raise refusal from error
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ConversionError(
            f"Cannot read {path} as a PyTorch checkpoint ({type(error).__name__}: {first_line}). Is the file "
            "truncated (an interrupted download) or not a torch.save file? Download it again."
        ) from error

    if not isinstance(loaded, Mapping):
        raise ConversionError(f"{path} holds a {type(loaded).__name__}, not a checkpoint dict with a 'state_dict'.")
    if "state_dict" in loaded:
        state_dict, args, epoch = loaded["state_dict"], loaded.get("args"), loaded.get("epoch")
    else:
        state_dict, args, epoch = loaded, None, None
    # Drop the optimizer and scaler state now: only the weights are needed.
    del loaded
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ConversionError(f"The 'state_dict' of {path} is empty or not a dict of tensors.")
    not_tensors = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"The 'state_dict' of {path} holds non-tensor entries: {_listing(not_tensors)}.")
    weights = {str(k).removeprefix(ORIGINAL_PREFIX): v for k, v in state_dict.items()}
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return OriginalCheckpoint(
        state_dict=weights,
        args=dict(args) if isinstance(args, Mapping) else {},
        epoch=epoch if isinstance(epoch, int) else None,
        source=str(path),
    )
