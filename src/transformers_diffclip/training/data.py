# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Training data: checking image–caption rows, loading images lazily, collating batches for the model."""

import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging

from ..core.images import ImageError, open_image, probe_image


logger = logging.get_logger(__name__)

IMAGE_COLUMN_CANDIDATES = ("image_path", "image")
# Names of the columns after `prepare_image_caption_dataset`, whatever the source columns were called.
IMAGE, CAPTION = "image", "caption"
_MAX_LISTED_PROBLEMS = 10


# --------------------------------------------------------------------------------------------------
# Data: checking rows, loading images lazily, collating
# --------------------------------------------------------------------------------------------------


def _image_problem(image: Any, image_root) -> str:
    """Why this image cannot be used ('' when it can), checked cheaply ([`probe_image`]: the file exists and PIL
    recognises its header). Full decoding happens lazily, when the row is used."""
    try:
        probe_image(image, root=image_root)
    except ImageError as error:
        return str(error)
    return ""


def caption_problem(caption: Any) -> str:
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
            found = (_image_problem(image, self.image_root), caption_problem(caption))
            problems.append("; ".join(problem for problem in found if problem))
        return {"_problem": problems}


class ImageCaptionTransform:
    """Lazy preprocessing for `Dataset.with_transform`: opens the images of the rows being read (as RGB PIL images)
    and passes the captions through. The pixels and tokens themselves are made by [`DiffCLIPDataCollator`], batch by
    batch.

    With `skip_bad_rows`, an image that cannot be decoded becomes `None` (the collator drops the row and says so);
    otherwise it raises a `ValueError` naming the image. With an `image_transform` (e.g. the training augmentation
    [`RandomResizedCropTransform`]) the images come out as the tensors it makes.
    """

    def __init__(self, image_root: str | os.PathLike | None = None, skip_bad_rows: bool = False, image_transform=None):
        self.image_root = None if image_root is None else str(image_root)
        self.skip_bad_rows = skip_bad_rows
        self.image_transform = image_transform

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = []
        for image in batch[IMAGE]:
            try:
                image = open_image(image, root=self.image_root)
                images.append(image if self.image_transform is None else self.image_transform(image))
            except ImageError as error:
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
    image_transform=None,
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
        image_transform (`Callable`, *optional*): applied to each image when its row is read (e.g. the training
            augmentation [`RandomResizedCropTransform`]).

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
    return dataset.with_transform(ImageCaptionTransform(image_root, skip_bad_rows, image_transform)), num_skipped


# --------------------------------------------------------------------------------------------------
# Training augmentation: RandomResizedCrop + ImageNet normalisation (the original recipe), without torchvision
# --------------------------------------------------------------------------------------------------

# The original training transform (ORIGINAL_MODEL.md): RandomResizedCrop(224, scale=(0.5, 1.0)) with torchvision's
# default aspect-ratio range, bilinear, then ToTensor and the ImageNet mean/std.
RANDOM_RESIZED_CROP_SCALE = (0.5, 1.0)
RANDOM_RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
IMAGE_AUGMENTATIONS = ("random_resized_crop", "none")


def random_resized_crop_box(
    width: int,
    height: int,
    rng: random.Random,
    scale: tuple[float, float] = RANDOM_RESIZED_CROP_SCALE,
    ratio: tuple[float, float] = RANDOM_RESIZED_CROP_RATIO,
) -> tuple[int, int, int, int]:
    """The crop `(top, left, crop_height, crop_width)` of torchvision's `RandomResizedCrop.get_params`: up to ten
    draws of an area fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`, the first crop that fits
    placed uniformly at random; if none fits, the largest centred crop whose aspect ratio is within `ratio`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_width = int(round(math.sqrt(target_area * aspect_ratio)))
        crop_height = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = rng.randint(0, height - crop_height)
            left = rng.randint(0, width - crop_width)
            return top, left, crop_height, crop_width
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_width, crop_height = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_width, crop_height = int(round(height * max(ratio))), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


class RandomResizedCropTransform:
    """The original training transform, PIL image → normalised `(3, size, size)` float tensor:
    [`random_resized_crop_box`], a bilinear resize of the crop to `size` × `size` (PIL's, antialiased, as
    torchvision's on PIL images), scaling to [0, 1] and `(x - mean) / std` per channel.

    Args:
        size (`int`): output side (224 in the recipe).
        mean, std (`tuple[float, float, float]`): normalisation (ImageNet's in the recipe).
        scale, ratio: the ranges of [`random_resized_crop_box`].
        seed (`int` or `str`, *optional*): seeds the transform's own generator ([`reseed`] sets it again). Without
            one, each crop is drawn from a generator seeded from torch's global generator, which `Trainer` seeds and
            `DataLoader` seeds differently in every worker.
    """

    def __init__(
        self,
        size: int,
        mean,
        std,
        scale: tuple[float, float] = RANDOM_RESIZED_CROP_SCALE,
        ratio: tuple[float, float] = RANDOM_RESIZED_CROP_RATIO,
        seed: int | str | None = None,
    ):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"RandomResizedCrop scale must satisfy 0 < min <= max <= 1, got {scale}.")
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(3, 1, 1)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.rng = None if seed is None else random.Random(seed)

    @classmethod
    def from_image_processor(cls, image_processor, **kwargs) -> "RandomResizedCropTransform":
        """The transform at the processor's crop size with its mean and std (ImageNet's for DiffCLIP)."""
        crop_size = image_processor.crop_size
        size = crop_size["height"] if "height" in crop_size else crop_size["shortest_edge"]
        return cls(size, image_processor.image_mean, image_processor.image_std, **kwargs)

    def reseed(self, seed: int | str) -> None:
        self.rng = random.Random(seed)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        rng = self.rng or random.Random(int(torch.randint(0, 2**62, ()).item()))
        top, left, height, width = random_resized_crop_box(image.width, image.height, rng, self.scale, self.ratio)
        crop = image.crop((left, top, left + width, top + height)).resize((self.size, self.size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        return (pixels - self.mean) / self.std


@dataclass
class DiffCLIPDataCollator:
    """Turns examples `{"image": ..., "caption": str}` into a batch for [`DiffCLIPModel`]: `pixel_values`,
    `input_ids`, `attention_mask` (made by the processor) and `return_loss=True`.

    Images may be PIL images, anything [`open_image`] reads, or `(3, H, W)` tensors already transformed (by an
    [`ImageCaptionTransform`] with an `image_transform`); an image that is `None` (a row that
    [`ImageCaptionTransform`] could not decode with `skip_bad_rows`) drops its row, with a warning.

    Args:
        processor ([`DiffCLIPProcessor`]): image processor and tokenizer.
        padding (`str`, defaults to `"longest"`): `"longest"` pads captions to the longest of the batch (the
            results do not depend on it: the text tower is causal and pools at the first end-of-text token),
            `"max_length"` to `max_length` (static shapes).
        max_length (`int`, *optional*): longest caption in tokens; defaults to the tokenizer's (77).
        image_root: folder that relative image paths are relative to.
        image_transform (`Callable`, *optional*): PIL image → `(3, H, W)` tensor used instead of the processor's
            resize and centre crop, e.g. the training augmentation [`RandomResizedCropTransform`].
        return_loss (`bool`, defaults to `True`): add `return_loss=True` to the batch (a stock `Trainer` needs it;
            [`DiffCLIPTrainer`] asks for the loss itself, and accelerate's batch dispatching accepts only tensors).
    """

    processor: Any
    padding: str = "longest"
    max_length: int | None = None
    image_root: str | None = None
    image_transform: Any = None
    return_loss: bool = True

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
            problem = caption_problem(feature[CAPTION])
            if problem:
                raise ValueError(f"{problem} in a batch (caption {feature[CAPTION]!r}).")
            image = feature[IMAGE]
            images.append(image if torch.is_tensor(image) else open_image(image, root=self.image_root))
            captions.append(feature[CAPTION])
        if skipped:
            logger.warning(f"Dropped {skipped} row(s) with unreadable images from this batch (--skip_bad_rows).")
        if not images:
            raise ValueError("Every row of this batch had an unreadable image.")
        tokenizer = self.processor.tokenizer
        max_length = self.max_length or tokenizer.model_max_length
        if self.image_transform is None and not any(torch.is_tensor(image) for image in images):
            batch = self.processor(
                text=captions,
                images=images,
                return_tensors="pt",
                padding=self.padding,
                truncation=True,
                max_length=max_length,
            )
            batch = dict(batch)
        else:
            text = tokenizer(
                captions, return_tensors="pt", padding=self.padding, truncation=True, max_length=max_length
            )
            pixels = [image if torch.is_tensor(image) else self._transform(image) for image in images]
            batch = {**text, "pixel_values": torch.stack(pixels)}
        if self.return_loss:
            batch["return_loss"] = True
        return batch

    def _transform(self, image: Image.Image) -> torch.Tensor:
        if self.image_transform is not None:
            return self.image_transform(image)
        return self.processor.image_processor(image, return_tensors="pt")["pixel_values"][0]
