# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Tokenizer and processor of DiffCLIP.

`DiffCLIPTokenizer` is transformers' CLIP tokenizer (the same byte-level BPE and vocabulary) with the original
text cleaning in front of it: `ftfy.fix_text`, HTML entities unescaped twice, whitespace runs collapsed, stripped,
lower-cased. transformers' own CLIP tokenizer skips ftfy and the HTML step, so captions scraped from the web
("caf\u00c3\u00a9", "&amp;") would otherwise tokenize differently from the original.

`DiffCLIPProcessor` pairs it with [`DiffCLIPImageProcessor`].

Remote code: imports only the standard library, transformers and (when installed) ftfy; works with transformers
4.57 (where the tokenizers-backed class is `CLIPTokenizerFast`) and 5.x (where `CLIPTokenizerFast` is an alias of
`CLIPTokenizer`).
"""

import html
import re

import transformers
from transformers import CLIPTokenizerFast
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging


try:
    import ftfy
except ImportError:  # pragma: no cover - ftfy is a dependency of the package, but remote code must not need it
    ftfy = None

logger = logging.get_logger(__name__)

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """The original CLIP text cleaning: ftfy, HTML entities unescaped twice, whitespace collapsed, lower case."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    else:
        logger.warning_once(
            "ftfy is not installed: DiffCLIP's tokenizer skips its mojibake repair (`pip install ftfy`)."
        )
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _clean_inputs(text, is_split_into_words: bool):
    if is_split_into_words or text is None:
        return text
    if isinstance(text, str):
        return clean_text(text)
    if isinstance(text, (list, tuple)):
        return type(text)(_clean_inputs(item, False) for item in text)
    return text  # token ids: nothing to clean


class DiffCLIPTokenizer(CLIPTokenizerFast):
    """CLIP BPE tokenizer with the original DiffCLIP/CLIP text cleaning applied to every input text.

    Rows are `<|startoftext|> tokens <|endoftext|>`; padding uses `<|endoftext|>` (the original padded with id 0,
    which gives the same embeddings: the pooled token is the first end-of-text token and attention is causal).
    Use `truncation=True, max_length=77` for long texts.
    """

    model_input_names = ["input_ids", "attention_mask"]

    if _TRANSFORMERS_MAJOR >= 5:
        # transformers 5: every entry point (__call__, encode, tokenize) goes through `_encode_plus`.
        def _encode_plus(self, text, text_pair=None, *args, **kwargs):
            split = kwargs.get("is_split_into_words", False)
            return super()._encode_plus(_clean_inputs(text, split), _clean_inputs(text_pair, split), *args, **kwargs)

    else:
        # transformers 4: every entry point of the fast tokenizer ends in `_batch_encode_plus`.
        def _batch_encode_plus(self, batch_text_or_text_pairs, *args, **kwargs):
            split = kwargs.get("is_split_into_words", False)
            cleaned = [
                tuple(_clean_inputs(part, split) for part in item)
                if isinstance(item, tuple)
                else _clean_inputs(item, split)
                for item in batch_text_or_text_pairs
            ]
            return super()._batch_encode_plus(cleaned, *args, **kwargs)


class DiffCLIPProcessor(ProcessorMixin):
    r"""Wraps a [`DiffCLIPImageProcessor`] and a [`DiffCLIPTokenizer`] into one processor.

    `processor(text=..., images=..., return_tensors="pt", padding=True)` returns `input_ids`, `attention_mask` and
    `pixel_values` ready for [`DiffCLIPModel`].
    """

    attributes = ["image_processor", "tokenizer"]
    if _TRANSFORMERS_MAJOR < 5:
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    # `from_pretrained`'s hook for names that are not transformers folders, as `DiffCLIPPreTrainedModel`'s (see there):
    # None in this file; the installed package sets it so that the authors' training-format checkpoints load too.
    checkpoint_resolver = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if cls.checkpoint_resolver is not None and pretrained_model_name_or_path is not None:
            pretrained_model_name_or_path, kwargs = cls.checkpoint_resolver(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        if image_processor is None:
            raise ValueError("DiffCLIPProcessor needs an image_processor (a DiffCLIPImageProcessor).")
        if tokenizer is None:
            raise ValueError("DiffCLIPProcessor needs a tokenizer (a DiffCLIPTokenizer).")
        super().__init__(image_processor, tokenizer)

    def __call__(self, text=None, images=None, return_tensors=None, **kwargs):
        if text is None and images is None:
            raise ValueError("DiffCLIPProcessor needs `text`, `images` or both.")
        tokenizer_kwargs = {k: v for k, v in kwargs.items() if k not in ("do_resize", "size", "crop_size")}
        image_kwargs = {k: kwargs[k] for k in ("do_resize", "size", "crop_size") if k in kwargs}
        encoding = {}
        if text is not None:
            if isinstance(text, (list, tuple)) and len(text) == 0:
                raise ValueError("`text` is an empty list.")
            tokenizer_kwargs.setdefault("truncation", True)
            tokenizer_kwargs.setdefault("max_length", self.tokenizer.model_max_length)
            encoding.update(self.tokenizer(text, return_tensors=return_tensors, **tokenizer_kwargs))
        if images is not None:
            encoding.update(self.image_processor(images, return_tensors=return_tensors, **image_kwargs))
        from transformers import BatchEncoding

        return BatchEncoding(data=encoding, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["DiffCLIPProcessor", "DiffCLIPTokenizer", "clean_text"]
