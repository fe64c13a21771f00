"""Checks that a loaded model holds exactly what its folder holds.

A clean loading report proves nothing: transformers 5 builds the model on the meta device and then initialises
what the checkpoint "did not fill", so an `_init_weights` that writes with `.data` or a non-persistent buffer that
`_init_weights` does not rebuild comes back wrong without a word. These helpers compare every parameter with the
tensor stored in `model.safetensors` byte for byte, and every buffer with its definition.

Imports only torch and safetensors, so both the normal suite (with the package) and the remote-code suite
(without it) use them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open


# Every buffer a DiffCLIP model may hold, as (regular expression on the buffer's name, function of (model, name)
# returning the value it must have). DiffCLIP currently has no buffers: any buffer that appears is reported, so a
# new one cannot slip in without a definition here (and a rebuild in `_init_weights`).
KNOWN_BUFFERS: list[tuple[str, Callable[[torch.nn.Module, str], torch.Tensor]]] = []


def read_checkpoint(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors`, or of every shard listed by `model.safetensors.index.json`."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{folder} has neither model.safetensors nor model.safetensors.index.json")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(folder / name), framework="pt") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    return tensors


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN-safe and sign-of-zero-safe, unlike `torch.equal`)."""
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and _raw_bytes(a) == _raw_bytes(b)


def parameter_problems(model: torch.nn.Module, folder: str | Path, dtype: torch.dtype | None = None) -> list[str]:
    """Differences between the model's parameters and the checkpoint's tensors.

    With `dtype`, the stored tensors are cast to it first (for a model loaded with `dtype=...`); the cast of a
    float32 tensor to float64 is exact, so the comparison stays bitwise.
    """
    stored = read_checkpoint(folder)
    problems = []
    parameters = dict(model.named_parameters(remove_duplicate=False))
    for name, parameter in parameters.items():
        if name not in stored:
            problems.append(f"parameter {name} is not in the checkpoint")
            continue
        expected = stored[name] if dtype is None else stored[name].to(dtype)
        if parameter.device.type == "meta":
            problems.append(f"parameter {name} is still on the meta device")
        elif not same_bytes(parameter, expected):
            if parameter.dtype != expected.dtype or parameter.shape != expected.shape:
                detail = f"{parameter.dtype}{tuple(parameter.shape)} vs {expected.dtype}{tuple(expected.shape)}"
            else:
                diff = (parameter.detach().double() - expected.double()).abs().max().item()
                detail = f"max abs difference {diff:.3g}"
            problems.append(f"parameter {name} differs from the checkpoint ({detail})")
    buffer_names = {name for name, _ in model.named_buffers()}
    for name in stored:
        if name not in parameters and name not in buffer_names:
            problems.append(f"checkpoint tensor {name} is neither a parameter nor a buffer of the model")
    return problems


def buffer_problems(model: torch.nn.Module) -> list[str]:
    """Buffers that are unknown, or that differ from their definition in `KNOWN_BUFFERS`."""
    problems = []
    for name, buffer in model.named_buffers():
        for pattern, definition in KNOWN_BUFFERS:
            if re.fullmatch(pattern, name):
                expected = definition(model, name).to(buffer.device)
                if buffer.device.type == "meta" or not same_bytes(buffer, expected.to(buffer.dtype)):
                    problems.append(f"buffer {name} differs from its definition")
                break
        else:
            problems.append(
                f"unknown buffer {name} {tuple(buffer.shape)}: add its definition to KNOWN_BUFFERS "
                "(and make sure `_init_weights` rebuilds it)"
            )
    return problems


def assert_matches_checkpoint(model: torch.nn.Module, folder: str | Path, dtype: torch.dtype | None = None) -> None:
    problems = parameter_problems(model, folder, dtype) + buffer_problems(model)
    assert not problems, "loaded model does not hold its checkpoint:\n" + "\n".join(problems)
