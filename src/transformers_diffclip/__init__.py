# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""transformers-diffclip: DiffCLIP (CLIP with differential attention) in the Hugging Face transformers API.

Importing the package registers DiffCLIP with AutoConfig, AutoModel, AutoModelForZeroShotImageClassification,
AutoTokenizer, AutoImageProcessor and AutoProcessor, and marks every class for remote code: a folder written by
`save_pretrained` carries the code files and `auto_map` that let `trust_remote_code=True` load it where this
package is not installed. `DiffCLIPModel.from_pretrained` (and the tower classes and `DiffCLIPProcessor`) also take
the authors' training-format checkpoints (`hammh0a/DiffCLIP_ViTB16_CC12M`, ...), converted once and cached: the
classes' `checkpoint_resolver` hook, set here to `original.resolve_from_pretrained`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_diffclip import DiffCLIPConfig, DiffCLIPTextConfig, DiffCLIPVisionConfig, lambda_init_for_layer
from .image_processing_diffclip import DiffCLIPImageProcessor
from .modeling_diffclip import (
    DiffCLIPModel,
    DiffCLIPOutput,
    DiffCLIPPreTrainedModel,
    DiffCLIPTextModel,
    DiffCLIPTextModelWithProjection,
    DiffCLIPVisionModel,
    DiffCLIPVisionModelWithProjection,
)
from .original import DEFAULT_MODEL_ID, ORIGINAL_REPOS, resolve_from_pretrained, resolve_pretrained
from .processing_diffclip import DiffCLIPProcessor, DiffCLIPTokenizer, clean_text
from .tokenizer_files import build_tokenizer, write_tokenizer_files


__version__ = "0.1.0"


def _register() -> None:
    for config_class in (DiffCLIPConfig, DiffCLIPTextConfig, DiffCLIPVisionConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
    AutoModel.register(DiffCLIPConfig, DiffCLIPModel, exist_ok=True)
    AutoModel.register(DiffCLIPTextConfig, DiffCLIPTextModel, exist_ok=True)
    AutoModel.register(DiffCLIPVisionConfig, DiffCLIPVisionModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(DiffCLIPConfig, DiffCLIPModel, exist_ok=True)
    AutoTokenizer.register(DiffCLIPConfig, fast_tokenizer_class=DiffCLIPTokenizer, exist_ok=True)
    AutoImageProcessor.register(DiffCLIPConfig, slow_image_processor_class=DiffCLIPImageProcessor, exist_ok=True)
    AutoProcessor.register(DiffCLIPConfig, DiffCLIPProcessor, exist_ok=True)

    for model_class in (DiffCLIPModel, DiffCLIPTextModel, DiffCLIPVisionModel):
        model_class.register_for_auto_class("AutoModel")
    DiffCLIPTokenizer.register_for_auto_class("AutoTokenizer")
    DiffCLIPImageProcessor.register_for_auto_class("AutoImageProcessor")
    DiffCLIPProcessor.register_for_auto_class("AutoProcessor")
    # `from_pretrained` of the installed classes also takes the authors' training-format checkpoints, through the
    # hook each class declares (`checkpoint_resolver`); a Hub folder's copy of the files keeps it None
    DiffCLIPPreTrainedModel.checkpoint_resolver = staticmethod(resolve_from_pretrained)
    DiffCLIPProcessor.checkpoint_resolver = staticmethod(resolve_from_pretrained)


_register()

__all__ = [
    "DEFAULT_MODEL_ID",
    "ORIGINAL_REPOS",
    "DiffCLIPConfig",
    "DiffCLIPImageProcessor",
    "DiffCLIPModel",
    "DiffCLIPOutput",
    "DiffCLIPPreTrainedModel",
    "DiffCLIPProcessor",
    "DiffCLIPTextConfig",
    "DiffCLIPTextModel",
    "DiffCLIPTextModelWithProjection",
    "DiffCLIPTokenizer",
    "DiffCLIPVisionConfig",
    "DiffCLIPVisionModel",
    "DiffCLIPVisionModelWithProjection",
    "build_tokenizer",
    "clean_text",
    "lambda_init_for_layer",
    "resolve_pretrained",
    "write_tokenizer_files",
]
