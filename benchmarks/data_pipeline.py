# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Images per second of the streamed shard pipeline alone against a DiffCLIP training step, on this machine's CPU.

The pipeline is what `diffclip-finetune --train_shards` runs in its data-loader workers: tar reading, the sample
shuffle buffer, JPEG decoding, RandomResizedCrop(224, scale (0.5, 1.0)) + ImageNet normalisation, tokenising the
captions and collating (`ImageTextShards` + `ShardLoader`), with 0 (in the main process), 1 and 2 workers. The
shards are synthetic and written first: 256×256 JPEGs (img2dataset's default size) of smooth random colour fields
with noise, quality 90, and captions of 10-20 words; or pass your own with `--shards`.

The training step is `DiffCLIPTrainer`'s work per batch (both towers forward, the gathered contrastive loss,
backward, AdamW) on a small DiffCLIP at 224 px, patch 16: vision 192 wide, 6 layers, 4 heads; text 256 wide, 6
layers, 4 heads; projection 256 (`--model_size base` for the released ViT-B/16). The pipeline keeps up when its
images/s with the workers you give it exceed the step's.

    python benchmarks/data_pipeline.py --output benchmarks/results/data_pipeline_cpu.json
    python benchmarks/data_pipeline.py --samples 256 --batches 3 --workers 0,1   # quick

The tokenizer is built from the CLIP BPE file (`--bpe`, default ../shared/data). Timings on a shared machine follow
its load; the JSON records the load average. The main process runs with one torch thread by default (`--threads`),
as each data-loader worker does: on a machine shared with other work, more threads stall on each other.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, markdown_table, write_json  # noqa: E402


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = "a photo of the small large red blue green dog cat car tree house street people sky water on in with".split()


def synthetic_jpeg(rng: np.random.Generator, size: int) -> bytes:
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    pixels = np.clip(smooth + rng.normal(0, 12, size=smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_synthetic_shards(folder: Path, samples: int, per_shard: int, size: int) -> str:
    import webdataset as wds

    rng, words = np.random.default_rng(0), random.Random(0)
    num_shards = -(-samples // per_shard)
    for shard in range(num_shards):
        with wds.TarWriter(str(folder / f"bench-{shard:05d}.tar")) as writer:
            for index in range(shard * per_shard, min(samples, (shard + 1) * per_shard)):
                caption = " ".join(words.choice(WORDS) for _ in range(words.randint(10, 20)))
                writer.write({"__key__": f"{index:09d}", "jpg": synthetic_jpeg(rng, size), "txt": caption})
    return str(folder / f"bench-{{00000..{num_shards - 1:05d}}}.tar")


def pipeline_rate(pattern: str, processor, workers: int, batch_size: int, batches: int) -> dict:
    from transformers_diffclip.training.data import DiffCLIPDataCollator, RandomResizedCropTransform
    from transformers_diffclip.training.shards import ImageTextShards, ShardLoader, expand_shards

    transform = RandomResizedCropTransform.from_image_processor(processor.image_processor)
    collator = DiffCLIPDataCollator(processor, padding="max_length", image_transform=transform)
    dataset = ImageTextShards(
        expand_shards(pattern), collator=collator, batch_size=batch_size, num_samples=batch_size * (batches + 1)
    )
    loader = ShardLoader(dataset, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # workers started, first batch decoded: not timed
    start = time.perf_counter()
    count = 0
    for batch in iterator:
        count += batch["pixel_values"].shape[0]
    seconds = time.perf_counter() - start
    return {"workers": workers, "images_per_s": count / seconds, "images": count, "seconds": seconds}


def model_config(size: str):
    from transformers_diffclip import DiffCLIPConfig

    if size == "base":
        return DiffCLIPConfig()
    return DiffCLIPConfig(
        text_config={"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 4},
        vision_config={
            "hidden_size": 192,
            "intermediate_size": 768,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "image_size": 224,
            "patch_size": 16,
        },
        projection_dim=256,
    )


def training_step_rate(size: str, batch_size: int, steps: int) -> dict:
    from transformers_diffclip import DiffCLIPModel
    from transformers_diffclip.training import distributed_contrastive_loss

    torch.manual_seed(0)
    config = model_config(size)
    model = DiffCLIPModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixel_values = torch.randn(batch_size, 3, 224, 224)
    input_ids = torch.randint(1, 49000, (batch_size, 77))
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407

    def step():
        outputs = model(input_ids=input_ids, pixel_values=pixel_values)
        distributed_contrastive_loss(outputs.image_embeds, outputs.text_embeds, model.logit_scale).backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # AdamW state allocated: not timed
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    parameters = sum(p.numel() for p in model.parameters())
    return {"model": size, "parameters": parameters, "images_per_s": batch_size / seconds, "s_per_step": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default=None, help="your own shards (brace pattern); default: synthetic ones")
    parser.add_argument("--samples", type=int, default=1024, help="synthetic samples to write")
    parser.add_argument("--per_shard", type=int, default=128)
    parser.add_argument("--image_size", type=int, default=256, help="side of the synthetic JPEGs")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="timed pipeline batches per worker count")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--model_size", default="small", choices=["small", "base"])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, main process (0: default)")
    parser.add_argument("--bpe", type=Path, default=SHARED_DATA / "bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if not args.bpe.is_file():
        parser.error(f"the CLIP BPE file is not at {args.bpe}; pass --bpe")

    from transformers_diffclip import DiffCLIPImageProcessor, DiffCLIPProcessor, build_tokenizer

    processor = DiffCLIPProcessor(DiffCLIPImageProcessor(), build_tokenizer(args.bpe))
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        pattern = args.shards or write_synthetic_shards(Path(folder), args.samples, args.per_shard, args.image_size)
        pipeline = []
        for workers in (int(w) for w in args.workers.split(",")):
            pipeline.append(pipeline_rate(pattern, processor, workers, args.batch_size, args.batches))
            print(f"pipeline, {workers} worker(s): {pipeline[-1]['images_per_s']:.1f} images/s", flush=True)
    step = training_step_rate(args.model_size, args.batch_size, args.steps)
    print(f"training step ({args.model_size}): {step['images_per_s']:.1f} images/s", flush=True)

    rows = [[f"shard pipeline, {p['workers']} worker(s)", f"{p['images_per_s']:.1f}"] for p in pipeline]
    rows.append(
        [
            f"training step, {args.model_size} DiffCLIP ({step['parameters'] / 1e6:.1f} M)",
            f"{step['images_per_s']:.1f}",
        ]
    )
    print(markdown_table(["CPU, batch " + str(args.batch_size), "images/s"], rows))
    if args.output:
        payload = {"environment": environment(), "arguments": vars(args), "pipeline": pipeline, "training_step": step}
        payload["arguments"]["bpe"] = str(args.bpe)
        write_json(args.output, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
