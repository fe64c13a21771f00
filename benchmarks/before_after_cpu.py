# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The DiffCLIP/CLIPModel time ratios of `benchmark_cpu.py`'s towers section, for the modeling file of an earlier
revision and for the current one, in one run: the three models share their weights and are timed in the same
interleaved rounds, so a loaded machine slows all of them alike.

    python benchmarks/before_after_cpu.py                      # before = b944eaf, ViT-B/16, batch 8
    python benchmarks/before_after_cpu.py --before main --repeats 9 --attn-implementation eager

The earlier modeling file is read with `git show REV:src/transformers_diffclip/modeling_diffclip.py` and imported
beside the current configuration file (a throwaway package in a temporary folder).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

import transformers_diffclip  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
MODELING = "src/transformers_diffclip/modeling_diffclip.py"


def earlier_model_class(revision: str, folder: Path):
    """`DiffCLIPModel` of `revision`'s modeling file, importable as `diffclip_before.modeling_diffclip`."""
    package = folder / "diffclip_before"
    package.mkdir()
    source = subprocess.run(["git", "show", f"{revision}:{MODELING}"], cwd=ROOT, check=True, capture_output=True)
    (package / "modeling_diffclip.py").write_bytes(source.stdout)
    configuration = Path(transformers_diffclip.__file__).with_name("configuration_diffclip.py")
    (package / "configuration_diffclip.py").write_bytes(configuration.read_bytes())
    (package / "__init__.py").write_text("", encoding="utf-8")
    sys.path.insert(0, str(folder))
    return importlib.import_module("diffclip_before.modeling_diffclip").DiffCLIPModel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="b944eaf", help="git revision of the earlier modeling file")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--quick", action="store_true", help="tiny models: a smoke test, not a benchmark")
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        before_class = earlier_model_class(args.before, Path(folder))
        clip = common.build_clip(args.quick, args.attn_implementation)
        after = common.build_diffclip(args.quick, args.attn_implementation)
        before = common.build(before_class, common.diffclip_config(args.quick), args.attn_implementation)
        before.load_state_dict(after.state_dict())
        pixels = common.pixel_batch(args.batch_size)
        ids = common.random_ids(args.batch_size, [common.CONTEXT_LENGTH])
        models = {"clip": clip, "before": before, "after": after}
        work = {
            "image": lambda m: lambda: m.get_image_features(pixel_values=pixels),
            "text": lambda m: lambda: m.get_text_features(input_ids=ids),
        }
        rows = []
        with torch.inference_mode():
            for tower, make in work.items():
                want = common.features(make(before)())
                if common.cosine(common.features(make(after)()), want) < 0.999999:
                    raise RuntimeError(f"{tower}: the two revisions disagree")
                times = common.interleaved_times(
                    {name: make(model) for name, model in models.items()}, args.repeats, args.warmup
                )
                summary = common.summarize(times, "clip")
                rows.append(
                    [
                        tower,
                        common.fmt_seconds(summary["clip"]["median_s"]),
                        common.fmt_seconds(summary["before"]["median_s"]),
                        common.fmt_seconds(summary["after"]["median_s"]),
                        f"{summary['before']['ratio_to_clip']:.3f}×",
                        f"{summary['after']['ratio_to_clip']:.3f}×",
                    ]
                )
    env = common.environment()
    print(
        f"DiffCLIP/CLIPModel before ({args.before}) and after (working tree), {args.attn_implementation}, batch "
        f"{args.batch_size}, median of {args.repeats} interleaved rounds, {torch.get_num_threads()} torch threads; "
        f"load average at start {load_at_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}; torch {env['torch']}, "
        f"transformers {env['transformers']}" + (" [--quick]" if args.quick else "")
    )
    header = ["tower", "CLIPModel", "DiffCLIP before", "DiffCLIP after", "ratio before", "ratio after"]
    print(common.markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
