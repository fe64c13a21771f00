# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The webdataset shard list a flag names (`diffclip-pretrain --train_shards`, `diffclip index --data`): brace
patterns, several joined with `::`, local paths or URLs. Shared by training and search (it lived in training, so
search imported training for it)."""

from __future__ import annotations

import os


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


__all__ = ["MAX_LISTED_SHARDS", "expand_shards"]
