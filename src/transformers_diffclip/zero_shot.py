# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification and retrieval evaluation for DiffCLIP (and any CLIP-like dual encoder).

The pieces, in reading order:

- label and template files: plain text (one entry per line) or the JSON files of the original SLIP-style
  evaluation (`slip_labels.json`, `slip_templates.json`, one list per dataset key);
- [`ZeroShotClassifier`]: the class embeddings, built once from class names × prompt templates as the original
  evaluation builds them (normalise every prompt embedding, average per class, renormalise), saved to and loaded
  from a folder (safetensors + a small JSON), then applied to any number of image embeddings. transformers'
  zero-shot pipeline re-encodes every label for every image; this encodes them once;
- streaming: images are read and preprocessed by a `torch.utils.data.DataLoader` over file paths or URLs, so only
  one batch of pixels is in memory at a time;
- evaluation: zero-shot accuracy on an ImageFolder tree (top-1, top-5, per class) and image/text retrieval recall
  on a JSON Lines file (several captions per image, as in the Flickr30k/COCO Karpathy splits);
- the `diffclip zero-shot` and `diffclip eval {zero-shot,retrieval}` commands, thin wrappers of the above.

The model needs only `get_text_features`, `get_image_features` and `logit_scale` (stored as a log, as in CLIP), so
the functions work with [`DiffCLIPModel`] and transformers' `CLIPModel` alike.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .original import DEFAULT_MODEL_ID, ORIGINAL_REPOS, resolve_pretrained


DEFAULT_TEMPLATE = "a photo of a {}."
CLASSIFIER_WEIGHTS_NAME = "classifier.safetensors"
CLASSIFIER_CONFIG_NAME = "classifier.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RECALL_KS = (1, 5, 10)

# A label is one class name or a list of synonyms (SLIP's fer2013 entries are lists); a class with synonyms gets
# the average over all synonyms × templates, and is shown by its first name.
Label = str | Sequence[str]


# --------------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`, so that a reader never
    sees a half-written file and an interrupted write leaves the old file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented UTF-8 JSON."""
    return _atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _progress(iterable: Iterable, enabled: bool, **kwargs) -> Iterable:
    return tqdm(iterable, disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kwargs)


def _embeddings(output: Any) -> torch.Tensor:
    """The projected embedding from `get_text_features` / `get_image_features`: a tensor on transformers 4.x, the
    `pooler_output` of a `BaseModelOutputWithPooling` on transformers 5."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(
            f"Expected an embedding tensor or an output with `pooler_output`, got {type(output).__name__}."
        )
    return pooled


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _logit_scale(model: torch.nn.Module) -> float:
    """The model's stored (log) logit scale."""
    scale = getattr(model, "logit_scale", None)
    if scale is None:
        raise ValueError(f"{type(model).__name__} has no `logit_scale`; zero-shot needs a CLIP-like dual encoder.")
    return float(torch.as_tensor(scale).detach().float().cpu())


# --------------------------------------------------------------------------------------------------
# Labels and templates
# --------------------------------------------------------------------------------------------------


def parse_label_list(text: str) -> list[str]:
    """Labels from a comma-separated string (`"cat,dog, a red car"`); surrounding spaces are dropped."""
    labels = [label.strip() for label in text.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise ValueError(f"The label list {text!r} is empty; give comma-separated labels such as 'cat,dog'.")
    return labels


def _read_text_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"File not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return [line for line in lines if line]


def _read_json_entry(path: Path, key: str | None) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if isinstance(data, dict) and key is None and not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path} holds several lists; pick one with --key (one of: {', '.join(sorted(data))}).")
    if key is not None:
        if not isinstance(data, dict):
            raise ValueError(f"--key {key!r} was given but {path} holds a {type(data).__name__}, not an object.")
        if key not in data:
            raise ValueError(f"{path} has no key {key!r}; its keys are: {', '.join(sorted(data))}.")
        data = data[key]
    return data


def _check_label(label: Any, where: str) -> Label:
    if isinstance(label, str) and label.strip():
        return label.strip()
    if isinstance(label, (list, tuple)) and label and all(isinstance(s, str) and s.strip() for s in label):
        return [s.strip() for s in label]
    raise ValueError(f"{where}: a class name must be a non-empty string or a non-empty list of them, got {label!r}.")


def load_class_names(path: str | os.PathLike, key: str | None = None) -> list[Label] | dict[str, Label]:
    """Class names from a file.

    - plain text: one class name per line (blank lines skipped), or `folder<TAB>name` lines mapping the folders of
      an ImageFolder tree to class names;
    - JSON: a list of names, an object `{folder: name}` (string values), or an object of such lists/objects keyed
      by dataset (the original `slip_labels.json`), of which `key` picks one. A name may be a list of synonyms (in a
      list, or in a mapping picked by `key`).

    Returns a list, or a dict from folder name to class name for the mapping forms.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Class-name file not found: {path}")
    if path.suffix.lower() == ".json":
        data = _read_json_entry(path, key)
        if isinstance(data, dict):
            names = {str(folder): _check_label(name, f"{path} [{folder!r}]") for folder, name in data.items()}
        elif isinstance(data, list):
            names = [_check_label(name, f"{path} entry {i}") for i, name in enumerate(data)]
        else:
            raise ValueError(f"{path}: expected a list of class names or a {{folder: name}} object.")
    else:
        lines = _read_text_lines(path)
        with_tab = [("\t" in line) for line in lines]
        if any(with_tab) and not all(with_tab):
            bad = lines[with_tab.index(False)]
            raise ValueError(f"{path} mixes `folder<TAB>name` lines with plain lines (e.g. {bad!r}).")
        if all(with_tab) and lines:
            names = {}
            for line in lines:
                folder, _, name = line.partition("\t")
                names[folder.strip()] = _check_label(name, f"{path} line {line!r}")
        else:
            names = lines
    if not names:
        raise ValueError(f"The class-name file {path} is empty.")
    return names


def check_templates(templates: Sequence[str]) -> list[str]:
    """Validate prompt templates: non-empty strings, each with a `{}` where the class name goes."""
    templates = list(templates)
    if not templates:
        raise ValueError("The template list is empty.")
    for template in templates:
        if not isinstance(template, str) or "{}" not in template:
            raise ValueError(f"Template {template!r} has no '{{}}' placeholder for the class name.")
    return templates


def load_templates(path: str | os.PathLike, key: str | None = None) -> list[str]:
    """Prompt templates from a plain text file (one per line) or a JSON list / object of lists (the original
    `slip_templates.json`, where `key` picks a dataset)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Template file not found: {path}")
    if path.suffix.lower() == ".json":
        data = _read_json_entry(path, key)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of templates.")
    else:
        data = _read_text_lines(path)
    if not data:
        raise ValueError(f"The template file {path} is empty.")
    return check_templates(data)


def fill_template(template: str, name: str) -> str:
    """The prompt for one class name; same as `template.format(name)` for templates whose only braces are `{}`."""
    return template.replace("{}", name)


def _synonyms(label: Label) -> list[str]:
    return [label] if isinstance(label, str) else list(label)


def _display_name(label: Label) -> str:
    return label if isinstance(label, str) else label[0]


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def _max_text_length(model: torch.nn.Module, tokenizer) -> int:
    text_config = getattr(model.config, "text_config", model.config)
    limits = [getattr(text_config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(limits) if limits else 77


@torch.inference_mode()
def encode_texts(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    progress: bool = False,
    description: str = "texts",
) -> torch.Tensor:
    """L2-normalised float32 text embeddings (on the CPU), one row per text, in the order given.

    Texts are tokenized once, sorted by length and batched, so that a batch pads to the length of its own texts
    only (right padding, which the causal text tower ignores).
    """
    if not texts:
        raise ValueError("There are no texts to encode.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    device, _ = _model_device_dtype(model)
    token_ids = tokenizer(list(texts), truncation=True, max_length=_max_text_length(model, tokenizer))["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    embeddings = None
    batches = range(0, len(order), batch_size)
    for start in _progress(batches, progress, desc=f"Encoding {description}", unit="batch"):
        rows = order[start : start + batch_size]
        width = max(len(token_ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, index in enumerate(rows):
            ids = token_ids[index]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        features = _embeddings(
            model.get_text_features(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        )
        features = F.normalize(features.float(), dim=-1).cpu()
        if embeddings is None:
            embeddings = torch.empty(len(texts), features.shape[-1], dtype=torch.float32)
        embeddings[torch.tensor(rows)] = features
    return embeddings


@torch.inference_mode()
def encode_pixel_values(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """L2-normalised float32 image embeddings of one preprocessed batch (on the model's device)."""
    device, dtype = _model_device_dtype(model)
    features = _embeddings(model.get_image_features(pixel_values=pixel_values.to(device=device, dtype=dtype)))
    return F.normalize(features.float(), dim=-1)


# --------------------------------------------------------------------------------------------------
# Images: loading and streaming
# --------------------------------------------------------------------------------------------------


def load_image(source: str | os.PathLike, timeout: float = 30.0):
    """An RGB PIL image from a local path or an http(s) URL; any failure names the image."""
    from PIL import Image

    source = str(source)
    try:
        if _is_url(source):
            request = urllib.request.Request(source, headers={"User-Agent": "transformers-diffclip"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                stream = io.BytesIO(response.read())
        else:
            if not os.path.isfile(source):
                raise FileNotFoundError(f"Image not found: {source}")
            stream = source
        with Image.open(stream) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise
    except Exception as error:  # PIL's UnidentifiedImageError, truncated files, HTTP and socket errors, ...
        raise ValueError(f"Cannot read image {source}: {error}") from error


def check_image_sources(sources: Sequence[str]) -> None:
    """Fail early, before any model is loaded, on local image paths that do not exist."""
    missing = [s for s in sources if not _is_url(str(s)) and not os.path.isfile(s)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise FileNotFoundError(f"Image not found: {shown}")


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
        image = load_image(self.sources[index])
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixel_values, (self.targets[index] if self.targets is not None else index)


def image_batches(
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


def _image_processor(processor):
    return getattr(processor, "image_processor", processor)


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------


class ZeroShotClassifier:
    r"""Class embeddings for zero-shot classification, computed once and reused for any number of images.

    For class `c` with names (synonyms) `S_c` and templates `T`, every prompt `t.format(s)` is encoded and
    L2-normalised, the `|S_c|·|T|` unit vectors are averaged and the mean is normalised again:

        w_c = normalize(mean_{s, t} normalize(text_embed(t.format(s))))

    An image with normalised embedding `x` gets logits `exp(logit_scale) · (x · w_c)` and probabilities
    `softmax` of those over the classes.

    Args:
        weights (`torch.Tensor` of shape `(num_classes, embed_dim)`): the unit-norm class embeddings.
        labels (`list`): one class name, or list of synonyms, per class.
        templates (`list[str]`): the templates the weights were built with.
        logit_scale (`float`): the model's logit scale, as stored (a log).
        model_name (`str`, *optional*): where the text encoder came from (informational).
    """

    def __init__(
        self,
        weights: torch.Tensor,
        labels: Sequence[Label],
        templates: Sequence[str],
        logit_scale: float,
        model_name: str | None = None,
    ):
        if weights.dim() != 2 or weights.shape[0] != len(labels):
            raise ValueError(
                f"weights must have shape (num_classes={len(labels)}, embed_dim), got {tuple(weights.shape)}."
            )
        self.weights = weights
        self.labels = [_check_label(label, "labels") for label in labels]
        self.templates = list(templates)
        self.logit_scale = float(logit_scale)
        self.model_name = model_name

    @property
    def class_names(self) -> list[str]:
        """One display name per class (the first synonym)."""
        return [_display_name(label) for label in self.labels]

    @property
    def num_classes(self) -> int:
        return self.weights.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.weights.shape[1]

    def __len__(self) -> int:
        return self.num_classes

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, embed_dim={self.embed_dim}, "
            f"templates={len(self.templates)}, logit_scale={self.logit_scale:.4f})"
        )

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        tokenizer,
        labels: Sequence[Label],
        templates: Sequence[str] = (DEFAULT_TEMPLATE,),
        batch_size: int = 256,
        progress: bool = False,
        model_name: str | None = None,
    ) -> ZeroShotClassifier:
        """Encode every class name × template with `model`'s text tower (`tokenizer` may be a processor)."""
        if isinstance(labels, str) or not labels:
            raise ValueError("The label list is empty." if not labels else "labels must be a list, not a string.")
        labels = [_check_label(label, f"label {i}") for i, label in enumerate(labels)]
        templates = check_templates(templates)
        texts, owners = [], []
        for index, label in enumerate(labels):
            for name in _synonyms(label):
                for template in templates:
                    texts.append(fill_template(template, name))
                    owners.append(index)
        prompts = encode_texts(
            model, _tokenizer(tokenizer), texts, batch_size=batch_size, progress=progress, description="class prompts"
        )
        owners = torch.tensor(owners)
        sums = torch.zeros(len(labels), prompts.shape[1], dtype=torch.float32).index_add_(0, owners, prompts)
        counts = torch.bincount(owners, minlength=len(labels)).unsqueeze(1).float()
        weights = F.normalize(sums / counts, dim=-1)
        return cls(weights, labels, templates, _logit_scale(model), model_name=model_name)

    # -- persistence ---------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write `classifier.safetensors` (weights, logit scale) and `classifier.json` (labels, templates) into
        `save_directory`; each file is written atomically, the JSON last."""
        from safetensors.torch import save

        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"Cannot save the classifier: {directory} exists and is not a folder.")
        tensors = {
            "weights": self.weights.detach().float().cpu().contiguous(),
            "logit_scale": torch.tensor([self.logit_scale], dtype=torch.float32),
        }
        _atomic_write_bytes(directory / CLASSIFIER_WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
        write_json(
            directory / CLASSIFIER_CONFIG_NAME,
            {
                "num_classes": self.num_classes,
                "embed_dim": self.embed_dim,
                "labels": self.labels,
                "templates": self.templates,
                "model_name": self.model_name,
            },
        )
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> ZeroShotClassifier:
        """Load a classifier written by [`save_pretrained`]."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CLASSIFIER_CONFIG_NAME, directory / CLASSIFIER_WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved zero-shot classifier (expected {CLASSIFIER_CONFIG_NAME} and "
                f"{CLASSIFIER_WEIGHTS_NAME})."
            )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            tensors = load_file(str(weights_path))
        except Exception as error:  # JSON errors, OSError, safetensors' own error types
            raise ValueError(f"Cannot read the classifier in {directory}: {error}") from error
        weights = tensors.get("weights")
        if weights is None or "logit_scale" not in tensors or "labels" not in config:
            raise ValueError(f"{directory} holds an incomplete classifier.")
        if tuple(weights.shape) != (config.get("num_classes"), config.get("embed_dim")):
            raise ValueError(
                f"{directory}: {CLASSIFIER_WEIGHTS_NAME} holds weights of shape {tuple(weights.shape)} but "
                f"{CLASSIFIER_CONFIG_NAME} describes {config.get('num_classes')} classes of dimension "
                f"{config.get('embed_dim')}; the two files do not belong together."
            )
        return cls(
            weights,
            config["labels"],
            config.get("templates", []),
            float(tensors["logit_scale"].item()),
            model_name=config.get("model_name"),
        )

    # -- inference -----------------------------------------------------------------------------------

    def logits(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """`exp(logit_scale) · cos(image, class)`, shape `(batch_size, num_classes)`, float32."""
        if image_embeds.shape[-1] != self.embed_dim:
            raise ValueError(
                f"The image embeddings have dimension {image_embeds.shape[-1]} but the classifier's class embeddings "
                f"have {self.embed_dim}: it was built with another model."
            )
        image_embeds = F.normalize(image_embeds.float(), dim=-1)
        weights = self.weights.to(device=image_embeds.device, dtype=torch.float32)
        return math.exp(self.logit_scale) * image_embeds @ weights.t()

    def predict(self, image_embeds: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """The `top_k` most probable classes per image: `(probabilities, class indices)`, each `(batch, k)`, with
        `k = min(top_k, num_classes)`, most probable first."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        probabilities = self.logits(image_embeds).softmax(dim=-1)
        return probabilities.topk(min(top_k, self.num_classes), dim=-1)

    def classify(
        self,
        model: torch.nn.Module,
        processor,
        images: Sequence[str],
        top_k: int = 5,
        batch_size: int = 32,
        num_workers: int = 0,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """Classify image files or URLs, streamed in batches: one `{"image", "predictions": [{"label", "score"}]}`
        per image, in input order."""
        if not images:
            raise ValueError("No images to classify.")
        results = []
        loader = image_batches(images, _image_processor(processor), batch_size=batch_size, num_workers=num_workers)
        for pixel_values, indices in _progress(loader, progress, desc="Classifying", unit="batch"):
            scores, classes = self.predict(encode_pixel_values(model, pixel_values), top_k=top_k)
            for index, row_scores, row_classes in zip(indices.tolist(), scores.tolist(), classes.tolist()):
                predictions = [
                    {"label": self.class_names[c], "score": s} for s, c in zip(row_scores, row_classes, strict=True)
                ]
                results.append({"image": str(images[index]), "predictions": predictions})
        return results


# --------------------------------------------------------------------------------------------------
# Zero-shot evaluation on an ImageFolder tree
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageFolderData:
    """An ImageFolder tree resolved against a label set.

    `labels` is the classifier's label set (all classes of the class-name file, which may be more than the folders
    present); `folders[i]` is the i-th class folder and `folder_classes[i]` its index into `labels`; `samples` are
    `(path, folder index)` pairs.
    """

    root: Path
    labels: list[Label]
    folders: list[str]
    folder_classes: list[int]
    samples: list[tuple[str, int]]


def _class_folders(root: Path) -> list[str]:
    if not root.exists():
        raise FileNotFoundError(f"Data folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"--data must be a folder with one sub-folder per class, got the file {root}.")
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise ValueError(f"No class folders in {root}: expected one sub-folder of images per class.")
    return folders


def _resolve_folder_classes(
    folders: list[str], class_names: list[Label] | Mapping[str, Label] | None, source: str
) -> tuple[list[Label], list[int]]:
    if class_names is None:
        return list(folders), list(range(len(folders)))
    hint = "use a `folder<TAB>name` text file or a JSON object {folder: name} to name each folder explicitly"
    if isinstance(class_names, Mapping):
        missing = [folder for folder in folders if folder not in class_names]
        if missing:
            shown = ", ".join(repr(f) for f in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ValueError(f"Class folder(s) {shown} missing from the class-name file {source}.")
        keys = list(class_names)
        position = {key: i for i, key in enumerate(keys)}
        return [class_names[key] for key in keys], [position[folder] for folder in folders]
    names = list(class_names)
    first = {}
    for index, label in enumerate(names):
        for name in _synonyms(label):
            first.setdefault(name, index)
    if all(folder in first for folder in folders):  # folders are named after the classes
        return names, [first[folder] for folder in folders]
    if len(names) == len(folders):  # the ImageFolder convention: names in the order of the sorted folders
        return names, list(range(len(folders)))
    missing = next(folder for folder in folders if folder not in first)
    raise ValueError(
        f"Class folder {missing!r} is missing from the class-name file {source}: the file lists {len(names)} names "
        f"for {len(folders)} folders, so they cannot be matched by order either; {hint}."
    )


def _image_files(folder: Path) -> list[str]:
    files = []
    for directory, subdirectories, filenames in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        files.extend(
            os.path.join(directory, name)
            for name in sorted(filenames)
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        )
    return files


def find_image_folder(
    root: str | os.PathLike, class_names: list[Label] | Mapping[str, Label] | None = None, source: str = "given"
) -> ImageFolderData:
    """Scan an ImageFolder tree (`root/<class folder>/**/<image>`) and match its folders to `class_names`.

    Without `class_names` the folder names are the class names. A list of names matches folders by name when every
    folder is named after a class, else by position in sorted folder order (the ImageFolder convention, which needs
    as many names as folders); a `{folder: name}` mapping must name every folder.
    """
    root = Path(root)
    folders = _class_folders(root)
    labels, folder_classes = _resolve_folder_classes(folders, class_names, source)
    samples = [(path, i) for i, folder in enumerate(folders) for path in _image_files(root / folder)]
    if not samples:
        raise ValueError(f"No images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} in the class folders).")
    return ImageFolderData(root, labels, folders, folder_classes, samples)


def classification_report(
    top_classes: torch.Tensor, targets: torch.Tensor, class_keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy from the ranked predictions `top_classes` (`(num_images, k)`, best first) and the true classes
    `targets` (`(num_images,)`).

    Returns `top1`, `top5` (with `k < 5` ranked classes, hits within those), `mean_per_class` (mean of the
    per-class top-1 accuracies) and `per_class` (`{class key: top-1 accuracy}` over the classes that have images;
    keys are `class_keys[c]`, default `str(c)`), all fractions in [0, 1], and `num_images`.
    """
    if top_classes.dim() != 2 or top_classes.shape[0] != targets.shape[0] or targets.numel() == 0:
        raise ValueError("top_classes must be (num_images, k) and targets (num_images,), with num_images > 0.")
    hits = top_classes == targets.unsqueeze(1)
    top1 = hits[:, 0].double()
    top5 = hits[:, :5].any(dim=1).double()
    per_class = {}
    for c in sorted(set(targets.tolist())):
        key = class_keys[c] if class_keys is not None else str(c)
        per_class[key] = top1[targets == c].mean().item()
    return {
        "top1": top1.mean().item(),
        "top5": top5.mean().item(),
        "mean_per_class": sum(per_class.values()) / len(per_class),
        "per_class": per_class,
        "num_images": int(targets.numel()),
    }


def evaluate_zero_shot(
    model: torch.nn.Module,
    processor,
    data: ImageFolderData | str | os.PathLike,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    classifier: ZeroShotClassifier | None = None,
    batch_size: int = 64,
    text_batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Zero-shot accuracy of `model` on an ImageFolder tree (see [`find_image_folder`], [`classification_report`]).

    The classifier covers every class of the label set; `per_class` is keyed by folder name. Images are streamed
    in batches of `batch_size`; only the top-5 class indices of each image are kept.
    """
    if not isinstance(data, ImageFolderData):
        data = find_image_folder(data)
    if classifier is None:
        classifier = ZeroShotClassifier.from_model(
            model, processor, data.labels, templates, batch_size=text_batch_size, progress=progress
        )
    elif classifier.num_classes != len(data.labels):
        raise ValueError(
            f"The classifier has {classifier.num_classes} classes but the data's label set has {len(data.labels)}."
        )
    paths = [path for path, _ in data.samples]
    targets = [data.folder_classes[folder] for _, folder in data.samples]
    loader = image_batches(paths, _image_processor(processor), targets, batch_size=batch_size, num_workers=num_workers)
    ranked, truth = [], []
    for pixel_values, batch_targets in _progress(loader, progress, desc="Evaluating", unit="batch"):
        _, classes = classifier.predict(encode_pixel_values(model, pixel_values), top_k=5)
        ranked.append(classes.cpu())
        truth.append(batch_targets)
    class_keys = [None] * len(data.labels)
    for folder, c in zip(data.folders, data.folder_classes):
        class_keys[c] = folder
    report = classification_report(torch.cat(ranked), torch.cat(truth), class_keys)
    report["num_classes"] = len(data.labels)
    report["num_templates"] = len(classifier.templates)
    return report


# --------------------------------------------------------------------------------------------------
# Retrieval evaluation
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
    same image are merged, so an image has all its captions whether they come on one line or several."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Retrieval file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    images, captions, caption_image, index_of = [], [], [], {}
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
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
            image = image if _is_url(image) else str(root / image)
            if image not in index_of:
                index_of[image] = len(images)
                images.append(image)
            captions.extend(texts)
            caption_image.extend([index_of[image]] * len(texts))
    if not images:
        raise ValueError(f"The retrieval file {path} has no entries.")
    return RetrievalData(images, captions, caption_image)


def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    caption_image: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = RECALL_KS,
    chunk_size: int = 1024,
) -> dict[str, dict[str, float]]:
    """Recall@k of text→image and image→text retrieval by cosine similarity (the Karpathy-split protocol).

    Text→image: a caption is a hit when its image ranks in the top k of all images; averaged over captions.
    Image→text: an image is a hit when any of its captions ranks in the top k of all captions; averaged over
    images. A tie counts in the query's favour (rank = number of strictly better candidates). Similarities are
    computed `chunk_size` queries at a time.
    """
    caption_image = torch.as_tensor(caption_image, dtype=torch.long)
    images = F.normalize(image_embeds.float(), dim=-1)
    texts = F.normalize(text_embeds.float(), dim=-1).to(images.device)
    caption_image = caption_image.to(images.device)
    num_images, num_texts = images.shape[0], texts.shape[0]
    if caption_image.shape != (num_texts,):
        raise ValueError(f"caption_image must have one entry per caption ({num_texts}), got {caption_image.shape}.")
    if num_images == 0 or num_texts == 0:
        raise ValueError("Retrieval needs at least one image and one caption.")
    if bool((caption_image < 0).any()) or bool((caption_image >= num_images).any()):
        raise ValueError("caption_image holds an index outside the images.")
    if bool((torch.bincount(caption_image, minlength=num_images) == 0).any()):
        raise ValueError("Every image needs at least one caption.")

    text_ranks = torch.empty(num_texts, dtype=torch.long, device=images.device)
    for start in range(0, num_texts, chunk_size):
        similarity = texts[start : start + chunk_size] @ images.t()
        target = similarity.gather(1, caption_image[start : start + chunk_size, None])
        text_ranks[start : start + chunk_size] = (similarity > target).sum(dim=1)

    image_ranks = torch.empty(num_images, dtype=torch.long, device=images.device)
    for start in range(0, num_images, chunk_size):
        similarity = images[start : start + chunk_size] @ texts.t()
        rows = torch.arange(start, min(start + chunk_size, num_images), device=images.device)
        own = caption_image.unsqueeze(0) == rows.unsqueeze(1)
        best_own = similarity.masked_fill(~own, float("-inf")).amax(dim=1, keepdim=True)
        image_ranks[start : start + chunk_size] = (similarity > best_own).sum(dim=1)

    return {
        "text_to_image": {f"R@{k}": (text_ranks < k).double().mean().item() for k in ks},
        "image_to_text": {f"R@{k}": (image_ranks < k).double().mean().item() for k in ks},
    }


def evaluate_retrieval(
    model: torch.nn.Module,
    processor,
    data: RetrievalData | str | os.PathLike,
    ks: Sequence[int] = RECALL_KS,
    batch_size: int = 64,
    text_batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Text→image and image→text Recall@k of `model` on a retrieval set (see [`read_retrieval_jsonl`],
    [`retrieval_recall`]). Images are streamed; only their embeddings are kept."""
    if not isinstance(data, RetrievalData):
        data = read_retrieval_jsonl(data)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"Recall cut-offs must be positive integers, got {list(ks)}.")
    text_embeds = encode_texts(
        model,
        _tokenizer(processor),
        data.captions,
        batch_size=text_batch_size,
        progress=progress,
        description="captions",
    )
    loader = image_batches(data.images, _image_processor(processor), batch_size=batch_size, num_workers=num_workers)
    image_embeds = [
        encode_pixel_values(model, pixel_values).cpu()
        for pixel_values, _ in _progress(loader, progress, desc="Encoding images", unit="batch")
    ]
    report = retrieval_recall(torch.cat(image_embeds), text_embeds, data.caption_image, ks)
    report["num_images"] = len(data.images)
    report["num_captions"] = len(data.captions)
    return report


# --------------------------------------------------------------------------------------------------
# Loading a model
# --------------------------------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    """Whether `name` can only be a local path: Hub ids are `name` or `namespace/name`."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name[1:2] == ":"


def resolve_device(device: str | None) -> torch.device:
    """`None`/`"auto"`: CUDA when available, else the CPU; anything else as `torch.device` reads it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"Unknown device {device!r}: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for but CUDA is not available here.")
    return resolved


def load_model_and_processor(
    model_name_or_path: str, device: str | torch.device | None = None, dtype: str | torch.dtype = "float32"
):
    """Load a converted model folder or a Hub id with `AutoModel`/`AutoProcessor` (`trust_remote_code=True`), in
    evaluation mode on `device` in `dtype`. An unknown model raises an error that names it."""
    from transformers import AutoModel, AutoProcessor

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
        dtype = DTYPES[dtype]
    device = device if isinstance(device, torch.device) else resolve_device(device)
    name = str(model_name_or_path)
    source = resolve_pretrained(name)  # the authors' training-format checkpoints: a converted folder, cached
    local = Path(source).expanduser()
    if local.exists():
        source = str(local)
    elif _looks_like_path(name):
        raise FileNotFoundError(f"Model folder not found: {name}")
    try:
        model = AutoModel.from_pretrained(source, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    except (OSError, ValueError) as error:
        where = "the folder" if source != name else "there is no such local folder, and the Hugging Face Hub"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(
            f"Cannot load model {name!r}: {where} did not provide a model and processor ({reason}). --model takes "
            "a folder written by save_pretrained (a converted DiffCLIP model) or the Hub id of one, one of the "
            f"authors' checkpoints ({', '.join(ORIGINAL_REPOS)}) or a local original checkpoint_best.pt."
        ) from error
    for method in ("get_text_features", "get_image_features"):
        if not hasattr(model, method):
            raise ValueError(f"Model {name!r} ({type(model).__name__}) is not a dual encoder: it has no {method}.")
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ValueError(f"The processor of {name!r} lacks a tokenizer or an image processor.")
    model = model.to(device=device, dtype=dtype).eval()
    return model, processor


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_runtime_arguments(parser: argparse.ArgumentParser, default_batch_size: int) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_ID,
        help="a converted DiffCLIP folder or Hub id, one of the authors' checkpoints (converted on first use, "
        f"cached) or a local original checkpoint_best.pt (default: {DEFAULT_MODEL_ID})",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default: float32)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=default_batch_size, help="images per batch (memory bound)"
    )
    parser.add_argument("--text-batch-size", type=_positive_int, default=256, help="texts per batch (default: 256)")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="DataLoader worker processes reading images (default: 0)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _add_template_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--templates", metavar="FILE", help="prompt templates with '{}': text file (one per line) or JSON (see --key)"
    )
    parser.add_argument(
        "--template",
        action="append",
        metavar="TEXT",
        help=f"a prompt template, repeatable (default: {DEFAULT_TEMPLATE!r})",
    )
    parser.add_argument(
        "--key",
        help="the entry to use in JSON label/template files that hold several (e.g. imagenet); text files ignore it",
    )


def _load_model(args: argparse.Namespace):
    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return load_model_and_processor(args.model, args.device, args.dtype)


def _templates_from_args(args: argparse.Namespace) -> list[str]:
    if args.classifier and (args.templates or args.template):
        raise ValueError(
            "--templates/--template do not combine with --classifier: it keeps the templates it was built with."
        )
    templates = []
    if args.templates:
        templates.extend(load_templates(args.templates, args.key))
    if args.template:
        templates.extend(check_templates(args.template))
    return templates or [DEFAULT_TEMPLATE]


def _load_or_build_classifier(args, model, processor, labels, templates) -> ZeroShotClassifier:
    if args.classifier:
        return ZeroShotClassifier.from_pretrained(args.classifier)
    return ZeroShotClassifier.from_model(
        model,
        processor,
        labels,
        templates,
        batch_size=args.text_batch_size,
        progress=not args.no_progress,
        model_name=args.model,
    )


def _run_zero_shot(args: argparse.Namespace) -> int:
    if args.labels is not None:
        labels = parse_label_list(args.labels)
    elif args.labels_file is not None:
        labels = load_class_names(args.labels_file, args.key)
        if isinstance(labels, dict):
            labels = list(labels.values())
    else:
        labels = None
    templates = _templates_from_args(args)  # validates the template options before the model loads
    if not args.images and not args.save_classifier:
        raise ValueError("No images given (and no --save-classifier): nothing to do.")
    check_image_sources(args.images)
    model, processor = _load_model(args)
    classifier = _load_or_build_classifier(args, model, processor, labels, templates)
    if args.save_classifier:
        classifier.save_pretrained(args.save_classifier)
        print(f"Saved the classifier ({classifier.num_classes} classes) to {args.save_classifier}", file=sys.stderr)
    if not args.images:
        return 0
    results = classifier.classify(
        model,
        processor,
        args.images,
        top_k=args.top_k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for result in results:
            print(result["image"])
            for prediction in result["predictions"]:
                print(f"  {prediction['score']:.4f}  {prediction['label']}")
    return 0


def _run_eval_zero_shot(args: argparse.Namespace) -> int:
    class_names = load_class_names(args.classnames, args.key) if args.classnames else None
    templates = _templates_from_args(args)
    saved = ZeroShotClassifier.from_pretrained(args.classifier) if args.classifier else None
    if saved is not None and class_names is None:
        class_names = saved.labels
    data = find_image_folder(args.data, class_names, source=args.classnames or args.classifier or "")
    model, processor = _load_model(args)
    classifier = saved or _load_or_build_classifier(args, model, processor, data.labels, templates)
    report = evaluate_zero_shot(
        model,
        processor,
        data,
        classifier=classifier,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    report = {"model": args.model, "data": str(args.data), **report}
    if args.output:
        write_json(args.output, report)
    print(
        f"zero-shot on {report['num_images']} images, {report['num_classes']} classes, "
        f"{report['num_templates']} template(s): top-1 {100 * report['top1']:.2f}%  top-5 {100 * report['top5']:.2f}%"
        f"  mean per-class {100 * report['mean_per_class']:.2f}%"
    )
    return 0


def _run_eval_retrieval(args: argparse.Namespace) -> int:
    data = read_retrieval_jsonl(args.data, args.image_root)
    check_image_sources(data.images)
    model, processor = _load_model(args)
    report = evaluate_retrieval(
        model,
        processor,
        data,
        batch_size=args.batch_size,
        text_batch_size=args.text_batch_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    report = {"model": args.model, "data": str(args.data), **report}
    if args.output:
        write_json(args.output, report)
    print(f"retrieval on {report['num_images']} images, {report['num_captions']} captions")
    for direction in ("text_to_image", "image_to_text"):
        recalls = "  ".join(f"{k} {100 * v:.2f}%" for k, v in report[direction].items())
        print(f"  {direction.replace('_', ' ')}: {recalls}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `diffclip zero-shot` and `diffclip eval {zero-shot,retrieval}`."""
    parser = subparsers.add_parser(
        "zero-shot",
        help="classify images against labels given on the command line",
        description="Rank the given labels for each image (paths or URLs) with a DiffCLIP model. The class "
        "embeddings are computed once for all images.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image paths or http(s) URLs")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='comma-separated labels, e.g. "cat,dog,a red car"')
    labels.add_argument("--labels-file", metavar="FILE", help="labels: text file (one per line) or JSON (see --key)")
    labels.add_argument("--classifier", metavar="DIR", help="a classifier saved with --save-classifier")
    _add_template_arguments(parser)
    parser.add_argument("--top-k", type=_positive_int, default=5, help="labels shown per image (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--save-classifier", metavar="DIR", help="save the class embeddings for reuse")
    _add_runtime_arguments(parser, default_batch_size=32)
    parser.set_defaults(func=_run_zero_shot)

    evaluation = subparsers.add_parser("eval", help="zero-shot accuracy and retrieval recall on a dataset")
    tasks = evaluation.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True

    zero_shot = tasks.add_parser(
        "zero-shot",
        help="top-1/top-5 accuracy on an ImageFolder tree",
        description="Zero-shot accuracy on an ImageFolder tree (one sub-folder of images per class).",
    )
    zero_shot.add_argument("--data", required=True, metavar="DIR", help="ImageFolder tree, one folder per class")
    zero_shot.add_argument(
        "--classnames",
        metavar="FILE",
        help="class names: text (one per line, or folder<TAB>name) or JSON (list, {folder: name}, or keyed; see "
        "--key); default: the folder names",
    )
    zero_shot.add_argument(
        "--classifier", metavar="DIR", help="a saved classifier instead of --classnames/--templates"
    )
    _add_template_arguments(zero_shot)
    zero_shot.add_argument("--output", metavar="FILE", help="write the JSON report here")
    _add_runtime_arguments(zero_shot, default_batch_size=64)
    zero_shot.set_defaults(func=_run_eval_zero_shot)

    retrieval = tasks.add_parser(
        "retrieval",
        help="text-to-image and image-to-text Recall@1/5/10 on a JSON Lines file",
        description="Retrieval recall on JSON Lines of {'image': PATH, 'captions': [...]} (or 'caption': TEXT).",
    )
    retrieval.add_argument("--data", required=True, metavar="FILE", help="JSON Lines file of images and captions")
    retrieval.add_argument(
        "--image-root", metavar="DIR", help="folder that relative image paths start from (default: the file's folder)"
    )
    retrieval.add_argument("--output", metavar="FILE", help="write the JSON report here")
    _add_runtime_arguments(retrieval, default_batch_size=64)
    retrieval.set_defaults(func=_run_eval_retrieval)


__all__ = [
    "DEFAULT_TEMPLATE",
    "ImageDataset",
    "ImageFolderData",
    "RetrievalData",
    "ZeroShotClassifier",
    "check_templates",
    "classification_report",
    "encode_pixel_values",
    "encode_texts",
    "evaluate_retrieval",
    "evaluate_zero_shot",
    "fill_template",
    "find_image_folder",
    "image_batches",
    "load_class_names",
    "load_image",
    "load_model_and_processor",
    "load_templates",
    "parse_label_list",
    "read_retrieval_jsonl",
    "register_cli",
    "retrieval_recall",
    "write_json",
]
