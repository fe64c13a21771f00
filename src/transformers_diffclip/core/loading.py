# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""One model loader for every command (`diffclip zero-shot`, `diffclip eval`, `diffclip attention-map`,
`diffclip-finetune`, `diffclip-pretrain`), its
command-line flags, and the accessors of what it loads (a processor's parts, a model's device and dtype).

No code from a model folder or Hub repo runs unless the caller asks for it:

- a model whose `model_type` is registered with transformers (DiffCLIP, registered when this package is imported;
  CLIP, SigLIP and the other architectures transformers ships) is built from the installed classes, with
  `trust_remote_code=False`, whatever `.py` files and `auto_map` its folder holds, with or without the flag;
- any other model type is refused, and one whose config names remote code (`auto_map`) is loaded with that code
  only when `trust_remote_code=True` (`--trust-remote-code`).

The decision reads only `config.json` (as JSON, through transformers' cached download), before anything is built.
Every name first goes through `original.resolve_pretrained`, which turns the authors' original-format
checkpoints into converted folders.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..original import DEFAULT_MODEL_ID, ORIGINAL_REPOS, resolve_pretrained


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DUAL_ENCODER_METHODS = ("get_text_features", "get_image_features")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None`/`"auto"`: CUDA when available, else the CPU; anything else as `torch.device` reads it."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"Unknown device {device!r}: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for but CUDA is not available here.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def _looks_like_path(name: str) -> bool:
    """Whether `name` can only be a local path: Hub ids are `name` or `namespace/name`."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name[1:2] == ":"


@dataclass
class ModelSource:
    """Where a model comes from and how it is built: `name` as given, `path` (a local folder or a Hub id, after
    `resolve_pretrained`), `revision`, `model_type` from its config, and whether its own code is run."""

    name: str
    path: str
    revision: str | None
    model_type: str
    trust_remote_code: bool


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# The weights files transformers reads, in its order of preference.
WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _weights_file(path: str) -> str:
    """The weights file of the model folder `path` that a load reads (the folder itself when none is there)."""
    folder = Path(path).expanduser()
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return str(folder / name)
    return str(folder)


def _load_error(name: str, path: str, error: BaseException) -> OSError:
    """One line for a model whose weights cannot be loaded: the file, and what is wrong with it."""
    text = " ".join(str(error).split())
    if "size mismatch" in text or "mismatched" in text.lower():
        problem = "its weights do not have the shapes its config.json describes"
    elif type(error).__name__ == "SafetensorError" or "deserializ" in text or "header" in text.lower():
        problem = "it is not a readable safetensors file (truncated or damaged)"
    elif "pickle" in text.lower() or "weights_only" in text or "Unpickl" in type(error).__name__:
        problem = "it is a pickle that the safe loader refuses (it could run code); use a model.safetensors file"
    else:
        problem = _first_line(error)
    detail = text[:300] + ("..." if len(text) > 300 else "")
    where = _weights_file(path)
    return OSError(f"Cannot load model {name!r} from {where}: {problem} ({type(error).__name__}: {detail})")


def load_pretrained_model(name: str, path: str, auto_class=None, **kwargs):
    """`auto_class.from_pretrained(path, **kwargs)` (default `AutoModel`), with every failure (a truncated or
    damaged weights file, weights whose shapes do not match the config, a refused pickle) turned into an `OSError`
    that names the file and the problem."""
    if auto_class is None:
        from transformers import AutoModel as auto_class
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:
        raise _load_error(name, path, error) from error


def inspect_model(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSource:
    """Decide, from `config.json` alone, how `name_or_path` may be loaded (see the module docstring). Raises
    `FileNotFoundError`, `OSError` (nothing to load) or `ValueError` (a model that would need its own code without
    `trust_remote_code`, or an unknown model type)."""
    from transformers import PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    name = os.fspath(name_or_path)
    path = resolve_pretrained(name, revision=revision, cache_dir=cache_dir)
    local = Path(path).expanduser()
    if local.is_file():
        raise ValueError(
            f"--model {name}: {local} is a file, not a model folder; give a folder written by save_pretrained, a "
            "Hub id, or an original DiffCLIP checkpoint."
        )
    if local.is_dir():
        path = str(local)
        if not (local / "config.json").is_file():
            raise OSError(
                f"Cannot load model {name!r}: {local / 'config.json'} does not exist (not a model folder, or a save "
                "that did not finish)."
            )
    elif _looks_like_path(path):
        raise FileNotFoundError(f"Model folder not found: {name}")
    try:
        config, _ = PretrainedConfig.get_config_dict(path, revision=revision, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        where = "the folder" if local.is_dir() else "there is no such local folder, and the Hugging Face Hub"
        raise OSError(
            f"Cannot load model {name!r}: {where} did not provide a config.json ({_first_line(error)}). --model takes "
            "a folder written by save_pretrained, a Hub id, one of the authors' original checkpoints "
            f"({', '.join(ORIGINAL_REPOS)}) or a local original checkpoint_best.pt."
        ) from error
    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING:
        return ModelSource(name, path, revision, model_type, trust_remote_code=False)
    if not config.get("auto_map"):
        raise ValueError(
            f"Model {name!r} has model type {model_type!r}, which neither this package nor transformers "
            f"{_transformers_version()} provides, and its config names no code to build it."
        )
    if not trust_remote_code:
        raise ValueError(
            f"Model {name!r} has model type {model_type!r}, which neither this package nor transformers provides: "
            "loading it would run the Python code of its folder or Hub repo. Pass --trust-remote-code "
            "(trust_remote_code=True) only if you trust that code."
        )
    return ModelSource(name, path, revision, model_type, trust_remote_code=True)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def load_model(source: ModelSource, cache_dir: str | os.PathLike | None = None, **kwargs):
    """The model `source` describes ([`inspect_model`]), built by `AutoModel` with the trust decision made there;
    `kwargs` go to `from_pretrained` (e.g. `attn_implementation`)."""
    from transformers import AutoModel

    kwargs = {"revision": source.revision, "trust_remote_code": source.trust_remote_code, **kwargs}
    return load_pretrained_model(source.name, source.path, AutoModel, cache_dir=cache_dir, **kwargs)


def load_processor(
    path: str,
    name: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
    dual_encoder: bool = True,
    hint: str = "",
):
    """The processor in `path` (a folder or Hub id, after `resolve_pretrained`), named `name` in messages.

    With `dual_encoder` it must hold a tokenizer and an image processor; otherwise a folder without a tokenizer
    gets its image processor alone. Raises `OSError` (nothing to load) or `ValueError`, followed by `hint`.
    """
    from transformers import AutoImageProcessor, AutoProcessor

    name = path if name is None else name
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code, "cache_dir": cache_dir}
    loaders = [AutoProcessor] if dual_encoder else [AutoProcessor, AutoImageProcessor]
    for loader in loaders:
        try:
            processor = loader.from_pretrained(path, **kwargs)
            break
        except (OSError, ValueError, TypeError, KeyError) as error:
            if loader is loaders[-1]:
                raise OSError(f"Cannot load the processor of {name!r}: {_first_line(error)}{hint}") from error
    if dual_encoder and (not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor")):
        raise ValueError(f"The processor of {name!r} lacks a tokenizer or an image processor.{hint}")
    return processor


def load_model_and_processor(
    model_name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    dual_encoder: bool = True,
):
    """A model and its processor from a folder, a Hub id or an original checkpoint, in evaluation mode on `device`
    (`None`: CUDA when available) in `dtype`.

    DiffCLIP and the dual encoders of transformers (CLIP, SigLIP, ...) are built from the installed classes; a
    model that needs the code of its folder or repo is refused unless `trust_remote_code=True` (see the module
    docstring). With `dual_encoder=True` (the evaluation commands) the model must have `get_text_features` and
    `get_image_features` and the processor a tokenizer and an image processor; otherwise (attention maps of a
    vision tower) a folder without a tokenizer gets its image processor alone.
    """
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    source = inspect_model(model_name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    model = load_model(source)
    processor = load_processor(source.path, source.name, revision, source.trust_remote_code, dual_encoder=dual_encoder)
    if dual_encoder:
        for method in DUAL_ENCODER_METHODS:
            if not hasattr(model, method):
                raise ValueError(
                    f"Model {source.name!r} ({type(model).__name__}) is not a dual encoder: it has no {method}."
                )
    model = model.to(device=device, dtype=dtype).eval()
    return model, processor


@dataclass(frozen=True)
class ModelLoader:
    """How a command loads its models, as typed values (what `--device`, `--dtype` and `--trust-remote-code` say):
    `loader(name, revision)` is [`load_model_and_processor`]'s model and processor. Tasks that load several models
    take one of these instead of the command's flags."""

    device: str | torch.device | None = None
    dtype: str | torch.dtype = "float32"
    trust_remote_code: bool = False
    dual_encoder: bool = True

    def __call__(self, name: str | os.PathLike, revision: str | None = None):
        return load_model_and_processor(
            name, self.device, self.dtype, revision, self.trust_remote_code, dual_encoder=self.dual_encoder
        )


# --------------------------------------------------------------------------------------------------
# What the loader gives: a processor's parts, a model's device and dtype
# --------------------------------------------------------------------------------------------------


def image_processor_of(processor):
    """The image processor of a processor (or the image processor itself)."""
    return getattr(processor, "image_processor", None) or processor


def tokenizer_of(processor):
    """The tokenizer of a processor (or the tokenizer itself); `None` for a bare image processor."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None and callable(getattr(processor, "batch_decode", None)):
        tokenizer = processor
    return tokenizer


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


# --------------------------------------------------------------------------------------------------
# Command-line flags of the loader
# --------------------------------------------------------------------------------------------------


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str | None = DEFAULT_MODEL_ID) -> None:
    """`--model`, `--revision` and `--trust-remote-code`, shared by every command that loads a model."""
    parser.add_argument(
        "--model",
        default=default_model,
        required=default_model is None,
        help="a DiffCLIP folder or Hub id (also an original checkpoint), or a transformers dual encoder such as "
        "openai/clip-vit-base-patch16 or a SigLIP model" + (f" (default: {default_model})" if default_model else ""),
    )
    parser.add_argument("--revision", help="Hub branch, tag or commit of --model (default: main)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a model type that neither this package nor transformers provides to run the Python code of its "
        "folder or repo (never needed for DiffCLIP, CLIP or SigLIP)",
    )


__all__ = [
    "DTYPES",
    "ModelLoader",
    "ModelSource",
    "add_model_arguments",
    "image_processor_of",
    "inspect_model",
    "load_model",
    "load_model_and_processor",
    "load_pretrained_model",
    "load_processor",
    "model_device_dtype",
    "resolve_device",
    "resolve_dtype",
    "tokenizer_of",
]
