# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The paper's evaluation data in the forms it is published in, opened by one function, [`open_split`]:

- **CLIP_benchmark's webdataset layout** (`classnames.txt`, `zeroshot_classification_templates.txt`,
  `dataset_type.txt`, `<split>/nshards.txt`, `<split>/0.tar` ...; samples with an image (`webp`, `png`, `jpg`,
  `jpeg`) and `cls` (classification) or `txt` (retrieval captions, one per line)), from a local folder, from
  `wds/<name>` (the Hub dataset repo `clip-benchmark/wds_<name>`, with `/` in the name written `-`) or from any Hub
  dataset id in that layout, fetched with `huggingface_hub` into its cache (offline once cached), read with
  `webdataset`;
- **ImageNet-style folders**: `<root>/<split>/<class>/<image>` (`train/`, `test/`, optionally `val/`) for the probe
  and few-shot, or `<root>/<class>/<image>` (one test split: ImageNet val, V2, Sketch, A, R);
- **Karpathy split JSON** of Flickr30k / Flickr8k / COCO (`dataset_flickr30k.json`: `images[]` with `filename`,
  `filepath` (COCO), `split`, `sentences[].raw`), images under `image_root`;
- **JSON Lines retrieval files** (`{"image": ..., "captions": [...]}`, as `diffclip eval retrieval`);
- **the MMVP-VLM folder** (`Questions.csv`, `MLLM_VLM Images/<category>/<id>.jpg`), see `evaluation.mmvp`.

A split is a list of image sources with their targets (class index, captions, or the row index) plus a
`fingerprint` of its content (file names and sizes) that the feature cache records.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..core.images import IMAGE_EXTENSIONS, image_key, open_image, scan_images
from ..core.text_files import load_class_names, read_text, read_text_lines
from .data import find_image_folder, image_loader, read_retrieval_jsonl


WDS_IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")
CLIP_BENCHMARK_ORG = "clip-benchmark"
LAYOUTS = {
    "webdataset": "CLIP_benchmark's webdataset layout: <root>/<split>/nshards.txt and <root>/<split>/0.tar ..., "
    "with classnames.txt (classification) or dataset_type.txt = retrieval",
    "split_folders": "ImageNet-style split folders: <root>/train/<class>/<image> and <root>/test/<class>/<image>",
    "image_folder": "an ImageFolder tree: <root>/<class>/<image> (one test split)",
    "karpathy": "a Karpathy split JSON file (dataset_flickr30k.json ...) with 'images' entries",
    "jsonl": "a JSON Lines retrieval file of {'image': PATH, 'captions': [...]}",
    "mmvp": "the MMVP-VLM folder: Questions.csv and 'MLLM_VLM Images/<category>/<id>.jpg'",
    "images": "a folder of images without classes (diffclip embed only)",
}


@dataclass
class Split:
    """One split of a dataset. `task`: `classification` (targets are class indices into `class_names`),
    `retrieval` (targets are lists of captions) or `images` (targets are row indices). Exactly one of `sources`
    (image paths, read by a `DataLoader`) and `shards` (webdataset tar files, streamed in order) is set."""

    dataset: str
    split: str
    task: str
    layout: str
    fingerprint: str
    sources: list[str] | None = None
    targets: list[Any] | None = None
    shards: list[str] | None = None
    class_names: list[Any] | None = None
    class_keys: list[str] | None = None  # folder names (WordNet ids for ImageNet folders), to map class lists
    templates: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int | None:
        return len(self.sources) if self.sources is not None else self.extra.get("num_samples")

    def describe(self) -> str:
        return f"{self.dataset} ({self.split})"


def _fingerprint(entries: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:24]


def file_fingerprint(paths: Sequence[str], root: Path | None = None) -> str:
    entries = []
    for path in paths:
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        entries.append(f"{os.path.relpath(path, root) if root else path}:{size}")
    return _fingerprint(entries)


# --------------------------------------------------------------------------------------------------
# Where the data is
# --------------------------------------------------------------------------------------------------


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_repo_of(spec: str) -> str | None:
    """The Hub dataset repo a `--data` value names: `wds/<name>` → `clip-benchmark/wds_<name>` (`/` → `-`), an
    `owner/name` id as is; `None` for anything else."""
    if spec.startswith("wds/"):
        name = spec[4:].strip("/")
        if not name:
            raise ValueError("wds/<name> needs a dataset name, e.g. wds/cifar10.")
        return f"{CLIP_BENCHMARK_ORG}/wds_{name.replace('/', '-')}"
    return spec if _HUB_ID.match(spec) else None


def resolve_data(spec: str | os.PathLike, split: str | None = None) -> Path:
    """A local path for `--data`: the path itself when it exists, else the snapshot of the Hub dataset repo it
    names (only the `split` folder and the metadata files are fetched; from the cache when offline)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    repo = hub_repo_of(str(spec))
    if repo is None:
        raise FileNotFoundError(
            f"Data not found: {spec} is neither an existing file or folder nor a Hub dataset (wds/<name> for "
            "CLIP_benchmark's datasets, or owner/name)."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    # a webdataset repo: only the split asked for and the metadata files; any other repo (MMVP's): all of it
    webdataset = repo.rsplit("/", 1)[-1].startswith("wds_")
    patterns = (["*.txt", f"{split}/*"] if split else None) if webdataset else None
    try:
        return Path(snapshot_download(repo, repo_type="dataset", allow_patterns=patterns))
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"The Hub dataset {repo} (for --data {spec}) is not in the Hugging Face cache and the Hub cannot be "
            f"reached (HF_HUB_OFFLINE?): {error}"
        ) from error
    except Exception as error:  # repository not found, gated, network errors
        raise FileNotFoundError(f"Cannot fetch the Hub dataset {repo} (for --data {spec}): {error}") from error


def _listing(root: Path, limit: int = 8) -> str:
    if root.is_file():
        return f"the file {root.name}"
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in os.scandir(root))
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return shown or "an empty folder"


def _has_images(folder: Path) -> bool:
    return any(entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS) for entry in os.scandir(folder))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_layout(root: Path) -> str:
    """Which of the [`LAYOUTS`] `root` is in; an error naming the layouts expected and what was found."""
    if root.is_file():
        if root.suffix == ".jsonl":
            return "jsonl"
        if root.suffix == ".json":
            return "karpathy"
    elif root.is_dir():
        if (root / "Questions.csv").is_file():
            return "mmvp"
        subfolders = _subfolders(root)
        if any((sub / "nshards.txt").is_file() for sub in subfolders):
            return "webdataset"
        if (root / "train").is_dir() and (root / "test").is_dir():
            return "split_folders"
        if subfolders and any(_has_images(sub) or _subfolders(sub) for sub in subfolders):
            return "image_folder"
        if _has_images(root):
            return "images"
    expected = "; ".join(f"{name}: {text}" for name, text in LAYOUTS.items())
    raise ValueError(
        f"{root} is in none of the dataset layouts this package reads (found {_listing(root)}). "
        f"Expected one of: {expected}."
    )


# --------------------------------------------------------------------------------------------------
# The layouts
# --------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str] | None:
    return read_text_lines(path) if path.is_file() else None


def _webdataset_split(root: Path, name: str, split: str) -> Split:
    folder = root / split
    if not (folder / "nshards.txt").is_file():
        found = [sub.name for sub in _subfolders(root) if (sub / "nshards.txt").is_file()]
        raise ValueError(
            f"{name} has no {split!r} split in CLIP_benchmark's webdataset layout ({split}/nshards.txt); its splits: "
            f"{', '.join(found) or 'none'}."
        )
    try:
        nshards = int(read_text(folder / "nshards.txt").strip())
    except ValueError as error:
        raise ValueError(f"{folder / 'nshards.txt'} must hold the number of shards: {error}") from error
    shards = [folder / f"{i}.tar" for i in range(nshards)]
    missing = [str(s) for s in shards if not s.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {nshards} shards of {name} ({split}) are missing: {missing[:3]}"
        )
    dataset_type = ((_read_lines(root / "dataset_type.txt") or ["classification"])[0]).lower()
    if dataset_type == "multilabel":
        raise ValueError(f"{name} is a multilabel dataset (dataset_type.txt); the paper's protocols have none.")
    task = "retrieval" if dataset_type == "retrieval" else "classification"
    class_names = _read_lines(root / "classnames.txt") if task == "classification" else None
    if task == "classification" and not class_names:
        raise ValueError(f"{name} is a classification set in webdataset layout but has no classnames.txt.")
    templates = _read_lines(root / "zeroshot_classification_templates.txt")
    return Split(
        dataset=name,
        split=split,
        task=task,
        layout="webdataset",
        fingerprint=file_fingerprint([str(s) for s in shards], root),
        shards=[str(s) for s in shards],
        class_names=class_names,
        templates=templates,
    )


def _image_folder_split(folder: Path, name: str, split: str, class_names) -> Split:
    data = find_image_folder(folder, class_names, source=str(class_names and "the class names") or "")
    sources = [path for path, _ in data.samples]
    targets = [data.folder_classes[index] for _, index in data.samples]
    keys = [None] * len(data.labels)
    for folder_name, c in zip(data.folders, data.folder_classes):
        keys[c] = folder_name
    return Split(
        dataset=name,
        split=split,
        task="classification",
        layout="image_folder",
        fingerprint=file_fingerprint(sources, folder),
        sources=sources,
        targets=targets,
        class_names=list(data.labels),
        class_keys=keys,
    )


def _split_folders_split(root: Path, name: str, split: str, class_names) -> Split:
    folder = root / split
    if not folder.is_dir():
        raise ValueError(f"{name} has no {split!r} split folder; found {_listing(root)}.")
    train_classes = [p.name for p in _subfolders(root / "train")]
    this = [p.name for p in _subfolders(folder)]
    unknown = sorted(set(this) - set(train_classes))
    if unknown:
        raise ValueError(f"{name}: the {split} split has class folders the train split lacks: {unknown[:10]}.")
    if class_names is None:
        class_names = train_classes
    elif isinstance(class_names, list) and len(class_names) != len(train_classes):
        raise ValueError(
            f"{name}: {len(class_names)} class names for the {len(train_classes)} class folders of train/."
        )
    if isinstance(class_names, list) and not set(train_classes) & set(map(str, class_names)):
        class_names = dict(zip(train_classes, class_names))  # by position, in the train split's folder order
    result = _image_folder_split(folder, name, split, class_names)
    if set(this) != set(train_classes):  # classes missing from this split: keep the train split's indices
        order = {key: i for i, key in enumerate(train_classes)}
        result.targets = [order[result.class_keys[t]] for t in result.targets]
        result.class_keys = train_classes
        names = dict(zip(train_classes, class_names)) if isinstance(class_names, list) else class_names
        result.class_names = [names[key] for key in train_classes]
    result.layout = "split_folders"
    return result


# Where the images of a Karpathy file usually lie, relative to the file, when no image root is given.
KARPATHY_IMAGE_FOLDERS = (".", "images", "Images", "flickr30k-images", "Flicker8k_Dataset", "Flickr8k_Dataset")


def _karpathy_image_root(path: Path, entries: list) -> Path:
    first = next((e for e in entries if isinstance(e, dict) and "filename" in e), None)
    for folder in KARPATHY_IMAGE_FOLDERS:
        if first is not None and (path.parent / folder / first.get("filepath", "") / first["filename"]).is_file():
            return path.parent / folder
    return path.parent


def _karpathy_split(path: Path, name: str, split: str, image_root: Path | None) -> Split:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path} is not a Karpathy split file: expected an object with an 'images' list.")
    root = image_root or _karpathy_image_root(path, data["images"])
    sources, targets, index_of = [], [], {}
    for number, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or "filename" not in entry or "sentences" not in entry:
            raise ValueError(f"{path}: images[{number}] lacks 'filename' or 'sentences'.")
        if entry.get("split") != split:
            continue
        captions = [s["raw"].strip() for s in entry["sentences"] if isinstance(s, dict) and s.get("raw", "").strip()]
        if not captions:
            raise ValueError(f"{path}: images[{number}] ({entry['filename']}) has no caption.")
        source = str(root / entry.get("filepath", "") / entry["filename"])
        key = image_key(source)  # one image named twice (or by two spellings) is one image with all its captions
        if key in index_of:
            targets[index_of[key]].extend(captions)
            continue
        index_of[key] = len(sources)
        sources.append(source)
        targets.append(captions)
    if not sources:
        splits = sorted({str(e.get("split")) for e in data["images"] if isinstance(e, dict)})
        raise ValueError(f"{path} has no image in the {split!r} split; its splits: {', '.join(splits)}.")
    missing = [s for s in sources if not os.path.isfile(s)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(sources)} images of {path} ({split}) are not under {root} (e.g. "
            f"{missing[0]}); pass the folder that holds them as the image root."
        )
    return Split(name, split, "retrieval", "karpathy", file_fingerprint(sources, root), sources, targets)


def _jsonl_split(path: Path, name: str, split: str, image_root: Path | None) -> Split:
    data = read_retrieval_jsonl(path, image_root)
    targets = [[] for _ in data.images]
    for caption, image in zip(data.captions, data.caption_image):
        targets[image].append(caption)
    return Split(name, split, "retrieval", "jsonl", file_fingerprint(data.images), list(data.images), targets)


def _images_split(root: Path, name: str) -> Split:
    sources = scan_images(root)
    return Split(name, "all", "images", "images", file_fingerprint(sources, root), sources, list(range(len(sources))))


def open_split(
    spec: str | os.PathLike,
    split: str = "test",
    class_names: str | os.PathLike | list | dict | None = None,
    key: str | None = None,
    image_root: str | os.PathLike | None = None,
    templates: list[str] | None = None,
) -> Split:
    """One split of a dataset given as `--data` (a folder, a file, `wds/<name>` or a Hub dataset id).

    `class_names`: a class-name file (text or JSON, `key` picks a JSON entry) or a list or `{folder: name}` mapping
    for folder layouts (default: the folder names, or a webdataset's `classnames.txt`). A class-name list whose
    length differs from the dataset's classes is an error."""
    root = resolve_data(spec, split)
    name = str(spec)
    if isinstance(class_names, (str, os.PathLike)):
        class_names = load_class_names(class_names, key)
    layout = detect_layout(root)
    image_root = Path(image_root) if image_root else None
    if layout == "webdataset":
        result = _webdataset_split(root, name, split)
        if class_names is not None:
            given = list(class_names.values()) if isinstance(class_names, dict) else list(class_names)
            if len(given) != len(result.class_names):
                raise ValueError(
                    f"{len(given)} class names given for the {len(result.class_names)} classes of {name} "
                    "(classnames.txt)."
                )
            result.class_names = given
    elif layout == "split_folders":
        result = _split_folders_split(root, name, split, class_names)
    elif layout == "image_folder":
        if split not in ("test", "all"):
            raise ValueError(
                f"{name} is a single ImageFolder tree (one test split); the {split!r} split needs "
                f"{LAYOUTS['split_folders']}."
            )
        result = _image_folder_split(root, name, "test", class_names)
    elif layout == "karpathy":
        result = _karpathy_split(root, name, split, image_root)
    elif layout == "jsonl":
        result = _jsonl_split(root, name, split, image_root)
    elif layout == "images":
        result = _images_split(root, name)
    else:  # mmvp
        from .mmvp import read_mmvp

        result = read_mmvp(root, name)
    if templates is not None:
        result.templates = list(templates)
    return result


# --------------------------------------------------------------------------------------------------
# Reading images in batches
# --------------------------------------------------------------------------------------------------


def _decode_wds_image(sample: dict, shard: str) -> Image.Image:
    for key in WDS_IMAGE_KEYS:
        if key in sample:  # core.images' opener: its pixel limit, one error type naming the sample
            return open_image({"path": f"{sample.get('__key__')}.{key} in {shard}", "bytes": sample[key]})
    raise ValueError(
        f"Sample {sample.get('__key__')} in {shard} has no image ({', '.join(WDS_IMAGE_KEYS)}); keys: "
        f"{', '.join(k for k in sample if not k.startswith('__'))}."
    )


def _wds_target(sample: dict, task: str, shard: str) -> Any:
    key = sample.get("__key__")
    if task == "retrieval":
        if "txt" not in sample:
            raise ValueError(f"Sample {key} in {shard} has no 'txt' captions (a retrieval set).")
        captions = [line.strip() for line in sample["txt"].decode("utf-8").splitlines() if line.strip()]
        if not captions:
            raise ValueError(f"Sample {key} in {shard} has an empty 'txt'.")
        return captions
    if "cls" not in sample:
        raise ValueError(f"Sample {key} in {shard} has no 'cls' class index (a classification set).")
    try:
        return int(sample["cls"].decode("utf-8").strip())
    except ValueError as error:
        raise ValueError(f"Sample {key} in {shard}: 'cls' is not an integer: {error}") from error


def iterate_webdataset(
    split: Split, start: int = 0, rank: int = 0, world: int = 1, keep: Callable[[int], bool] | None = None
) -> Iterator[tuple[Image.Image, Any]]:
    """`(image, target)` of the samples `rank, rank + world, ...` of a webdataset split (all of them by default), in
    shard order, from the `start`-th of those on, and of those only the `j`-th for which `keep(j)` (samples skipped
    are not decoded)."""
    try:
        import webdataset as wds
    except ImportError as error:
        message = "Datasets in webdataset layout need webdataset: pip install 'transformers-diffclip[eval]'."
        raise OSError(message) from error

    dataset = wds.WebDataset(
        split.shards,
        shardshuffle=False,
        nodesplitter=lambda urls: urls,
        workersplitter=lambda urls: urls,
        empty_check=False,
    )
    for index, sample in enumerate(dataset):
        if index % world != rank or index // world < start:
            continue
        if keep is not None and not keep(index // world - start):
            continue
        shard = sample.get("__url__", split.dataset)
        target = _wds_target(sample, split.task, shard)
        if split.task == "classification" and not 0 <= target < len(split.class_names):
            raise ValueError(
                f"Sample {sample.get('__key__')} in {shard} has class {target}, outside the "
                f"{len(split.class_names)} classes of classnames.txt."
            )
        yield _decode_wds_image(sample, shard), target


def image_batches(
    split: Split,
    image_processor,
    batch_size: int = 64,
    num_workers: int = 0,
    start: int = 0,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, list[Any]]]:
    """`(pixel_values, targets)` batches of the samples `rank, rank + world, ...` of `split` (all by default), in
    order, from the `start`-th of those on, read by a `DataLoader` with `num_workers` (webdataset shards: every
    worker reads the shards in order and decodes its own batches)."""
    if split.sources is not None:
        sources = split.sources[rank::world][start:]
        targets = split.targets[rank::world][start:]
        for pixel_values, rows in image_loader(sources, image_processor, None, batch_size, num_workers):
            yield pixel_values, [targets[row] for row in rows.tolist()]
        return
    if num_workers == 0:
        yield from _WebdatasetBatches(split, image_processor, batch_size, start, rank, world)
        return
    loader = torch.utils.data.DataLoader(
        _WebdatasetBatches(split, image_processor, batch_size, start, rank, world),
        batch_size=None,
        num_workers=num_workers,
    )
    yield from loader


class _WebdatasetBatches(torch.utils.data.IterableDataset):
    """Batches of a webdataset split in order, also from several `DataLoader` workers: worker `w` of `W` decodes
    only the batches `w, w + W, ...` (it skips the other samples without decoding them), and the `DataLoader` takes
    one batch from each worker in turn, which restores the order."""

    def __init__(self, split: Split, image_processor, batch_size: int, start: int, rank: int, world: int):
        self.split, self.image_processor, self.batch_size = split, image_processor, batch_size
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[Any]]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)

        def keep(j: int) -> bool:
            return (j // self.batch_size) % workers == worker

        images, targets = [], []
        for image, target in iterate_webdataset(self.split, self.start, self.rank, self.world, keep):
            images.append(image)
            targets.append(target)
            if len(images) == self.batch_size:
                yield self.image_processor(images=images, return_tensors="pt")["pixel_values"], targets
                images, targets = [], []
        if images:
            yield self.image_processor(images=images, return_tensors="pt")["pixel_values"], targets


def count_webdataset_samples(split: Split) -> int:
    """The number of samples in a webdataset split (reads the tar headers only)."""
    import tarfile

    keys = set()
    for shard in split.shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.isfile():
                    keys.add((shard, member.name.split("/")[-1].split(".", 1)[0], os.path.dirname(member.name)))
    return len(keys)


__all__ = [
    "LAYOUTS",
    "Split",
    "count_webdataset_samples",
    "detect_layout",
    "file_fingerprint",
    "hub_repo_of",
    "image_batches",
    "iterate_webdataset",
    "open_split",
    "resolve_data",
]
