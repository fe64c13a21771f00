# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""What `diffclip index --data SOURCE` reads: an image folder (searched recursively), a text file of image paths or
http(s) URLs (one per line), or webdataset shards (`.tar` files, a brace pattern such as `data/{00000..00009}.tar`,
or a folder of `.tar` files).

Every image is named by one string, its *path*, stored with its embedding: a file path, a URL, or `SHARD#KEY` for
the sample `KEY` of a webdataset shard. [`open_item`] opens any of them again (the demo's result grid does).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..core.images import IMAGE_EXTENSIONS, ImageError, image_key, is_url, open_image, scan_images


SHARD_SEPARATOR = "#"
# The image members of a webdataset sample, in the order they are preferred: core.images' one extension list
# without the dots, as training.shards reads shards.
SHARD_IMAGE_EXTENSIONS = tuple(extension[1:] for extension in IMAGE_EXTENSIONS)


def _is_shard_spec(text: str) -> bool:
    return text.endswith(".tar") or ("{" in text and ".tar" in text) or "::" in text


def _shard_files(spec: str) -> list[str]:
    if "{" in spec or "::" in spec:
        from ..core.shard_lists import expand_shards  # webdataset's brace expansion

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
    seen = {}
    try:
        with tarfile.open(shard) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name = member.name
                base = name.rsplit("/", 1)[-1]
                if "." not in base or base.startswith("."):
                    continue
                key, extension = name[: len(name) - len(base)] + base.split(".", 1)[0], base.split(".", 1)[1]
                if extension.lower() in SHARD_IMAGE_EXTENSIONS:
                    seen.setdefault(key, None)
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"Cannot read the shard {shard}: {error}") from error
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
    unique: dict[str, str] = {}
    for item in items:
        unique.setdefault(item if is_shard_item(item) else image_key(item), item)
    items = list(unique.values())
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
                data = archive.extractfile(member).read()
                return open_image({"path": item, "bytes": data})
        raise ImageError(f"Cannot read image {item}: the shard has no image for key {key!r}.")


_READER = _ShardReader()


def is_shard_item(item: str) -> bool:
    if SHARD_SEPARATOR not in item or is_url(item):
        return False
    shard = item.rsplit(SHARD_SEPARATOR, 1)[0]
    return shard.endswith(".tar")


def open_item(item: str) -> Image.Image:
    """The RGB image named `item` (a path, a URL or `SHARD#KEY`); a `ValueError`/`FileNotFoundError` names it."""
    if is_shard_item(item):
        return _READER.read(item)
    return open_image(item)


__all__ = ["SHARD_SEPARATOR", "is_shard_item", "list_images", "open_item", "shard_keys"]
