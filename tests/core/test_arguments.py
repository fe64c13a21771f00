"""core.errors.positive_int: the one argparse type for counts (batch sizes, top-k, shard sizes)."""

from __future__ import annotations

import argparse

import pytest

from transformers_diffclip.core.errors import positive_int


def test_counts_are_whole_numbers_from_one():
    assert positive_int("1") == 1
    assert positive_int("64") == 64
    for text in ("0", "-3", "2.5", "", "ten"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected a positive integer, got {text!r}"):
            positive_int(text)


def test_a_command_refuses_a_zero_count_with_a_usage_error(capsys):
    from transformers_diffclip import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", "--index", "unused", "--text", "cat", "--top-k", "0"])
    assert exit_info.value.code == 2
    assert "--top-k: expected a positive integer, got '0'" in capsys.readouterr().err


def test_a_bare_debug_flag_is_ours_and_debug_with_a_value_is_training_arguments(monkeypatch):
    from transformers_diffclip.core.errors import debug_requested, without_debug_flag

    monkeypatch.delenv("DIFFCLIP_DEBUG", raising=False)
    ours = ["--do_train", "--debug", "--output_dir", "out"]
    assert debug_requested(ours) and without_debug_flag(ours) == ["--do_train", "--output_dir", "out"]
    assert debug_requested(["--output_dir", "out", "--debug"])
    # TrainingArguments' own `--debug underflow_overflow` passes through untouched
    theirs = ["--debug", "underflow_overflow", "--output_dir", "out"]
    assert not debug_requested(theirs) and without_debug_flag(theirs) == theirs
    monkeypatch.setenv("DIFFCLIP_DEBUG", "1")
    assert debug_requested(theirs)
