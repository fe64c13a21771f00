# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification with an exported DiffCLIP/CLIP folder and nothing but onnxruntime, numpy, tokenizers and
Pillow (no torch, no transformers): a standalone script to copy beside a deployment.

    python standalone_reader.py EXPORT_DIR --labels "cat,dog,car" IMAGE [IMAGE ...] [--precision int8] [--top-k 5]

It prints the JSON `diffclip zero-shot --json` prints: `[{"image", "predictions": [{"label", "score"}]}]`. The image
transform is the exported image processor's (`preprocessor_config.json`: shorter side resized with its PIL filter,
center crop, scale, normalise); the text is tokenized by the exported `tokenizer.json` after the CLIP text cleaning
(HTML entities, whitespace, lower case; ftfy's mojibake repair is left out); one prompt template per label.

This file imports nothing from the package, so that it runs where torch is not installed.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image
from tokenizers import Tokenizer


GRAPH_SUFFIXES = {"fp32": "", "int8": "_quantized", "fp16": "_fp16"}


def _clean_text(text: str) -> str:
    """`processing_diffclip.clean_text` written again, because this file imports nothing of the package (it runs
    without torch and transformers), and without ftfy: HTML entities unescaped twice, whitespace collapsed,
    stripped, lower case."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip().lower()


class ExportedCLIP:
    """The two graphs of an export folder, its image transform and its tokenizer."""

    def __init__(self, folder: str | Path, precision: str = "fp32"):
        self.folder = Path(folder)
        self.config = json.loads((self.folder / "export_config.json").read_text(encoding="utf-8"))
        self.image_config = json.loads((self.folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        suffix = GRAPH_SUFFIXES[precision]
        providers = ["CPUExecutionProvider"]
        self.vision = onnxruntime.InferenceSession(
            str(self.folder / "onnx" / f"vision_model{suffix}.onnx"), providers=providers
        )
        self.text = onnxruntime.InferenceSession(
            str(self.folder / "onnx" / f"text_model{suffix}.onnx"), providers=providers
        )
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.config["max_text_length"])
        self.clean = self.config["model_type"] == "diffclip"

    def pixel_values(self, image: Image.Image) -> np.ndarray:
        """One image as the exported image processor prepares it: (3, height, width) float32."""
        settings = self.image_config
        image = image.convert("RGB")
        if settings.get("do_resize", True):
            size = settings["size"]["shortest_edge"]
            width, height = image.size
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = size, int(size * long / short)
            new_size = (new_short, new_long) if width <= height else (new_long, new_short)
            image = image.resize(new_size, resample=Image.Resampling(settings.get("resample", 3)))
        pixels = np.asarray(image, dtype=np.float32)
        if settings.get("do_center_crop", True):
            crop_height, crop_width = settings["crop_size"]["height"], settings["crop_size"]["width"]
            height, width = pixels.shape[:2]
            if settings.get("image_processor_type") == "DiffCLIPImageProcessor":  # torchvision's rounding
                top, left = int(round((height - crop_height) / 2.0)), int(round((width - crop_width) / 2.0))
            else:  # transformers' CLIP: the offset floored
                top, left = (height - crop_height) // 2, (width - crop_width) // 2
            pixels = pixels[top : top + crop_height, left : left + crop_width]
        if settings.get("do_rescale", True):
            pixels = pixels * np.float32(settings.get("rescale_factor", 1 / 255))
        if settings.get("do_normalize", True):
            mean = np.asarray(settings["image_mean"], dtype=np.float32)
            std = np.asarray(settings["image_std"], dtype=np.float32)
            pixels = (pixels - mean) / std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)

    def image_embeds(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack([self.pixel_values(image) for image in images])
        return self.vision.run(["image_embeds"], {"pixel_values": batch})[0]

    def text_embeds(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch([_clean_text(t) if self.clean else t for t in texts])
        width = max(len(encoding.ids) for encoding in encodings)
        input_ids = np.full((len(texts), width), self.config["pad_token_id"], dtype=np.int64)
        attention_mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        return self.text.run(["text_embeds"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def zero_shot(model: ExportedCLIP, images: list[str], labels: list[str], template: str, top_k: int = 5) -> list:
    classes = unit(model.text_embeds([template.format(label) for label in labels]).astype(np.float64))
    results = []
    for path in images:
        with Image.open(path) as image:
            embedding = unit(model.image_embeds([image]).astype(np.float64))[0]
        logits = np.exp(model.config["logit_scale"]) * classes @ embedding
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        order = sorted(range(len(labels)), key=lambda i: -logits[i])[:top_k]
        predictions = [{"label": labels[i], "score": float(probabilities[i])} for i in order]
        results.append({"image": path, "predictions": predictions})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a folder written by `diffclip export onnx`")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--labels", required=True, help="comma-separated labels")
    parser.add_argument("--template", default="a photo of a {}.", help="the prompt template (default: %(default)r)")
    parser.add_argument("--precision", choices=sorted(GRAPH_SUFFIXES), default="fp32")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    model = ExportedCLIP(args.folder, args.precision)
    json.dump(zero_shot(model, args.images, labels, args.template, args.top_k), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
