# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The one image opener of every command: local paths, http(s) URLs, raw bytes, the `{"path", "bytes"}` values of
`datasets.Image(decode=False)` and PIL images become RGB PIL images, and every failure is an [`ImageError`] whose
message names the image. One list of image file extensions, one folder scan.

Limits (each overridable by an environment variable, read when an image is opened):

- `DIFFCLIP_URL_TIMEOUT` (seconds, default 30): the whole download of one image URL, connection to last byte;
- `DIFFCLIP_MAX_IMAGE_BYTES` (default 64 MiB): the size of one downloaded image;
- `DIFFCLIP_MAX_IMAGE_PIXELS` (default 8192 × 8192 = 67,108,864): width × height of any image, read from its
  header before it is decoded.
"""

from __future__ import annotations

import io
import os
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image


# Image files by extension: what folder scans pick up, and the sample keys read from webdataset shards (in this
# order of preference).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
URL_TIMEOUT = 30.0
MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 8192 * 8192
URL_TIMEOUT_ENV, MAX_IMAGE_BYTES_ENV, MAX_IMAGE_PIXELS_ENV = (
    "DIFFCLIP_URL_TIMEOUT",
    "DIFFCLIP_MAX_IMAGE_BYTES",
    "DIFFCLIP_MAX_IMAGE_PIXELS",
)
_CHUNK = 64 * 1024


def _limit(name: str, default: float, kind: type = int) -> float:
    """The limit the environment variable `name` sets (a positive number), else `default`."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise ValueError(f"The environment variable {name}={text!r} must be a positive number.")
    return value


def url_timeout() -> float:
    return _limit(URL_TIMEOUT_ENV, URL_TIMEOUT, float)


def max_image_bytes() -> int:
    return _limit(MAX_IMAGE_BYTES_ENV, MAX_IMAGE_BYTES)


def max_image_pixels() -> int:
    return _limit(MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS)


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


def _handle(source: Any, root: str | os.PathLike | None, timeout: float | None) -> tuple[Any, str]:
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
        return io.BytesIO(download(str(data), timeout)), str(data)
    path = _resolve(data, root)
    if path.is_dir():
        raise ImageError(f"Cannot read image {path}: it is a folder, not an image file")
    if not path.is_file():
        raise ImageNotFoundError(f"Image not found: {path}")
    return path, str(path)


def _download(url: str, deadline: float, max_bytes: int, outcome: dict) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "transformers-diffclip"})
    try:
        with urllib.request.urlopen(request, timeout=max(deadline - time.monotonic(), 0.01)) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > max_bytes:
                raise ImageError(
                    f"Cannot read image {url}: it is {int(length)} bytes, more than the limit of {max_bytes} "
                    f"({MAX_IMAGE_BYTES_ENV})"
                )
            chunks, size = [], 0
            while time.monotonic() < deadline:
                chunk = response.read1(_CHUNK)
                if not chunk:
                    outcome["data"] = b"".join(chunks)
                    return
                size += len(chunk)
                if size > max_bytes:
                    raise ImageError(
                        f"Cannot read image {url}: the response exceeds the limit of {max_bytes} bytes "
                        f"({MAX_IMAGE_BYTES_ENV})"
                    )
                chunks.append(chunk)
    except ImageError as error:
        outcome["error"] = error
    except Exception as error:  # HTTP, socket and TLS errors
        outcome["error"] = ImageError(f"Cannot read image {url}: {error}")


def download(url: str, timeout: float | None = None) -> bytes:
    """The bytes at an http(s) `url`, bounded in total time (`timeout`, default [`url_timeout`]: connection to last
    byte, however slowly the server sends) and size ([`max_image_bytes`]). Raises [`ImageError`] naming the URL."""
    timeout = url_timeout() if timeout is None else timeout
    max_bytes = max_image_bytes()
    deadline = time.monotonic() + timeout
    outcome: dict = {}
    # A daemon thread: a server that stalls a single read past the deadline cannot hold the command.
    worker = threading.Thread(target=_download, args=(url, deadline, max_bytes, outcome), daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if "error" in outcome:
        raise outcome["error"]
    if "data" not in outcome:
        raise ImageError(
            f"Cannot read image {url}: the download did not finish within {timeout:g} s ({URL_TIMEOUT_ENV})"
        )
    return outcome["data"]


def check_pixels(size: tuple[int, int], name: str) -> None:
    """Refuse an image of `size = (width, height)` above [`max_image_pixels`]."""
    limit = max_image_pixels()
    if size[0] * size[1] > limit:
        raise ImageError(
            f"Cannot read image {name}: {size[0]} x {size[1]} pixels is more than the limit of {limit} pixels "
            f"({MAX_IMAGE_PIXELS_ENV})"
        )


def _read(source: Any, root: str | os.PathLike | None, timeout: float | None, decode: bool) -> Image.Image | None:
    handle, name = _handle(source, root, timeout)
    try:
        with Image.open(handle) as image:
            check_pixels(image.size, name)
            if not decode:
                return None
            image.load()
            return image.convert("RGB")
    except ImageError:
        raise
    except Exception as error:  # PIL's UnidentifiedImageError, truncated files, decompression bombs, ...
        raise ImageError(f"Cannot read image {name}: {error}") from error


def open_image(source: Any, *, root: str | os.PathLike | None = None, timeout: float | None = None) -> Image.Image:
    """An RGB PIL image from a PIL image, a local path (relative paths are taken from `root` when given), an
    http(s) URL, raw bytes or a `{"path", "bytes"}` dict. A missing local file raises [`ImageNotFoundError`], any
    other failure an [`ImageError`], each naming the image. URLs and pixels are bounded (see the module docstring).
    """
    if isinstance(source, Image.Image):
        check_pixels(source.size, "<PIL image>")
        return source.convert("RGB")
    return _read(source, root, timeout, decode=True)


def probe_image(source: Any, *, root: str | os.PathLike | None = None, timeout: float | None = None) -> None:
    """Check cheaply that `source` is an image [`open_image`] can open: it exists and PIL recognises its header
    (nothing is decoded). Raises what [`open_image`] raises."""
    if not isinstance(source, Image.Image):
        _read(source, root, timeout, decode=False)


def check_image_sources(sources: Sequence[str]) -> None:
    """Fail early, before any model is loaded, on local image paths that do not exist or are folders."""
    for source in sources:
        if not is_url(str(source)) and os.path.isdir(source):
            raise ImageError(f"Cannot read image {source}: it is a folder, not an image file")
    missing = [str(s) for s in sources if not is_url(str(s)) and not os.path.isfile(s)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ImageNotFoundError(f"Image not found: {shown}")


def image_key(source: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """What identifies an image: a URL as written, a local file by its resolved path (links followed, `..` and
    relative spellings removed), so that two spellings of one file are one image."""
    if is_url(str(source)):
        return str(source)
    return os.path.realpath(_resolve(source, root))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_images(folder: str | os.PathLike, seen: set[str] | None = None) -> list[str]:
    """The image files below `folder` (by [`IMAGE_EXTENSIONS`], any case), sorted, skipping hidden files and
    folders.

    A link to a folder is followed only when it leads to a folder inside the scanned tree that the scan has not
    visited yet: a link out of the tree, back into it (`ln -s . self`, `ln -s .. up`) or to an ancestor is never
    followed, so the scan ends and visits each folder once. Each file is listed once, by its resolved path (a link
    to a file counts as that file; `seen`, shared between scans, drops files another scan already listed)."""
    root = os.path.realpath(folder)
    seen = set() if seen is None else seen
    visited = {root}
    files = []
    for directory, subdirectories, filenames in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(subdirectories):
            if name.startswith("."):
                continue
            real = os.path.realpath(os.path.join(directory, name))
            if _within(real, root) and real not in visited:
                visited.add(real)
                kept.append(name)
        subdirectories[:] = kept
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if real not in seen and os.path.isfile(real):
                seen.add(real)
                files.append(path)
    return files


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "ImageNotFoundError",
    "check_image_sources",
    "check_pixels",
    "download",
    "image_key",
    "is_url",
    "max_image_bytes",
    "max_image_pixels",
    "open_image",
    "probe_image",
    "scan_images",
    "url_timeout",
]
