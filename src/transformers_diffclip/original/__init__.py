# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The authors' released checkpoints in their training format (`hammh0a/DiffCLIP_ViTB16_CC12M`, ...).

Every place that names a model (the `diffclip` commands, `diffclip-finetune`, `from_pretrained` of the installed
classes through their `checkpoint_resolver` hook, `resolve_from_pretrained`) passes the name through
`resolve_pretrained` first: an original-format checkpoint (one of the authors'
repo ids, or a local `checkpoint_best.pt`) becomes the path of a converted folder, converted once and cached;
any other name comes back unchanged.

- `checkpoint`: the released names and reading the training container safely; `download`: a repo id to a local
  file; `key_map`: the declarative key map; `architecture`: architecture detection;
- `convert`: the converted model and processor, folders written atomically;
- `cache`: `resolve_pretrained`, download-convert-cache under a file lock.
`conversion/convert_diffclip_original_to_hf.py` is the script that writes a Hub-ready folder with these.
"""

from .architecture import Architecture, detect_architecture
from .cache import CACHE_ENV, HUB_ARGUMENTS, cache_root, resolve_from_pretrained, resolve_pretrained
from .checkpoint import (
    CHECKPOINT_FILENAME,
    DEFAULT_MODEL_ID,
    ORIGINAL_REPOS,
    RELEASED_REPOS,
    ConversionError,
    OriginalCheckpoint,
    load_original_checkpoint,
)
from .convert import CLIP_TOKENIZER_REPO, Conversion, build_model, build_processor, convert_checkpoint
from .download import resolve_checkpoint
from .key_map import convert_state_dict


__all__ = [
    "CACHE_ENV",
    "CHECKPOINT_FILENAME",
    "CLIP_TOKENIZER_REPO",
    "HUB_ARGUMENTS",
    "DEFAULT_MODEL_ID",
    "ORIGINAL_REPOS",
    "RELEASED_REPOS",
    "Architecture",
    "Conversion",
    "ConversionError",
    "OriginalCheckpoint",
    "build_model",
    "build_processor",
    "cache_root",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_architecture",
    "load_original_checkpoint",
    "resolve_checkpoint",
    "resolve_from_pretrained",
    "resolve_pretrained",
]
