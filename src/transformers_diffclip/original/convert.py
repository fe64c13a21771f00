# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""An original checkpoint → a `DiffCLIPModel` and `DiffCLIPProcessor`, and a folder written atomically.

Shared by `resolve_pretrained` (convert on first use, cached) and `conversion/convert_diffclip_original_to_hf.py`
(a Hub-ready folder with a model card, verification and `--push-to-hub`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .architecture import Architecture, detect_architecture
from .checkpoint import ConversionError, OriginalCheckpoint, load_original_checkpoint
from .download import hub_download
from .key_map import convert_state_dict


# CLIP's tokenizer files on the Hub: the same BPE vocabulary as the original `bpe_simple_vocab_16e6.txt.gz`. Only
# these two files are read from that repo (never its image-processor settings: DiffCLIP uses ImageNet mean/std).
CLIP_TOKENIZER_REPO = "openai/clip-vit-base-patch16"
CLIP_TOKENIZER_FILES = ("vocab.json", "merges.txt")


@dataclass
class Conversion:
    """An original checkpoint read, sized and converted: the model holds the converted weights."""

    original: OriginalCheckpoint
    architecture: Architecture
    model: torch.nn.Module
    converted: dict[str, torch.Tensor]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def build_model(architecture: Architecture, original_state_dict):
    """A `DiffCLIPModel` for `architecture` holding the converted original weights (strict: every original tensor
    used once, every parameter filled). The model is built on the meta device, so nothing is initialised twice."""
    from ..configuration_diffclip import DiffCLIPConfig
    from ..modeling_diffclip import DiffCLIPModel

    config = DiffCLIPConfig(**architecture.config_kwargs)
    with torch.device("meta"):
        model = DiffCLIPModel(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    differential = {"vision": architecture.differential_vision, "text": architecture.differential_text}
    converted = convert_state_dict(original_state_dict, expected, differential)
    model.load_state_dict(converted, strict=True, assign=True)
    still_empty = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if still_empty:  # a buffer or parameter that no checkpoint tensor fills
        raise ConversionError(f"Model tensors left without values: {', '.join(still_empty)}")
    return model.eval(), converted


def convert_checkpoint(
    path: str | os.PathLike,
    *,
    lambda_init_schedule: str = "constant",
    vision_heads: int | None = None,
    text_heads: int | None = None,
    allow_unsafe_pickle: bool = False,
) -> Conversion:
    """Read the original checkpoint at `path` safely (memory-mapped; the optimizer state is never read), detect its
    architecture and build the converted model."""
    original = load_original_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
    architecture = detect_architecture(
        original.state_dict,
        lambda_init_schedule=lambda_init_schedule,
        vision_heads=vision_heads,
        text_heads=text_heads,
    )
    model, converted = build_model(architecture, original.state_dict)
    return Conversion(original, architecture, model, converted)


def describe(architecture: Architecture) -> str:
    """One line: the variant and the shape of both towers."""
    parts = [architecture.variant]
    for tower in ("vision", "text"):
        config = architecture.config_kwargs[f"{tower}_config"]
        kind = "differential" if config["use_differential_attention"] else "standard"
        parts.append(
            f"{tower}: {config['num_hidden_layers']} layers × {config['num_attention_heads']} heads ({kind}), "
            f"width {config['hidden_size']}"
        )
    return "; ".join(parts)


def clip_tokenizer_files(
    cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None, instead: str = ""
) -> tuple[Path, Path]:
    """`vocab.json` and `merges.txt` of CLIP's tokenizer from the Hub (downloaded once, then from the cache)."""
    vocab, merges = (
        hub_download(
            CLIP_TOKENIZER_REPO,
            name,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            what="CLIP's tokenizer file, which converted DiffCLIP models use",
            instead=f" (it needs both: `hf download {CLIP_TOKENIZER_REPO} {' '.join(CLIP_TOKENIZER_FILES)}`){instead}",
        )
        for name in CLIP_TOKENIZER_FILES
    )
    return vocab, merges


def build_tokenizer_for(
    architecture: Architecture,
    bpe_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    instead: str = "",
):
    """DiffCLIP's tokenizer for `architecture`: from the original BPE file when `bpe_path` is given, else from the
    Hub's CLIP tokenizer files. Refuses a vocabulary whose size differs from the token embedding's."""
    from ..tokenizer_files import build_tokenizer, tokenizer_from_files

    text = architecture.config_kwargs["text_config"]
    length = text["max_position_embeddings"]
    if bpe_path is not None:
        tokenizer, source = build_tokenizer(bpe_path, model_max_length=length), str(bpe_path)
    else:
        files = clip_tokenizer_files(cache_dir, local_files_only, instead)
        tokenizer, source = tokenizer_from_files(*files, model_max_length=length), CLIP_TOKENIZER_REPO
    if len(tokenizer) != text["vocab_size"]:
        raise ConversionError(
            f"token_embedding.weight has {text['vocab_size']} rows but the tokenizer built from {source} has "
            f"{len(tokenizer)} tokens; the checkpoint was not trained with the CLIP BPE vocabulary."
        )
    return tokenizer


def build_processor(architecture: Architecture, tokenizer):
    """The processor of a converted model: `tokenizer` and the image processor at the checkpoint's image size (the
    original crop and ImageNet statistics, the image processor's defaults)."""
    from ..image_processing_diffclip import DiffCLIPImageProcessor
    from ..processing_diffclip import DiffCLIPProcessor

    size = architecture.config_kwargs["vision_config"]["image_size"]
    image_processor = DiffCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return DiffCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def write_folder_atomically(output_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(folder)` on a temporary sibling of `output_dir` and move it into place when `write` returns:
    `output_dir` appears (or is replaced) whole or not at all ([`core.files.atomic_directory`])."""
    from ..core.files import atomic_directory

    return atomic_directory(output_dir, write)


def save_converted(folder: Path, model, processor, card_text: str | None = None) -> None:
    """`save_pretrained` of model and processor into `folder` (and the model card `README.md`)."""
    import json

    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if card_text is not None:
        (folder / "README.md").write_text(card_text, encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if "AutoModel" not in config.get("auto_map", {}):
        raise ConversionError("config.json was written without auto_map; is transformers_diffclip installed?")
