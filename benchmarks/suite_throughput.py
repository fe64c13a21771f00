# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Is the suite's data path the bottleneck? Images/s of `encode_split` (read, decode, preprocess, encode: what the
suite does per image) against the model's own images/s on ready pixel tensors, for a split in CLIP_benchmark's
webdataset layout (streamed in one process) and as split image folders (a DataLoader with `--num-workers`).

    python benchmarks/suite_throughput.py --images 128 --batch-size 32                 # ViT-B/16, random weights
    python benchmarks/suite_throughput.py --tiny --images 512 --output /tmp/t.json     # smoke test

The images are data_pipeline.py's synthetic 448×448 JPEGs, so decoding costs what a photo costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_description, diffclip_config, environment, write_json  # noqa: E402
from data_pipeline import synthetic_jpeg  # noqa: E402


def _write_data(root: Path, images: int, classes: int = 10) -> tuple[Path, Path]:
    import webdataset as wds

    rng = np.random.default_rng(0)
    payloads = [synthetic_jpeg(rng, 448) for _ in range(images)]
    wds_root = root / "wds"
    (wds_root / "test").mkdir(parents=True)
    (wds_root / "classnames.txt").write_text("\n".join(f"class {c}" for c in range(classes)) + "\n")
    (wds_root / "test" / "nshards.txt").write_text("1\n")
    with wds.TarWriter(str(wds_root / "test" / "0.tar")) as sink:
        for i, payload in enumerate(payloads):
            sink.write({"__key__": f"{i:06d}", "jpg": payload, "cls": str(i % classes)})
    folders = root / "folders"
    for split in ("train", "test"):
        for i, payload in enumerate(payloads):
            path = folders / split / f"c{i % classes}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
    return wds_root, folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers for the folder layout")
    parser.add_argument("--tiny", action="store_true", help="tiny model (a smoke test of the data path)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", help="write the measurements here (JSON)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers_diffclip import DiffCLIPImageProcessor, DiffCLIPModel
    from transformers_diffclip.evaluation.datasets import open_split
    from transformers_diffclip.evaluation.features import encode_split, image_features

    torch.manual_seed(0)
    model = DiffCLIPModel(diffclip_config(tiny=args.tiny)).eval()
    processor = DiffCLIPImageProcessor()
    with tempfile.TemporaryDirectory() as folder:
        wds_root, folders = _write_data(Path(folder), args.images)
        pixel_values = processor(images=[Image.new("RGB", (448, 448))] * args.batch_size, return_tensors="pt")
        pixel_values = pixel_values["pixel_values"]
        image_features(model, pixel_values)  # warm-up
        start = time.perf_counter()
        for _ in range(max(1, args.images // args.batch_size)):
            image_features(model, pixel_values)
        model_rate = max(1, args.images // args.batch_size) * args.batch_size / (time.perf_counter() - start)
        rates = {}
        for layout, split, workers in (
            ("webdataset", open_split(wds_root, "test"), 0),
            ("split_folders", open_split(folders, "test"), args.num_workers),
        ):
            start = time.perf_counter()
            encode_split(model, processor, split, "bench", batch_size=args.batch_size, num_workers=workers)
            rates[layout] = args.images / (time.perf_counter() - start)
    result = {
        "images": args.images,
        "batch_size": args.batch_size,
        "model": "tiny" if args.tiny else "ViT-B/16 (random weights)",
        "model_images_per_second": model_rate,
        "suite_images_per_second": rates,
        "suite_over_model": {layout: rate / model_rate for layout, rate in rates.items()},
        "num_workers_folders": args.num_workers,
        "machine": {**environment(), "cpu": cpu_description()},
    }
    print(json.dumps(result, indent=2))
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
