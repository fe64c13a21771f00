"""`core.files.publish_into` never leaves a folder that loads as a mix of two saves: the old `config.json` is removed
before any new file is moved in, so a failure (or kill) after a file that sorts AFTER the weights — the old
config.json still in place would otherwise sit beside the new weights — leaves a folder without `config.json`."""

from __future__ import annotations

import json
import os

import pytest

from transformers_diffclip.core import files


def _save(folder, version):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"version": version}))
    (folder / "model.safetensors").write_bytes(f"weights {version}".encode())
    (folder / "tokenizer.json").write_text(json.dumps({"version": version}))  # sorts after model.safetensors
    return folder


@pytest.mark.parametrize("fail_at", ["model.safetensors", "tokenizer.json"])
def test_a_failure_midway_leaves_no_config_beside_mixed_files(tmp_path, monkeypatch, fail_at):
    run = _save(tmp_path / "run", 1)
    (run / "checkpoint-10").mkdir()
    written = _save(tmp_path / "run" / ".diffclip-saving", 2)
    real_replace = os.replace

    def replace(source, target):
        if os.path.basename(target) == fail_at:
            raise OSError("simulated kill")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="simulated kill"):
        files.publish_into(run, written)
    if fail_at == "tokenizer.json":  # the new weights are in place, the old tokenizer beside them
        assert (run / "model.safetensors").read_bytes() == b"weights 2"
        assert json.loads((run / "tokenizer.json").read_text()) == {"version": 1}
    # so no config.json may be there to make the mix load
    assert not (run / "config.json").exists(), "the old config.json must be gone before the new files arrive"
    assert (run / "checkpoint-10").is_dir()


def test_a_whole_publish_replaces_every_file(tmp_path):
    run = _save(tmp_path / "run", 1)
    written = _save(tmp_path / "run" / ".diffclip-saving", 2)
    files.publish_into(run, written)
    assert json.loads((run / "config.json").read_text()) == {"version": 2}
    assert (run / "model.safetensors").read_bytes() == b"weights 2"
    assert json.loads((run / "tokenizer.json").read_text()) == {"version": 2}
    assert not written.exists()
