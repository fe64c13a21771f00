# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""LLaVA's training data as published: reading and checking the conversation JSON, the two templates (stage 1's
"plain": the image tokens, then the caption; stage 2's: the language model's own chat template, with the loss on the
assistant's turns only) and the collator that makes the batches.

A data file is a JSON list (LLaVA's `blip_laion_cc_sbu_558k.json`, `llava_v1_5_mix665k.json`) or JSON Lines of
`{"id", "image": "relative/path.jpg", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": "..."}, ...]}`; rows without `image` are text-only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from ..core.images import ImageError, open_image, probe_image
from .build import IMAGE_TOKEN


logger = logging.get_logger(__name__)

IGNORE_INDEX = -100  # labels that carry no loss (transformers' and LLaVA's value)
TEMPLATES = ("plain", "chat")
# LLaVA's speakers and the chat-template roles they become
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_MAX_LISTED_PROBLEMS = 10


def read_conversations(path: str | os.PathLike) -> list[dict]:
    """The rows of a LLaVA data file: a JSON list, or JSON Lines (one object a line)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"--data_path {path}: no such file.")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"--data_path {path}: not UTF-8 text ({error}).") from error
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"--data_path {path}: neither a JSON list nor JSON Lines (line {number}: {error.msg})."
                ) from error
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        raise ValueError(f"--data_path {path}: expected a JSON list of conversations, got {type(rows).__name__}.")
    return rows


def conversation_problem(row: Any, template: str) -> str:
    """Why `row` cannot be trained on with `template` ('' when it can), from its text alone."""
    if not isinstance(row, dict):
        return f"not an object ({type(row).__name__})"
    turns = row.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        return "'conversations' is not a list of at least two turns"
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in ROLES:
            return f"a turn is not {{'from': one of {sorted(ROLES)}, 'value': text}}: {str(turn)[:80]}"
    image = row.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        return f"'image' is not a path ({image!r})"
    markers = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
    if markers > 1:
        return f"{markers} {IMAGE_TOKEN} markers (one image per conversation)"
    if markers and image is None:
        return f"an {IMAGE_TOKEN} marker but no 'image'"
    if template == "plain":
        if image is None:
            return "no 'image' (the plain template pairs an image with its caption)"
        if not turns[1]["value"].strip():
            return "empty caption"
    elif not any(ROLES[turn["from"]] == "assistant" and turn["value"].strip() for turn in turns):
        return "no assistant turn with text (nothing to learn)"
    return ""


def prepare_conversations(
    rows: list,
    image_folder: str | os.PathLike | None,
    template: str,
    skip_bad_rows: bool = False,
    split: str = "train",
) -> tuple[list[dict], int]:
    """`(usable rows, number skipped)`, with the rule of `diffclip-finetune`: every row is checked (its text, and an
    image that exists and whose header PIL recognises; with `skip_bad_rows`, one that decodes whole); bad rows are an
    error naming the first ten (0-based indices) unless `skip_bad_rows`, which drops and counts them."""
    if template not in TEMPLATES:
        raise ValueError(f"template {template!r}: use one of {TEMPLATES}.")
    root = None if image_folder is None else str(image_folder)
    problems = []
    for row in rows:
        problem = conversation_problem(row, template)
        if not problem and row.get("image") is not None:
            try:
                (open_image if skip_bad_rows else probe_image)(row["image"], root=root)
            except ImageError as error:
                problem = str(error)
        problems.append(problem)
    bad = [index for index, problem in enumerate(problems) if problem]
    if bad:
        listed = "\n".join(f"  row {index}: {problems[index]}" for index in bad[:_MAX_LISTED_PROBLEMS])
        if len(bad) > _MAX_LISTED_PROBLEMS:
            listed += f"\n  ... and {len(bad) - _MAX_LISTED_PROBLEMS} more"
        summary = f"{len(bad)} of {len(rows)} rows of the {split} data are unusable (0-based row indices):\n{listed}"
        if not skip_bad_rows:
            raise ValueError(summary + "\nFix or remove these rows, or pass --skip_bad_rows to skip them.")
        logger.warning(summary + "\nSkipping them (--skip_bad_rows).")
    usable = [row for row, problem in zip(rows, problems) if not problem]
    if not usable:
        raise ValueError(f"The {split} data has no usable rows.")
    return usable, len(bad)


def _messages(row: dict, image_tokens: str) -> list[dict]:
    """The conversation as chat-template messages, the image marker expanded to the image's tokens (placed at the
    start of the first user turn when a row with an image has no marker, as LLaVA does)."""
    turns = [{"role": ROLES[turn["from"]], "content": turn["value"]} for turn in row["conversations"]]
    if row.get("image") is not None and not any(IMAGE_TOKEN in turn["content"] for turn in turns):
        first = next(i for i, turn in enumerate(turns) if turn["role"] == "user") if turns else 0
        turns[first]["content"] = IMAGE_TOKEN + "\n" + turns[first]["content"]
    for turn in turns:
        turn["content"] = turn["content"].replace(IMAGE_TOKEN, image_tokens)
    return turns


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_conversation(row: dict, tokenizer, template: str, image_seq_length: int) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of one row; labels are `IGNORE_INDEX` except on the tokens the model learns to write:

    - `plain` (stage 1): the image's tokens, then the first answer (the caption) and a newline (LLaVA's `plain`
      conversation); the caption carries the loss;
    - `chat` (stage 2): the conversation rendered by the tokenizer's chat template; the loss is on the assistant's
      turns only (the text each assistant message adds to the rendering, its end-of-turn tokens included).
    """
    image_tokens = IMAGE_TOKEN * image_seq_length
    if template == "plain":
        prompt = image_tokens if row.get("image") is not None else ""
        text = prompt + row["conversations"][1]["value"].strip() + "\n"
        spans = [(len(prompt), len(text))]
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    else:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "The language model's tokenizer has no chat template (tokenizer_config.json or chat_template.jinja); "
                "stage 2 renders conversations with it. Use an instruction-tuned model or add a template."
            )
        messages = _messages(row, image_tokens)
        text = _render(tokenizer, messages)
        spans = []
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = _render(tokenizer, messages[:index], add_generation_prompt=True) if index else ""
            through = _render(tokenizer, messages[: index + 1])
            if not (text.startswith(through) and through.startswith(before)):
                raise ValueError(
                    "The language model's chat template does not render a conversation as the rendering of its first "
                    "turns followed by the rest, so the assistant's turns cannot be found for the loss."
                )
            spans.append((len(before), len(through)))
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = []
    for token, (begin, finish) in zip(input_ids, encoded["offset_mapping"]):
        # a token learns when it starts inside a span (tokens the tokenizer adds itself have no characters)
        learned = finish > begin and any(start <= begin < stop for start, stop in spans)
        labels.append(token if learned else IGNORE_INDEX)
    return input_ids, labels


class ConversationDataset(torch.utils.data.Dataset):
    """Checked rows, read as they are (the collator tokenizes them and opens their images)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


@dataclass
class AssistantDataCollator:
    """Rows → a batch for `LlavaForConditionalGeneration`: `input_ids`, `attention_mask` and `labels` padded on the
    right to the longest row (cut at `max_length`), and `pixel_values` of the rows that have an image, in order
    (absent when none has).

    Args:
        processor (`LlavaProcessor`): its tokenizer and image processor.
        template (`str`): `"plain"` (stage 1) or `"chat"` (stage 2), see [`encode_conversation`].
        image_seq_length (`int`): tokens per image (the model config's `image_seq_length`).
        max_length (`int`, defaults to 2048): LLaVA-1.5's `model_max_length`.
        image_folder: where relative image paths start.
    """

    processor: Any
    template: str
    image_seq_length: int
    max_length: int = 2048
    image_folder: str | None = None

    def __post_init__(self):
        if self.max_length <= self.image_seq_length:
            raise ValueError(
                f"--max_length {self.max_length} leaves no room for text after an image's {self.image_seq_length} "
                "tokens."
            )

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        encoded, images = [], []
        for row in rows:
            input_ids, labels = encode_conversation(row, tokenizer, self.template, self.image_seq_length)
            encoded.append((input_ids[: self.max_length], labels[: self.max_length]))
            if row.get("image") is not None:
                image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
                if encoded[-1][0].count(image_token) != self.image_seq_length:
                    raise ValueError(f"Row {row.get('id')!r}: its image tokens do not fit in --max_length.")
                try:
                    images.append(open_image(row["image"], root=self.image_folder))
                except ImageError as error:
                    raise ValueError(f"Row {row.get('id')!r}: {error}") from error
        length = max(len(ids) for ids, _ in encoded)
        pad = tokenizer.pad_token_id
        batch = {
            "input_ids": torch.tensor([ids + [pad] * (length - len(ids)) for ids, _ in encoded]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in encoded]),
            "labels": torch.tensor([labels + [IGNORE_INDEX] * (length - len(labels)) for _, labels in encoded]),
        }
        if images:
            batch["pixel_values"] = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return batch


__all__ = [
    "IGNORE_INDEX",
    "ROLES",
    "TEMPLATES",
    "AssistantDataCollator",
    "ConversationDataset",
    "conversation_problem",
    "encode_conversation",
    "prepare_conversations",
    "read_conversations",
]
