# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Convert on first use, once: the authors' training-format checkpoints become cached transformers folders.

`resolve_pretrained(name)` returns where to load `name` from. For one of the authors' repo ids (`ORIGINAL_REPOS`),
a local original checkpoint file (`.pt`, `.pth`, `.ckpt`), or a folder holding `checkpoint_best.pt` and no
`config.json`, that is a converted folder in the cache; every other name comes back unchanged. The first use
downloads the checkpoint with `huggingface_hub` (its cache, progress bar and `HF_HUB_OFFLINE`), converts it with the
safe loader and the strict key map, and renames the finished folder into place under a file lock, so concurrent
first uses convert once and never see half a folder.

Cache layout (`DIFFCLIP_CACHE`, default `$HF_HOME/diffclip`, i.e. `~/.cache/huggingface/diffclip`):
`converted/<org>--<name>/<commit>/` per repo and revision (and `refs/<org>--<name>/<revision>`, the commit a branch
or tag named when it was converted, so an offline start needs no checkpoint), `converted/local/<stem>-<hash>/` per
local file (its absolute path, size and modification time), lock files in `.locks/` while a conversion runs (removed
after it, as is everything a failed conversion wrote).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from pathlib import Path

from .checkpoint import CHECKPOINT_FILENAME, ORIGINAL_REPOS, ConversionError
from .convert import (
    build_processor,
    build_tokenizer_for,
    clip_tokenizer_files,
    convert_checkpoint,
    save_converted,
    write_folder_atomically,
)
from .download import resolve_checkpoint


CACHE_ENV = "DIFFCLIP_CACHE"
# A converted folder is complete when it holds these (it only ever appears complete: see write_folder_atomically).
_COMPLETE = ("config.json", "model.safetensors", "tokenizer_config.json")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted folders live: `<cache_dir>/diffclip` when a Hub `cache_dir` is given, else `$DIFFCLIP_CACHE`,
    else `$HF_HOME/diffclip`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / "diffclip"
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME).expanduser() / "diffclip"


def original_repo_id(name: str) -> str | None:
    """The authors' repo id `name` spells (Hub ids are case-insensitive), or None."""
    return next((repo for repo in ORIGINAL_REPOS if repo.lower() == name.lower()), None)


# Local files taken for original checkpoints (`torch.save` files); any other file is left to the caller.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _local_checkpoint(path: Path) -> Path | None:
    """The original checkpoint file `path` names: a `.pt` / `.pth` / `.ckpt` file, or the `checkpoint_best.pt` of a
    folder that holds no converted model (e.g. `hf download hammh0a/... --local-dir DIR`)."""
    if path.is_file():
        return path if path.suffix.lower() in CHECKPOINT_SUFFIXES else None
    if path.is_dir() and not (path / "config.json").exists() and (path / CHECKPOINT_FILENAME).is_file():
        return path / CHECKPOINT_FILENAME
    return None


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _COMPLETE)


def resolve_pretrained(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    *,
    token: bool | str | None = None,
    force_download: bool | None = None,
    subfolder: str | None = None,
    proxies: dict | None = None,
) -> str:
    """Where to load `name_or_path` from: for an original-format checkpoint the converted folder (converted on first
    use, cached), for anything else `name_or_path` itself. The Hub arguments are those of `from_pretrained`, and
    reach the checkpoint's download (`subfolder`: where the checkpoint lies in the repo or folder;
    `force_download`: download it again even when a converted folder exists). Bad input raises a `ValueError` or
    `OSError` that says what is wrong, and leaves nothing in the cache."""
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    local = _local_checkpoint(path / subfolder if subfolder and path.is_dir() else path)
    if local is not None:
        local = local.resolve()
        stat = local.stat()
        key = hashlib.sha256(f"{local}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return str(_converted(local, str(local), f"local/{local.stem}-{key}", cache_dir, local_files_only))
    repo_id = None if path.exists() else original_repo_id(name)
    if repo_id is None:
        return name
    slug = repo_id.replace("/", "--") + (f"--{subfolder.strip('/').replace('/', '--')}" if subfolder else "")
    repo_folder = cache_root(cache_dir) / "converted" / slug
    # A converted folder already made for this revision is used without the training checkpoint (which the user
    # may have deleted from the Hub cache: it is three times the size of the weights).
    commit = None if force_download else _known_commit(repo_id, revision, repo_folder, local_files_only, token)
    if commit is not None and _is_complete(repo_folder / commit):
        return str(repo_folder / commit)
    hub = dict(token=token, force_download=force_download or None, subfolder=subfolder, proxies=proxies)
    checkpoint, _ = resolve_checkpoint(repo_id, CHECKPOINT_FILENAME, revision, cache_dir, local_files_only, **hub)
    # hf_hub_download returns `.../snapshots/<commit>/[subfolder/]checkpoint_best.pt`: the commit pins the folder
    commit = checkpoint.parents[len(Path(subfolder).parts) if subfolder else 0].name
    target = _converted(checkpoint, repo_id, f"{slug}/{commit}", cache_dir, local_files_only)
    _record_commit(repo_folder, revision, commit)
    return str(target)


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _ref_file(repo_folder: Path, revision: str | None) -> Path:
    """`<cache>/refs/<org>--<name>/<revision>` (beside `converted/`, whose sub-folders are all converted models)."""
    return repo_folder.parent.parent / "refs" / repo_folder.name / (revision or "main").replace("/", "%2F")


def _known_commit(repo_id, revision, repo_folder: Path, local_files_only, token) -> str | None:
    """The commit `revision` names, found without downloading the checkpoint: the revision itself when it is one,
    else the Hub's answer (a metadata request), else, offline, the commit recorded when it was last converted."""
    if revision is not None and _COMMIT.match(revision):
        return revision
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    if not (local_files_only or constants.HF_HUB_OFFLINE):
        try:
            url = hf_hub_url(repo_id, CHECKPOINT_FILENAME, revision=revision)
            return get_hf_file_metadata(url, token=token).commit_hash
        except Exception:  # unreachable, unknown revision, ...: the download below says what is wrong
            return None
    try:
        return _ref_file(repo_folder, revision).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _record_commit(repo_folder: Path, revision: str | None, commit: str) -> None:
    """Remember which commit `revision` named at conversion time, for offline starts without the checkpoint."""
    if revision is not None and _COMMIT.match(revision):
        return
    from ..core.files import atomic_write_bytes

    atomic_write_bytes(_ref_file(repo_folder, revision), commit.encode("utf-8"))


def _converted(checkpoint: Path, label: str, key: str, cache_dir, local_files_only: bool | None) -> Path:
    """The converted folder `key` of the cache, converting `checkpoint` into it first unless a run already has."""
    root = cache_root(cache_dir)
    target = root / "converted" / key
    if _is_complete(target):
        return target
    from ..core.files import exclusive_lock

    # before the lock and the conversion: an offline machine without them fails fast
    clip_tokenizer_files(cache_dir, local_files_only)
    made_root = not root.exists()
    try:
        with exclusive_lock(root / ".locks" / (key.replace("/", "--") + ".lock")):
            if _is_complete(target):  # converted by a concurrent run while this one waited
                return target
            if target.exists():  # not written by this package: never trust, never delete silently
                raise ConversionError(
                    f"{target} exists but is not a complete converted folder; delete it and rerun to convert again."
                )
            print(f"converting {label} once, cached at {target}", file=sys.stderr, flush=True)
            conversion = convert_checkpoint(checkpoint)
            tokenizer = build_tokenizer_for(conversion.architecture, None, cache_dir, local_files_only)
            processor = build_processor(conversion.architecture, tokenizer)
            # into a temporary folder, renamed into place: a failure (or a kill) leaves no half-written folder
            write_folder_atomically(target, lambda folder: save_converted(folder, conversion.model, processor))
    except BaseException:
        if made_root:  # a failed first conversion leaves no empty cache folder (the lock removes its own files)
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    return target


# `from_pretrained`'s Hub arguments, in the order of transformers' signature
HUB_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def resolve_from_pretrained(pretrained_model_name_or_path, kwargs: dict) -> tuple[str | os.PathLike, dict]:
    """The `checkpoint_resolver` of DiffCLIP's model and processor classes (set by the package on import): their
    `from_pretrained(name, **kwargs)` loads `resolve_pretrained(name, <kwargs' Hub arguments>)`. A converted folder
    is a local folder: the Hub arguments were spent on the checkpoint's download, and `subfolder` (where the
    checkpoint lay) is not passed on. Any other name comes back with `kwargs` unchanged, a model folder (one with a
    `config.json`, such as the package's loader passes after resolving a name once) without a look."""
    folder = Path(os.fspath(pretrained_model_name_or_path)).expanduser()
    if not kwargs.get("subfolder") and (folder / "config.json").is_file():
        return pretrained_model_name_or_path, kwargs
    hub = {name: kwargs[name] for name in HUB_ARGUMENTS if name in kwargs}
    resolved = resolve_pretrained(pretrained_model_name_or_path, **hub)
    if resolved == os.fspath(pretrained_model_name_or_path):
        return pretrained_model_name_or_path, kwargs
    return resolved, {name: value for name, value in kwargs.items() if name != "subfolder"}
