# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Image features computed once per model, dataset and split, cached on disk and reused by every evaluation.

**Features.** Two kinds from one forward pass of the image tower: `pre_projection` (the pooled output of the vision
transformer, before the projection: the `model.visual` feature of the SLIP/SynthCLIP code the released models come
from, the linear probe's and few-shot's default) and `projected` (after `visual_projection`: the embedding zero-shot,
retrieval and MMVP compare with texts). Both are float32 and not normalised.

**Cache.** `<cache_dir>/<model>/<dataset>/<split>.safetensors` holds `pre_projection`, `projected` and, for class
labels, `labels`; other targets (captions, statements) go beside it in `<split>.targets.json`. Its manifest (in the
file's metadata and in `<split>.manifest.json`) names the model, revision, resolved commit, a checksum of the
weights, dtype, the image transform (the image processor's settings), the dataset, split and a fingerprint of its
files (names, sizes and content digests: evaluation.datasets), and the finished file's `num_samples`. A cache whose
manifest differs in any of these is refused with the differences listed, never reused; a cache read whose content
does not hold together (unreadable, row counts, label range: [`check_features`]) is refused naming the file.

**Resuming.** While encoding, every `checkpoint_every` images are written to `<split>.part-NNNNN.safetensors` (each
with the manifest); a run that is interrupted and started again keeps the parts that match and encodes only the
rest. The finished file is written atomically and the parts removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from ..core.distributed import rank_world
from ..core.embed_to_disk import ChunkedRows, finish_on_rank_zero, rank_share
from ..core.files import atomic_write_bytes, write_json
from ..core.loading import image_processor_of, model_device_dtype
from .cache_files import FEATURE_KINDS, check_features, read_safetensors
from .encoding import embedding_tensor, progress_bar
from .metrics import non_finite_error
from .split_batches import image_batches
from .splits import Split
from .wds_splits import count_webdataset_samples


CACHE_FORMAT = 1
DEFAULT_CHECKPOINT_EVERY = 4096
MANIFEST_FIELDS = (
    "model",
    "revision",
    "commit_hash",
    "weights_checksum",
    "dtype",
    "transform",
    "dataset",
    "split",
    "fingerprint",
    "backend",
)


def default_cache_dir() -> Path:
    """`$DIFFCLIP_FEATURE_CACHE`, else `~/.cache/diffclip/features`."""
    return Path(os.environ.get("DIFFCLIP_FEATURE_CACHE", Path.home() / ".cache" / "diffclip" / "features"))


@torch.inference_mode()
def image_features(model: torch.nn.Module, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both feature kinds of one preprocessed batch, float32 on the CPU, from one pass of the image tower (models
    without `vision_model` + `visual_projection`, e.g. SigLIP, give their image embedding for both)."""
    device, dtype = model_device_dtype(model)
    pixel_values = pixel_values.to(device=device, dtype=dtype)
    vision, projection = getattr(model, "vision_model", None), getattr(model, "visual_projection", None)
    if hasattr(model, "run_vision"):  # the ONNX backend (export/): its vision graph gives both
        projected, pooled = (torch.from_numpy(array) for array in model.run_vision(pixel_values))
    elif vision is not None and isinstance(projection, torch.nn.Module):
        pooled = vision(pixel_values=pixel_values).pooler_output
        projected = projection(pooled)
    else:
        pooled = projected = embedding_tensor(model.get_image_features(pixel_values=pixel_values))
    return {"pre_projection": pooled.float().cpu(), "projected": projected.float().cpu()}


def weights_checksum(model: torch.nn.Module) -> str:
    """A checksum of a strided sample (64 values) of every parameter: tells two sets of weights apart cheaply."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        flat = parameter.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 64)].float().cpu().contiguous()
        digest.update(name.encode() + sample.numpy().tobytes())
    return digest.hexdigest()[:24]


def _transform_settings(processor) -> dict[str, Any]:
    image_processor = image_processor_of(processor)
    settings = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {"repr": repr(image_processor)}
    settings = {k: v for k, v in settings.items() if not k.startswith("_") and k != "processor_class"}
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def feature_manifest(model, processor, model_name: str, revision: str | None, split: Split) -> dict[str, Any]:
    """What the features depend on (see the module docstring)."""
    _, dtype = model_device_dtype(model)
    return {
        "format": CACHE_FORMAT,
        "model": str(model_name),
        "revision": revision,
        "commit_hash": getattr(model.config, "_commit_hash", None),
        "weights_checksum": weights_checksum(model),
        "dtype": str(dtype).removeprefix("torch."),
        "transform": _transform_settings(processor),
        "dataset": split.dataset,
        "split": split.split,
        "fingerprint": split.fingerprint,
        # the ONNX backend's {"backend", "precision", "graph_sha256"}; absent (as in older caches) for torch
        "backend": getattr(model, "backend", None),
    }


def manifest_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """The safetensors metadata that names what a features file holds (read back by [`FeatureCache`])."""
    return {"manifest": json.dumps(manifest, sort_keys=True, allow_nan=False)}


def _slug(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"
    return f"{cleaned[-60:]}-{hashlib.sha256(str(text).encode()).hexdigest()[:8]}"


def _differences(have: dict, want: dict) -> list[str]:
    return [name for name in MANIFEST_FIELDS if have.get(name) != want.get(name)]


@dataclass
class Features:
    """The features of one split: `pre_projection`, `projected` (`(n, dim)` float32), `targets` (a `LongTensor` of
    class indices, or a list of captions / statements / row indices), the `manifest`, and whether they came from
    the cache (`cached`)."""

    pre_projection: torch.Tensor
    projected: torch.Tensor
    targets: Any
    manifest: dict[str, Any]
    cached: bool = False

    def kind(self, name: str) -> torch.Tensor:
        if name not in FEATURE_KINDS:
            raise ValueError(f"Unknown feature kind {name!r}; use one of {', '.join(FEATURE_KINDS)}.")
        return getattr(self, name)

    @property
    def labels(self) -> torch.Tensor:
        if not isinstance(self.targets, torch.Tensor):
            raise ValueError(f"{self.manifest['dataset']} has no class labels (a {type(self.targets).__name__}).")
        return self.targets


class FeatureCache:
    """Features on disk under `root` (see the module docstring); `root=None` keeps nothing."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None

    def folder(self, manifest: dict) -> Path:
        return self.root / _slug(manifest["model"]) / _slug(manifest["dataset"])

    def _path(self, manifest: dict, suffix: str) -> Path:
        return self.folder(manifest) / f"{manifest['split']}{suffix}"

    def _check(self, path: Path, found: dict, manifest: dict) -> None:
        differences = _differences(found, manifest)
        if differences:
            details = "; ".join(
                f"{name}: cached {found.get(name)!r} != now {manifest.get(name)!r}"
                for name in differences
                if name != "transform"
            ) + ("; transform: the image processor's settings differ" if "transform" in differences else "")
            raise ValueError(
                f"The feature cache {path} was computed for another {', '.join(differences)} ({details}); it is not "
                "reused. Delete it or use another cache folder."
            )

    def load(self, manifest: dict, split: Split | None = None) -> Features | None:
        """The cached features of `manifest`, or `None`; a file of another model, transform or data is refused,
        and so is one whose content does not hold together (see [`check_features`])."""
        if self.root is None:
            return None
        path = self._path(manifest, ".safetensors")
        if not path.is_file():
            return None
        found, tensors = read_safetensors(path)
        self._check(path, found, manifest)
        targets = tensors.get("labels")
        if targets is None:
            targets_path = self._path(manifest, ".targets.json")
            try:
                targets = json.loads(targets_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise ValueError(f"The feature cache {targets_path} cannot be read ({error}); delete it.") from error
        check_features(path, tensors, targets, found.get("num_samples"), split)
        return Features(tensors["pre_projection"], tensors["projected"], targets, found, cached=True)

    def save(self, features: Features) -> Path | None:
        if self.root is None:
            return None
        manifest = features.manifest
        tensors = {
            "pre_projection": features.pre_projection.contiguous(),
            "projected": features.projected.contiguous(),
        }
        if isinstance(features.targets, torch.Tensor):
            tensors["labels"] = features.targets.contiguous()
        else:
            write_json(self._path(manifest, ".targets.json"), features.targets)
        manifest = {**manifest, "num_samples": len(features.projected)}  # the rows a reader must find
        write_json(self._path(manifest, ".manifest.json"), manifest)
        path = atomic_write_bytes(self._path(manifest, ".safetensors"), save(tensors, manifest_metadata(manifest)))
        for part in self.folder(manifest).glob(f"{manifest['split']}*.part-*.safetensors"):
            part.unlink(missing_ok=True)
        return path

    # ---- resumable parts ----

    def parts(self, manifest: dict, tag: str = "") -> list[Path]:
        if self.root is None:
            return []
        folder = self.folder(manifest)
        if not folder.is_dir():
            return []
        return sorted(folder.glob(f"{manifest['split']}{tag}.part-*.safetensors"))

    def load_parts(self, manifest: dict, tag: str = "") -> tuple[list[dict[str, torch.Tensor]], list]:
        """The parts of an interrupted run (refused if from another model, transform or dataset)."""
        chunks, targets = [], []
        for path in self.parts(manifest, tag):
            metadata, tensors = read_safetensors(path, whole_metadata=True)
            self._check(path, json.loads(metadata.get("manifest", "{}")), manifest)
            try:
                part_targets = json.loads(metadata["targets"])
            except (KeyError, json.JSONDecodeError) as error:
                raise ValueError(f"The feature cache part {path} has no readable targets; delete it.") from error
            check_features(path, tensors, part_targets, None, None)
            chunks.append(tensors)
            targets.extend(part_targets)
        return chunks, targets

    def save_part(
        self, manifest: dict, index: int, tensors: dict[str, torch.Tensor], targets: list, tag: str = ""
    ) -> None:
        if self.root is None:
            return
        metadata = manifest_metadata(manifest) | {"targets": json.dumps(targets)}
        path = self._path(manifest, f"{tag}.part-{index:05d}.safetensors")
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata))


def _finish_targets(split: Split, targets: list) -> Any:
    if split.task == "classification":
        return torch.tensor(targets, dtype=torch.long)
    return targets


def _encode_samples(
    model,
    processor,
    split: Split,
    manifest: dict,
    cache: FeatureCache,
    batch_size: int,
    num_workers: int,
    progress: bool,
    checkpoint_every: int,
    on_batch,
    rank: int,
    world: int,
) -> tuple[dict[str, torch.Tensor], list]:
    """This rank's samples (`rank, rank + world, ...`), resuming from and checkpointing to its parts."""
    tag = f".rank-{rank}-of-{world}" if world > 1 else ""
    chunks, targets = cache.load_parts(manifest, tag)
    done = len(targets)
    total = split.num_samples
    if total is None and split.shards is not None and progress:  # the count only sizes the progress bar
        total = count_webdataset_samples(split)
    if total is not None:
        total = len(rank_share(total, rank, world))

    def write_part(index: int, chunk: dict[str, torch.Tensor], chunk_targets: list) -> None:
        cache.save_part(manifest, index, chunk, chunk_targets, tag)
        chunks.append(chunk)
        targets.extend(chunk_targets)

    rows = ChunkedRows(write_part, checkpoint_every, first_chunk=len(chunks))
    description = f"Encoding {split.describe()}" + (f" [rank {rank}/{world}]" if world > 1 else "")
    bar = progress_bar(None, progress, total=total, initial=done, desc=description, unit="img")
    batches = image_batches(split, image_processor_of(processor), batch_size, num_workers, done, rank, world)
    seen, non_finite = 0, 0
    for pixel_values, batch_targets in batches:
        features = image_features(model, pixel_values)
        finite = torch.isfinite(features["projected"]).all(-1) & torch.isfinite(features["pre_projection"]).all(-1)
        seen += len(pixel_values)
        non_finite += int((~finite).sum())
        if non_finite:  # counted over all images, so that the error says how many there are; nothing more saved
            bar.update(len(pixel_values))
            continue
        rows.add({kind: features[kind] for kind in FEATURE_KINDS}, batch_targets)
        bar.update(len(pixel_values))
        if on_batch is not None:
            on_batch(len(pixel_values))
    bar.close()
    if non_finite:
        raise non_finite_error(non_finite, seen, "image")
    if world > 1:  # every piece on disk, for rank 0 to put together
        rows.flush()
    elif len(rows):  # one process: the last rows go straight into the split's file
        chunk, chunk_targets = rows.take()
        chunks.append(chunk)
        targets.extend(chunk_targets)
    if not chunks:
        return {kind: torch.empty(0) for kind in FEATURE_KINDS}, targets
    return {kind: torch.cat([c[kind] for c in chunks]) for kind in FEATURE_KINDS}, targets


def _put_together(split: Split, manifest: dict, cache: FeatureCache, world: int) -> None:
    """Rank 0, once every rank has written its parts: the split's features back in sample order, cached."""
    pieces = [cache.load_parts(manifest, f".rank-{r}-of-{world}") for r in range(world)]
    count = sum(len(piece_targets) for _, piece_targets in pieces)
    if not count:
        raise ValueError(f"{split.describe()} has no images.")
    tensors, targets = {}, [None] * count
    for r, (chunks, piece_targets) in enumerate(pieces):
        targets[r::world] = piece_targets
        for kind in FEATURE_KINDS:
            if kind not in tensors:
                dim = next(other[0][kind].shape[1] for other, _ in pieces if other)
                tensors[kind] = torch.empty(count, dim)
            if chunks:
                tensors[kind][r::world] = torch.cat([c[kind] for c in chunks])
    cache.save(Features(tensors["pre_projection"], tensors["projected"], _finish_targets(split, targets), manifest))


def encode_split(
    model: torch.nn.Module,
    processor,
    split: Split,
    model_name: str,
    revision: str | None = None,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = False,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    on_batch: Callable[[int], None] | None = None,
    rank: int | None = None,
    world: int | None = None,
) -> Features:
    """The features of `split`: from the cache when it holds them (for this model, transform and data), else
    computed (resuming from the parts of an interrupted run) and cached. Non-finite features are an error.

    Under torchrun (`world` > 1, torch.distributed initialised) every process encodes the samples
    `rank, rank + world, ...` into its own parts in the cache folder (required), rank 0 puts them back in order and
    writes the split's file, and every process returns the whole split's features."""
    cache = cache or FeatureCache(None)
    if rank is None or world is None:
        rank, world = rank_world(from_environment=True)
    manifest = feature_manifest(model, processor, model_name, revision, split)
    cached = cache.load(manifest, split)
    if cached is not None:
        return cached
    if world > 1 and cache.root is None:
        raise ValueError("Encoding with several processes needs a feature cache folder (--cache-dir) to meet in.")
    tensors, targets = _encode_samples(
        model,
        processor,
        split,
        manifest,
        cache,
        batch_size,
        num_workers,
        progress,
        checkpoint_every,
        on_batch,
        rank,
        world,
    )
    if world > 1:
        finish_on_rank_zero(lambda: _put_together(split, manifest, cache, world), rank)
        return cache.load(manifest, split)
    if not targets:
        raise ValueError(f"{split.describe()} has no images.")
    result = Features(tensors["pre_projection"], tensors["projected"], _finish_targets(split, targets), manifest)
    cache.save(result)
    return result


__all__ = [
    "FEATURE_KINDS",
    "FeatureCache",
    "Features",
    "default_cache_dir",
    "encode_split",
    "feature_manifest",
    "image_features",
    "manifest_metadata",
    "weights_checksum",
]
