# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Assembling an assistant: transformers' `LlavaForConditionalGeneration` whose vision tower is a trained DiffCLIP
(or CLIP) image encoder, whose language model is any causal LM, with a fresh 2-layer GELU projector between them,
and its `LlavaProcessor` (the tower's image processor, the language model's tokenizer and chat template).

Nothing here subclasses LLaVA: with this package imported, `LlavaConfig(vision_config=DiffCLIPVisionConfig(...))`
builds a `DiffCLIPVisionModel` through `AutoModel`, and the saved assistant reloads with
`AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained`.
"""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPModel,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from ..core.loading import image_processor_of, inspect_model, load_model, load_pretrained_model, load_processor
from ..modeling_diffclip import DiffCLIPModel, DiffCLIPVisionModel


IMAGE_TOKEN = "<image>"
# LLaVA-1.5: the penultimate layer's patch tokens (the class token dropped).
DEFAULT_VISION_FEATURE_LAYER = -2
FEATURE_SELECT_STRATEGIES = ("default", "full")


def vision_tower_of(model) -> DiffCLIPVisionModel | CLIPVisionModel:
    """The image encoder of a loaded model, as the tower class LLaVA builds from its vision config: a
    `DiffCLIPVisionModel` for DiffCLIP (dual encoder or vision tower alone; differential or the CLIP baseline) and a
    `CLIPVisionModel` for transformers' CLIP. The weights are the model's own (shared, not copied)."""
    if isinstance(model, (DiffCLIPVisionModel, CLIPVisionModel)) and not hasattr(model, "visual_projection"):
        return model
    if isinstance(model, (DiffCLIPModel, DiffCLIPVisionModel)):
        tower = DiffCLIPVisionModel(model.config.vision_config if isinstance(model, DiffCLIPModel) else model.config)
    elif isinstance(model, CLIPModel):
        tower = CLIPVisionModel(model.config.vision_config)
    else:
        raise ValueError(
            f"{type(model).__name__} (model_type {model.config.model_type!r}) is not a DiffCLIP or CLIP model; the "
            "assistant's vision tower is DiffCLIP's (or the CLIP baseline's) image encoder."
        )
    tower.vision_model = model.vision_model
    return tower.to(model.dtype)


def load_vision_tower(name: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """`(vision tower, image processor)` of a DiffCLIP folder, an authors' checkpoint id (converted on the fly) or a
    CLIP model, through the package's one loader (`core.loading`: no code from the folder runs)."""
    source = inspect_model(name, cache_dir=cache_dir)
    model = load_model(source, cache_dir=cache_dir)
    processor = load_processor(source.path, source.name, cache_dir=cache_dir, dual_encoder=False)
    return vision_tower_of(model), image_processor_of(processor)


def load_language_model(name: str | os.PathLike, cache_dir: str | os.PathLike | None = None, dtype=None):
    """`(causal LM, tokenizer)` of a folder or Hub id whose model type transformers provides."""
    source = inspect_model(name, cache_dir=cache_dir)
    kwargs = {"cache_dir": cache_dir}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = load_pretrained_model(source.name, source.path, AutoModelForCausalLM, **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, cache_dir=cache_dir)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise OSError(f"Cannot load the tokenizer of the language model {source.name!r}: {error}") from error
    return model, tokenizer


def _check_feature_selection(layer, strategy: str, num_layers: int) -> None:
    if strategy not in FEATURE_SELECT_STRATEGIES:
        raise ValueError(
            f"vision_feature_select_strategy {strategy!r}: use 'default' (drop the class token) or 'full' (keep it)."
        )
    layers = [layer] if isinstance(layer, int) else list(layer)
    if not layers or not all(isinstance(value, int) and -(num_layers + 1) <= value <= num_layers for value in layers):
        raise ValueError(
            f"vision_feature_layer {layer!r}: an index (or a non-empty list of indices) into the tower's "
            f"{num_layers + 1} hidden states (0: the embeddings, {num_layers} or -1: the last layer)."
        )


def _add_special_tokens(tokenizer) -> bool:
    """Give `tokenizer` the image token and a padding token if it lacks them; whether its vocabulary grew."""
    size = len(tokenizer)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        # LLaVA pads Llama-family models with their unknown token; any token does, padding is masked everywhere
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return len(tokenizer) != size


def assemble_assistant(
    vision_tower,
    image_processor,
    language_model,
    tokenizer,
    vision_feature_layer: int | list[int] = DEFAULT_VISION_FEATURE_LAYER,
    vision_feature_select_strategy: str = "default",
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """`(LlavaForConditionalGeneration, LlavaProcessor)` around loaded parts: the tower's and the language model's
    modules are used as they are (their weights shared, not copied); the projector is new (two linear layers with a
    GELU between, `nn.Linear`'s initialisation, as LLaVA's `mlp2x_gelu`). `tokenizer` gains `<image>` (and a padding
    token) when it lacks them, and the language model's embeddings grow to match."""
    vision_config = vision_tower.config
    _check_feature_selection(vision_feature_layer, vision_feature_select_strategy, vision_config.num_hidden_layers)
    if _add_special_tokens(tokenizer):
        language_model.resize_token_embeddings(len(tokenizer))
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=language_model.config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=patches + (vision_feature_select_strategy == "full"),
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        tie_word_embeddings=bool(getattr(language_model.config, "tie_word_embeddings", False)),
    )
    with torch.device("meta"):  # every part but the projector is the loaded one: build nothing twice
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision_tower
    model.model.language_model = language_model.get_decoder()
    model.lm_head = language_model.get_output_embeddings()
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(language_model.dtype)
    model.config.dtype = language_model.dtype
    if model.config.tie_word_embeddings:
        model.tie_weights()
    on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if on_meta:
        raise ValueError(f"The language model's modules do not fit LLaVA's layout (unfilled: {on_meta[:5]}).")
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # the class token
    )
    return model, processor


def build_assistant(
    vision_model: str | os.PathLike,
    language_model: str | os.PathLike,
    vision_feature_layer: int | list[int] = DEFAULT_VISION_FEATURE_LAYER,
    vision_feature_select_strategy: str = "default",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """An untrained assistant (stage 1 trains its projector): the vision tower and image processor of
    `vision_model` (a DiffCLIP folder, an authors' id such as `hammh0a/DiffCLIP_ViTB16_CC12M`, the CLIP baseline
    `hammh0a/ViTB16_CC12M`, or a transformers CLIP model) and the causal LM and tokenizer of `language_model`."""
    tower, image_processor = load_vision_tower(vision_model, cache_dir)
    lm, tokenizer = load_language_model(language_model, cache_dir)
    return assemble_assistant(
        tower, image_processor, lm.to(tower.dtype), tokenizer, vision_feature_layer, vision_feature_select_strategy
    )


def load_assistant(name: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """`(model, processor)` of a saved assistant folder (what `diffclip-llava` writes), through the package's
    loader rules: LLaVA and DiffCLIP are installed model types, so no code from the folder runs."""
    from transformers import AutoModelForImageTextToText

    source = inspect_model(name, cache_dir=cache_dir)
    if source.model_type != "llava":
        raise ValueError(
            f"{source.name!r} holds a {source.model_type!r} model, not an assistant (model_type 'llava', as "
            "diffclip-llava saves it)."
        )
    model = load_pretrained_model(source.name, source.path, AutoModelForImageTextToText, cache_dir=cache_dir)
    processor = load_processor(source.path, source.name, cache_dir=cache_dir)
    return model, processor


__all__ = [
    "DEFAULT_VISION_FEATURE_LAYER",
    "FEATURE_SELECT_STRATEGIES",
    "IMAGE_TOKEN",
    "assemble_assistant",
    "build_assistant",
    "load_assistant",
    "load_language_model",
    "load_vision_tower",
    "vision_tower_of",
]
