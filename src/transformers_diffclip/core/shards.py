# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Webdataset shards read one way by every command (training streams, evaluation splits, search indexes): one shard
list from a flag ([`expand_shards`]: brace patterns, `::`, paths or URLs), one rule for sample keys, one list of
image members (core.images' [`IMAGE_EXTENSIONS`]), one member reader with a size limit, one image decoder.

A shard is a tar file whose members `KEY.EXT` group into samples: the key is the member's folder and the part of
its file name before the first dot, the extension the rest, lower-cased (`a/b.c.JPG` is key `a/b`, member `c.jpg`),
as webdataset groups them. Members that are not regular files, or whose file name starts with a dot or has no dot,
belong to no sample. The members of a sample are consecutive in the archive.

Limits, each checked from the tar header before a byte of the member is read:

- `DIFFCLIP_MAX_IMAGE_BYTES` (default 64 MiB, core.images' limit on one downloaded image): the size of one member.
  A tar of a few kilobytes can declare a sparse member of gigabytes; it is refused by its declared size.

Errors are [`ShardError`]s (a `ValueError`): one line naming the shard and the member or key, with the shard in
`error.shard`. A shard cut short in the middle of a member, a member above the limit, and a key whose members are
not consecutive (a second sample under a key already read) are errors.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from PIL import Image

from .images import IMAGE_EXTENSIONS, MAX_IMAGE_BYTES_ENV, ImageError, max_image_bytes, open_image


MAX_LISTED_SHARDS = 5


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


def expand_shards(spec: str, flag: str = "--train_shards") -> list[str]:
    """The shard list of `spec`: brace patterns (`data/cc3m-{00000..00331}.tar`), several joined with `::`, local
    paths or URLs (webdataset's `expand_urls`). Local shards must exist (checked with `stat`, never opened)."""
    import webdataset as wds

    if not spec or not spec.strip():
        raise ValueError(f"{flag} is empty.")
    urls = [url for url in wds.shardlists.expand_urls(spec.strip()) if url]
    if not urls:
        raise ValueError(f"{flag} {spec!r} names no shard.")
    missing = [url for url in urls if not _is_remote(url) and not os.path.isfile(os.path.expanduser(url))]
    if missing:
        listed = ", ".join(repr(url) for url in missing[:MAX_LISTED_SHARDS])
        more = f" and {len(missing) - MAX_LISTED_SHARDS} more" if len(missing) > MAX_LISTED_SHARDS else ""
        raise FileNotFoundError(f"{flag}: {len(missing)} of {len(urls)} shards do not exist: {listed}{more}.")
    return [url if _is_remote(url) else os.path.expanduser(url) for url in urls]


# The image members of a sample, in the order they are preferred: core.images' one extension list without the dots.
IMAGE_KEYS = tuple(extension[1:] for extension in IMAGE_EXTENSIONS)


class ShardError(ValueError):
    """A shard (or one of its members) that cannot be read; `shard` names it."""

    def __init__(self, message: str, shard: str):
        super().__init__(message)
        self.shard = shard


def max_member_bytes() -> int:
    """The size limit of one shard member: `DIFFCLIP_MAX_IMAGE_BYTES` (see the module docstring)."""
    return max_image_bytes()


def split_member_name(name: str) -> tuple[str, str] | None:
    """`(key, extension)` of a member name (the extension lower-cased), or `None` for a name that belongs to no
    sample (no dot in the file name, or a file name that starts with one)."""
    folder, _, base = name.rpartition("/")
    if not base or base.startswith(".") or "." not in base:
        return None
    stem, extension = base.split(".", 1)
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def check_member(member: tarfile.TarInfo, shard: str, limit: int | None = None) -> None:
    """Refuse a member whose header declares more than the member limit (before any of it is read)."""
    limit = max_member_bytes() if limit is None else limit
    if member.size > limit:
        raise ShardError(
            f"Cannot read the shard {shard}: its member {member.name!r} is {member.size} bytes, more than the limit "
            f"of {limit} bytes ({MAX_IMAGE_BYTES_ENV})",
            shard,
        )


def read_member(archive: tarfile.TarFile, member: tarfile.TarInfo, shard: str, limit: int | None = None) -> bytes:
    """The bytes of one regular-file member, its size checked first; a member cut short is a [`ShardError`]."""
    check_member(member, shard, limit)
    try:
        handle = archive.extractfile(member)
        data = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ShardError(f"Cannot read the shard {shard}: member {member.name!r}: {_reason(error)}", shard) from error
    if len(data) != member.size:
        raise ShardError(
            f"Cannot read the shard {shard}: it is cut short in its member {member.name!r} ({len(data)} of "
            f"{member.size} bytes; truncated?)",
            shard,
        )
    return data


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, EOFError) or "unexpected end of data" in text:
        return "it is cut short (truncated?)"
    return text


def _open(shard: str, stream: BinaryIO | None) -> tarfile.TarFile:
    try:
        if stream is not None:
            return tarfile.open(fileobj=stream, mode="r|*")
        return tarfile.open(shard, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ShardError(f"Cannot read the shard {shard}: {_reason(error)}", shard) from error


def _members(archive: tarfile.TarFile, shard: str, seekable: bool) -> Iterator[tarfile.TarInfo]:
    iterator = iter(archive)
    while True:
        try:
            member = next(iterator)
        except StopIteration:
            break
        except (tarfile.TarError, OSError, EOFError) as error:
            raise ShardError(f"Cannot read the shard {shard}: {_reason(error)}", shard) from error
        yield member
    if seekable:  # tarfile takes a header cut short for the end of the archive: what follows must be zeros
        archive.fileobj.seek(archive.offset)
        rest = archive.fileobj.read(tarfile.BLOCKSIZE)
        if rest.strip(b"\0"):
            raise ShardError(
                f"Cannot read the shard {shard}: it is cut short (truncated?) in a member header at byte "
                f"{archive.offset}",
                shard,
            )


def shard_samples(
    shard: str | os.PathLike, stream: BinaryIO | None = None, keep: Callable[[int], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """The samples of one shard in archive order: `{"__key__": KEY, "__url__": SHARD, EXT: bytes, ...}`. `stream`:
    an open file object to read instead of the file (a remote shard); `keep(i)`: when given, the `i`-th sample is
    read only when it returns true (the others are yielded with their key alone, their members skipped unread).
    Raises [`ShardError`] (see the module docstring)."""
    shard = os.fspath(shard)
    limit = max_member_bytes()
    done: set[str] = set()
    current: dict[str, Any] | None = None
    wanted = True
    with _open(shard, stream) as archive:
        for member in _members(archive, shard, stream is None):
            parts = split_member_name(member.name) if member.isfile() else None
            if parts is None:
                continue
            key, extension = parts
            if current is None or key != current["__key__"]:
                if current is not None:
                    done.add(current["__key__"])
                    yield current
                if key in done:
                    raise ShardError(
                        f"Cannot read the shard {shard}: the sample key {key!r} appears twice (its members are not "
                        "consecutive: two samples under one key)",
                        shard,
                    )
                current = {"__key__": key, "__url__": shard}
                wanted = keep is None or bool(keep(len(done)))
            if extension in current:
                raise ShardError(f"Cannot read the shard {shard}: the member {member.name!r} appears twice", shard)
            check_member(member, shard, limit)
            current[extension] = read_member(archive, member, shard, limit) if wanted else None
        if current is not None:
            yield current


def sample_keys(shard: str | os.PathLike, with_image: bool = True) -> list[str]:
    """The keys of a shard's samples (each once, in archive order), from the tar headers only; `with_image`: only
    the samples that hold an image member."""
    shard = os.fspath(shard)
    keys: dict[str, bool] = {}
    with _open(shard, None) as archive:
        for member in _members(archive, shard, True):
            parts = split_member_name(member.name) if member.isfile() else None
            if parts is None:
                continue
            check_member(member, shard)
            key, extension = parts
            keys[key] = keys.get(key, False) or extension in IMAGE_KEYS
    return [key for key, image in keys.items() if image or not with_image]


def image_member(sample: dict[str, Any]) -> str | None:
    """The extension of a sample's image member, the first of [`IMAGE_KEYS`] it holds; `None` when it has none."""
    return next((key for key in IMAGE_KEYS if sample.get(key) is not None), None)


def decode_image(sample: dict[str, Any]) -> Image.Image:
    """The RGB image of a sample through core.images' opener (its pixel limit, one error type naming the member as
    `KEY.EXT in SHARD`); an [`ImageError`] when the sample has no image member."""
    where = f"{sample.get('__key__')}"
    shard = sample.get("__url__")
    extension = image_member(sample)
    if extension is None:
        members = ", ".join(k for k in sample if not k.startswith("__"))
        raise ImageError(
            f"Sample {where} in {shard} has no image ({', '.join(IMAGE_KEYS)}); its members: {members or 'none'}."
        )
    return open_image({"path": f"{where}.{extension} in {shard}", "bytes": sample[extension]})


def stream_samples(
    streams: Iterable[dict[str, Any]], handler: Callable[[Exception], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """Samples of opened shards, `{"url": ..., "stream": file object}` as webdataset's `url_opener` yields them:
    a pipeline stage in place of webdataset's tar expander. An error in a shard goes to `handler`, which returns
    true to go on with the next shard (the rest of this one is skipped); without a handler it is raised."""
    for item in streams:
        url = str(item.get("url"))
        try:
            yield from shard_samples(url, stream=item["stream"])
        except ShardError as error:
            if handler is None or not handler(error):
                raise
        finally:
            close = getattr(item.get("stream"), "close", None)
            if close is not None:
                close()


__all__ = [
    "IMAGE_KEYS",
    "MAX_LISTED_SHARDS",
    "ShardError",
    "check_member",
    "decode_image",
    "expand_shards",
    "image_member",
    "max_member_bytes",
    "read_member",
    "sample_keys",
    "shard_samples",
    "split_member_name",
    "stream_samples",
]
