# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification at scale: `ZeroShotClassifier` against transformers' zero-shot pipeline.

transformers' `zero-shot-image-classification` pipeline runs `model(input_ids, pixel_values)` once per image and
so re-encodes every candidate label for every image. `ZeroShotClassifier` encodes the labels once. This script
times, on one randomly initialised DiffCLIP ViT-B/16 (the released size; random weights cost the same):

1. the floor: tokenize and encode the label prompts once + read, preprocess and encode the images, in batches;
2. the classifier path: `ZeroShotClassifier.from_model(...)` + `classifier.classify(image files)`;
3. the pipeline, called on each image file with all labels.

It prints the three times, classifier / floor (should be <= 1.1) and pipeline / classifier, and checks that the
classifier and the pipeline rank the same top-5 labels with the same probabilities. Not a test.

    python benchmarks/zero_shot_classifier.py                      # 1,000 labels x 100 images on the CPU
    python benchmarks/zero_shot_classifier.py --num-labels 100 --num-images 10 --pipeline-images 3   # quick look

Labels are the 1,000 ImageNet class names of the original evaluation (`../shared/data/slip_labels.json`) when
found, else synthetic names; the tokenizer needs the CLIP BPE file (`--bpe`).
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


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-labels", type=int, default=1000)
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument(
        "--pipeline-images",
        type=int,
        default=None,
        help="run the pipeline on only the first N images and scale its time to all (default: all images)",
    )
    parser.add_argument(
        "--pipeline-time-limit",
        type=float,
        default=None,
        help="stop the pipeline after the image during which this many seconds have passed, and scale its time",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of the floor and the classifier path (min)")
    parser.add_argument("--template", default="a photo of a {}.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch")
    parser.add_argument("--text-batch-size", type=int, default=256, help="texts per batch")
    parser.add_argument("--bpe", type=Path, default=SHARED_DATA / "bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--labels-json", type=Path, default=SHARED_DATA / "slip_labels.json")
    parser.add_argument("--json-output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_labels(count: int, labels_json: Path) -> list[str]:
    """`count` distinct label strings: ImageNet class names (duplicates made distinct), then synthetic ones."""
    names = json.loads(labels_json.read_text())["imagenet"] if labels_json.is_file() else []
    labels, seen = [], set()
    for name in names:
        while name in seen:  # the ImageNet list names two classes each "missile" and "sunglasses"
            name += " (2)"
        seen.add(name)
        labels.append(name)
    labels += [f"object category {i}" for i in range(len(labels), count)]
    return labels[:count]


def make_images(folder: Path, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        height, width = rng.integers(240, 400, size=2)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = folder / f"image_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def floor_path(model, processor, prompts, images, text_batch_size, batch_size, device) -> float:
    """The least work any method must do: encode each prompt once and each image once, in batches."""
    start = time.perf_counter()
    for i in range(0, len(prompts), text_batch_size):
        tokens = processor.tokenizer(prompts[i : i + text_batch_size], padding=True, return_tensors="pt").to(device)
        model.get_text_features(**tokens)
    for i in range(0, len(images), batch_size):
        pil = [Image.open(path).convert("RGB") for path in images[i : i + batch_size]]
        pixel_values = processor.image_processor(images=pil, return_tensors="pt")["pixel_values"].to(device)
        model.get_image_features(pixel_values=pixel_values)
    synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import pipeline

    from transformers_diffclip import (
        DiffCLIPConfig,
        DiffCLIPImageProcessor,
        DiffCLIPModel,
        DiffCLIPProcessor,
        build_tokenizer,
    )
    from transformers_diffclip.evaluation import ZeroShotClassifier

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = DiffCLIPModel(DiffCLIPConfig()).eval().to(device)  # ViT-B/16, random weights
    processor = DiffCLIPProcessor(DiffCLIPImageProcessor(), build_tokenizer(args.bpe))
    labels = make_labels(args.num_labels, args.labels_json)
    prompts = [args.template.format(label) for label in labels]
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(labels)} labels, {args.num_images} images",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as folder:
        images = make_images(Path(folder), args.num_images, args.seed)
        floor_path(model, processor, prompts[:8], images[:2], 8, 2, device)  # warm-up

        floors, classifier_times = [], []
        for repeat in range(1, args.repeats + 1):  # alternate the two, keep the fastest run of each
            floors.append(floor_path(model, processor, prompts, images, args.text_batch_size, args.batch_size, device))
            start = time.perf_counter()
            classifier = ZeroShotClassifier.from_model(
                model, processor, labels, [args.template], batch_size=args.text_batch_size
            )
            ours = classifier.classify(model, processor, images, top_k=5, batch_size=args.batch_size)
            synchronize(device)
            classifier_times.append(time.perf_counter() - start)
            print(
                f"run {repeat}: floor (encode {len(labels)} prompts once + {len(images)} images) {floors[-1]:.2f} s, "
                f"ZeroShotClassifier (build + classify) {classifier_times[-1]:.2f} s",
                flush=True,
            )
        floor, classifier_time = min(floors), min(classifier_times)

        classify = pipeline(
            "zero-shot-image-classification",
            model=model,
            tokenizer=processor.tokenizer,
            image_processor=processor.image_processor,
            device=device,
        )
        count = min(args.pipeline_images or len(images), len(images))
        theirs, start = [], time.perf_counter()
        for i, path in enumerate(images[:count], start=1):
            theirs.append(classify(path, candidate_labels=labels, hypothesis_template=args.template))
            elapsed = time.perf_counter() - start
            if i % 10 == 0 or i == count:
                print(f"  pipeline: {i}/{count} images, {elapsed:.1f} s", flush=True)
            if args.pipeline_time_limit is not None and elapsed > args.pipeline_time_limit and i < count:
                print(f"  pipeline: stopped after {i} images ({elapsed:.1f} s, --pipeline-time-limit)", flush=True)
                count = i
                break
        pipeline_time = (time.perf_counter() - start) * len(images) / count
        scaled = "" if count == len(images) else f" (measured on {count} images, scaled to {len(images)})"
        print(f"transformers pipeline, one call per image: {pipeline_time:.2f} s{scaled}", flush=True)

    same_top1, same_top5, max_difference = 0, 0, 0.0
    for mine, reference in zip(ours, theirs):
        reference_scores = {entry["label"]: entry["score"] for entry in reference}
        my_labels = [p["label"] for p in mine["predictions"]]
        same_top1 += my_labels[0] == reference[0]["label"]
        same_top5 += my_labels == [entry["label"] for entry in reference[:5]]
        for prediction in mine["predictions"]:
            max_difference = max(max_difference, abs(prediction["score"] - reference_scores[prediction["label"]]))
    agree = same_top5 == count and max_difference < 1e-4

    figures = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "num_labels": len(labels),
        "num_images": len(images),
        "pipeline_images_measured": count,
        "floor_s": floor,
        "floor_runs_s": floors,
        "classifier_runs_s": classifier_times,
        "classifier_s": classifier_time,
        "pipeline_s": pipeline_time,
        "classifier_over_floor": classifier_time / floor,
        "pipeline_over_classifier": pipeline_time / classifier_time,
        "same_top1": same_top1,
        "same_top5_order": same_top5,
        "max_abs_probability_difference": max_difference,
    }
    print(f"floor: {floor:.2f} s, ZeroShotClassifier: {classifier_time:.2f} s, pipeline: {pipeline_time:.2f} s")
    print(f"classifier / floor: {figures['classifier_over_floor']:.3f} (target <= 1.1)")
    print(f"pipeline / classifier: {figures['pipeline_over_classifier']:.1f}x")
    print(
        f"answers: top-1 equal on {same_top1}/{count} images, top-5 (in order) on {same_top5}/{count}, "
        f"max |probability difference| {max_difference:.2e} -> {'AGREE' if agree else 'DIFFER'}"
    )
    if args.json_output:
        args.json_output.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
