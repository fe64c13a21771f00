# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""DiffCLIP as the eyes of a language model: transformers' LLaVA with a DiffCLIP (or CLIP) vision tower.

Modules: `build` (an assistant from a vision model and a causal LM: `LlavaForConditionalGeneration` and its
`LlavaProcessor`), `data` (LLaVA's conversation JSON, the plain and chat templates, the collator), `recipe` (the two
training stages on `Trainer`: `align` and `tune`, LLaVA-1.5's defaults), `pope` (POPE asked and scored as its
authors do) and `cli` (`diffclip-llava`, `diffclip eval pope`).
"""

from .build import (
    DEFAULT_VISION_FEATURE_LAYER,
    IMAGE_TOKEN,
    assemble_assistant,
    build_assistant,
    load_assistant,
    load_language_model,
    load_vision_tower,
    vision_tower_of,
)
from .data import (
    IGNORE_INDEX,
    AssistantDataCollator,
    ConversationDataset,
    encode_conversation,
    prepare_conversations,
    read_conversations,
)
from .pope import POPE_SPLITS, PROMPT_SUFFIX, evaluate_pope, parse_answer, pope_files, pope_metrics, read_pope_file
from .recipe import (
    STAGE_DEFAULTS,
    STAGES,
    AssistantDataArguments,
    AssistantModelArguments,
    AssistantTrainingArguments,
    set_trainable,
    train_stage,
)


__all__ = [
    "DEFAULT_VISION_FEATURE_LAYER",
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "POPE_SPLITS",
    "PROMPT_SUFFIX",
    "STAGES",
    "STAGE_DEFAULTS",
    "AssistantDataArguments",
    "AssistantDataCollator",
    "AssistantModelArguments",
    "AssistantTrainingArguments",
    "ConversationDataset",
    "assemble_assistant",
    "build_assistant",
    "encode_conversation",
    "evaluate_pope",
    "load_assistant",
    "load_language_model",
    "load_vision_tower",
    "parse_answer",
    "pope_files",
    "pope_metrics",
    "prepare_conversations",
    "read_conversations",
    "read_pope_file",
    "set_trainable",
    "train_stage",
    "vision_tower_of",
]
