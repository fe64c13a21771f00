# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""(Not `onnx.py`: run as a script from this folder, that name would shadow the `onnx` package.)

ONNX Runtime against PyTorch on this CPU, in one run: images/s and texts/s of the exported graphs at fp32, int8
(dynamic quantisation) and fp16 against the torch model in float32 and bfloat16, as ratios to torch fp32, with what
each costs in accuracy (embedding cosine to torch fp32, zero-shot top-1 agreement on the export's validation
photographs).

    python benchmarks/onnx_export.py --output onnx.json --markdown onnx.md        # DiffCLIP ViT-B/16, random weights
    python benchmarks/onnx_export.py --quick                                      # tiny models, seconds

The graphs are made by the package's exporter (`export.onnx.write_graphs`, the eager attention path) without its
validation, from a model with random weights at the released ViT-B/16 sizes (benchmarks/common.py). Timing is
interleaved (every variant once per round), medians reported; the machine's load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import (
    build_diffclip,
    cpu_description,
    environment,
    interleaved_times,
    markdown_table,
    random_ids,
    summarize,
    write_json,
)

from transformers_diffclip import DiffCLIPImageProcessor
from transformers_diffclip.export.graphs import graph_file
from transformers_diffclip.export.onnx import write_graphs
from transformers_diffclip.export.runtime import OnnxDualEncoder
from transformers_diffclip.export.validation import validation_set


def _unit(array) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models (a smoke test of the script)")
    parser.add_argument("--image-batch", type=int, default=8)
    parser.add_argument("--text-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_diffclip(tiny=args.quick, attn_implementation="sdpa")
    bf16 = build_diffclip(tiny=args.quick, attn_implementation="sdpa", dtype=torch.bfloat16)
    image_size = model.config.vision_config.image_size
    processor = DiffCLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    photos, _, _, _ = validation_set()
    photo_pixels = processor(images=list(photos.values()), return_tensors="pt")["pixel_values"]
    pixels = photo_pixels[torch.arange(args.image_batch) % len(photo_pixels)]
    lengths = [7, 8, 9, 9, 8, 8, 9, 8]
    input_ids = random_ids(args.text_batch, lengths)
    row_lengths = torch.tensor([lengths[row % len(lengths)] for row in range(args.text_batch)])
    attention_mask = (torch.arange(input_ids.shape[1])[None] < row_lengths[:, None]).long()
    classes_ids = random_ids(8, lengths, seed=5)
    classes_mask = (torch.arange(classes_ids.shape[1])[None] < torch.tensor(lengths)[:, None]).long()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_graphs(model, folder, ["fp32", "int8", "fp16"])
        (folder / "export_config.json").write_text(f'{{"logit_scale": {float(model.logit_scale.detach())}}}')
        model.config.save_pretrained(folder)
        encoders = {p: OnnxDualEncoder(folder, p) for p in ("fp32", "int8", "fp16")}
        sizes = {p: graph_file(folder, "vision", p).stat().st_size for p in encoders}

        @torch.inference_mode()
        def torch_image(m):
            return m.get_image_features(pixel_values=pixels.to(next(m.parameters()).dtype)).pooler_output.float()

        @torch.inference_mode()
        def torch_text(m, ids=input_ids, mask=attention_mask):
            return m.get_text_features(input_ids=ids, attention_mask=mask).pooler_output.float()

        image_functions = {"torch fp32": lambda: torch_image(model), "torch bf16": lambda: torch_image(bf16)}
        text_functions = {"torch fp32": lambda: torch_text(model), "torch bf16": lambda: torch_text(bf16)}
        for precision, encoder in encoders.items():
            image_functions[f"onnx {precision}"] = lambda e=encoder: e.get_image_features(pixel_values=pixels)
            text_functions[f"onnx {precision}"] = lambda e=encoder: e.get_text_features(input_ids, attention_mask)
        image_times = summarize(interleaved_times(image_functions, args.repeats), baseline="torch fp32")
        text_times = summarize(interleaved_times(text_functions, args.repeats), baseline="torch fp32")

        # accuracy on the photographs: cosine to torch fp32, zero-shot top-1 agreement against 8 random prompts
        reference_images = _unit(torch_image(model).numpy())
        reference_classes = _unit(torch_text(model, classes_ids, classes_mask).numpy())
        reference_top1 = (reference_images @ reference_classes.T).argmax(-1)
        rows, results = [], {}
        for name in image_functions:
            if name == "torch fp32":
                images, classes = reference_images, reference_classes
            elif name == "torch bf16":
                images, classes = _unit(torch_image(bf16).numpy()), _unit(torch_text(bf16, classes_ids, classes_mask))
            else:
                encoder = encoders[name.split()[1]]
                images = _unit(encoder.get_image_features(pixel_values=pixels).numpy())
                classes = _unit(encoder.get_text_features(classes_ids, classes_mask).numpy())
            cosine = float((images * reference_images).sum(-1).min())
            agreement = float(((images @ classes.T).argmax(-1) == reference_top1).mean())
            image, text = image_times[name], text_times[name]
            results[name] = {
                "images_per_s": args.image_batch / image["median_s"],
                "texts_per_s": args.text_batch / text["median_s"],
                "image_ratio_to_torch_fp32": 1 / image.get("ratio_to_torch fp32", 1.0),
                "text_ratio_to_torch_fp32": 1 / text.get("ratio_to_torch fp32", 1.0),
                "min_image_cosine": cosine,
                "top1_agreement": agreement,
                "vision_graph_bytes": sizes.get(name.split()[-1]) if name.startswith("onnx") else None,
                "image_timing": image,
                "text_timing": text,
            }
            rows.append(
                [
                    name,
                    f"{results[name]['images_per_s']:.1f}",
                    f"{results[name]['image_ratio_to_torch_fp32']:.2f}×",
                    f"{results[name]['texts_per_s']:.1f}",
                    f"{results[name]['text_ratio_to_torch_fp32']:.2f}×",
                    f"{cosine:.5f}",
                    f"{100 * agreement:.0f}%",
                ]
            )
    header = ["variant", "images/s", "vs torch fp32", "texts/s", "vs torch fp32", "min cosine", "top-1 agreement"]
    table = markdown_table(header, rows)
    print(table)
    payload = {
        "model": "DiffCLIP " + ("tiny" if args.quick else "ViT-B/16") + " (random weights)",
        "image_batch": args.image_batch,
        "text_batch": args.text_batch,
        "results": results,
        "cpu": cpu_description(),
        "environment": environment(),
    }
    if args.output:
        write_json(args.output, payload)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
