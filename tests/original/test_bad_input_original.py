"""Original checkpoints as a hostile user would give them (issue 23): pickles whose payloads reach code through
other doors than `os.system` / `exec`, the allow-list itself, and a conversion into the cache that fails while
writing (nothing is left behind; the next call converts)."""

from __future__ import annotations

import argparse
import builtins
import os
import subprocess

import pytest
import reference_original as ref
import torch
from _helpers import TINY, go_offline, seed_tiny_clip_tokenizer

from transformers_diffclip.original import ConversionError, cache, resolve_pretrained
from transformers_diffclip.original import checkpoint as original_format


def _state_dict():
    return ref.make_original_state_dict(diff_vision=True, diff_text=True, seed=3, **TINY)


def _container(args) -> dict:
    return {"epoch": 1, "state_dict": _state_dict(), "args": args}


class _Reduce:
    """A pickled object that becomes `function(*arguments)` when unpickled."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def _payloads(marker):
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "eval": _Reduce(builtins.eval, touch),
        "getattr": _Reduce(builtins.getattr, _Reduce(builtins.__import__, "os"), "system"),
        "__import__": _Reduce(builtins.__import__, "os"),
        "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", str(marker)]),
        # a reduce nested in another: eval's result is the argument of the outer call
        "nested reduce": _Reduce(builtins.print, _Reduce(builtins.eval, touch)),
        "in a Namespace": argparse.Namespace(lr=_Reduce(builtins.eval, touch)),
        "os.popen": _Reduce(os.popen, f"touch {marker}"),
    }


PAYLOADS = list(_payloads("x"))


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickles_that_would_run_code_are_refused_unrun(payload, zip_format, tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save(_container(_payloads(marker)[payload]), path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ConversionError, match="Refused to load .*evil.pt.*not on the allow-list"):
        original_format.load_original_checkpoint(path)
    assert not marker.exists()


def test_the_allow_list_is_argparse_namespace_alone():
    assert original_format.SAFE_GLOBALS == (argparse.Namespace,)


def test_the_refusal_names_the_converter_for_the_unsafe_flag(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(_container(_payloads(tmp_path / "MARKER")["eval"]), path)
    with pytest.raises(ConversionError) as error:
        original_format.load_original_checkpoint(path)
    message = str(error.value)
    assert "convert_diffclip_original_to_hf.py --allow-unsafe-pickle" in message
    assert "rerun with --allow-unsafe-pickle" not in message


@pytest.fixture
def offline(tmp_path, monkeypatch):
    seed_tiny_clip_tokenizer(tmp_path / "hub")
    go_offline(monkeypatch, tmp_path / "hub", tmp_path / "diffclip")
    checkpoint = tmp_path / "ckpt" / "checkpoint_best.pt"
    checkpoint.parent.mkdir()
    torch.save(_container(argparse.Namespace(model="DiffCLIP_VITB16")), checkpoint)
    return checkpoint


def test_a_write_failure_in_the_middle_of_a_cache_conversion_leaves_nothing_and_the_next_call_converts(
    offline, tmp_path, monkeypatch
):
    save = cache.save_converted

    def fails_half_way(folder, model, processor, *args):
        save(folder, model, processor, *args)  # everything written ...
        (folder / "model.safetensors").write_bytes(b"\0" * 10)  # ... then the disk fills up mid-file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "save_converted", fails_half_way)
    with pytest.raises(OSError, match="No space left"):
        resolve_pretrained(offline)
    leftovers = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "diffclip").rglob("*"))
    assert leftovers == [] and not (tmp_path / "diffclip").exists(), leftovers

    monkeypatch.setattr(cache, "save_converted", save)
    folder = resolve_pretrained(offline)
    from transformers_diffclip import DiffCLIPModel

    model = DiffCLIPModel.from_pretrained(folder)
    weights = ref.strip_prefix(_state_dict())["logit_scale"]
    assert torch.equal(model.logit_scale.detach().reshape(()), weights.reshape(()))
    assert sorted(p.name for p in (tmp_path / "diffclip").iterdir()) == ["converted"]  # no lock files
