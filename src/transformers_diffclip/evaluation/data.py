# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Evaluation data: images (anything `core.images.open_image` reads) streamed through a `DataLoader`, ImageFolder
trees matched to class names, and JSON Lines retrieval files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.images import IMAGE_EXTENSIONS, image_key, is_url, open_image, scan_images
from ..core.text_files import Label, read_text
from .labels import duplicate_labels, synonyms


class ImageDataset(torch.utils.data.Dataset):
    """Images read and preprocessed on demand, for a `DataLoader`: item `i` is `(pixel_values, target_i)`, with
    `target_i = i` when no targets are given."""

    def __init__(self, sources: Sequence[str], image_processor, targets: Sequence[int] | None = None):
        if targets is not None and len(targets) != len(sources):
            raise ValueError(f"Got {len(sources)} images but {len(targets)} targets.")
        self.sources = [str(s) for s in sources]
        self.image_processor = image_processor
        self.targets = list(targets) if targets is not None else None

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = open_image(self.sources[index])
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixel_values, (self.targets[index] if self.targets is not None else index)


def image_loader(
    sources: Sequence[str],
    image_processor,
    targets: Sequence[int] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A `DataLoader` that yields `(pixel_values, targets)` batches of at most `batch_size` images, in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
    dataset = ImageDataset(sources, image_processor, targets)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


# --------------------------------------------------------------------------------------------------
# ImageFolder trees
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageFolderData:
    """An ImageFolder tree resolved against a label set.

    `labels` is the classifier's label set (all classes of the class-name file, which may be more than the folders
    present); `folders[i]` is the i-th class folder and `folder_classes[i]` its index into `labels`; `samples` are
    `(path, folder index)` pairs. `matching` says how folders met classes: `"folder names"` (no class-name file),
    `"mapping"` (a `{folder: name}` file), `"name"` (every folder named after a class) or `"position"` (no folder
    named after a class: the i-th sorted folder is the i-th class, the ImageFolder convention of e.g. ImageNet's
    WordNet-id folders). `duplicates` lists class names that occur more than once in `labels`.
    """

    root: Path
    labels: list[Label]
    folders: list[str]
    folder_classes: list[int]
    samples: list[tuple[str, int]]
    matching: str = "folder names"
    duplicates: list[str] = field(default_factory=list)


def _class_folders(root: Path) -> list[str]:
    if not root.exists():
        raise FileNotFoundError(f"Data folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"--data must be a folder with one sub-folder per class, got the file {root}.")
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise ValueError(f"No class folders in {root}: expected one sub-folder of images per class.")
    return folders


def _shown(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def match_folders(
    folders: Sequence[str], class_names: Sequence[Label] | Mapping[str, Label] | None, source: str = "given"
) -> tuple[list[Label], list[int], str]:
    """`(labels, folder_classes, matching)` for the class folders `folders` (see [`ImageFolderData`]).

    A `{folder: name}` mapping must name every folder. A list of names matches folders by name when every folder
    is named after exactly one class, and by position when no folder is (which needs as many names as folders). A
    list that matches some folders but not all, or matches a folder to a name listed twice, is an error that lists
    the differences: a partial match never falls back to position.
    """
    folders = list(folders)
    if class_names is None:
        return list(folders), list(range(len(folders))), "folder names"
    hint = "use a `folder<TAB>name` text file or a JSON object {folder: name} to name each folder explicitly"
    if isinstance(class_names, Mapping):
        missing = [folder for folder in folders if folder not in class_names]
        if missing:
            raise ValueError(
                f"{len(missing)} class folder(s) missing from the class-name file {source}: {_shown(missing)}."
            )
        keys = list(class_names)
        position = {key: i for i, key in enumerate(keys)}
        return [class_names[key] for key in keys], [position[folder] for folder in folders], "mapping"
    names = list(class_names)
    owners: dict[str, list[int]] = {}
    for index, label in enumerate(names):
        for name in dict.fromkeys(synonyms(label)):
            owners.setdefault(name, []).append(index)
    matched = [folder for folder in folders if folder in owners]
    if not matched:
        if len(names) != len(folders):
            raise ValueError(
                f"No class folder is named after a class of {source}, and its {len(names)} names cannot be matched to "
                f"the {len(folders)} folders by position either; {hint}."
            )
        return names, list(range(len(folders))), "position"
    unmatched = [folder for folder in folders if folder not in owners]
    if unmatched:
        raise ValueError(
            f"{len(matched)} of the {len(folders)} class folders are named after classes of {source} but "
            f"{len(unmatched)} are not: {_shown(unmatched)}. Folders are matched to classes by name or, when no "
            f"folder name is a class name, by position, never by a mix; {hint}."
        )
    ambiguous = [folder for folder in folders if len(owners[folder]) > 1]
    if ambiguous:
        raise ValueError(
            f"Class folder(s) {_shown(ambiguous)} match several classes of {source} (the name is listed more than "
            f"once); {hint}."
        )
    return names, [owners[folder][0] for folder in folders], "name"


def find_image_folder(
    root: str | os.PathLike, class_names: list[Label] | Mapping[str, Label] | None = None, source: str = "given"
) -> ImageFolderData:
    """Scan an ImageFolder tree (`root/<class folder>/**/<image>`) and match its folders to `class_names`.

    Without `class_names` the folder names are the class names; otherwise see [`match_folders`].
    """
    root = Path(root)
    folders = _class_folders(root)
    labels, folder_classes, matching = match_folders(folders, class_names, source)
    samples, owner = [], {}
    for i, folder in enumerate(folders):
        for path in scan_images(root / folder):
            key = image_key(path)
            if key in owner and owner[key] != folder:
                raise ValueError(
                    f"The image {key} is in two class folders of {root}: {owner[key]!r} and {folder!r} (through a "
                    "link); an image belongs to one class."
                )
            owner[key] = folder
            samples.append((path, i))
    if not samples:
        raise ValueError(f"No images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} in the class folders).")
    return ImageFolderData(root, labels, folders, folder_classes, samples, matching, duplicate_labels(labels))


# --------------------------------------------------------------------------------------------------
# Retrieval files
# --------------------------------------------------------------------------------------------------


@dataclass
class RetrievalData:
    """Images and captions of a retrieval set: `caption_image[j]` is the index in `images` of caption `j`."""

    images: list[str]
    captions: list[str]
    caption_image: list[int]


def read_retrieval_jsonl(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> RetrievalData:
    """Read a JSON Lines retrieval file: one object per line with `image` (a path, relative to `image_root` or else
    to the file's folder, or a URL) and `captions` (a list of strings) or `caption` (a string). Lines naming the
    same image are merged, so an image has all its captions whether they come on one line or several; local paths
    are compared by the file they resolve to (`a.jpg`, `./a.jpg`, `/abs/a.jpg` and a link to it are one image)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Retrieval file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    images, captions, caption_image, index_of = [], [], [], {}
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error}).") from error
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
            raise ValueError(f"{where}: expected an object with an 'image' path.")
        if "captions" in entry:
            texts = entry["captions"]
            if not isinstance(texts, list) or not texts:
                raise ValueError(f"{where}: 'captions' must be a non-empty list of strings.")
        elif "caption" in entry:
            texts = [entry["caption"]]
        else:
            raise ValueError(f"{where}: expected 'captions' (a list) or 'caption' (a string).")
        if not all(isinstance(text, str) and text.strip() for text in texts):
            raise ValueError(f"{where}: every caption must be a non-empty string.")
        image = entry["image"]
        image = image if is_url(image) else str(root / Path(image).expanduser())
        key = image_key(image)
        if key not in index_of:
            index_of[key] = len(images)
            images.append(image)
        captions.extend(texts)
        caption_image.extend([index_of[key]] * len(texts))
    if not images:
        raise ValueError(f"The retrieval file {path} has no entries.")
    return RetrievalData(images, captions, caption_image)


__all__ = [
    "ImageDataset",
    "ImageFolderData",
    "RetrievalData",
    "find_image_folder",
    "image_loader",
    "match_folders",
    "read_retrieval_jsonl",
]
