# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Finding an original checkpoint: a local file, or a Hub repo id downloaded with `huggingface_hub` (its cache,
progress bar and `HF_HUB_OFFLINE`), every failure a [`ConversionError`] that says what to do."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .checkpoint import CHECKPOINT_FILENAME, DEFAULT_MODEL_ID, ORIGINAL_REPOS, ConversionError


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
