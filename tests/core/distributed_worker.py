"""Run by tests/core/test_distributed.py under `python -m torch.distributed.run --nproc_per_node 2`: each process
records what `core.distributed` did with the process group into OUT_DIR/<mode>-<rank>.json.

Modes (one per launch: torchrun's store does not let a process start a second group after ending one):
`ours` (no group runs: `process_group` starts one, a nested block joins it, `barrier` waits, the exit ends it) and
`callers` (the caller started the group: `process_group` and `joins_process_group` leave it running)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from transformers_diffclip.core.distributed import barrier, joins_process_group, process_group, rank_world


def ours(out_dir: str) -> dict:
    record = {"before": torch.distributed.is_initialized()}
    with process_group("cpu") as (rank, world):
        record.update(rank=rank, world=world, backend=torch.distributed.get_backend(), inside=rank_world())
        with process_group("cpu") as nested:  # a group runs already: joined, not started again, not ended
            record["nested"] = list(nested)
        record["after_nested"] = torch.distributed.is_initialized()
        if rank == 1:
            time.sleep(1.0)
            Path(out_dir, "late.txt").write_text("rank 1 was here")
        barrier()  # rank 0 waits for rank 1's file
        record["saw_late_file"] = Path(out_dir, "late.txt").is_file()
    record["after"] = torch.distributed.is_initialized()  # ended: this call started it
    return record


def callers(out_dir: str) -> dict:
    torch.distributed.init_process_group("gloo")
    record = {"rank": torch.distributed.get_rank()}
    with process_group("cpu") as place:
        record["inside"] = list(place)
    record["kept"] = torch.distributed.is_initialized()
    record["decorated"] = joins_process_group(rank_world)()
    record["kept_by_decorated"] = torch.distributed.is_initialized()
    torch.distributed.destroy_process_group()
    return record


if __name__ == "__main__":
    mode, out_dir = sys.argv[1], sys.argv[2]
    record = {"ours": ours, "callers": callers}[mode](out_dir)
    Path(out_dir, f"{mode}-{record['rank']}.json").write_text(json.dumps(record))
