"""Tiny datasets in the forms they are published in, written by the tests: CLIP_benchmark's webdataset layout
(classification and retrieval shards, written with webdataset's TarWriter), ImageNet-style split folders, a Karpathy
split JSON, the MMVP-VLM folder; a tiny DiffCLIP model folder; a Hub dataset cache seeded as huggingface_hub
lays it out."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/_helpers.py

from _helpers import HUB_REVISION, one_thread, tiny_processor  # noqa: E402, F401 (one_thread: re-exported fixture)


def image_bytes(seed: int, size=(40, 36), fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, fmt="JPEG" if path.suffix == ".jpg" else "PNG"))
    return path


def write_wds_classification(root: Path, classes=("cat", "dog", "car"), per_split=None, shards=2) -> Path:
    """CLIP_benchmark layout: classnames.txt, templates, train/ and test/ with nshards.txt and N.tar."""
    import webdataset as wds

    per_split = per_split or {"train": 12, "test": 9}
    root.mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\nan image of a {c}.\n")
    seed = 0
    for split, count in per_split.items():
        (root / split).mkdir(exist_ok=True)
        (root / split / "nshards.txt").write_text(f"{shards}\n")
        per_shard = -(-count // shards)
        for shard in range(shards):
            with wds.TarWriter(str(root / split / f"{shard}.tar")) as sink:
                for i in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
                    seed += 1
                    ext = ("png", "jpg", "webp")[i % 3]
                    fmt = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[ext]
                    sink.write({"__key__": f"s{i:05d}", ext: image_bytes(seed, fmt=fmt), "cls": str(i % len(classes))})
    return root


def write_wds_retrieval(root: Path, images=4) -> Path:
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_type.txt").write_text("retrieval\n")
    (root / "test").mkdir(exist_ok=True)
    (root / "test" / "nshards.txt").write_text("1\n")
    with wds.TarWriter(str(root / "test" / "0.tar")) as sink:
        for i in range(images):
            captions = "\n".join(f"caption {j} of image {i}" for j in range(2))
            sink.write({"__key__": f"r{i:04d}", "jpg": image_bytes(100 + i, fmt="JPEG"), "txt": captions})
    return root


def write_split_folders(root: Path, classes=("apple", "pear", "plum"), train=6, test=3) -> Path:
    seed = 1000
    for split, count in (("train", train), ("test", test)):
        for c in classes:
            for i in range(count):
                seed += 1
                write_image(root / split / c / f"{i}.png", seed)
    return root


def write_karpathy(root: Path, images=5) -> Path:
    entries = []
    for i in range(images):
        write_image(root / "images" / f"{i}.jpg", 2000 + i)
        entries.append(
            {
                "filename": f"{i}.jpg",
                "split": "test" if i < 3 else "train",
                "sentences": [{"raw": f"a picture number {i}"}, {"raw": f"image {i} again"}],
            }
        )
    path = root / "dataset_flickr8k.json"
    path.write_text(json.dumps({"dataset": "flickr8k", "images": entries}))
    return path


MMVP_CATEGORIES = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)


def write_mmvp(root: Path, pairs_per_category=1) -> Path:
    rows = []
    qid = 0
    for category in MMVP_CATEGORIES:
        for _ in range(pairs_per_category):
            for side in ("left", "right"):
                qid += 1
                rows.append([str(qid), category, f"the thing faces {side}"])
                write_image(root / "MLLM_VLM Images" / category / f"{qid}.jpg", 3000 + qid)
    with (root / "Questions.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    return root


def seed_hub_dataset(cache: Path, repo_id: str, folder: Path, revision: str = HUB_REVISION) -> Path:
    """`folder`'s files as the snapshot of the Hub dataset `repo_id` in a huggingface_hub cache."""
    import shutil

    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def tiny_model(folder: Path, seed: int = 0, projection_dim: int = 16):
    """A tiny DiffCLIP model and processor, saved to `folder`."""
    from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = DiffCLIPConfig(
        text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=projection_dim
    )
    torch.manual_seed(seed)
    model = DiffCLIPModel(config).eval()
    processor = tiny_processor(image_size=32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


class ForwardCounter:
    """Counts the images that go through `model.vision_model`."""

    def __init__(self, model):
        self.images = 0
        model.vision_model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        pixel_values = args[0] if args else kwargs["pixel_values"]
        self.images += pixel_values.shape[0]
