# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The ONNX Runtime backend of the commands (`--backend onnx --onnx-precision fp32|int8|fp16`): an exported folder
([`export_onnx`]) opened as a module with the interface the commands' torch encoder uses (`get_image_features`,
`get_text_features`, `logit_scale`, `config`), so that zero-shot, embed, index and search run on it unchanged.

ONNX Runtime runs on the CPU, or on CUDA where `onnxruntime-gpu` is installed and the device asks for it. The module
holds one parameter, the logit scale (float32, on the CPU), so that code which reads a model's device and dtype finds
the CPU and float32: the arrays going in and out of the graphs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .graphs import PRECISIONS, graph_file


EXPORT_CONFIG_NAME = "export_config.json"
EXPORT_REPORT_NAME = "export_report.json"
BACKENDS = ("torch", "onnx")


def read_export_config(folder: str | os.PathLike, flag: str = "--model") -> dict:
    """The `export_config.json` of an exported folder; a `ValueError` naming the folder when it is not one."""
    folder = Path(folder).expanduser()
    path = folder / EXPORT_CONFIG_NAME
    if not path.is_file():
        raise ValueError(
            f"{flag} {folder}: not an ONNX export (no {EXPORT_CONFIG_NAME}); the onnx backend reads a folder written "
            "by `diffclip export onnx --model M --output DIR`."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    if not isinstance(config, dict) or not isinstance(config.get("logit_scale"), (int, float)):
        raise ValueError(f"{path}: damaged (no numeric 'logit_scale').")
    return config


def execution_providers(device: str | torch.device | None) -> list[str]:
    """ONNX Runtime's providers for `device` (`None`/"auto": CUDA when onnxruntime has it, else the CPU)."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    kind = "auto" if device in (None, "auto") else torch.device(device).type
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if kind == "cuda":
        raise ValueError(
            f"Device {device!r} was asked for but onnxruntime has no CUDA provider here (install onnxruntime-gpu)."
        )
    return ["CPUExecutionProvider"]


def _session(path: Path, providers: list[str]):
    import onnxruntime

    if not path.is_file():
        raise ValueError(
            f"{path} does not exist: the export holds no graph of this precision (export again with --quantize int8 "
            "or --fp16)."
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ValueError(f"{path}: not a readable ONNX graph ({type(error).__name__}: {error}).") from error


class OnnxDualEncoder(nn.Module):
    """The two graphs of an exported folder at one precision, called as a CLIP model's `get_image_features` and
    `get_text_features` are (projected, unnormalised float32 embeddings, as torch tensors on the CPU).

    Args:
        folder: a folder written by [`export_onnx`].
        precision: "fp32", "int8" (`*_quantized.onnx`) or "fp16" (`*_fp16.onnx`).
        device: "cpu", "cuda" or `None`/"auto" (CUDA when onnxruntime provides it).
    """

    def __init__(self, folder: str | os.PathLike, precision: str = "fp32", device: str | torch.device | None = "cpu"):
        super().__init__()
        from transformers import AutoConfig

        if precision not in PRECISIONS:
            raise ValueError(f"Unknown ONNX precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
        self.folder = Path(folder).expanduser()
        self.precision = precision
        self.export_config = read_export_config(self.folder)
        self.config = AutoConfig.from_pretrained(str(self.folder))
        self.logit_scale = nn.Parameter(torch.tensor(float(self.export_config["logit_scale"])), requires_grad=False)
        self.providers = execution_providers(device)
        self.vision_session = _session(graph_file(self.folder, "vision", precision), self.providers)
        self.text_session = _session(graph_file(self.folder, "text", precision), self.providers)
        self._graph_sha256 = None

    @property
    def backend(self) -> dict:
        """What a feature cache or an index records about the encoder: `{"backend": "onnx", "precision",
        "graph_sha256"}` (the hash of the vision graph: what made the image embeddings)."""
        if self._graph_sha256 is None:
            digest = hashlib.sha256()
            with open(graph_file(self.folder, "vision", self.precision), "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            self._graph_sha256 = digest.hexdigest()
        return {"backend": "onnx", "precision": self.precision, "graph_sha256": self._graph_sha256}

    def run_vision(self, pixel_values: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(image_embeds, pooler_output)` of a batch of pixel values."""
        pixels = np.ascontiguousarray(_numpy(pixel_values), dtype=np.float32)
        image_embeds, pooled = self.vision_session.run(["image_embeds", "pooler_output"], {"pixel_values": pixels})
        return image_embeds, pooled

    def get_image_features(self, pixel_values: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if pixel_values is None:
            raise ValueError("get_image_features needs pixel_values.")
        return torch.from_numpy(self.run_vision(pixel_values)[0])

    def get_text_features(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        if input_ids is None:
            raise ValueError("get_text_features needs input_ids.")
        input_ids = np.ascontiguousarray(_numpy(input_ids), dtype=np.int64)
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        mask = np.ones_like(input_ids) if attention_mask is None else _numpy(attention_mask).astype(np.int64)
        (text_embeds,) = self.text_session.run(
            ["text_embeds"],
            {"input_ids": input_ids, "attention_mask": np.ascontiguousarray(mask).reshape(input_ids.shape)},
        )
        return torch.from_numpy(text_embeds)

    def forward(self, *args, **kwargs):
        raise TypeError(
            f"{type(self).__name__} runs get_image_features and get_text_features; it has no joint forward."
        )

    def extra_repr(self) -> str:
        return f"folder={str(self.folder)!r}, precision={self.precision!r}, providers={self.providers}"


def _numpy(tensor) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype).numpy()
    return np.asarray(tensor)


def load_onnx_model_and_processor(
    folder: str | os.PathLike, precision: str = "fp32", device: str | torch.device | None = "cpu"
):
    """An exported folder's [`OnnxDualEncoder`] and the processor saved beside its graphs."""
    from ..core.loading import load_processor

    encoder = OnnxDualEncoder(folder, precision, device)
    processor = load_processor(str(encoder.folder), os.fspath(folder))
    return encoder, processor


def backend_of(model: nn.Module) -> dict:
    """`{"backend", "precision"}` of a model: the onnx encoder's, else torch with the model's dtype."""
    if isinstance(model, OnnxDualEncoder):
        return model.backend
    dtype = next(model.parameters()).dtype
    return {"backend": "torch", "precision": str(dtype).removeprefix("torch.")}


def check_same_backend(recorded: dict | None, model: nn.Module, what: str) -> None:
    """Refuse to mix backends or precisions in one store (`what`, e.g. "The index in DIR"): `recorded` is the
    `backend` entry it was made with (`None`: torch), compared by backend and precision."""
    have = {key: (recorded or {}).get(key) for key in ("backend", "precision")} if recorded else None
    now = getattr(model, "backend", None)
    want = {key: now.get(key) for key in ("backend", "precision")} if now else None
    if have != want:
        made = "torch" if have is None else f"onnx {have['precision']}"
        asked = "torch" if want is None else f"onnx {want['precision']}"
        raise ValueError(
            f"{what} was made with the {made} backend, not {asked}; use the same --backend and --onnx-precision, "
            "or another folder."
        )


def add_backend_arguments(parser) -> None:
    """`--backend torch|onnx` and `--onnx-precision fp32|int8|fp16`."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="run the model with PyTorch (default) or with ONNX Runtime; onnx takes as --model a folder written by "
        "`diffclip export onnx`",
    )
    parser.add_argument(
        "--onnx-precision",
        choices=PRECISIONS,
        default="fp32",
        help="which graphs of the export the onnx backend runs: fp32 (default), int8 (*_quantized.onnx) or fp16",
    )


def load_backend_model_and_processor(
    model: str | os.PathLike,
    backend: str,
    onnx_precision: str,
    device,
    dtype,
    revision=None,
    trust_remote_code: bool = False,
):
    """The model and processor the `--backend` flags name: [`load_onnx_model_and_processor`] for "onnx" (float32
    in and out; `--dtype` must stay float32), else the torch loader."""
    if backend == "onnx":
        if str(dtype).removeprefix("torch.") != "float32":
            raise ValueError(
                f"--dtype {dtype} does not apply to --backend onnx; choose the graphs with --onnx-precision."
            )
        return load_onnx_model_and_processor(model, onnx_precision, device)
    from ..core.loading import load_model_and_processor

    return load_model_and_processor(model, device, dtype, revision=revision, trust_remote_code=trust_remote_code)


__all__ = [
    "BACKENDS",
    "EXPORT_CONFIG_NAME",
    "EXPORT_REPORT_NAME",
    "OnnxDualEncoder",
    "add_backend_arguments",
    "backend_of",
    "check_same_backend",
    "execution_providers",
    "load_backend_model_and_processor",
    "load_onnx_model_and_processor",
    "read_export_config",
]
