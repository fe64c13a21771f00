"""`core.distributed`: the one place a process group is started, waited on and ended.

Checked the way the commands meet it: two processes under `python -m torch.distributed.run` (Gloo on the CPU), and
one process, where nothing is started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformers_diffclip.core import distributed
from transformers_diffclip.core.distributed import barrier, process_device, process_group, rank_world


def test_a_single_process_starts_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group("cpu") as place:
        assert place == (0, 1) and not torch.distributed.is_initialized()
        barrier()  # nothing to wait for
    assert rank_world() == (0, 1)


def test_process_device_gives_each_process_its_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert [process_device(d) for d in ("auto", "cuda", "cpu", "cuda:0")] == ["cuda:1", "cuda:1", "cpu", "cuda:0"]
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: the device as given
    assert process_device("auto") == "auto"
    assert distributed.launched_by_torchrun() is False


def _two_processes(mode: str, out: Path) -> list[dict]:
    worker = Path(__file__).with_name("distributed_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run([*command, mode, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"{mode}-{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_processes_start_wait_and_end_their_own_group(tmp_path):
    for rank, record in enumerate(_two_processes("ours", tmp_path)):
        assert record["before"] is False and (record["rank"], record["world"]) == (rank, 2)
        assert record["backend"] == "gloo" and record["inside"] == [rank, 2]
        assert record["nested"] == [rank, 2] and record["after_nested"] is True  # the inner block ended nothing
        assert record["saw_late_file"] is True  # the barrier waited for rank 1
        assert record["after"] is False  # the group it started is ended


@pytest.mark.slow
def test_a_group_the_caller_started_is_left_running(tmp_path):
    for rank, record in enumerate(_two_processes("callers", tmp_path)):
        assert record["inside"] == [rank, 2] and record["decorated"] == [rank, 2]
        assert record["kept"] is True and record["kept_by_decorated"] is True
