# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The paper's evaluation data in the forms it is published in, opened by one function, [`open_split`]:

- **CLIP_benchmark's webdataset layout** (`classnames.txt`, `zeroshot_classification_templates.txt`,
  `dataset_type.txt`, `<split>/nshards.txt`, `<split>/0.tar` ...; samples with an image (any of core.images'
  extensions: `jpg`, `png`, `webp`, `bmp`, `tiff`, ...) and `cls` (classification) or `txt` (retrieval captions,
  one per line)), from a local folder, from `wds/<name>` (the Hub dataset repo `clip-benchmark/wds_<name>`, with
  `/` in the name written `-`) or from any Hub dataset id in that layout, fetched with `huggingface_hub` into its
  cache (offline once cached), read by core.shards (a size limit on every member);
- **ImageNet-style folders**: `<root>/<split>/<class>/<image>` (`train/`, `test/`, optionally `val/`) for the probe
  and few-shot, or `<root>/<class>/<image>` (one test split: ImageNet val, V2, Sketch, A, R);
- **Karpathy split JSON** of Flickr30k / Flickr8k / COCO (`dataset_flickr30k.json`: `images[]` with `filename`,
  `filepath` (COCO), `split`, `sentences[].raw`), images under `image_root`;
- **JSON Lines retrieval files** (`{"image": ..., "captions": [...]}`, as `diffclip eval retrieval`);
- **the MMVP-VLM folder** (`Questions.csv`, `MLLM_VLM Images/<category>/<id>.jpg`), see `evaluation.mmvp`.

The pieces live beside this module and are re-exported here: [`Split`] and the fingerprint in `evaluation.splits`,
the webdataset layout in `evaluation.wds_splits`, batching in `evaluation.split_batches`, MMVP in `evaluation.mmvp`.

A split is a list of image sources with their targets (class index, captions, or the row index) plus a
`fingerprint` of its content (file names, sizes and a digest of their bytes) that the feature cache records.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..core.images import IMAGE_EXTENSIONS, image_key, scan_images
from ..core.text_files import load_class_names, read_text
from .data import ImageFolderData, find_image_folder, read_retrieval_jsonl
from .mmvp import read_mmvp
from .split_batches import image_batches
from .splits import Split, file_fingerprint, subfolders
from .wds_splits import count_webdataset_samples, iterate_webdataset, webdataset_split


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


def _is_image_file(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()


def _has_images(folder: Path) -> bool:
    return any(_is_image_file(entry) for entry in os.scandir(folder))


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
        folders = subfolders(root)
        if any((sub / "nshards.txt").is_file() for sub in folders):
            return "webdataset"
        if (root / "train").is_dir() and (root / "test").is_dir():
            return "split_folders"
        if folders and any(_has_images(sub) or subfolders(sub) for sub in folders):
            top = sum(1 for entry in os.scandir(root) if _is_image_file(entry))
            if top:  # images beside class folders: neither an ImageFolder tree nor a plain folder of images
                raise ValueError(
                    f"{root} is ambiguous: it holds {top} image(s) at its top and folders with images "
                    f"({', '.join(sub.name for sub in folders[:3])}{' ...' if len(folders) > 3 else ''}). "
                    "An ImageFolder tree has images only in its class folders (move the top images into one), and "
                    "a folder of images to embed has no class folders (give each folder as its own --data, or "
                    "list the images in a text file)."
                )
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


def _image_folder_split(folder: Path, name: str, split: str, class_names) -> Split:
    data = find_image_folder(folder, class_names, source=str(class_names and "the class names") or "")
    return image_folder_split(data, name, split)


def image_folder_split(data: ImageFolderData, name: str, split: str = "test") -> Split:
    """The [`Split`] of a scanned ImageFolder tree (`data.matching` kept as `extra["class_matching"]`)."""
    folder = data.root
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
        extra={"class_matching": data.matching},
    )


def _split_folders_split(root: Path, name: str, split: str, class_names) -> Split:
    folder = root / split
    if not folder.is_dir():
        raise ValueError(f"{name} has no {split!r} split folder; found {_listing(root)}.")
    train_classes = [p.name for p in subfolders(root / "train")]
    this = [p.name for p in subfolders(folder)]
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
    first = next((e for e in entries if isinstance(e, dict) and isinstance(e.get("filename"), str)), None)
    for folder in KARPATHY_IMAGE_FOLDERS:
        if first is not None and (path.parent / folder / str(first.get("filepath", "")) / first["filename"]).is_file():
            return path.parent / folder
    return path.parent


def _check_karpathy_entry(path: Path, number: int, entry: Any) -> None:
    """One `images[]` entry: `filename` (and `filepath`, if any) strings, `sentences` a list of `{raw: string}`."""
    where = f"{path}: images[{number}]"
    if not isinstance(entry, dict) or "filename" not in entry or "sentences" not in entry:
        raise ValueError(f"{where} lacks 'filename' or 'sentences'.")
    for key in ("filename", "filepath"):
        if key in entry and not (isinstance(entry[key], str) and (entry[key] or key == "filepath")):
            raise ValueError(f"{where}: {key!r} must be a file name (a string), got {repr(entry[key])[:60]}.")
    if not isinstance(entry["sentences"], list):
        raise ValueError(
            f"{where}: 'sentences' must be a list of {{'raw': caption}}, got {repr(entry['sentences'])[:60]}."
        )
    for index, sentence in enumerate(entry["sentences"]):
        if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
            raise ValueError(
                f"{where}.sentences[{index}]: 'raw' must be the caption (a string), got {repr(sentence)[:60]}."
            )


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
        _check_karpathy_entry(path, number, entry)
        if entry.get("split") != split:
            continue
        captions = [s["raw"].strip() for s in entry["sentences"] if s["raw"].strip()]
        if not captions:
            raise ValueError(f"{path}: images[{number}] ({entry['filename'][:80]}) has no caption.")
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
    fingerprint = file_fingerprint([str(path), *sources], root)  # the captions are in the JSON file
    return Split(name, split, "retrieval", "karpathy", fingerprint, sources, targets)


def _jsonl_split(path: Path, name: str, split: str, image_root: Path | None) -> Split:
    data = read_retrieval_jsonl(path, image_root)
    targets = [[] for _ in data.images]
    for caption, image in zip(data.captions, data.caption_image):
        targets[image].append(caption)
    fingerprint = file_fingerprint([str(path), *data.images])  # the captions are in the JSON Lines file
    return Split(name, split, "retrieval", "jsonl", fingerprint, list(data.images), targets)


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
        result = webdataset_split(root, name, split)
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
        result = read_mmvp(root, name)
    if templates is not None:
        result.templates = list(templates)
    return result


__all__ = [
    "LAYOUTS",
    "Split",
    "count_webdataset_samples",
    "detect_layout",
    "file_fingerprint",
    "hub_repo_of",
    "image_batches",
    "image_folder_split",
    "iterate_webdataset",
    "open_split",
    "resolve_data",
]
