# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Atomic writes: a reader never sees a half-written file or folder, and an interrupted write (an error, SIGKILL,
a full disk) leaves the old one.

- [`atomic_write_bytes`] / [`write_json`]: a file, through a temporary file in the same folder and `os.replace`;
- [`atomic_directory`]: a folder, written whole into a temporary sibling and swapped into place in one step, so
  that two concurrent writers each leave a whole folder (the last one wins) and never a mix of their files;
- [`publish_into`]: a saved model moved into a folder that holds other things too (a training run's output),
  its `config.json` last, so the folder never loads as a mix of two saves;
- [`check_output_file`]: an output file checked before the work that produces it;
- [`exclusive_lock`]: a lock between processes that leaves no file behind.

Files and folders are created with the permissions the umask gives (not the 0600 / 0700 of temporary files).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, flushed to disk, then `os.replace`. The
    file gets the mode of the file it replaces, else what the umask gives (0666 & ~umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def count_non_finite(obj: Any) -> int:
    """How many floats in a JSON-like object (dicts, lists, numbers) are NaN or infinite."""
    if isinstance(obj, float):
        return 0 if math.isfinite(obj) else 1
    if isinstance(obj, dict):
        return sum(count_non_finite(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(count_non_finite(value) for value in obj)
    return 0


def json_text(obj: Any, indent: int | None = 2) -> str:
    """`obj` as JSON text; NaN and infinities are not JSON: they raise a `ValueError` that says how many there
    are."""
    bad = count_non_finite(obj)
    if bad:
        raise ValueError(f"{bad} non-finite value(s) (NaN or infinity) in the results: refusing to report them.")
    return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented UTF-8 JSON (NaN and infinities are refused: they are not JSON)."""
    return atomic_write_bytes(path, (json_text(obj) + "\n").encode("utf-8"))


def check_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Check, before any work, that a file can be written at `path`: it is not a folder, and its folder exists (or
    can be made) and is writable. Raises a `ValueError` naming `path`."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{flag} {path}: it is a folder; give a file name.")
    parent = path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot write into {existing} (permission denied).")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: the file cannot be replaced (permission denied).")
    return path


# --------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux `renameat2(RENAME_EXCHANGE)`); False where the system cannot."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        renameat2 = ctypes.CDLL(name, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False
    if error == errno.ENOENT:
        raise FileNotFoundError(error, os.strerror(error), str(second))
    raise OSError(error, os.strerror(error), str(second))


def _move_into_place(source: Path, target: Path) -> None:
    """Put the folder `source` at `target`, replacing a folder there in one step where the system allows it (Linux);
    elsewhere `target` is moved aside first, so a reader sees the old folder, none, or the new one."""
    for _ in range(100):
        try:
            source.rename(target)  # fails when a non-empty folder (or a file) is at target
            return
        except OSError:
            if not (target.exists() or target.is_symlink()):
                raise
        if not target.is_dir() or target.is_symlink():
            raise ValueError(f"Cannot write the folder {target}: a file is in the way.")
        try:
            exchanged = _exchange(source, target)
        except FileNotFoundError:  # a concurrent writer moved it aside: try again
            continue
        if exchanged:  # source now holds the old folder
            shutil.rmtree(source, ignore_errors=True)
            return
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        backup.rmdir()
        try:
            target.rename(backup)
        except FileNotFoundError:  # a concurrent writer moved it first: try again
            continue
        try:
            source.rename(target)
        except OSError:
            with contextlib.suppress(OSError):
                backup.rename(target)
            continue
        shutil.rmtree(backup, ignore_errors=True)
        return
    raise OSError(f"Cannot write the folder {target}: other processes keep replacing it.")


def atomic_directory(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(folder)` on a temporary sibling of `output_dir` and move it into place when `write` returns:
    `output_dir` appears (or is replaced) whole or not at all, also when the process is killed, and two concurrent
    writers leave one's folder, never a mix. Any failure removes the temporary folder and the parent folders this
    call created. The caller decides whether an existing `output_dir` may be replaced."""
    output_dir = Path(output_dir)
    created = []
    parent = output_dir.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    partial.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the final folder private
    try:
        write(partial)
        _move_into_place(partial, output_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in created:  # innermost first; only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return output_dir


def publish_into(folder: Path, written: Path, marker: str = "config.json", stale: tuple[str, ...] = ()) -> None:
    """Move the files of the complete folder `written` into `folder`, which also holds other things (a training
    run's checkpoints and logs), so that `folder` is never a mix of two saves that loads: `marker` (what a loader
    needs first, `config.json`) is removed first and put in place last, so a kill in between leaves a folder that
    refuses to load, never the new `marker` beside old files. Files of `folder` matching a `stale` glob that the new
    save does not have (an old `pytorch_model.bin` beside a new `model.safetensors`) are removed. `written` is
    removed."""
    folder.mkdir(parents=True, exist_ok=True)
    new = {entry.name for entry in written.iterdir()}
    if marker not in new:
        raise ValueError(f"{written} lacks {marker}: nothing was saved.")
    (folder / marker).unlink(missing_ok=True)
    for pattern in stale:
        for old in folder.glob(pattern):
            if old.name not in new and old.is_file():
                old.unlink()
    for name in sorted(new - {marker}):
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            _move_into_place(written / name, target)
        else:
            os.replace(written / name, target)
    os.replace(written / marker, folder / marker)
    shutil.rmtree(written, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock between processes on the file `path` (created, with its folder, when needed) and
    remove the file, and its folder when empty, on release: a lock leaves nothing behind. `waiting`, when given, is
    called once if another process holds the lock (before this one waits for it). Where `fcntl` is missing
    (Windows) the lock is `filelock`'s and its file stays."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path)):
            yield
        return
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except FileNotFoundError:  # the folder was removed by a releasing holder: again
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
                waiting = None
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the file was removed by its last holder while this process waited: lock the new one
            break
        os.close(handle)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while locked: a waiter that locks the removed file sees it and starts again
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        os.close(handle)


__all__ = [
    "atomic_directory",
    "atomic_write_bytes",
    "check_output_file",
    "count_non_finite",
    "exclusive_lock",
    "json_text",
    "publish_into",
    "write_json",
]
