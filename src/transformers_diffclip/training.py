# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune DiffCLIP with transformers' `Trainer`, on one process or many (torchrun, accelerate: DDP, FSDP).

Reading order: the contrastive loss with negatives from every process → retrieval metrics → data (checking,
lazy image loading, the collator) → Trainer glue (logit-scale clamp callback, `DiffCLIPTrainer`) → the
`diffclip-finetune` command.

The recipe of the released models (ORIGINAL_MODEL.md) is kept where it is a property of the training step:

- the loss is the symmetric cross-entropy over `exp(logit_scale) · cos(image, text)`, with the embeddings of every
  process as negatives, gathered *with* gradient, so loss and gradients equal those of one process running the whole
  global batch (see [`distributed_contrastive_loss`]);
- the logit scale is clamped to at most `config.max_logit_scale` (ln 100) after every optimizer step
  ([`LogitScaleClampCallback`]);
- weight decay applies to matrices and the class token only, not to biases, norms, λ vectors or the logit scale
  ([`DiffCLIPTrainer.get_decay_parameter_names`]).

The loss is computed inside the model's forward (a forward hook, [`gathered_loss_hook`]), where DDP and FSDP have
the parameters whole; under FSDP the scalar logit scale is stored as a 1-element vector, since FSDP refuses scalar
parameters ([`make_logit_scale_shardable`]; saved files keep the scalar).

Everything else (optimizer, schedule, mixed precision, gradient accumulation, checkpointing, logging, the
distributed engine) is the standard `TrainingArguments`. Gradient accumulation accumulates gradients, not
negatives: each micro-batch is contrasted against the micro-batches of the same step on the other processes.
"""

import contextlib
import io
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    AutoModel,
    AutoProcessor,
    EvalPrediction,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import ModelOutput, logging

from .modeling_diffclip import DiffCLIPModel


logger = logging.get_logger(__name__)

IMAGE_COLUMN_CANDIDATES = ("image_path", "image")
# Names of the columns after `prepare_image_caption_dataset`, whatever the source columns were called.
IMAGE, CAPTION = "image", "caption"
_DATA_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}
_MAX_LISTED_PROBLEMS = 10


# --------------------------------------------------------------------------------------------------
# Contrastive loss with negatives from every process
# --------------------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    """(world size, rank) of the default process group; (1, 0) when torch.distributed is not running."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of `tensor` from every process, concatenated in rank order, and the index of this process's first
    row in the result.

    The gather is autograd-aware (`torch.distributed.nn.functional.all_gather`): in backward, each process receives
    the sum over all processes of the gradients that flowed into its rows. Processes may hold different numbers of
    rows (a skipped bad image, a short last batch); rows are padded for the collective and the padding dropped.
    Without torch.distributed (or with one process) this returns `(tensor, 0)`.
    """
    world_size, rank = _world()
    if world_size == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    local = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, local)
    sizes = [int(size.item()) for size in sizes]
    longest = max(sizes)
    padded = F.pad(tensor, (0, 0, 0, longest - tensor.shape[0])) if tensor.shape[0] < longest else tensor
    with warnings.catch_warnings():
        # torch 2.13 deprecates it in favour of a functional collective whose backward needs reduce-scatter, which
        # gloo (CPU) lacks; this autograd-aware gather works on every backend and torch >= 2.4.
        warnings.filterwarnings(
            "ignore", message=r".*nn\.functional\.all_gather is deprecated", category=FutureWarning
        )
        pieces = all_gather(padded.contiguous())
    gathered = torch.cat([piece[:size] for piece, size in zip(pieces, sizes)], dim=0)
    return gathered, sum(sizes[:rank])


def _local_logits(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """This process's rows against the columns of every process: (image→text logits, text→image logits, the
    column of each row's match, the global number of pairs)."""
    if image_embeds.shape != text_embeds.shape or image_embeds.dim() != 2:
        raise ValueError(
            "image_embeds and text_embeds must both have shape (batch_size, projection_dim) with one caption per "
            f"image, got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}."
        )
    # The logits and the softmax in at least float32, whatever the autocast dtype of the embeddings.
    dtype = torch.promote_types(image_embeds.dtype, torch.float32)
    image_embeds, text_embeds = image_embeds.to(dtype), text_embeds.to(dtype)
    all_image_embeds, offset = gather_with_grad(image_embeds)
    all_text_embeds, _ = gather_with_grad(text_embeds)
    scale = logit_scale.to(dtype).exp().reshape(())  # a scalar, or a 1-element vector under FSDP
    logits_image_to_text = scale * image_embeds @ all_text_embeds.t()
    logits_text_to_image = scale * text_embeds @ all_image_embeds.t()
    targets = torch.arange(image_embeds.shape[0], device=image_embeds.device) + offset
    return logits_image_to_text, logits_text_to_image, targets, all_image_embeds.shape[0]


def distributed_contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    r"""The symmetric contrastive loss of CLIP over the global batch, computed on each process for its own rows.

    Args:
        image_embeds, text_embeds (`torch.Tensor` of shape `(local_batch_size, projection_dim)`): L2-normalised
            embeddings of this process's pairs (row i of each is a matching pair).
        logit_scale (`torch.Tensor`, scalar): the *log* of the temperature scale, as the model stores it.

    With B pairs on all processes together, b of them here, this process returns

        (world_size / B) · Σ_{its b rows} ½ [CE(image_i → all B texts) + CE(text_i → all B images)]

    Averaged over processes (what DDP and FSDP do with gradients, and what Trainer logs), that is the loss of one
    process on the whole batch, and because the gather passes gradients back to the process that owns each row, the
    averaged gradients are that process's gradients too. With equal local batches the factor `world_size / B` is
    `1 / b`: each process's loss is the mean over its rows. With one process this is `contrastive_loss` of the
    model.
    """
    logits_i2t, logits_t2i, targets, global_batch = _local_logits(image_embeds, text_embeds, logit_scale)
    world_size, _ = _world()
    per_row = F.cross_entropy(logits_i2t, targets, reduction="sum") + F.cross_entropy(
        logits_t2i, targets, reduction="sum"
    )
    return per_row * (world_size / (2 * global_batch))


# --------------------------------------------------------------------------------------------------
# Retrieval metrics
# --------------------------------------------------------------------------------------------------


def retrieval_ranks(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """For each of this process's pairs, the rank (0 = retrieved first) of its caption among the captions of the
    global batch (image→text) and of its image among the images (text→image): shape `(local_batch_size, 2)`.

    Ties count against the match, so a collapsed model that gives every pair the same score ranks last, not first;
    duplicate captions in one batch therefore count as misses.
    """
    logits_i2t, logits_t2i, targets, _ = _local_logits(image_embeds, text_embeds, image_embeds.new_zeros(()))
    rows = torch.arange(targets.shape[0], device=targets.device)
    ranks = [(logits >= logits[rows, targets].unsqueeze(1)).sum(dim=1) - 1 for logits in (logits_i2t, logits_t2i)]
    return torch.stack(ranks, dim=1)


def compute_retrieval_metrics(eval_prediction: EvalPrediction, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """In-batch retrieval metrics from the ranks of [`retrieval_ranks`] (the predictions of
    [`DiffCLIPTrainer.prediction_step`]): `i2t_accuracy` / `t2i_accuracy` (recall@1, image→text and
    text→image) and `i2t_recall@k` / `t2i_recall@k` for the other `ks`. In-batch means that each pair competes
    with the other pairs of its global evaluation batch (`per_device_eval_batch_size` × number of processes)."""
    ranks = eval_prediction.predictions
    ranks = ranks[0] if isinstance(ranks, (tuple, list)) else ranks
    ranks = np.asarray(ranks).reshape(-1, 2)
    metrics = {}
    for column, direction in enumerate(("i2t", "t2i")):
        for k in ks:
            name = f"{direction}_accuracy" if k == 1 else f"{direction}_recall@{k}"
            metrics[name] = float((ranks[:, column] < k).mean()) if len(ranks) else float("nan")
    return metrics


# --------------------------------------------------------------------------------------------------
# Data: checking rows, loading images lazily, collating
# --------------------------------------------------------------------------------------------------


def _describe(image: Any) -> str:
    if isinstance(image, dict):
        return repr(image.get("path") or "<image bytes>")
    return repr(image)


def _resolve_path(path: str, image_root: str | os.PathLike | None) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and image_root is not None:
        resolved = Path(image_root) / resolved
    return resolved


def open_image(image: Any, image_root: str | os.PathLike | None = None) -> Image.Image:
    """An RGB PIL image from what an image column may hold: a PIL image, a path (relative paths are taken from
    `image_root`), raw bytes, or the `{"path", "bytes"}` dict of `datasets.Image(decode=False)`. Raises
    `FileNotFoundError` or `ValueError` naming the image when it is missing or cannot be decoded."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    source = image
    if isinstance(image, dict):
        source = image.get("bytes") or image.get("path")
    if isinstance(source, (bytes, bytearray)):
        handle, name = io.BytesIO(source), _describe(image)
    elif isinstance(source, (str, os.PathLike)) and str(source):
        path = _resolve_path(str(source), image_root)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {str(path)!r}")
        handle, name = path, repr(str(path))
    else:
        raise ValueError(f"no image (got {image!r})")
    try:
        with Image.open(handle) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {name}: {error}") from error


def _image_problem(image: Any, image_root) -> str:
    """Why this image cannot be used ('' when it can), checked cheaply: the file exists and PIL recognises its
    header. Full decoding happens lazily, when the row is used."""
    if isinstance(image, Image.Image):
        return ""
    source = (image.get("bytes") or image.get("path")) if isinstance(image, dict) else image
    if isinstance(source, (bytes, bytearray)):
        handle = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)) and str(source).strip():
        handle = _resolve_path(str(source), image_root)
        if not handle.is_file():
            return f"image file not found: {str(handle)!r}"
    else:
        return f"no image (got {image!r})"
    try:
        with Image.open(handle):
            return ""
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        name = _describe(image) if isinstance(handle, io.BytesIO) else repr(str(handle))
        return f"cannot read image {name}: {error}"


def _caption_problem(caption: Any) -> str:
    if caption is None or (isinstance(caption, float) and math.isnan(caption)):
        return "empty caption"
    if not isinstance(caption, str):
        return f"caption is not text (got {type(caption).__name__} {caption!r})"
    if not caption.strip():
        return "empty caption"
    return ""


class _RowChecker:
    """`datasets.map` function that writes, for each row, why it cannot be used ('' when it can)."""

    def __init__(self, image_root):
        self.image_root = None if image_root is None else str(image_root)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        problems = []
        for image, caption in zip(batch[IMAGE], batch[CAPTION]):
            found = (_image_problem(image, self.image_root), _caption_problem(caption))
            problems.append("; ".join(problem for problem in found if problem))
        return {"_problem": problems}


class ImageCaptionTransform:
    """Lazy preprocessing for `Dataset.with_transform`: opens the images of the rows being read (as RGB PIL images)
    and passes the captions through. The pixels and tokens themselves are made by [`DiffCLIPDataCollator`], batch by
    batch.

    With `skip_bad_rows`, an image that cannot be decoded becomes `None` (the collator drops the row and says so);
    otherwise it raises a `ValueError` naming the image.
    """

    def __init__(self, image_root: str | os.PathLike | None = None, skip_bad_rows: bool = False):
        self.image_root = None if image_root is None else str(image_root)
        self.skip_bad_rows = skip_bad_rows

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = []
        for image in batch[IMAGE]:
            try:
                images.append(open_image(image, self.image_root))
            except (FileNotFoundError, ValueError) as error:
                if not self.skip_bad_rows:
                    raise ValueError(f"{error}. Pass --skip_bad_rows to skip unreadable images.") from error
                logger.warning(f"Skipping a row: {error}")
                images.append(None)
        return {IMAGE: images, CAPTION: list(batch[CAPTION])}


def _resolve_columns(column_names: list[str], image_column: str | None, caption_column: str, split: str):
    available = ", ".join(repr(c) for c in column_names)
    if image_column is None:
        candidates = [c for c in IMAGE_COLUMN_CANDIDATES if c in column_names]
        if not candidates:
            raise ValueError(
                f"The {split} split has no image column: none of {list(IMAGE_COLUMN_CANDIDATES)} is among its "
                f"columns ({available}). Pass --image_column."
            )
        image_column = candidates[0]
    for flag, column in (("--image_column", image_column), ("--caption_column", caption_column)):
        if column not in column_names:
            raise ValueError(f"{flag} {column!r} is not a column of the {split} split; its columns are: {available}.")
    if image_column == caption_column:
        raise ValueError(f"--image_column and --caption_column are both {image_column!r}.")
    return image_column, caption_column


def prepare_image_caption_dataset(
    dataset,
    image_column: str | None = None,
    caption_column: str = "caption",
    image_root: str | os.PathLike | None = None,
    skip_bad_rows: bool = False,
    split: str = "train",
    num_proc: int | None = None,
):
    """Check an image–caption `datasets.Dataset` and set it up for lazy loading.

    Keeps the two columns, renamed `image` and `caption`; checks every row cheaply (a non-empty caption, an image
    file that exists and whose header PIL recognises; relative paths are taken from `image_root`); then attaches an
    [`ImageCaptionTransform`] so images are opened only when their rows are read.

    Args:
        dataset (`datasets.Dataset`): one split. The image column may hold paths, `datasets.Image` values or bytes.
        image_column (`str`, *optional*): defaults to the first of `image_path`, `image` that exists.
        caption_column (`str`, defaults to `"caption"`).
        image_root (`str` or `os.PathLike`, *optional*): folder that relative image paths are relative to (the
            current directory when `None`).
        skip_bad_rows (`bool`): drop bad rows (and report how many) instead of raising.
        split (`str`): name used in messages.
        num_proc (`int`, *optional*): processes for the row check.

    Returns:
        `(dataset, num_skipped)`.

    Raises:
        `ValueError`: a column is missing, or (without `skip_bad_rows`) some rows are bad; the message names the
        rows (0-based indices in the split) and what is wrong with each.
    """
    import datasets

    image_column, caption_column = _resolve_columns(dataset.column_names, image_column, caption_column, split)
    dataset = dataset.select_columns([image_column, caption_column])
    if isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    renames = {old: new for old, new in ((image_column, IMAGE), (caption_column, CAPTION)) if old != new}
    if renames:
        dataset = dataset.rename_columns(renames)

    # Never from the cache: an image may have been fixed or broken since the last run.
    checked = dataset.map(
        _RowChecker(image_root),
        batched=True,
        num_proc=num_proc,
        load_from_cache_file=False,
        keep_in_memory=True,
        desc=f"Checking the {split} split",
    )
    problems = checked["_problem"]
    bad_rows = [index for index, problem in enumerate(problems) if problem]
    num_skipped = 0
    if bad_rows:
        listed = "\n".join(f"  row {index}: {problems[index]}" for index in bad_rows[:_MAX_LISTED_PROBLEMS])
        more = len(bad_rows) - _MAX_LISTED_PROBLEMS
        listed += f"\n  ... and {more} more" if more > 0 else ""
        summary = f"{len(bad_rows)} of {len(dataset)} rows of the {split} split are unusable (0-based row indices):\n"
        if not skip_bad_rows:
            raise ValueError(summary + listed + "\nFix or remove these rows, or pass --skip_bad_rows to skip them.")
        logger.warning(summary + listed + "\nSkipping them (--skip_bad_rows).")
        bad = set(bad_rows)
        dataset = dataset.select([index for index in range(len(dataset)) if index not in bad])
        num_skipped = len(bad_rows)
    if len(dataset) == 0:
        raise ValueError(f"The {split} split has no usable rows.")
    return dataset.with_transform(ImageCaptionTransform(image_root, skip_bad_rows)), num_skipped


@dataclass
class DiffCLIPDataCollator:
    """Turns examples `{"image": ..., "caption": str}` into a batch for [`DiffCLIPModel`]: `pixel_values`,
    `input_ids`, `attention_mask` (made by the processor) and `return_loss=True`.

    Images may be PIL images or anything [`open_image`] reads; an image that is `None` (a row that
    [`ImageCaptionTransform`] could not decode with `skip_bad_rows`) drops its row, with a warning.

    Args:
        processor ([`DiffCLIPProcessor`]): image processor and tokenizer.
        padding (`str`, defaults to `"longest"`): `"longest"` pads captions to the longest of the batch (the
            results do not depend on it: the text tower is causal and pools at the first end-of-text token),
            `"max_length"` to `max_length` (static shapes).
        max_length (`int`, *optional*): longest caption in tokens; defaults to the tokenizer's (77).
        image_root: folder that relative image paths are relative to.
    """

    processor: Any
    padding: str = "longest"
    max_length: int | None = None
    image_root: str | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        images, captions, skipped = [], [], 0
        for feature in features:
            if IMAGE not in feature or CAPTION not in feature:
                raise ValueError(
                    f"Each example needs an {IMAGE!r} and a {CAPTION!r} field, got {sorted(feature)}; prepare the "
                    "dataset with `prepare_image_caption_dataset` (and `remove_unused_columns` must keep them)."
                )
            if feature[IMAGE] is None:
                skipped += 1
                continue
            problem = _caption_problem(feature[CAPTION])
            if problem:
                raise ValueError(f"{problem} in a batch (caption {feature[CAPTION]!r}).")
            images.append(open_image(feature[IMAGE], self.image_root))
            captions.append(feature[CAPTION])
        if skipped:
            logger.warning(f"Dropped {skipped} row(s) with unreadable images from this batch (--skip_bad_rows).")
        if not images:
            raise ValueError("Every row of this batch had an unreadable image.")
        tokenizer = self.processor.tokenizer
        max_length = self.max_length or tokenizer.model_max_length
        batch = self.processor(
            text=captions,
            images=images,
            return_tensors="pt",
            padding=self.padding,
            truncation=True,
            max_length=max_length,
        )
        batch = dict(batch)
        batch["return_loss"] = True
        return batch


# --------------------------------------------------------------------------------------------------
# Trainer glue
# --------------------------------------------------------------------------------------------------


def _logit_scale_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "logit_scale"]


class LogitScaleClampCallback(TrainerCallback):
    """Clamps the model's `logit_scale` (a log) to at most `max_value` after every optimizer step, as the original
    training did (ln 100: similarities are scaled by at most 100).

    `max_value` defaults to the model's `config.max_logit_scale`. The clamp is elementwise on the parameter's data,
    so it also works where the parameter is sharded (FSDP with `use_orig_params`, FSDP2).
    """

    def __init__(self, max_value: float | None = None):
        self.max_value = max_value

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        max_value = self.max_value
        if max_value is None:
            config = getattr(model, "config", None)
            max_value = getattr(config, "max_logit_scale", None)
        if max_value is None:
            return
        with torch.no_grad():
            for parameter in _logit_scale_parameters(model):
                parameter.data.clamp_(max=max_value)


def freeze_towers(model: DiffCLIPModel, vision: bool = False, text: bool = False) -> None:
    """Freeze the vision tower (LiT-style locked image tower) and/or the text tower, each with its projection. The
    logit scale stays trainable."""
    modules = []
    if vision:
        modules += [model.vision_model, model.visual_projection]
    if text:
        modules += [model.text_model, model.text_projection]
    for module in modules:
        module.requires_grad_(False)


def _replace_loss(module, args, output):
    # A module-level function (not a closure), so that a compiled model sees the same hook at every step.
    if isinstance(output, ModelOutput) and output.get("loss") is not None:
        output["loss"] = distributed_contrastive_loss(output.image_embeds, output.text_embeds, module.logit_scale)
    return output


@contextlib.contextmanager
def gathered_loss_hook(model: torch.nn.Module):
    """Within this context, a forward of `model` with `return_loss=True` returns [`distributed_contrastive_loss`]
    (negatives from every process) as its `loss` instead of the model's own single-process loss."""

    handle = model.register_forward_hook(_replace_loss)
    try:
        yield
    finally:
        handle.remove()


def _logit_scale_as_scalar(module, state_dict, prefix, local_metadata):
    key = prefix + "logit_scale"
    if key in state_dict and state_dict[key].shape == (1,):
        state_dict[key] = state_dict[key].reshape(())


def _logit_scale_as_vector(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    key = prefix + "logit_scale"
    if key in state_dict and state_dict[key].dim() == 0:
        state_dict[key] = state_dict[key].reshape(1)


def make_logit_scale_shardable(model: DiffCLIPModel) -> DiffCLIPModel:
    """Store `model.logit_scale` as a 1-element vector instead of a scalar, in place, for FSDP.

    FSDP (1 and 2) refuses 0-dimensional parameters ("Change logit_scale to a 1D tensor with numel equal to 1").
    The forward broadcasts either shape the same way. State dicts keep the scalar: `state_dict()` (and so
    `save_pretrained` and Trainer checkpoints) writes it as a scalar and `load_state_dict` accepts a scalar, so saved
    folders load into an ordinary `DiffCLIPModel`. [`DiffCLIPTrainer`] calls this when FSDP is enabled.
    """
    parameter = model.logit_scale
    if parameter.dim() == 0:
        model.logit_scale = torch.nn.Parameter(parameter.detach().reshape(1), requires_grad=parameter.requires_grad)
        model.register_state_dict_post_hook(_logit_scale_as_scalar)
        model.register_load_state_dict_pre_hook(_logit_scale_as_vector)
    return model


_WRAPPER_PREFIXES = re.compile(r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod|module)\.")


def _canonical_name(name: str) -> str:
    """A parameter name without the prefixes that DDP, FSDP, activation checkpointing and torch.compile add."""
    previous = None
    while previous != name:
        previous, name = name, _WRAPPER_PREFIXES.sub(r"\1", name)
    return name


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters that weight decay applies to in the original recipe (SLIP): every tensor of 2 or
    more dimensions — matrices, embeddings, the patch convolution — and the class token (a 1 × 1 × W tensor there,
    a vector here). Not biases, norm weights, λ vectors or the logit scale."""
    return {
        _canonical_name(name)
        for name, parameter in model.named_parameters()
        if parameter.dim() >= 2 or name.endswith("class_embedding")
    }


class DiffCLIPTrainer(Trainer):
    """`Trainer` for contrastive image–text training of [`DiffCLIPModel`].

    Differences from the stock `Trainer`, each through one of its extension points:

    - `compute_loss`: [`distributed_contrastive_loss`] — negatives gathered with gradient from every process —
      computed in the model's forward through [`gathered_loss_hook`];
    - with FSDP, [`make_logit_scale_shardable`] is applied to the model;
    - a [`LogitScaleClampCallback`] is added (pass `clamp_logit_scale=False` to leave it out);
    - `get_decay_parameter_names`: the original weight-decay groups ([`decay_parameter_names`]);
    - `prediction_step` returns retrieval ranks, and `compute_metrics` defaults to [`compute_retrieval_metrics`],
      so `evaluate()` reports in-batch retrieval accuracy and recall@5 next to the loss;
    - the data collator's `image` and `caption` columns survive `remove_unused_columns`.

    Use it with a [`DiffCLIPDataCollator`] and datasets made by [`prepare_image_caption_dataset`].
    """

    def __init__(self, *args, clamp_logit_scale: bool = True, **kwargs):
        kwargs.setdefault("compute_metrics", compute_retrieval_metrics)
        super().__init__(*args, **kwargs)
        # The loss is a per-batch mean computed here, not by the model from `num_items_in_batch`: the Trainer
        # divides it by the gradient-accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        if self.is_fsdp_enabled:
            make_logit_scale_shardable(self.accelerator.unwrap_model(self.model))
        self._decay_names = decay_parameter_names(self.model)
        callbacks = self.callback_handler.callbacks
        if clamp_logit_scale and not any(isinstance(c, LogitScaleClampCallback) for c in callbacks):
            self.add_callback(LogitScaleClampCallback())

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in (IMAGE, CAPTION) if c not in self._signature_columns]

    def get_decay_parameter_names(self, model) -> list[str]:
        return [name for name, _ in model.named_parameters() if _canonical_name(name) in self._decay_names]

    def _forward(self, model, inputs):
        """The model's forward with the loss replaced by [`distributed_contrastive_loss`].

        The loss is computed by a forward hook on the unwrapped model, i.e. inside the forward of whatever wraps it
        (DDP, FSDP): only there are the parameters guaranteed whole — FSDP reshards them when its forward returns.
        """
        inputs = {k: v for k, v in inputs.items() if k != "return_loss"}
        with gathered_loss_hook(self.accelerator.unwrap_model(model)):
            return model(**inputs, return_loss=True, return_dict=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = self._forward(model, inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = self._forward(model, inputs)
            loss = outputs.loss.detach()
            if prediction_loss_only:
                return loss, None, None
            ranks = retrieval_ranks(outputs.image_embeds, outputs.text_embeds)
        # `compute_metrics` runs only when labels are present: the pair indices stand in for them.
        return loss, ranks, torch.arange(ranks.shape[0], device=ranks.device)


# --------------------------------------------------------------------------------------------------
# The `diffclip-finetune` command
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "DiffCLIP model to fine-tune: a folder or Hub id with a DiffCLIP config and weights."}
    )
    processor_name_or_path: str | None = field(
        default=None, metadata={"help": "Processor (image processor + tokenizer); defaults to --model_name_or_path."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache Hub downloads and datasets."})
    freeze_vision_model: bool = field(
        default=False, metadata={"help": "Freeze the vision tower and its projection (LiT: locked image tower)."}
    )
    freeze_text_model: bool = field(default=False, metadata={"help": "Freeze the text tower and its projection."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel: 'eager', 'sdpa', 'flash_attention_2', ... (default: sdpa)."}
    )


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A `datasets` dataset: a Hub id, a local folder, or a builder such as 'imagefolder'."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Data folder for --dataset_name (e.g. an imagefolder with metadata.jsonl)."}
    )
    train_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines file of training pairs."})
    validation_file: str | None = field(default=None, metadata={"help": "CSV or JSON Lines file of validation pairs."})
    image_column: str | None = field(
        default=None, metadata={"help": "Column of image paths or images (default: 'image_path', else 'image')."}
    )
    caption_column: str = field(default="caption", metadata={"help": "Column of captions."})
    image_root: str | None = field(
        default=None,
        metadata={
            "help": "Folder that relative image paths are relative to (default: the folder of --train_file / "
            "--validation_file, else the current directory)."
        },
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Longest caption in tokens, longer ones are cut (default: 77)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation rows."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for the row check."})
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "Skip rows with a missing or unreadable image or an empty caption, and report how many."},
    )


def _data_file_split(path: str, split: str, cache_dir: str | None):
    import datasets

    file = Path(path).expanduser()
    builder = _DATA_FILE_BUILDERS.get(file.suffix.lower())
    if builder is None:
        raise ValueError(
            f"--{split}_file {path!r}: expected a .csv, .json or .jsonl file (JSON Lines: one object per line)."
        )
    if not file.is_file():
        raise FileNotFoundError(f"--{split}_file {path!r} does not exist.")
    return datasets.load_dataset(builder, data_files=str(file), split="train", cache_dir=cache_dir)


def load_image_caption_splits(data_args: DataTrainingArguments, cache_dir: str | None = None) -> dict[str, tuple]:
    """Load the raw splits named by `data_args`: `{"train" | "validation": (dataset, image_root)}`, where `image_root`
    is the folder relative image paths of that split are relative to."""
    import datasets

    splits = {}
    if data_args.dataset_name is not None:
        loaded = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, data_dir=data_args.data_dir, cache_dir=cache_dir
        )
        for split, dataset in loaded.items():
            splits[split] = (dataset, data_args.image_root)
    for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file)):
        if path is not None:
            image_root = data_args.image_root or str(Path(path).expanduser().resolve().parent)
            splits[split] = (_data_file_split(path, split, cache_dir), image_root)
    if not splits:
        raise ValueError("No data: pass --train_file/--validation_file, or --dataset_name (and --data_dir).")
    return splits


def _load_model_and_processor(model_args: ModelArguments):
    kwargs = {"cache_dir": model_args.cache_dir}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = AutoModel.from_pretrained(model_args.model_name_or_path, **kwargs)
    if not isinstance(model, DiffCLIPModel):
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path!r} holds a {type(model).__name__} "
            f"(model_type {model.config.model_type!r}); diffclip-finetune trains a DiffCLIPModel "
            "(model_type 'diffclip')."
        )
    processor_path = model_args.processor_name_or_path or model_args.model_name_or_path
    try:
        processor = AutoProcessor.from_pretrained(processor_path, cache_dir=model_args.cache_dir)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"Could not load a DiffCLIP processor from {processor_path!r} ({error}). Save one there with "
            "`DiffCLIPProcessor.save_pretrained`, or pass --processor_name_or_path."
        ) from error
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ValueError(f"{processor_path!r} holds a {type(processor).__name__}, not an image+text processor.")
    return model, processor


def _resume_checkpoint(training_args: TrainingArguments) -> str | None:
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None or checkpoint.lower() not in ("last", "latest", "true"):
        return checkpoint
    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if last is None:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint}: no checkpoint-* folder in {training_args.output_dir!r}."
        )
    return last


def run(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments) -> dict:
    """What `diffclip-finetune` does with parsed arguments; returns the train/eval metrics."""
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("Nothing to do: pass --do_train and/or --do_eval.")
    logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    model, processor = _load_model_and_processor(model_args)
    freeze_towers(model, vision=model_args.freeze_vision_model, text=model_args.freeze_text_model)

    with training_args.main_process_first(desc="loading and checking the data"):
        raw_splits = load_image_caption_splits(data_args, model_args.cache_dir)
        wanted = [("train", training_args.do_train, data_args.max_train_samples)]
        wanted.append(("validation", training_args.do_eval, data_args.max_eval_samples))
        prepared, skipped = {}, {}
        for split, needed, limit in wanted:
            if not needed:
                continue
            if split not in raw_splits:
                flag = "--do_train" if split == "train" else "--do_eval"
                raise ValueError(
                    f"{flag} needs a {split} split; the data has: {sorted(raw_splits)}. Pass --{split}_file, or a "
                    f"dataset with a '{split}' split."
                )
            dataset, image_root = raw_splits[split]
            if limit is not None:
                dataset = dataset.select(range(min(limit, len(dataset))))
            prepared[split], skipped[split] = prepare_image_caption_dataset(
                dataset,
                image_column=data_args.image_column,
                caption_column=data_args.caption_column,
                image_root=image_root,
                skip_bad_rows=data_args.skip_bad_rows,
                split=split,
                num_proc=data_args.preprocessing_num_workers,
            )

    trainer = DiffCLIPTrainer(
        model=model,
        args=training_args,
        train_dataset=prepared.get("train"),
        eval_dataset=prepared.get("validation"),
        data_collator=DiffCLIPDataCollator(processor, max_length=data_args.max_seq_length),
        processing_class=processor,
    )
    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=_resume_checkpoint(training_args))
        trainer.save_model()  # the model, its remote code and the processor: loads with trust_remote_code=True
        metrics = {**train_result.metrics, "train_skipped_rows": skipped["train"]}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update({f"train_{k}" if not k.startswith("train_") else k: v for k, v in metrics.items()})
    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["eval_skipped_rows"] = skipped["validation"]
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    for split, count in skipped.items():
        if count:
            print(f"diffclip-finetune: skipped {count} bad row(s) of the {split} split (--skip_bad_rows)")
    if hasattr(trainer, "end"):
        trainer.end()
    return results


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    parser.prog = "diffclip-finetune"
    parser.description = (
        "Fine-tune DiffCLIP on image-caption pairs with transformers' Trainer (every TrainingArguments flag works). "
        "Runs unchanged under `torchrun --nproc_per_node N` and `accelerate launch`."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        loader = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        model_args, data_args, training_args = loader(os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    try:
        run(model_args, data_args, training_args)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"diffclip-finetune: error: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "DataTrainingArguments",
    "DiffCLIPDataCollator",
    "DiffCLIPTrainer",
    "ImageCaptionTransform",
    "LogitScaleClampCallback",
    "ModelArguments",
    "compute_retrieval_metrics",
    "decay_parameter_names",
    "distributed_contrastive_loss",
    "freeze_towers",
    "gather_with_grad",
    "gathered_loss_hook",
    "load_image_caption_splits",
    "make_logit_scale_shardable",
    "open_image",
    "prepare_image_caption_dataset",
    "retrieval_ranks",
    "run",
]


if __name__ == "__main__":
    sys.exit(main())
