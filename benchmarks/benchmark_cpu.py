# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""CPU benchmark of DiffCLIP: the cost of differential attention against transformers' CLIPModel, the speed against
the original formulation, dynamic padding, bf16/fp16, achieved GFLOP/s, peak memory, larger images and
torch.compile.

    python benchmarks/benchmark_cpu.py                      # full run, ViT-B/16 sizes, batch 8 (about 10 minutes)
    python benchmarks/benchmark_cpu.py --quick              # tiny models, a smoke test (seconds)
    python benchmarks/benchmark_cpu.py --sections towers padding --repeats 9 --output cpu.json

Every time is the median over `--repeats` interleaved rounds after warm-up; every ratio is the median of the
per-round ratios of two functions timed in the same round. Peak memory is the largest total of tensors alive at
once during one call (weights and inputs excluded), from the PyTorch profiler's allocator records.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import fmt_bytes, fmt_seconds  # noqa: E402


SECTIONS = ("towers", "original", "padding", "dtypes", "resolution", "compile")


class Report:
    """Collects table rows (with their targets) and the JSON payload."""

    def __init__(self):
        self.rows: list[list[str]] = []
        self.targets: list[dict] = []
        self.results: dict = {}

    def add(self, name, ours, baseline, ratio, target=None, met=None, note=""):
        ratio_text = "" if ratio is None else f"{ratio:.3f}×"
        met_text = "" if met is None else ("yes" if met else "NO")
        self.rows.append([name, ours, baseline, ratio_text, target or "", met_text, note])
        if target is not None:
            self.targets.append({"name": name, "value": ratio, "target": target, "met": met, "note": note})

    def table(self) -> str:
        header = ["measurement", "DiffCLIP", "baseline", "ratio", "target", "met", "note"]
        return common.markdown_table(header, self.rows)


def _timed_group(functions, args, baseline):
    times = common.interleaved_times(functions, repeats=args.repeats, warmup=args.warmup)
    return common.summarize(times, baseline)


def _memory(functions):
    return {name: common.cpu_peak_memory(function) for name, function in functions.items()}


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def towers(models, inputs, args, report):
    """DiffCLIP (sdpa) vs CLIPModel (sdpa) per tower and together; the DiffCLIP standard-attention sibling isolates
    the differential attention itself; a 2048² matmul runs in the image rounds for the GFLOP/s reference."""
    clip, diffclip, standard = models["clip"], models["diffclip"], models["diffclip_standard"]
    pixels, ids = inputs["pixels"], inputs["ids77"]
    size = 256 if args.quick else 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    matmul_calls = 2 if args.quick else 6
    work = {
        "image": lambda m: lambda: m.get_image_features(pixel_values=pixels),
        "text": lambda m: lambda: m.get_text_features(input_ids=ids),
        "both": lambda m: lambda: m(input_ids=ids, pixel_values=pixels),
    }
    section = {}
    for tower, make in work.items():
        functions = {"clip": make(clip), "diffclip": make(diffclip), "diffclip_standard": make(standard)}
        if tower == "image":
            functions["matmul"] = lambda: [a @ b for _ in range(matmul_calls)]
        with torch.inference_mode():
            summary = _timed_group(functions, args, "clip")
            memory = _memory({k: v for k, v in functions.items() if k != "matmul"})
        section[tower] = {"times": summary, "peak_memory_bytes": memory}
        ours, base = summary["diffclip"], summary["clip"]
        ratio = ours["ratio_to_clip"]
        report.add(
            f"{tower} tower{'s' if tower == 'both' else ''} vs CLIPModel, time",
            fmt_seconds(ours["median_s"]),
            fmt_seconds(base["median_s"]),
            ratio,
            "≤ 1.05×",
            ratio <= 1.05,
        )
        memory_ratio = memory["diffclip"] / memory["clip"]
        report.add(
            f"{tower} tower{'s' if tower == 'both' else ''} vs CLIPModel, peak memory",
            fmt_bytes(memory["diffclip"]),
            fmt_bytes(memory["clip"]),
            memory_ratio,
            "≤ 1.05×",
            memory_ratio <= 1.05,
        )
        sibling = summary["diffclip_standard"]
        report.add(
            f"{tower}: differential vs standard attention (same package), time",
            fmt_seconds(ours["median_s"]),
            fmt_seconds(sibling["median_s"]),
            ours["median_s"] / sibling["median_s"],
            note="ratio of medians; informational",
        )

    # achieved GFLOP/s of the image tower vs the plain matmul of the same rounds
    with torch.inference_mode():
        flops = {"diffclip": common.count_flops(work["image"](diffclip))}
        clip.set_attn_implementation("eager")  # FlopCounterMode does not count the CPU flash kernel
        flops["clip"] = common.count_flops(work["image"](clip))
        clip.set_attn_implementation("sdpa")
    image = section["image"]["times"]
    matmul_gflops = matmul_calls * 2 * size**3 / image["matmul"]["median_s"] / 1e9
    achieved = {name: flops[name] / image[name]["median_s"] / 1e9 for name in flops}
    section["gflops"] = {"matmul": matmul_gflops, "matmul_size": size, "image_tower": achieved, "flops": flops}
    for name, label in (("diffclip", "DiffCLIP"), ("clip", "CLIPModel")):
        fraction = achieved[name] / matmul_gflops
        report.add(
            f"image tower GFLOP/s vs {size}² matmul ({label})",
            f"{achieved[name]:.1f} GFLOP/s",
            f"{matmul_gflops:.1f} GFLOP/s",
            fraction,
            "≥ 0.85×" if name == "diffclip" else None,
            fraction >= 0.85 if name == "diffclip" else None,
            note=f"{flops[name] / 1e9:.1f} GFLOP per batch",
        )
    report.results["towers"] = section


def original(models, inputs, args, report):
    """DiffCLIP vs the original formulation written straightforwardly, both at 77 text tokens (equal work)."""
    diffclip = models["diffclip"]
    baseline = common.OriginalFormulation(diffclip)
    pixels, ids = inputs["pixels"], inputs["ids77"]
    with torch.inference_mode():
        agreement = {
            "image_cosine": common.cosine(
                baseline.encode_image(pixels), common.features(diffclip.get_image_features(pixel_values=pixels))
            ),
            "text_cosine": common.cosine(
                baseline.encode_text(ids), common.features(diffclip.get_text_features(input_ids=ids))
            ),
        }
        if min(agreement.values()) < 0.9999:
            raise RuntimeError(f"the original-formulation baseline disagrees with DiffCLIP: {agreement}")
        image = _timed_group(
            {
                "original": lambda: baseline.encode_image(pixels),
                "diffclip": lambda: diffclip.get_image_features(pixel_values=pixels),
            },
            args,
            "original",
        )
        text = _timed_group(
            {
                "original": lambda: baseline.encode_text(ids),
                "diffclip": lambda: diffclip.get_text_features(input_ids=ids),
            },
            args,
            "original",
        )
        memory = _memory({"original": lambda: baseline(ids, pixels), "diffclip": lambda: diffclip(ids, pixels)})
    section = {"agreement": agreement, "image": image, "text": text, "peak_memory_bytes": memory}
    for tower, summary in (("image", image), ("text", text)):
        ratio = summary["diffclip"]["ratio_to_original"]
        report.add(
            f"{tower} tower vs original formulation (77 tokens), time",
            fmt_seconds(summary["diffclip"]["median_s"]),
            fmt_seconds(summary["original"]["median_s"]),
            ratio,
            "≤ 1.0×",
            ratio <= 1.0,
        )
    both = (image["diffclip"]["median_s"] + text["diffclip"]["median_s"]) / (
        image["original"]["median_s"] + text["original"]["median_s"]
    )
    section["both_ratio_of_summed_medians"] = both
    report.add(
        "both towers vs original formulation, time",
        fmt_seconds(image["diffclip"]["median_s"] + text["diffclip"]["median_s"]),
        fmt_seconds(image["original"]["median_s"] + text["original"]["median_s"]),
        both,
        "≤ 1.0×",
        both <= 1.0,
        note="sum of the tower medians",
    )
    report.add(
        "both towers vs original formulation, peak memory",
        fmt_bytes(memory["diffclip"]),
        fmt_bytes(memory["original"]),
        memory["diffclip"] / memory["original"],
        note="informational",
    )
    report.results["original"] = section


def padding(models, inputs, args, report):
    """Typical short prompts: padded to the longest prompt (dynamic) vs always to 77 tokens."""
    diffclip = models["diffclip"]
    dynamic, source = common.prompt_batch(args.batch_size)
    fixed, _ = common.prompt_batch(args.batch_size, pad_to=common.CONTEXT_LENGTH)
    with torch.inference_mode():
        cos = common.cosine(
            common.features(diffclip.get_text_features(input_ids=dynamic)),
            common.features(diffclip.get_text_features(input_ids=fixed)),
        )
        functions = {
            "fixed_77": lambda: diffclip.get_text_features(input_ids=fixed),
            "dynamic": lambda: diffclip.get_text_features(input_ids=dynamic),
        }
        summary = _timed_group(functions, args, "dynamic")
        memory = _memory(functions)
    speedup = summary["fixed_77"]["ratio_to_dynamic"]
    report.results["padding"] = {
        "prompts": source,
        "dynamic_length": dynamic.shape[1],
        "cosine_dynamic_vs_fixed": cos,
        "times": summary,
        "peak_memory_bytes": memory,
    }
    report.add(
        f"short prompts: dynamic padding ({dynamic.shape[1]} tokens) vs fixed 77, speed-up",
        fmt_seconds(summary["dynamic"]["median_s"]),
        fmt_seconds(summary["fixed_77"]["median_s"]),
        speedup,
        "≥ 4×",
        speedup >= 4,
        note=f"embedding cosine {cos:.6f}; memory {fmt_bytes(memory['dynamic'])} vs {fmt_bytes(memory['fixed_77'])}",
    )


def dtypes(models, inputs, args, report):
    """bf16 and fp16 copies of DiffCLIP vs fp32: speed and cosine of the embeddings to fp32's."""
    cpu = common.cpu_description()
    native_bf16 = cpu["flags"]["avx512_bf16"] or cpu["flags"]["amx_bf16"]
    native_fp16 = cpu["flags"]["avx512_fp16"] or cpu["flags"]["amx_fp16"]
    fp32 = models["diffclip"]
    copies = {dtype: copy.deepcopy(fp32).to(dtype) for dtype in (torch.bfloat16, torch.float16)}
    pixels, ids = inputs["pixels"], inputs["ids77"]
    section = {"native_bf16": native_bf16, "native_fp16": native_fp16}
    for tower in ("image", "text"):
        if tower == "image":

            def make(model, dtype):
                x = pixels.to(dtype)
                return lambda: model.get_image_features(pixel_values=x)
        else:

            def make(model, dtype):
                return lambda: model.get_text_features(input_ids=ids)

        functions = {"fp32": make(fp32, torch.float32)}
        functions.update({str(dtype).split(".")[1]: make(model, dtype) for dtype, model in copies.items()})
        # Without native bf16/fp16 instructions those dtypes run many times slower than fp32: two rounds then, and
        # the cosine calls serve as the warm-up.
        rounds = args.repeats if (native_bf16 and native_fp16) else min(args.repeats, 2)
        with torch.inference_mode():
            reference = common.features(functions["fp32"]())
            cosines = {name: common.cosine(common.features(f()), reference) for name, f in functions.items()}
            times = common.interleaved_times(functions, repeats=rounds, warmup=0)
            summary = common.summarize(times, "fp32")
            memory = _memory(functions)
        section[tower] = {"times": summary, "cosine_to_fp32": cosines, "peak_memory_bytes": memory}
        for name, native in (("bfloat16", native_bf16), ("float16", native_fp16)):
            speedup = 1 / summary[name]["ratio_to_fp32"]
            is_bf16 = name == "bfloat16"
            applicable = is_bf16 and native
            note = f"cosine to fp32 {cosines[name]:.5f}; memory {fmt_bytes(memory[name])}"
            if is_bf16 and not native:
                note += "; speed target n/a: this CPU has neither AVX512-BF16 nor AMX"
            report.add(
                f"{tower} tower {name} vs fp32, speed-up",
                fmt_seconds(summary[name]["median_s"]),
                fmt_seconds(summary["fp32"]["median_s"]),
                speedup,
                "≥ 1.7×" if applicable else None,
                speedup >= 1.7 if applicable else None,
                note=note,
            )
            report.add(
                f"{tower} tower {name} embedding cosine to fp32",
                f"{cosines[name]:.5f}",
                "1",
                None,
                "≥ 0.999",
                cosines[name] >= 0.999,
            )
    report.results["dtypes"] = section
    del copies


def resolution(models, inputs, args, report):
    """Larger images through `interpolate_pos_encoding`: DiffCLIP vs CLIPModel."""
    clip, diffclip = models["clip"], models["diffclip"]
    section = {}
    for size in (336, 448):
        pixels = common.pixel_batch(args.batch_size, size)
        functions = {
            name: functools.partial(model.get_image_features, pixel_values=pixels, interpolate_pos_encoding=True)
            for name, model in (("clip", clip), ("diffclip", diffclip))
        }
        with torch.inference_mode():
            summary = _timed_group(functions, args, "clip")
            memory = _memory(functions)
        section[str(size)] = {"times": summary, "peak_memory_bytes": memory}
        report.add(
            f"image tower at {size}×{size} vs CLIPModel, time",
            fmt_seconds(summary["diffclip"]["median_s"]),
            fmt_seconds(summary["clip"]["median_s"]),
            summary["diffclip"]["ratio_to_clip"],
            note="interpolate_pos_encoding=True",
        )
        report.add(
            f"image tower at {size}×{size} vs CLIPModel, peak memory",
            fmt_bytes(memory["diffclip"]),
            fmt_bytes(memory["clip"]),
            memory["diffclip"] / memory["clip"],
        )
    report.results["resolution"] = section


def compile_towers(models, inputs, args, report):
    """torch.compile on both towers: graph breaks (torch._dynamo.explain) and compiled vs eager speed."""
    diffclip = models["diffclip"]
    pixels, ids = inputs["pixels"], inputs["ids77"]
    towers_ = {
        "image": (diffclip.vision_model, {"pixel_values": pixels}),
        "text": (diffclip.text_model, {"input_ids": ids}),
    }
    section = {}
    for tower, (module, kwargs) in towers_.items():
        torch._dynamo.reset()
        with torch.inference_mode():
            explanation = torch._dynamo.explain(module)(**kwargs)
        breaks = [str(reason.reason) for reason in explanation.break_reasons]
        torch._dynamo.reset()
        compiled = torch.compile(module)
        with torch.inference_mode():
            start = time.perf_counter()
            compiled_out = compiled(**kwargs).pooler_output
            compile_seconds = time.perf_counter() - start
            eager_out = module(**kwargs).pooler_output
            cos = common.cosine(compiled_out, eager_out)
            functions = {"eager": functools.partial(module, **kwargs)}
            functions["compiled"] = functools.partial(compiled, **kwargs)
            summary = _timed_group(functions, args, "eager")
        section[tower] = {
            "graphs": explanation.graph_count,
            "graph_breaks": explanation.graph_break_count,
            "break_reasons": breaks,
            "compile_seconds": compile_seconds,
            "cosine_to_eager": cos,
            "times": summary,
        }
        report.add(
            f"{tower} tower torch.compile: graph breaks",
            str(explanation.graph_break_count),
            "0",
            None,
            "0",
            explanation.graph_break_count == 0,
            note=f"{explanation.graph_count} graph(s); first call {compile_seconds:.0f} s; cosine to eager {cos:.6f}",
        )
        report.add(
            f"{tower} tower torch.compile vs eager, speed-up",
            fmt_seconds(summary["compiled"]["median_s"]),
            fmt_seconds(summary["eager"]["median_s"]),
            1 / summary["compiled"]["ratio_to_eager"],
            note="informational",
        )
    torch._dynamo.reset()
    report.results["compile"] = section


RUNNERS = {
    "towers": towers,
    "original": original,
    "padding": padding,
    "dtypes": dtypes,
    "resolution": resolution,
    "compile": compile_towers,
}


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds per comparison (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each function first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=None,
        metavar="SECTION",
        help=f"any of {', '.join(SECTIONS)} (default: all; with --quick all but compile)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny models and 2 rounds: a smoke test, not a benchmark")
    parser.add_argument("--output", default="benchmark_cpu.json", help="JSON file to write (default: %(default)s)")
    parser.add_argument("--markdown", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch-size and --repeats must be positive and --warmup non-negative")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")
    if args.sections is None:
        args.sections = [name for name in SECTIONS if not (args.quick and name == "compile")]
    if args.quick:
        args.repeats = min(args.repeats, 2)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_at_start = common.environment()["load_average_1_5_15"]
    models = {
        "clip": common.build_clip(args.quick),
        "diffclip": common.build_diffclip(args.quick),
        "diffclip_standard": common.build_diffclip(args.quick, differential=False),
    }
    inputs = {
        "pixels": common.pixel_batch(args.batch_size),
        "ids77": common.random_ids(args.batch_size, [common.CONTEXT_LENGTH]),
    }
    report = Report()
    for name in SECTIONS:
        if name in args.sections:
            section_start = time.perf_counter()
            print(f"[{name}] running…", file=sys.stderr, flush=True)
            RUNNERS[name](models, inputs, args, report)
            print(f"[{name}] {time.perf_counter() - section_start:.0f} s", file=sys.stderr, flush=True)

    cpu = common.cpu_description()
    env = dict(common.environment(), load_average_at_start=load_at_start)
    flags = ", ".join(flag for flag, present in cpu["flags"].items() if present) or "none of interest"
    title = (
        f"DiffCLIP CPU benchmark: {cpu['model']}, {cpu['logical_cpus']} logical CPUs, {cpu['torch_threads']} torch "
        f"threads, flags: {flags}; batch {args.batch_size}, median of {args.repeats} interleaved rounds; "
        f"torch {env['torch']}, transformers {env['transformers']}; {env['date_utc']}"
        + (" [--quick: tiny models, not a benchmark]" if args.quick else "")
    )
    table = report.table()
    print(title)
    print()
    print(table)
    missed = [t["name"] for t in report.targets if t["met"] is False]
    summary_line = f"{len(report.targets) - len(missed)}/{len(report.targets)} targets met" + (
        f"; missed: {'; '.join(missed)}" if missed else ""
    )
    print()
    print(summary_line)
    payload = {
        "title": title,
        "machine": cpu,
        "environment": env,
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "markdown")},
        "targets": report.targets,
        "results": report.results,
        "runtime_s": time.perf_counter() - started,
    }
    common.write_json(args.output, payload)
    if args.markdown:
        Path(args.markdown).write_text(f"{title}\n\n{table}\n\n{summary_line}\n", encoding="utf-8")
    print(f"\nwrote {args.output}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
