# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""[`ZeroShotClassifier`]: class embeddings built once from class names × prompt templates, saved with their class
names, matched to a data set's classes by name, and applied to any number of images."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..core.files import atomic_directory, json_text
from ..core.loading import image_processor_of, tokenizer_of
from ..core.text_files import Label, check_label, check_templates
from .data import image_loader
from .encoding import encode_pixel_values, encode_texts, logit_scale_of, progress_bar
from .labels import (
    DEFAULT_TEMPLATE,
    display_name,
    fill_template,
    label_key,
    synonyms,
)
from .metrics import check_finite


CLASSIFIER_WEIGHTS_NAME = "classifier.safetensors"
CLASSIFIER_CONFIG_NAME = "classifier.json"
CLASSIFIER_FILES = (CLASSIFIER_WEIGHTS_NAME, CLASSIFIER_CONFIG_NAME)
# The cosine between the probe embedding a classifier recorded and the one the model in use gives, below which the
# classifier is taken to come from another model (the same model in another dtype stays far above it).
PROBE_AGREEMENT = 0.99
# exp(logit_scale) must stay finite in float32
MAX_LOGIT_SCALE = 80.0


def check_logit_scale(logit_scale: float) -> float:
    """The stored (log) logit scale as a float; a `ValueError` when exp of it is not a finite float32."""
    logit_scale = float(logit_scale)
    if not math.isfinite(logit_scale) or logit_scale > MAX_LOGIT_SCALE:
        raise ValueError(
            f"The logit scale is {logit_scale} (stored as a log): exp of it is not a finite number, so every "
            "score would be NaN or infinite. The model or classifier is broken."
        )
    return logit_scale


_TORN_READ_ATTEMPTS = 20


def _parse_files(config_bytes: bytes, weights_bytes: bytes) -> tuple[dict, dict, dict]:
    """`(config, tensors, metadata)` of a classifier's two files, read as bytes."""
    from safetensors.torch import load

    header_length = int.from_bytes(weights_bytes[:8], "little")
    header = json.loads(weights_bytes[8 : 8 + header_length].decode("utf-8"))
    return json.loads(config_bytes.decode("utf-8")), load(weights_bytes), header.get("__metadata__") or {}


def _labels_record(labels: Sequence[Label]) -> str:
    """The labels as the weights file records them (JSON text: safetensors metadata holds strings)."""
    return json.dumps(list(labels), ensure_ascii=False, sort_keys=True)


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
        probe (`torch.Tensor` of shape `(embed_dim,)`, *optional*): the unit-norm text embedding of [`probe_text`]
            by the model the classifier was built with; [`check_model`] compares it with the model in use.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        labels: Sequence[Label],
        templates: Sequence[str],
        logit_scale: float,
        model_name: str | None = None,
        probe: torch.Tensor | None = None,
    ):
        if weights.dim() != 2 or weights.shape[0] != len(labels):
            raise ValueError(
                f"weights must have shape (num_classes={len(labels)}, embed_dim), got {tuple(weights.shape)}."
            )
        check_finite(weights, "class")
        logit_scale = check_logit_scale(logit_scale)
        self.weights = weights
        self.labels = [check_label(label, "labels") for label in labels]
        self.templates = list(templates)
        self.logit_scale = logit_scale
        self.model_name = model_name
        self.probe = probe

    @property
    def class_names(self) -> list[str]:
        """One display name per class (the first synonym)."""
        return [display_name(label) for label in self.labels]

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
        """Encode every class name × template with `model`'s text tower (`tokenizer` may be a processor).

        Each distinct prompt is encoded once, so classes with the same name get bit-identical embeddings (and tie
        exactly, instead of being told apart by the rounding of their rows in a batch)."""
        if isinstance(labels, str) or not labels:
            raise ValueError("The label list is empty." if not labels else "labels must be a list, not a string.")
        labels = [check_label(label, f"label {i}") for i, label in enumerate(labels)]
        templates = check_templates(templates)
        texts, owners = [], []
        for index, label in enumerate(labels):
            for name in synonyms(label):
                for template in templates:
                    texts.append(fill_template(template, name))
                    owners.append(index)
        unique = dict.fromkeys(texts)
        row = {text: index for index, text in enumerate(unique)}
        prompts = encode_texts(
            model,
            tokenizer_of(tokenizer),
            list(unique),
            batch_size=batch_size,
            progress=progress,
            description="class prompts",
        )
        check_finite(prompts, "prompt text")
        prompts = prompts[torch.tensor([row[text] for text in texts])]
        owners = torch.tensor(owners)
        sums = torch.zeros(len(labels), prompts.shape[1], dtype=torch.float32).index_add_(0, owners, prompts)
        counts = torch.bincount(owners, minlength=len(labels)).unsqueeze(1).float()
        weights = F.normalize(sums / counts, dim=-1)
        probe = F.normalize(prompts[0].float(), dim=-1)  # the first prompt is probe_text
        return cls(weights, labels, templates, logit_scale_of(model), model_name=model_name, probe=probe)

    @property
    def probe_text(self) -> str:
        """The text whose embedding identifies the model a classifier was built with: its first prompt."""
        return fill_template(self.templates[0], synonyms(self.labels[0])[0])

    def check_model(self, model: torch.nn.Module, tokenizer, source: str = "the classifier") -> None:
        """Refuse a `model` other than the one the classifier was built with: it encodes [`probe_text`] and its
        embedding must agree with the recorded one (cosine >= 0.99). A classifier saved before probes were
        recorded is checked by its embedding dimension alone."""
        if self.probe is None:
            return
        embedding = encode_texts(model, tokenizer_of(tokenizer), [self.probe_text], batch_size=1, progress=False)[0]
        if embedding.shape[-1] != self.embed_dim:
            raise ValueError(
                f"{source} has class embeddings of dimension {self.embed_dim} but the model's are "
                f"{embedding.shape[-1]}: it was built with another model."
            )
        cosine = float(F.normalize(embedding.float(), dim=-1) @ self.probe.float())
        if not cosine >= PROBE_AGREEMENT:
            raise ValueError(
                f"{source} was built with another model ({self.model_name or 'unnamed'}): the model in use encodes "
                f"its prompt {self.probe_text!r} differently (cosine {cosine:.3f}, at least {PROBE_AGREEMENT} "
                "expected). Build the classifier again with this model."
            )

    # -- persistence ---------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write `classifier.safetensors` (weights, logit scale, probe) and `classifier.json` (labels, templates)
        into `save_directory`, as one folder that appears whole or not at all (written beside it and swapped into
        place): a reader, a kill or a concurrent save never leaves the files of two saves together. An existing
        classifier there is replaced only with `overwrite`; a folder that holds anything else is never replaced."""
        from safetensors.torch import save

        directory = self.check_save_target(save_directory, overwrite)
        tensors = {
            "weights": self.weights.detach().float().cpu().contiguous(),
            "logit_scale": torch.tensor([self.logit_scale], dtype=torch.float32),
        }
        if self.probe is not None:
            tensors["probe"] = self.probe.detach().float().cpu().contiguous()
        config = {
            "num_classes": self.num_classes,
            "embed_dim": self.embed_dim,
            "labels": self.labels,
            "templates": self.templates,
            "model_name": self.model_name,
        }
        config_bytes = (json_text(config) + "\n").encode("utf-8")
        # the weights record the labels and the exact config file they were saved with, so that a reader never takes
        # the two files of two saves for one classifier
        metadata = {
            "format": "pt",
            "labels": _labels_record(self.labels),
            "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
        }

        def write(folder: Path) -> None:
            (folder / CLASSIFIER_WEIGHTS_NAME).write_bytes(save(tensors, metadata=metadata))
            (folder / CLASSIFIER_CONFIG_NAME).write_bytes(config_bytes)

        return atomic_directory(directory, write)

    @staticmethod
    def check_save_target(save_directory: str | os.PathLike, overwrite: bool = True) -> Path:
        """Refuse a save into `save_directory` that would replace something: a file, a folder with other files, or a
        classifier saved before unless `overwrite`."""
        directory = Path(save_directory)
        if directory.exists() or directory.is_symlink():
            if not directory.is_dir():
                raise ValueError(f"Cannot save the classifier: {directory} exists and is not a folder.")
            others = sorted(entry.name for entry in directory.iterdir() if entry.name not in CLASSIFIER_FILES)
            if others:
                shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                raise ValueError(
                    f"Cannot save the classifier into {directory}: the folder holds other files ({shown}); give a new "
                    "or empty folder."
                )
            if any((directory / name).exists() for name in CLASSIFIER_FILES) and not overwrite:
                raise ValueError(
                    f"Cannot save the classifier: {directory} already holds one; pass --overwrite to replace it."
                )
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> ZeroShotClassifier:
        """Load a classifier written by [`save_pretrained`]. Both files are read whole and checked to come from one
        save; a read that meets a concurrent save half-way (the folder swapped between the two reads) reads again."""
        directory = Path(directory)
        config_path, weights_path = directory / CLASSIFIER_CONFIG_NAME, directory / CLASSIFIER_WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved zero-shot classifier (expected {CLASSIFIER_CONFIG_NAME} and "
                f"{CLASSIFIER_WEIGHTS_NAME})."
            )
        for attempt in range(_TORN_READ_ATTEMPTS):
            try:
                config_bytes, weights_bytes = config_path.read_bytes(), weights_path.read_bytes()
                config, tensors, metadata = _parse_files(config_bytes, weights_bytes)
            except FileNotFoundError:  # the folder was swapped between the two reads: read the new one
                if attempt + 1 < _TORN_READ_ATTEMPTS:
                    time.sleep(0.05)
                    continue
                raise
            except Exception as error:  # JSON errors, OSError, safetensors' own error types
                raise ValueError(f"Cannot read the classifier in {directory}: {error}") from error
            recorded_config = metadata.get("config_sha256")
            torn = recorded_config is not None and recorded_config != hashlib.sha256(config_bytes).hexdigest()
            if not torn or attempt + 1 == _TORN_READ_ATTEMPTS:
                break
            time.sleep(0.05)
        recorded = metadata.get("labels")
        if recorded is not None and "labels" in config and recorded != _labels_record(config["labels"]):
            raise ValueError(
                f"{directory}: {CLASSIFIER_WEIGHTS_NAME} was made for other labels than {CLASSIFIER_CONFIG_NAME} "
                "lists (the two files come from different saves, e.g. an interrupted re-save); save it again."
            )
        weights = tensors.get("weights")
        if weights is None or "logit_scale" not in tensors or "labels" not in config:
            raise ValueError(f"{directory} holds an incomplete classifier.")
        if tuple(weights.shape) != (config.get("num_classes"), config.get("embed_dim")):
            raise ValueError(
                f"{directory}: {CLASSIFIER_WEIGHTS_NAME} holds weights of shape {tuple(weights.shape)} but "
                f"{CLASSIFIER_CONFIG_NAME} describes {config.get('num_classes')} classes of dimension "
                f"{config.get('embed_dim')}; the two files do not belong together."
            )
        if torn:  # checked last, so that the more specific messages above come first
            raise ValueError(
                f"{directory}: {CLASSIFIER_WEIGHTS_NAME} and {CLASSIFIER_CONFIG_NAME} come from different saves; "
                "save it again."
            )
        return cls(
            weights,
            config["labels"],
            config.get("templates", []),
            float(tensors["logit_scale"].item()),
            model_name=config.get("model_name"),
            probe=tensors.get("probe"),
        )

    # -- inference -----------------------------------------------------------------------------------

    def class_order(self, labels: Sequence[Label], source: str = "the data") -> list[int]:
        """For each class of `labels`, the index of the classifier's class with the same name (synonyms included):
        the identity when the lists are equal, a permutation when they hold the same classes in another order.

        Raises a `ValueError` that lists the differences when the classes are not the same, or when the order
        cannot be resolved by name (a name listed more than once, in another order).
        """
        wanted = [label_key(check_label(label, source)) for label in labels]
        have = [label_key(label) for label in self.labels]
        if wanted == have:
            return list(range(len(have)))
        missing = [_name(key) for key in dict.fromkeys(wanted) if key not in have]
        extra = [_name(key) for key in dict.fromkeys(have) if key not in wanted]
        problems = []
        if missing:
            problems.append(f"{len(missing)} class(es) of {source} missing from the classifier: {_listed(missing)}")
        if extra:
            problems.append(f"{len(extra)} class(es) of the classifier not in {source}: {_listed(extra)}")
        if not problems and (len(set(wanted)) != len(wanted) or len(set(have)) != len(have)):
            repeated = sorted({_name(key) for key in wanted + have if (wanted + have).count(key) > 2})
            problems.append(
                f"the classes come in another order and the name(s) {_listed(repeated)} occur more than once, so "
                "the order cannot be resolved by name"
            )
        if not problems and len(wanted) != len(have):
            problems.append(f"{source} has {len(wanted)} classes, the classifier {len(have)}")
        if problems:
            raise ValueError(f"The classifier does not match the classes of {source}: " + "; ".join(problems) + ".")
        position = {key: index for index, key in enumerate(have)}
        return [position[key] for key in wanted]

    def logits(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """`exp(logit_scale) · cos(image, class)`, shape `(batch_size, num_classes)`, float32. Non-finite image
        embeddings are an error that says how many there are."""
        if image_embeds.shape[-1] != self.embed_dim:
            raise ValueError(
                f"The image embeddings have dimension {image_embeds.shape[-1]} but the classifier's class embeddings "
                f"have {self.embed_dim}: it was built with another model."
            )
        check_finite(image_embeds, "image")
        image_embeds = F.normalize(image_embeds.float(), dim=-1)
        weights = self.weights.to(device=image_embeds.device, dtype=torch.float32)
        return math.exp(self.logit_scale) * image_embeds @ weights.t()

    def predict(self, image_embeds: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """The `top_k` most probable classes per image: `(probabilities, class indices)`, each `(batch, k)`, with
        `k = min(top_k, num_classes)`, ranked by their logits, most probable first; classes with equal logits
        (e.g. two classes with one name) come in class-list order."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        logits = self.logits(image_embeds)
        order = logits.sort(dim=-1, descending=True, stable=True).indices[:, : min(top_k, self.num_classes)]
        return logits.softmax(dim=-1).gather(1, order), order

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
        loader = image_loader(images, image_processor_of(processor), batch_size=batch_size, num_workers=num_workers)
        for pixel_values, indices in progress_bar(loader, progress, desc="Classifying", unit="batch"):
            scores, classes = self.predict(encode_pixel_values(model, pixel_values), top_k=top_k)
            bad = int((~torch.isfinite(scores)).sum())
            if bad:
                raise ValueError(f"{bad} non-finite score(s) (NaN or infinity): refusing to report them.")
            for index, row_scores, row_classes in zip(indices.tolist(), scores.tolist(), classes.tolist()):
                predictions = [
                    {"label": self.class_names[c], "score": s} for s, c in zip(row_scores, row_classes, strict=True)
                ]
                results.append({"image": str(images[index]), "predictions": predictions})
        return results


def _name(key: str | tuple[str, ...]) -> str:
    return key if isinstance(key, str) else "/".join(key)


def _listed(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


__all__ = [
    "CLASSIFIER_CONFIG_NAME",
    "CLASSIFIER_FILES",
    "CLASSIFIER_WEIGHTS_NAME",
    "ZeroShotClassifier",
    "check_logit_scale",
]
