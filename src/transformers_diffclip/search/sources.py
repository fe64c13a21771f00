# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""What `diffclip index --data SOURCE` reads: an image folder (searched recursively), a text file of image paths or
http(s) URLs (one per line), or webdataset shards (`.tar` files, a brace pattern such as `data/{00000..00009}.tar`,
or a folder of `.tar` files).

Every image is named by one string, its *path*, stored with its embedding: a file's resolved absolute path, a URL
as written, or `SHARD#KEY` (the shard's resolved path) for the sample `KEY` of a webdataset shard. [`list_images`]
gives that canonical form ([`canonical_item`]), so one file spelled two ways (relative or absolute, `./x` or `x`,
through a link) is one image, in one build or across builds run from different folders. [`open_item`] opens any
of them again (the demo's result grid does).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..core.images import IMAGE_EXTENSIONS, ImageError, image_key, is_url, open_image, scan_images
from ..core.shards import IMAGE_KEYS, read_member, sample_keys


SHARD_SEPARATOR = "#"
# The image members of a webdataset sample, in the order they are preferred: core.shards' one list.
SHARD_IMAGE_EXTENSIONS = IMAGE_KEYS


def _is_shard_spec(text: str) -> bool:
    return text.endswith(".tar") or ("{" in text and ".tar" in text) or "::" in text


def _shard_files(spec: str) -> list[str]:
    if "{" in spec or "::" in spec:
        from ..core.shards import expand_shards  # webdataset's brace expansion

        shards = expand_shards(spec, flag="--data")
    else:
        shards = [spec]
    remote = [shard for shard in shards if "://" in shard or shard.startswith("pipe:")]
    if remote:
        raise ValueError(f"--data: remote shards are not supported ({remote[0]}); download them first.")
    for shard in shards:
        if not os.path.isfile(shard):
            raise FileNotFoundError(f"Shard not found: {shard}")
    return shards


def shard_keys(shard: str) -> list[str]:
    """`SHARD#KEY` of every sample of a webdataset shard that holds an image, in the order of the archive."""
    seen = sample_keys(shard)  # core.shards: headers only, each key once, members above the size limit refused
    return [f"{shard}{SHARD_SEPARATOR}{key}" for key in seen]


def _read_list_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"--data {path}: not a UTF-8 text file of image paths or URLs ({error}).") from error
    items = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        items.append(line if is_url(line) or os.path.isabs(line) else str(path.parent / line))
    return items


def list_images(source: str | os.PathLike | Sequence[str]) -> list[str]:
    """The images of `source`, in a fixed order (the order ids are given in), duplicates dropped.

    `source` is a folder (its images, recursively, sorted; a folder holding only `.tar` files is a set of shards),
    a `.txt`/`.lst` file with one image path or URL per line (relative paths are relative to the file; `#` starts a
    comment line), shards (`x.tar`, a brace pattern, several joined with `::`), or a list of paths and URLs.
    """
    if not isinstance(source, (str, os.PathLike)):
        items = [str(item) for item in source]
    else:
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.is_dir():
            items = scan_images(path)
            if not items:
                shards = sorted(str(p) for p in path.iterdir() if p.name.endswith(".tar") and p.is_file())
                items = [key for shard in shards for key in shard_keys(shard)]
        elif _is_shard_spec(text):
            items = [key for shard in _shard_files(str(path) if path.exists() else text) for key in shard_keys(shard)]
        elif path.is_file():
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                items = [str(path)]
            else:
                items = _read_list_file(path)
        else:
            raise FileNotFoundError(f"--data {text}: no such folder, file or shard.")
    # One image, one id: two spellings of one file (a link, `..`, a relative path) are one image (core's identity).
    items = list(dict.fromkeys(canonical_item(item) for item in items))
    if not items:
        raise ValueError(
            f"--data {source}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} files, a list file of "
            "paths or URLs, or .tar shards)."
        )
    return items


class _ShardReader:
    """Random access to samples of webdataset shards, one open archive per shard (per process)."""

    def __init__(self):
        self._archives: dict[str, tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]] = {}

    def read(self, item: str) -> Image.Image:
        shard, key = item.rsplit(SHARD_SEPARATOR, 1)
        if shard not in self._archives:
            if not os.path.isfile(shard):
                raise FileNotFoundError(f"Shard not found: {shard}")
            archive = tarfile.open(shard)
            self._archives[shard] = (archive, {member.name: member for member in archive.getmembers()})
        archive, members = self._archives[shard]
        for extension in SHARD_IMAGE_EXTENSIONS:
            member = members.get(f"{key}.{extension}")
            if member is not None:
                data = read_member(archive, member, shard)
                return open_image({"path": item, "bytes": data})
        raise ImageError(f"Cannot read image {item}: the shard has no image for key {key!r}.")


_READER = _ShardReader()


def is_shard_item(item: str) -> bool:
    """Whether `item` names a sample of a shard (`SHARD.tar#KEY`) rather than a file or a URL. A key's last part
    never holds a dot (a sample's key is its member names before their first dot), and an existing file is a file:
    an image named `x.tar#1.png` is read as the file it is."""
    if SHARD_SEPARATOR not in item or is_url(item):
        return False
    shard, key = item.rsplit(SHARD_SEPARATOR, 1)
    return shard.endswith(".tar") and "." not in key.rsplit("/", 1)[-1] and not os.path.isfile(item)


def canonical_item(item: str) -> str:
    """The one stored form of an image's name: a URL as written, a file's resolved absolute path (core's
    [`image_key`]), `SHARD#KEY` with the shard's resolved absolute path."""
    if is_shard_item(item):
        shard, key = item.rsplit(SHARD_SEPARATOR, 1)
        return f"{image_key(shard)}{SHARD_SEPARATOR}{key}"
    return image_key(item)


def open_item(item: str) -> Image.Image:
    """The RGB image named `item` (a path, a URL or `SHARD#KEY`); a `ValueError`/`FileNotFoundError` names it."""
    if is_shard_item(item):
        return _READER.read(item)
    return open_image(item)


__all__ = ["SHARD_SEPARATOR", "canonical_item", "is_shard_item", "list_images", "open_item", "shard_keys"]
