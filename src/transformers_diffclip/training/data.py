# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Training data: checking image–caption rows, loading images lazily, collating batches for the model."""

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from transformers.utils import logging


logger = logging.get_logger(__name__)

IMAGE_COLUMN_CANDIDATES = ("image_path", "image")
# Names of the columns after `prepare_image_caption_dataset`, whatever the source columns were called.
IMAGE, CAPTION = "image", "caption"
_MAX_LISTED_PROBLEMS = 10


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
