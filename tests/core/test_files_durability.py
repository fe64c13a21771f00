"""`core.files.atomic_write_bytes` is durable: the temporary file's data is flushed to disk (`os.fsync` on its
descriptor, after the last write) before `os.replace` puts it in place, so a power loss after the rename can never
leave an empty or partial file under the final name."""

from __future__ import annotations

import os

from transformers_diffclip.core import files


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        # what is on the descriptor when it is synced: the whole data must already be written to it
        events.append(("fsync", os.fstat(fd).st_size))
        return real_fsync(fd)

    def replace(source, target):
        events.append(("replace", os.path.basename(target)))
        return real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    data = b"x" * 100_000
    files.atomic_write_bytes(tmp_path / "out.bin", data)
    assert (tmp_path / "out.bin").read_bytes() == data
    kinds = [kind for kind, _ in events]
    assert "fsync" in kinds and "replace" in kinds, events
    first_sync = kinds.index("fsync")
    assert first_sync < kinds.index("replace"), events
    assert events[first_sync][1] == len(data), events  # the file synced holds the whole data


def test_write_json_is_durable_too(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_size) or real_fsync(fd))
    files.write_json(tmp_path / "report.json", {"a": 1})
    assert synced and synced[0] == (tmp_path / "report.json").stat().st_size
