"""A tiny DiffCLIP folder and a few random images for the search tests of single behaviours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tiny_model_folder(folder: Path, seed: int = 0):
    """A tiny DiffCLIP model and processor saved to `folder`: (model, processor)."""
    from _helpers import tiny_processor

    from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = DiffCLIPConfig(
        text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=16
    )
    torch.manual_seed(seed)
    model = DiffCLIPModel(config).eval()
    processor = tiny_processor(image_size=32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def random_image(path: Path, seed: int, size=(40, 48)) -> Path:
    """A PNG of random pixels (`size` = (height, width)) at `path`, its folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def random_images(folder: Path, count: int, first_seed: int = 100, size=(40, 48)) -> list[Path]:
    return [random_image(folder / f"img{seed:04d}.png", seed, size) for seed in range(first_seed, first_seed + count)]


def reference_image_embeddings(model, processor, paths) -> np.ndarray:
    """Unit-norm image embeddings straight from the model's forward (not through the package's search code)."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            pixels = processor.image_processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            features = model.get_image_features(pixel_values=pixels)
        features = getattr(features, "pooler_output", features)
        rows.append(torch.nn.functional.normalize(features.float(), dim=-1)[0].numpy())
    return np.stack(rows)
