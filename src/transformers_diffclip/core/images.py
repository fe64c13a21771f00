# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The one image opener of every command: local paths, http(s) URLs, raw bytes, the `{"path", "bytes"}` values of
`datasets.Image(decode=False)` and PIL images become RGB PIL images, and every failure is an [`ImageError`] whose
message names the image. One list of image file extensions, one folder scan."""

from __future__ import annotations

import io
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image


# Image files by extension: what folder scans pick up, and the sample keys read from webdataset shards (in this
# order of preference).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
URL_TIMEOUT = 30.0


class ImageError(ValueError):
    """An image that cannot be opened; the message names it (its path, URL or `<image bytes>`)."""


class ImageNotFoundError(ImageError, FileNotFoundError):
    """An [`ImageError`] for a local image file that does not exist (also a `FileNotFoundError`)."""


def is_url(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(("http://", "https://"))


def _resolve(path: str | os.PathLike, root: str | os.PathLike | None) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and root is not None:
        resolved = Path(root) / resolved
    return resolved


def _handle(source: Any, root: str | os.PathLike | None, timeout: float) -> tuple[Any, str]:
    """`(what PIL opens, the image's name for messages)`; raises [`ImageError`] for a source that is no image."""
    data = source
    if isinstance(source, dict):
        data = source["bytes"] if source.get("bytes") is not None else source.get("path")
    if isinstance(data, (bytes, bytearray)):
        path = source.get("path") if isinstance(source, dict) else None
        return io.BytesIO(data), (str(path) if path else "<image bytes>")
    if not isinstance(data, (str, os.PathLike)) or not str(data).strip():
        raise ImageError(f"No image (got {source!r})")
    if is_url(str(data)):
        request = urllib.request.Request(str(data), headers={"User-Agent": "transformers-diffclip"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return io.BytesIO(response.read()), str(data)
        except Exception as error:  # HTTP, socket and TLS errors
            raise ImageError(f"Cannot read image {data}: {error}") from error
    path = _resolve(data, root)
    if not path.is_file():
        raise ImageNotFoundError(f"Image not found: {path}")
    return path, str(path)


def _read(source: Any, root: str | os.PathLike | None, timeout: float, decode: bool) -> Image.Image | None:
    handle, name = _handle(source, root, timeout)
    try:
        with Image.open(handle) as image:
            if not decode:
                return None
            image.load()
            return image.convert("RGB")
    except Exception as error:  # PIL's UnidentifiedImageError, truncated files, decompression bombs, ...
        raise ImageError(f"Cannot read image {name}: {error}") from error


def open_image(source: Any, *, root: str | os.PathLike | None = None, timeout: float = URL_TIMEOUT) -> Image.Image:
    """An RGB PIL image from a PIL image, a local path (relative paths are taken from `root` when given), an
    http(s) URL, raw bytes or a `{"path", "bytes"}` dict. A missing local file raises [`ImageNotFoundError`], any
    other failure an [`ImageError`], each naming the image."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    return _read(source, root, timeout, decode=True)


def probe_image(source: Any, *, root: str | os.PathLike | None = None, timeout: float = URL_TIMEOUT) -> None:
    """Check cheaply that `source` is an image [`open_image`] can open: it exists and PIL recognises its header
    (nothing is decoded). Raises what [`open_image`] raises."""
    if not isinstance(source, Image.Image):
        _read(source, root, timeout, decode=False)


def check_image_sources(sources: Sequence[str]) -> None:
    """Fail early, before any model is loaded, on local image paths that do not exist."""
    missing = [str(s) for s in sources if not is_url(str(s)) and not os.path.isfile(s)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ImageNotFoundError(f"Image not found: {shown}")


def scan_images(folder: str | os.PathLike) -> list[str]:
    """The image files below `folder` (by [`IMAGE_EXTENSIONS`], any case), sorted, following links, skipping hidden
    files and folders."""
    files = []
    for directory, subdirectories, filenames in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        files.extend(
            os.path.join(directory, name)
            for name in sorted(filenames)
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        )
    return files


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "ImageNotFoundError",
    "check_image_sources",
    "is_url",
    "open_image",
    "probe_image",
    "scan_images",
]
