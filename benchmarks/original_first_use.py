# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""First use of an authors' checkpoint: the time and peak memory of the conversion `resolve_pretrained` runs once,
and the time of a cached second start, on a full-size ViT-B/16 checkpoint in the original training container
(random weights, AdamW moments, scaler, args: about 1.8 GB), served offline from a seeded Hugging Face cache.

    python benchmarks/original_first_use.py                 # DiffCLIP ViT-B/16 (about 2 minutes, 4 GB of disk)
    python benchmarks/original_first_use.py --variant CLIP  # the CLIP baseline layout

Each measurement is a fresh `python` process: its wall time, the split into import / resolve / load, and its peak
resident set size (VmHWM, which includes the memory-mapped checkpoint pages it touched). Everything is written under
a temporary folder that is deleted at the end (`--keep DIR` keeps it in DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the stand-in vocabulary
sys.path.insert(0, str(ROOT / "conversion"))  # the independent original-layout writer (reference_original)

REPO_ID = "hammh0a/DiffCLIP_ViTB16_CC12M"
REVISION = "0" * 40

CHILD = """
import sys, time
t0 = time.perf_counter()
from transformers_diffclip import DiffCLIPModel, resolve_pretrained
t1 = time.perf_counter()
folder = resolve_pretrained(sys.argv[1])
t2 = time.perf_counter()
if sys.argv[2] == "load":
    DiffCLIPModel.from_pretrained(folder)
t3 = time.perf_counter()
# VmHWM: this process's peak resident set (ru_maxrss would carry over the parent's peak across fork + exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f} {peak}")
"""


def write_checkpoint(path: Path, variant: str) -> tuple[int, int]:
    """The original container with random weights; returns (file bytes, weight bytes)."""
    import reference_original as ref

    state_dict = ref.make_original_state_dict(diff_vision=variant == "DiffCLIP", diff_text=variant == "DiffCLIP")
    moments = {
        index: {"step": torch.tensor(1.0), "exp_avg": torch.randn(t.shape), "exp_avg_sq": torch.rand(t.shape)}
        for index, t in enumerate(state_dict.values())
    }
    container = {
        "epoch": 40,
        "state_dict": state_dict,
        "optimizer": {"state": moments, "param_groups": [{"lr": 1e-6, "params": list(moments)}]},
        "scaler": {"scale": 65536.0},
        "best_acc1": 0.0,
        "args": argparse.Namespace(model=f"{variant}_VITB16", dataset="cc12m"),
    }
    torch.save(container, path)
    weights = sum(t.numel() * t.element_size() for t in state_dict.values())
    return path.stat().st_size, weights


def seed_cache(cache: Path, checkpoint: Path) -> None:
    from _helpers import seed_hub_cache, seed_tiny_clip_tokenizer

    snapshot = cache / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    checkpoint.rename(snapshot / "checkpoint_best.pt")  # no copy of 1.8 GB
    seed_hub_cache(cache, REPO_ID, {}, revision=REVISION)
    seed_tiny_clip_tokenizer(cache)  # CLIP's tokenizer files: a stand-in of the same size (49,408 ids)


def run(env: dict, mode: str) -> dict:
    """One fresh process: wall time, peak RSS and the split of its time."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, REPO_ID, mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = (stream.decode() for stream in process.communicate())
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"child failed:\n{err[-3000:]}")
    imports, resolve, load, peak_kib = (float(x) for x in out.split())
    return {
        "wall_s": round(wall, 2),
        "import_s": imports,
        "resolve_s": resolve,
        "load_s": load,
        "peak_rss_mib": round(peak_kib / 1024),
        "stderr": [line for line in err.splitlines() if line.startswith("converting")],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("DiffCLIP", "CLIP"), default="DiffCLIP")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a deleted temporary folder)")
    parser.add_argument("--output", metavar="JSON", help="also write the figures to this file")
    args = parser.parse_args(argv)
    work = Path(args.keep or tempfile.mkdtemp(prefix="diffclip-first-use-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        file_bytes, weight_bytes = write_checkpoint(work / "checkpoint_best.pt", args.variant)
        print(
            f"wrote a {file_bytes / 2**30:.2f} GiB checkpoint ({weight_bytes / 2**20:.0f} MiB of weights) in "
            f"{time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        seed_cache(work / "hub", work / "checkpoint_best.pt")
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(work / "hub"),
            "DIFFCLIP_CACHE": str(work / "diffclip"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        }
        figures = {
            "variant": args.variant,
            "checkpoint_gib": round(file_bytes / 2**30, 2),
            "weights_mib": round(weight_bytes / 2**20),
            "first_use": run(env, "resolve"),
            "cached_resolve": run(env, "resolve"),
            "cached_from_pretrained": run(env, "load"),
        }
        converted = sum(p.stat().st_size for p in (work / "diffclip").rglob("*") if p.is_file())
        figures["converted_folder_mib"] = round(converted / 2**20)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
