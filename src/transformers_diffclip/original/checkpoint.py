# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The original DiffCLIP / CLIP training checkpoints: safe loading, architecture detection, and the declarative map
from original tensor names to [`DiffCLIPModel`] parameter names.

A released file (`checkpoint_best.pt`) is a `torch.save` of a dict: `epoch`, `state_dict` (keys prefixed `module.`
by the data-parallel wrapper), `optimizer`, `scaler`, `best_acc1` and `args` (an `argparse.Namespace`). Only the
state dict is converted; the rest is dropped as soon as the file is read. The original layout of every tensor is
in `shared/reference/original_layout.json`.

Nothing here runs code from the checkpoint: files are read with `torch.load(weights_only=True)` and only
`argparse.Namespace` is allow-listed on top of what torch accepts by default (tensors and plain Python values).
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import sys
from collections.abc import Callable, Mapping
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
# timm's ViT and CLIP's text transformer both use 64-wide heads; standard attention does not reveal its head count.
DEFAULT_HEAD_DIM = 64
# The timm ViT of the CLIP baseline uses LayerNorm eps 1e-6; DiffCLIP's differential ViT uses torch's default 1e-5.
STANDARD_VISION_LAYER_NORM_EPS = 1e-6
DIFFERENTIAL_VISION_LAYER_NORM_EPS = 1e-5


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------
# Finding and loading the file
# --------------------------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return value or bool(constants.HF_HUB_OFFLINE)


def hub_download(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    what: str = "the file",
    instead: str = "",
    **hub_arguments,
) -> Path:
    """`huggingface_hub.hf_hub_download` (its cache, progress bar and `HF_HUB_OFFLINE`), with every failure turned
    into a [`ConversionError`] that names `repo_id/filename` and says what to do (`instead`: how to do without).
    `hub_arguments` (`token`, `force_download`, `subfolder`, `proxies`) go to `hf_hub_download` as given; those left
    at None are not passed (`proxies`, which huggingface_hub 1.x ignores with a warning, only when set)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=bool(local_files_only),
                **{name: value for name, value in hub_arguments.items() if value is not None},
            )
        )
    except LocalEntryNotFoundError as error:
        if local_files_only:
            reason = "local_files_only is set"
        else:
            reason = "HF_HUB_OFFLINE is set" if _hub_offline() else "no network connection to the Hub"
        at = f" at revision {revision!r}" if revision else ""
        raise ConversionError(
            f"The Hugging Face Hub is unreachable ({reason}) and {repo_id}/{filename}{at} ({what}) is not in the "
            f"local cache. Download it once where the Hub is reachable: `hf download {repo_id} {filename}"
            f"{f' --revision {revision}' if revision else ''}` puts it in the cache{instead}."
        ) from error
    except GatedRepoError as error:
        raise ConversionError(
            f"{repo_id} is gated: accept its terms on the Hub and log in (`hf auth login`)."
        ) from error
    except RepositoryNotFoundError as error:
        raise ConversionError(
            f"Hub repo {repo_id} not found (or private without a login). The authors' checkpoints: "
            f"{', '.join(ORIGINAL_REPOS)}."
        ) from error
    except RevisionNotFoundError as error:
        raise ConversionError(f"Hub repo {repo_id} has no revision {revision!r}.") from error
    except EntryNotFoundError as error:
        raise ConversionError(f"Hub repo {repo_id} has no file {filename}.") from error


def resolve_checkpoint(
    checkpoint: str | os.PathLike,
    filename: str = CHECKPOINT_FILENAME,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    **hub_arguments,
) -> tuple[Path, str | None]:
    """`(local path, repo id or None)` of `checkpoint`: an existing local file, or a Hub repo id whose `filename` is
    downloaded (or taken from the cache) with `huggingface_hub.hf_hub_download` (`hub_arguments`: see
    [`hub_download`])."""
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path, None
    if path.exists():
        raise ConversionError(f"{checkpoint} is a directory; pass the checkpoint file inside it.")
    spec = str(checkpoint)
    if not _REPO_ID.match(spec):
        raise FileNotFoundError(
            f"{spec}: no such file, and it is not a Hub repo id (ORG/NAME such as {DEFAULT_MODEL_ID})."
        )
    instead = (
        f" (or fetch https://huggingface.co/{spec}/resolve/{revision or 'main'}/{filename} any other way and pass "
        f"the file in place of {spec})"
    )
    what = "the original checkpoint"
    path = hub_download(spec, filename, revision, cache_dir, local_files_only, what, instead, **hub_arguments)
    return path, spec


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


# --------------------------------------------------------------------------------------------------
# The key map (original name -> DiffCLIPModel name)
# --------------------------------------------------------------------------------------------------


def _copy(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (tensor,)


def _transpose(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The original projections are used as `x @ W`; a `nn.Linear` holds `Wᵀ`."""
    if tensor.dim() != 2:
        raise ConversionError(f"expected a matrix, got shape {tuple(tensor.shape)}")
    return (tensor.t().contiguous(),)


def _drop_leading_ones(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """timm keeps `cls_token` as (1, 1, W) and `pos_embed` as (1, N, W); transformers as (W,) and (N, W)."""
    if tensor.dim() < 2 or tensor.shape[0] != 1:
        raise ConversionError(f"expected a leading batch dimension of 1, got shape {tuple(tensor.shape)}")
    tensor = tensor[0]
    while tensor.dim() > 1 and tensor.shape[0] == 1:
        tensor = tensor[0]
    return (tensor,)


def _split_qkv(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """timm's fused `qkv` and `nn.MultiheadAttention`'s `in_proj_*` stack q, k and v (in that order) on dim 0."""
    if tensor.shape[0] % 3:
        raise ConversionError(f"a fused q/k/v tensor needs a first dimension divisible by 3, not {tensor.shape[0]}")
    return tuple(part.clone() for part in tensor.chunk(3, dim=0))  # own storage each: safetensors refuses shared


@dataclass(frozen=True)
class KeyRule:
    """One original tensor name (a template; `{layer}` is a layer index) and the model parameter(s) it fills."""

    original: str
    converted: tuple[str, ...]
    transform: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = _copy
    # for rules of one attention type: the tower and "standard" or "differential" (the converted names overlap)
    tower: str | None = None
    attention: str | None = None

    def _regex(self, template: str) -> re.Pattern:
        return re.compile(re.escape(template).replace(re.escape("{layer}"), r"(?P<layer>\d+)") + r"\Z")

    def match_original(self, name: str) -> dict | None:
        match = self._regex(self.original).match(name)
        return match.groupdict() if match else None

    def match_converted(self, name: str) -> tuple[dict, int] | None:
        for index, template in enumerate(self.converted):
            match = self._regex(template).match(name)
            if match:
                return match.groupdict(), index
        return None

    def converted_names(self, groups: dict) -> tuple[str, ...]:
        return tuple(template.format(**groups) for template in self.converted)


def _rule(original: str, converted: str | tuple[str, ...], transform=_copy, tower=None, attention=None) -> KeyRule:
    return KeyRule(original, (converted,) if isinstance(converted, str) else converted, transform, tower, attention)


def _weight_and_bias(original: str, converted: str) -> list[KeyRule]:
    return [_rule(f"{original}.weight", f"{converted}.weight"), _rule(f"{original}.bias", f"{converted}.bias")]


def _split(original: str, converted_prefix: str, suffix: str, tower: str) -> KeyRule:
    names = tuple(f"{converted_prefix}{proj}_proj.{suffix}" for proj in ("q", "k", "v"))
    return _rule(original, names, _split_qkv, tower, "standard")


def _differential(original_prefix: str, converted_prefix: str, tower: str) -> list[KeyRule]:
    # nn.MultiheadAttention also names its output projection `out_proj`: that rule serves both attention types
    return [
        _rule(
            original_prefix + name,
            converted_prefix + name,
            tower=tower,
            attention=None if tower == "text" and name.startswith("out_proj") else "differential",
        )
        for name in _DIFFERENTIAL_ATTENTION
    ]


# Differential attention: same names in both towers and in the model (under `self_attn.`).
_DIFFERENTIAL_ATTENTION = ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2", "diff_norm.weight") + tuple(
    f"{proj}_proj.{kind}" for proj in ("q", "k", "v", "out") for kind in ("weight", "bias")
)

_VISION, _VISION_HF = "visual.blocks.{layer}.", "vision_model.encoder.layers.{layer}."
_TEXT, _TEXT_HF = "transformer.resblocks.{layer}.", "text_model.encoder.layers.{layer}."

KEY_MAP: tuple[KeyRule, ...] = (
    # text tower
    _rule("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    _rule("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    *_weight_and_bias(_TEXT + "ln_1", _TEXT_HF + "layer_norm1"),
    *_weight_and_bias(_TEXT + "ln_2", _TEXT_HF + "layer_norm2"),
    *_weight_and_bias(_TEXT + "mlp.c_fc", _TEXT_HF + "mlp.fc1"),
    *_weight_and_bias(_TEXT + "mlp.c_proj", _TEXT_HF + "mlp.fc2"),
    _split(_TEXT + "attn.in_proj_weight", _TEXT_HF + "self_attn.", "weight", "text"),  # nn.MultiheadAttention
    _split(_TEXT + "attn.in_proj_bias", _TEXT_HF + "self_attn.", "bias", "text"),
    *_differential(_TEXT + "attn.", _TEXT_HF + "self_attn.", "text"),
    *_weight_and_bias("ln_final", "text_model.final_layer_norm"),
    # vision tower (timm ViT layout)
    _rule("visual.cls_token", "vision_model.embeddings.class_embedding", _drop_leading_ones),
    _rule("visual.pos_embed", "vision_model.embeddings.position_embedding.weight", _drop_leading_ones),
    *_weight_and_bias("visual.patch_embed.proj", "vision_model.embeddings.patch_embedding"),
    *_weight_and_bias(_VISION + "norm1", _VISION_HF + "layer_norm1"),
    *_weight_and_bias(_VISION + "norm2", _VISION_HF + "layer_norm2"),
    *_weight_and_bias(_VISION + "mlp.fc1", _VISION_HF + "mlp.fc1"),
    *_weight_and_bias(_VISION + "mlp.fc2", _VISION_HF + "mlp.fc2"),
    _split(_VISION + "attn.qkv.weight", _VISION_HF + "self_attn.", "weight", "vision"),  # timm Attention (CLIP)
    _split(_VISION + "attn.qkv.bias", _VISION_HF + "self_attn.", "bias", "vision"),
    *(
        _rule(
            f"{_VISION}attn.proj.{kind}",
            f"{_VISION_HF}self_attn.out_proj.{kind}",
            tower="vision",
            attention="standard",
        )
        for kind in ("weight", "bias")
    ),
    *_differential(_VISION + "attn.", _VISION_HF + "self_attn.", "vision"),
    *_weight_and_bias("visual.norm", "vision_model.post_layernorm"),
    # joint space
    _rule("image_projection", "visual_projection.weight", _transpose),
    _rule("text_projection", "text_projection.weight", _transpose),
    _rule("logit_scale", "logit_scale"),
)


def find_rule(original_name: str) -> tuple[KeyRule, dict] | None:
    """The rule for an original tensor name and its `{layer}` value, or None."""
    matches = [(rule, groups) for rule in KEY_MAP if (groups := rule.match_original(original_name)) is not None]
    if len(matches) > 1:  # a bug in KEY_MAP, not in the checkpoint
        raise AssertionError(f"{original_name} matches several key rules: {[rule.original for rule, _ in matches]}")
    return matches[0] if matches else None


def original_name_of(converted_name: str, differential: Mapping[str, bool] | None = None) -> str:
    """The original tensor a model parameter comes from (with the part of a fused q/k/v it takes), for messages.
    `differential` (tower → bool) picks between the standard and the differential attention layouts."""
    for rule in KEY_MAP:
        if rule.attention and differential is not None and rule.tower in differential:
            if (rule.attention == "differential") != differential[rule.tower]:
                continue
        found = rule.match_converted(converted_name)
        if found is not None:
            groups, index = found
            name = rule.original.format(**groups)
            return f"{name} ({'qkv'[index]} part)" if len(rule.converted) == 3 else name
    return converted_name


def _listing(names, limit: int = 20) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … and {len(names) - limit} more" if len(names) > limit else "")


def layout_error(
    missing=(), unexpected=(), mismatched=(), header: str = "The checkpoint does not match the DiffCLIP/CLIP layout"
) -> ConversionError:
    lines = [f"{header}:"]
    if missing:
        lines.append(f"  missing original tensors ({len(missing)}): {_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected original tensors ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
    lines.append(
        f"Is the file truncated, from another model, or edited? The released files are {', '.join(ORIGINAL_REPOS)}."
    )
    return ConversionError("\n".join(lines))


def convert_state_dict(
    original: Mapping[str, torch.Tensor],
    expected_shapes: Mapping[str, tuple[int, ...]],
    differential: Mapping[str, bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Map an original state dict (without the `module.` prefix) onto model parameter names, strictly: every
    original tensor is used exactly once, every expected parameter is filled once with the expected shape.
    Otherwise a [`ConversionError`] lists every missing, unexpected and mis-shaped tensor by its original name
    (`differential`, tower → bool, names missing attention tensors in the right layout)."""
    converted: dict[str, torch.Tensor] = {}
    unexpected, mismatched, mismatched_names = [], [], set()
    for name, tensor in original.items():
        found = find_rule(name)
        targets = found[0].converted_names(found[1]) if found else ()
        if not targets or any(target not in expected_shapes for target in targets):
            unexpected.append(f"{name} {tuple(tensor.shape)}")
            continue
        try:
            values = found[0].transform(tensor)
            problem = next(
                (
                    f"gives {target} {tuple(value.shape)}, the model expects {tuple(expected_shapes[target])}"
                    for target, value in zip(targets, values)
                    if tuple(value.shape) != tuple(expected_shapes[target])
                ),
                None,
            )
        except ConversionError as error:
            problem = str(error)
        if problem is not None:
            mismatched.append(f"{name} {tuple(tensor.shape)}: {problem}")
            mismatched_names.add(name)
            continue
        for target, value in zip(targets, values):
            if target in converted:  # only possible with a broken KEY_MAP
                raise AssertionError(f"{target} is filled twice")
            converted[target] = value
    missing = [original_name_of(n, differential) for n in expected_shapes if n not in converted]
    # a mis-shaped tensor is reported once, as a mismatch
    missing = [n for n in dict.fromkeys(missing) if n.split(" ", 1)[0] not in mismatched_names]
    if missing or unexpected or mismatched:
        raise layout_error(missing, unexpected, mismatched)
    return converted


# --------------------------------------------------------------------------------------------------
# Architecture detection
# --------------------------------------------------------------------------------------------------

# Tensors whose shapes size the model; a file without them is not a DiffCLIP/CLIP checkpoint of this release.
_ANCHORS = (
    "visual.cls_token",
    "visual.pos_embed",
    "visual.patch_embed.proj.weight",
    "token_embedding.weight",
    "positional_embedding",
    "image_projection",
    "text_projection",
    "logit_scale",
)


@dataclass(frozen=True)
class Architecture:
    """What the weights (plus the flags the weights cannot answer) say about the model."""

    differential_vision: bool
    differential_text: bool
    lambda_init_schedule: str
    config_kwargs: dict

    @property
    def variant(self) -> str:
        """The paper's name of this model: DiffCLIP, DiffCLIP* (depth-scheduled λ_init), DiffCLIP† (vision tower
        only) or CLIP (the standard-attention baseline)."""
        if not self.differential_vision and not self.differential_text:
            return "CLIP"
        name = "DiffCLIP" if self.differential_text else "DiffCLIP†"
        if not self.differential_vision:
            name = "DiffCLIP (text tower only; not a variant of the paper)"
        return name + ("*" if self.lambda_init_schedule == "depth" else "")


def _count_layers(names, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    return max(indices) + 1 if indices else 0


def _attention_kind(names: set[str], block: str, fused: str, tower: str) -> bool:
    """True for differential attention in `block`, False for standard attention with the fused q/k/v `fused`."""
    differential = any(f"{block}attn.{name}" in names for name in ("q_proj.weight", "lambda_q1", "diff_norm.weight"))
    standard = f"{block}attn.{fused}" in names
    if differential == standard:
        found = sorted(n for n in names if n.startswith(block + "attn."))
        raise ConversionError(
            f"Cannot tell the {tower} tower's attention: expected `{block}attn.q_proj.weight` (differential) or "
            f"`{block}attn.{fused}` (standard), found {_listing(found) or 'no attention tensors'}."
        )
    return differential


def _heads(names, shapes, block: str, width: int, differential: bool, requested: int | None, tower: str) -> int:
    if differential:
        lambda_name = block + "attn.lambda_q1"
        if lambda_name not in shapes:
            raise layout_error([lambda_name])
        head_dim = shapes[lambda_name][0]
        if head_dim == 0 or width % head_dim:
            raise ConversionError(f"{lambda_name} has {head_dim} entries, which does not divide the width {width}.")
        heads = width // head_dim
        if requested is not None and requested != heads:
            raise ConversionError(
                f"--{tower}-heads {requested} contradicts the weights: {lambda_name} has {head_dim} entries, so the "
                f"{tower} tower has {heads} heads of width {head_dim}."
            )
        return heads
    if requested is not None:
        if requested <= 0 or width % requested:
            raise ConversionError(f"--{tower}-heads {requested} does not divide the {tower} width {width}.")
        return requested
    if width % DEFAULT_HEAD_DIM:
        raise ConversionError(
            f"The {tower} tower uses standard attention, whose head count the weights do not reveal, and its width "
            f"{width} is not a multiple of {DEFAULT_HEAD_DIM}; pass --{tower}-heads."
        )
    return width // DEFAULT_HEAD_DIM


def detect_architecture(
    state_dict: Mapping[str, torch.Tensor],
    lambda_init_schedule: str = "constant",
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> Architecture:
    """Read the model's sizes and attention types from the tensor names and shapes.

    DiffCLIP† (standard text tower) and the CLIP baseline are told apart from DiffCLIP by their attention tensors.
    DiffCLIP* cannot be: its depth-scheduled λ_init is a constant of the code, not a weight, so it is selected by
    `lambda_init_schedule="depth"`. Standard attention hides its head count; it defaults to 64-wide heads (the
    released ViT-B/16 towers: 12 vision heads, 8 text heads) unless `vision_heads` / `text_heads` say otherwise.
    """
    names = set(state_dict)
    shapes = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
    missing_anchors = [name for name in _ANCHORS if name not in names]
    vision_layers = _count_layers(names, "visual.blocks.")
    text_layers = _count_layers(names, "transformer.resblocks.")
    if len(missing_anchors) > len(_ANCHORS) // 2 or not vision_layers or not text_layers:
        raise ConversionError(
            "This is not a DiffCLIP or CLIP checkpoint of the DiffCLIP release (a timm ViT `visual.*` plus a CLIP "
            f"text transformer `transformer.resblocks.*`): missing {_listing(missing_anchors) or 'layer stacks'}; "
            f"its tensors are named like {_listing(sorted(names), 8)}."
        )
    needed = [
        "visual.blocks.0.mlp.fc1.weight",
        "transformer.resblocks.0.mlp.c_fc.weight",
    ]
    missing = missing_anchors + [name for name in needed if name not in names]
    if missing:
        raise layout_error(missing, header="The checkpoint lacks tensors that size the model")
    if lambda_init_schedule not in ("constant", "depth"):
        raise ConversionError(f"lambda_init_schedule must be 'constant' or 'depth', got {lambda_init_schedule!r}.")

    vision_width = shapes["visual.cls_token"][-1]
    patch_shape = shapes["visual.patch_embed.proj.weight"]
    if len(patch_shape) != 4 or patch_shape[2] != patch_shape[3]:
        raise ConversionError(f"visual.patch_embed.proj.weight should be (W, C, P, P), got {patch_shape}.")
    patch_size = patch_shape[2]
    num_patches = shapes["visual.pos_embed"][-2] - 1
    grid = math.isqrt(max(num_patches, 0))
    if grid * grid != num_patches or grid == 0:
        raise ConversionError(
            f"visual.pos_embed has {num_patches + 1} positions, not a class token plus a square patch grid."
        )
    vocab_size, text_width = shapes["token_embedding.weight"]
    context_length = shapes["positional_embedding"][0]
    projection_dim = shapes["image_projection"][-1]
    for name, first in (("image_projection", vision_width), ("text_projection", text_width)):
        if len(shapes[name]) != 2 or shapes[name] != (first, projection_dim):
            raise ConversionError(
                f"{name} has shape {shapes[name]}; expected ({first}, {projection_dim}) (tower width × joint size)."
            )

    differential_vision = _attention_kind(names, "visual.blocks.0.", "qkv.weight", "vision")
    differential_text = _attention_kind(names, "transformer.resblocks.0.", "in_proj_weight", "text")
    if lambda_init_schedule == "depth" and not (differential_vision or differential_text):
        raise ConversionError(
            "--lambda-init-schedule depth selects DiffCLIP*, but this checkpoint has no differential attention "
            "(it is the CLIP baseline)."
        )
    schedule = {"lambda_init_schedule": lambda_init_schedule}
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": shapes["visual.blocks.0.mlp.fc1.weight"][0],
        "num_hidden_layers": vision_layers,
        "num_attention_heads": _heads(
            names, shapes, "visual.blocks.0.", vision_width, differential_vision, vision_heads, "vision"
        ),
        "num_channels": patch_shape[1],
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "hidden_act": "gelu",
        "layer_norm_eps": DIFFERENTIAL_VISION_LAYER_NORM_EPS
        if differential_vision
        else STANDARD_VISION_LAYER_NORM_EPS,
        "patch_embedding_bias": "visual.patch_embed.proj.bias" in names,
        "use_pre_layernorm": False,
        "use_differential_attention": differential_vision,
        **schedule,
    }
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": shapes["transformer.resblocks.0.mlp.c_fc.weight"][0],
        "num_hidden_layers": text_layers,
        "num_attention_heads": _heads(
            names, shapes, "transformer.resblocks.0.", text_width, differential_text, text_heads, "text"
        ),
        "max_position_embeddings": context_length,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "use_differential_attention": differential_text,
        # the end-of-text token is the largest id of the CLIP vocabulary
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
        "bos_token_id": vocab_size - 2,
        **schedule,
    }
    return Architecture(
        differential_vision=differential_vision,
        differential_text=differential_text,
        lambda_init_schedule=lambda_init_schedule,
        config_kwargs={
            "text_config": text_config,
            "vision_config": vision_config,
            "projection_dim": projection_dim,
        },
    )
