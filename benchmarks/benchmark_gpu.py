# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""GPU benchmark of DiffCLIP against transformers' CLIPModel at ViT-B/16 sizes: throughput (images/s, texts/s) and
peak memory with sdpa and flash_attention_2, in bf16 and fp16, plus the cosine of every fast path's embeddings to
eager float32. One GPU, a few minutes.

    python benchmarks/benchmark_gpu.py --output results/gpu.json      # writes gpu.json and gpu.md
    python benchmarks/benchmark_gpu.py --dry-run --output /tmp/g.json  # tiny models on the CPU: a smoke test

flash_attention_2 needs the `flash_attn` package; without it those rows are skipped and the reason is recorded.
Each throughput is the median over interleaved rounds (CLIPModel and DiffCLIP alternate) of CUDA-event timings of
`--iterations` forward passes after warm-up.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="JSON path; the Markdown table goes beside it (.md)")
    parser.add_argument("--image-batch", type=int, default=128)
    parser.add_argument("--text-batch", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=10, help="forward passes per timed round (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forward passes first (default 3)")
    parser.add_argument(
        "--attn",
        nargs="+",
        default=["sdpa", "flash_attention_2"],
        choices=["sdpa", "flash_attention_2", "eager", "sdpa_compiled"],
        help="sdpa_compiled: sdpa under torch.compile (bf16, images and 77-token texts only; compiling takes minutes)",
    )
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, one round: a smoke test")
    args = parser.parse_args(argv)
    if min(args.image_batch, args.text_batch, args.iterations, args.rounds) < 1 or args.warmup < 0:
        parser.error("batch sizes, --iterations and --rounds must be positive, --warmup non-negative")
    if args.dry_run:
        args.image_batch, args.text_batch = min(args.image_batch, 4), min(args.text_batch, 8)
        args.iterations, args.rounds, args.warmup = 1, 1, 1
        args.attn = [a for a in args.attn if a != "flash_attention_2"] or ["sdpa"]
    return args


def flash_attention_unavailable() -> str | None:
    """Why flash_attention_2 cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if importlib.util.find_spec("flash_attn") is None:
        return "the flash_attn package is not installed"
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        return "flash_attn needs an Ampere or newer GPU"
    return None


class Timer:
    """CUDA-event timing on a GPU, wall clock on the CPU (dry run)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, function, iterations: int) -> float:
        """Seconds per call, averaged over `iterations` calls."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iterations):
                function()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / iterations
        begin = time.perf_counter()
        for _ in range(iterations):
            function()
        return (time.perf_counter() - begin) / iterations


def peak_memory(function, device: torch.device) -> dict:
    """Peak bytes allocated during one call: in total and above what was allocated before it."""
    if device.type != "cuda":
        return {"peak_bytes": None, "activation_bytes": common.cpu_peak_memory(function)}
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    function()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_bytes": peak, "activation_bytes": peak - before}


def build_pair(attn: str, dtype: torch.dtype, device: torch.device, tiny: bool, reference: dict):
    """CLIPModel and DiffCLIP with `attn` in `dtype`, DiffCLIP holding the weights of the float32 reference."""
    clip = common.build(common.CLIPModel, common.clip_config(tiny), attn, dtype=dtype, device=device)
    diffclip = common.build(common.DiffCLIPModel, common.diffclip_config(tiny), attn, dtype=dtype, device=device)
    diffclip.load_state_dict(reference["diffclip_state"])
    return clip, diffclip


def attention_kernels(args, device: torch.device, timer: Timer) -> dict:
    """Seconds per call of the attention alone at the image tower's shapes (12 heads of 64, 197 tokens) in bf16:
    standard attention (CLIP), DiffCLIP's two calls of one map each over all pairs with 128-wide values (the
    package's path), one call over all heads with the values repeated, two calls with 64-wide value halves, and the
    maps written out and combined (the CPU path)."""
    import torch.nn.functional as F

    batch, heads, tokens, dim = args.image_batch, 4 if args.dry_run else 12, 197, 16 if args.dry_run else 64
    dtype = torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(batch, heads, tokens, dim, generator=generator).to(device, dtype) for _ in range(2))
    v = torch.randn(batch, heads // 2, tokens, 2 * dim, generator=generator).to(device, dtype)
    v_repeated = v.repeat(1, 2, 1, 1)
    lam = 0.3

    def combined():
        maps = torch.softmax(q @ k.transpose(-1, -2) * dim**-0.5, dim=-1, dtype=torch.float32)
        maps = maps.view(batch, heads // 2, 2, tokens, tokens)
        return (maps[:, :, 0] - lam * maps[:, :, 1]).to(dtype) @ v

    functions = {
        "standard_attention": lambda: F.scaled_dot_product_attention(q, k, v_repeated[..., :dim]),
        "diffclip_per_map_calls": lambda: [F.scaled_dot_product_attention(q[:, j::2], k[:, j::2], v) for j in (0, 1)],
        "diffclip_one_call_v2d": lambda: F.scaled_dot_product_attention(q, k, v_repeated),
        "diffclip_two_calls_vd": lambda: [
            F.scaled_dot_product_attention(q, k, v_repeated[..., :dim].contiguous()),
            F.scaled_dot_product_attention(q, k, v_repeated[..., dim:].contiguous()),
        ],
        "diffclip_combined_maps": combined,
    }
    seconds = {name: [] for name in functions}
    with torch.inference_mode():
        for function in functions.values():
            for _ in range(args.warmup):
                function()
        for _ in range(args.rounds):
            for name, function in functions.items():
                seconds[name].append(timer(function, args.iterations))
    result = {name: statistics.median(values) for name, values in seconds.items()}
    print("attention kernels (s/call):", {k: f"{v:.2e}" for k, v in result.items()}, file=sys.stderr, flush=True)
    return {"shape": [batch, heads, tokens, dim], "dtype": "bf16", "seconds_per_call": result}


def run(args) -> dict:
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark_gpu.py needs a CUDA device (use --dry-run for a CPU smoke test)")
    tiny = args.dry_run
    timer = Timer(device)
    pixels = common.pixel_batch(args.image_batch, device=device)
    ids77 = common.random_ids(args.text_batch, [common.CONTEXT_LENGTH]).to(device)
    prompts, prompt_source = common.prompt_batch(args.text_batch)
    prompts = prompts.to(device)
    workloads = {
        "images_224": ("images/s", args.image_batch, lambda m, x: m.get_image_features(pixel_values=x), pixels),
        "texts_77": ("texts/s", args.text_batch, lambda m, x: m.get_text_features(input_ids=x), ids77),
        "texts_short": ("texts/s", args.text_batch, lambda m, x: m.get_text_features(input_ids=x), prompts),
    }

    # eager float32 DiffCLIP: the reference every fast path's embeddings are compared with
    reference_model = common.build_diffclip(tiny, attn_implementation="eager", device=device)
    check = 8
    with torch.inference_mode():
        reference = {
            "diffclip_state": reference_model.state_dict(),
            "images_224": common.features(reference_model.get_image_features(pixel_values=pixels[:check])),
            "texts_77": common.features(reference_model.get_text_features(input_ids=ids77[:check])),
            "texts_short": common.features(reference_model.get_text_features(input_ids=prompts[:check])),
        }
    reference["diffclip_state"] = {k: v.clone() for k, v in reference["diffclip_state"].items()}
    del reference_model

    flash_problem = flash_attention_unavailable()
    rows, skipped = [], []
    for attn in args.attn:
        if attn == "flash_attention_2" and flash_problem:
            skipped.append({"attn": attn, "reason": flash_problem})
            continue
        compiled = attn == "sdpa_compiled"
        for dtype_name in ["bf16"] if compiled else args.dtypes:
            dtype = DTYPES[dtype_name]
            try:
                clip, diffclip = build_pair("sdpa" if compiled else attn, dtype, device, tiny, reference)
            except (ImportError, ValueError, RuntimeError) as error:  # e.g. a kernel refusing this dtype
                skipped.append({"attn": attn, "dtype": dtype_name, "reason": f"{type(error).__name__}: {error}"})
                continue
            for workload, (unit, batch, call, inputs) in workloads.items():
                if compiled and workload == "texts_short":
                    continue
                x = inputs.to(dtype) if inputs.is_floating_point() else inputs
                functions = {"clip": functools.partial(call, clip, x)}
                functions["diffclip"] = functools.partial(call, diffclip, x)
                if compiled:
                    torch._dynamo.reset()
                    functions = {name: torch.compile(function) for name, function in functions.items()}
                with torch.inference_mode():
                    cosine = common.cosine(common.features(functions["diffclip"]())[:check], reference[workload])
                    for function in functions.values():
                        for _ in range(args.warmup):
                            function()
                    seconds = {name: [] for name in functions}
                    for _ in range(args.rounds):
                        for name, function in functions.items():
                            seconds[name].append(timer(function, args.iterations))
                    memory = {name: peak_memory(function, device) for name, function in functions.items()}
                ratios = [c / d for c, d in zip(seconds["clip"], seconds["diffclip"])]
                row = {
                    "attn": attn,
                    "dtype": dtype_name,
                    "workload": workload,
                    "tokens": int(x.shape[1]) if workload != "images_224" else None,
                    "unit": unit,
                    "batch": batch,
                    "throughput": {name: batch / statistics.median(values) for name, values in seconds.items()},
                    "diffclip_speed_vs_clip": statistics.median(ratios),
                    "seconds_per_batch": {name: statistics.median(values) for name, values in seconds.items()},
                    "memory": memory,
                    "cosine_to_fp32_eager": cosine,
                }
                rows.append(row)
                throughput = row["throughput"]
                print(
                    f"{attn:18s} {dtype_name} {workload:11s} CLIP {throughput['clip']:9.0f} {unit}  "
                    f"DiffCLIP {throughput['diffclip']:9.0f} {unit}  ratio {row['diffclip_speed_vs_clip']:.3f}  "
                    f"cos {cosine:.5f}",
                    file=sys.stderr,
                    flush=True,
                )
            del clip, diffclip
            if device.type == "cuda":
                torch.cuda.empty_cache()
    kernels = attention_kernels(args, device, timer)
    return {"rows": rows, "skipped": skipped, "prompts": prompt_source, "attention_kernels": kernels}


def markdown(title: str, result: dict) -> str:
    header = [
        "attention",
        "dtype",
        "workload",
        "CLIPModel",
        "DiffCLIP",
        "DiffCLIP speed vs CLIP",
        "peak memory CLIP / DiffCLIP",
        "cosine to fp32 eager",
    ]
    rows = []
    for row in result["rows"]:
        unit = row["unit"]
        peak = {
            name: "n/a" if value["peak_bytes"] is None else common.fmt_bytes(value["peak_bytes"])
            for name, value in row["memory"].items()
        }
        label = row["workload"] + (f" ({row['tokens']} tokens)" if row["tokens"] else "")
        rows.append(
            [
                row["attn"],
                row["dtype"],
                f"{label}, batch {row['batch']}",
                f"{row['throughput']['clip']:.0f} {unit}",
                f"{row['throughput']['diffclip']:.0f} {unit}",
                f"{row['diffclip_speed_vs_clip']:.3f}×",
                f"{peak['clip']} / {peak['diffclip']}",
                f"{row['cosine_to_fp32_eager']:.5f}",
            ]
        )
    text = f"{title}\n\n{common.markdown_table(header, rows)}\n"
    kernels = result.get("attention_kernels")
    if kernels:
        timings = ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in kernels["seconds_per_call"].items())
        text += f"\nAttention alone, shape {kernels['shape']} {kernels['dtype']}: {timings}.\n"
    for skip in result["skipped"]:
        text += f"\nSkipped {skip['attn']}{' ' + skip['dtype'] if 'dtype' in skip else ''}: {skip['reason']}."
    return text + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result = run(args)
    env = common.environment()
    if args.dry_run:
        device_name = "CPU dry run (tiny models; not a benchmark)"
    else:
        device_name = torch.cuda.get_device_name()
    title = (
        f"DiffCLIP GPU benchmark: {device_name}; images batch {args.image_batch}, texts batch {args.text_batch}; "
        f"median of {args.rounds} interleaved rounds × {args.iterations} passes; torch {env['torch']}, "
        f"transformers {env['transformers']}; {env['date_utc']}"
    )
    table = markdown(title, result)
    print(table)
    output = Path(args.output)
    payload = {
        "title": title,
        "device": device_name,
        "cuda": torch.version.cuda,
        "environment": env,
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        **result,
        "runtime_s": time.perf_counter() - started,
    }
    common.write_json(output, payload)
    output.with_suffix(".md").write_text(table, encoding="utf-8")
    print(f"wrote {output} and {output.with_suffix('.md')} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
