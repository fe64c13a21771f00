# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Search benchmarks: FAISS indexes over synthetic embeddings, and `diffclip index` throughput.

1. `vectors`: `--count` (default 1,000,000) unit-norm `--dim` (512) vectors drawn around 1,000 random centres (a
   stand-in for image embeddings, which cluster; uniform random vectors have no neighbours worth finding). For the
   exact index (`IDMap2,Flat`, what `diffclip index` builds below a million vectors) and the compressed one (what
   it builds from a million on): build time, resident memory added by the index, its serialised size, the latency
   of one query at a time (median and p99 over `--queries` held-out vectors), the throughput of one batch of all of
   them, and for the compressed index its stored recall@10 beside the recall measured here against the exact index.
2. `indexing`: `diffclip index`'s images/s (`build_index` from a folder of JPEGs: reading, preprocessing, the
   model, Parquet shards, FAISS commit) against the model's own images/s (`get_image_features` on preprocessed
   batches), DiffCLIP at ViT-B/16 sizes with random weights.

    python benchmarks/search.py --output benchmarks/results/search_cpu_2core.json
    python benchmarks/search.py --quick --output /tmp/search.json      # 20,000 vectors, 8 images: seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_diffclip, cpu_description, environment, markdown_table, write_json  # noqa: E402

from transformers_diffclip import DiffCLIPImageProcessor  # noqa: E402
from transformers_diffclip.search import build_faiss_index, build_index, neighbour_recall  # noqa: E402


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def clustered_vectors(count: int, dim: int, seed: int, centres: int = 1000, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)).astype(np.float32)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        rows = min(chunk, count - start)
        block = means[rng.integers(0, centres, rows)] + 0.6 * rng.normal(size=(rows, dim)).astype(np.float32)
        out[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def latencies(index, queries: np.ndarray, k: int = 10) -> dict:
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search(query[None], k)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    _, found = index.search(queries, k)
    batch = time.perf_counter() - start
    times.sort()
    return {
        "median_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
        "batch_queries_per_s": len(queries) / batch,
        "found": found,
    }


def bench_vectors(args) -> list[dict]:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    everything = clustered_vectors(args.count + args.queries, args.dim, seed=0)
    vectors, queries = everything[: args.count], everything[args.count :].copy()
    del everything
    ids = np.arange(args.count, dtype=np.int64)
    results, truth = [], None
    for kind, exact_below in (("exact", args.count + 1), ("compressed", 0)):
        before = resident_bytes()
        start = time.perf_counter()
        index, info = build_faiss_index(ids, vectors, exact_below=exact_below)
        build_s = time.perf_counter() - start
        added = resident_bytes() - before
        size = len(faiss.serialize_index(index)) if kind == "compressed" else index.ntotal * args.dim * 4
        timing = latencies(index, queries)
        found = timing.pop("found")
        if truth is None:
            truth = found
        row = dict(kind=kind, factory=info["factory"], nprobe=info["nprobe"], build_s=build_s)
        row.update(resident_bytes_added=added, index_bytes=size, **timing)
        row.update(stored_recall_at_10=info["recall_at_10"], measured_recall_at_10=neighbour_recall(found, truth))
        results.append(row)
        print(row, file=sys.stderr)
        del index
    return results


def bench_indexing(args) -> dict:
    torch.set_num_threads(args.threads)
    model = build_diffclip(tiny=args.quick)
    size = model.config.vision_config.image_size
    processor = DiffCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        Path(folder, "images").mkdir()
        for i in range(args.images):
            pixels = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(Path(folder, "images", f"{i:05d}.jpg"))
        paths = sorted(Path(folder, "images").glob("*.jpg"))
        pixel_values = torch.cat(
            [processor(images=Image.open(p).convert("RGB"), return_tensors="pt")["pixel_values"] for p in paths]
        )
        with torch.inference_mode():
            model.get_image_features(pixel_values=pixel_values[:2])  # warm-up
            start = time.perf_counter()
            for batch in pixel_values.split(args.batch_size):
                model.get_image_features(pixel_values=batch)
            model_s = time.perf_counter() - start
        start = time.perf_counter()
        build_index(
            "random-diffclip-vit-b16",
            str(Path(folder, "images")),
            Path(folder, "index"),
            loaded=(model, processor),
            batch_size=args.batch_size,
            progress=False,
        )
        index_s = time.perf_counter() - start
    return {
        "images": args.images,
        "batch_size": args.batch_size,
        "image_size": size,
        "model_images_per_s": args.images / model_s,
        "diffclip_index_images_per_s": args.images / index_s,
        "ratio": model_s / index_s,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sections", nargs="+", default=["vectors", "indexing"], choices=["vectors", "indexing"])
    parser.add_argument("--quick", action="store_true", help="20,000 vectors, 8 images, tiny model")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.queries, args.images = 20_000, 200, 8
    report = {"environment": environment(), "cpu": cpu_description(), "args": vars(args)}
    if "vectors" in args.sections:
        report["vectors"] = bench_vectors(args)
        rows = [
            [
                r["kind"],
                r["factory"],
                f"{r['build_s']:.1f} s",
                f"{r['resident_bytes_added'] / 2**20:.0f} MiB",
                f"{r['index_bytes'] / 2**20:.0f} MiB",
                f"{r['median_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['batch_queries_per_s']:.0f}",
                f"{r['stored_recall_at_10']:.4f}",
                f"{r['measured_recall_at_10']:.4f}",
            ]
            for r in report["vectors"]
        ]
        header = ["index", "factory", "build", "RSS added", "size", "median ms", "p99 ms", "batch q/s", "stored R@10"]
        print(markdown_table(header + ["measured R@10"], rows))
    if "indexing" in args.sections:
        report["indexing"] = bench_indexing(args)
        print(report["indexing"])
    report["environment_after"] = environment()
    write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
