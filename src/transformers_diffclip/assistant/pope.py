# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""POPE (Li et al., "Evaluating Object Hallucination in Large Vision-Language Models"), asked and scored as LLaVA-1.5
does: each yes/no question followed by " Answer the question using a single word or phrase.", greedy decoding, the
answer parsed by POPE's rule ([`parse_answer`]) and scored with "yes" as the positive class ([`pope_metrics`]).

A POPE folder holds `coco_pope_random.json`, `coco_pope_popular.json` and `coco_pope_adversarial.json`: JSON Lines of
`{"question_id", "image", "text", "label": "yes"|"no"}`, `image` a file name of COCO val2014.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.images import ImageError, open_image
from ..core.loading import model_device_dtype
from .build import IMAGE_TOKEN


POPE_SPLITS = ("random", "popular", "adversarial")
POPE_FILE = "coco_pope_{}.json"
PROMPT_SUFFIX = " Answer the question using a single word or phrase."
LABELS = ("yes", "no")


def parse_answer(text: str) -> str:
    """POPE's reading of a generated answer: keep the text up to its first '.', remove commas, split on spaces; the
    answer is "no" when one of the words is exactly "No", "not" or "no", else "yes" (so "Nope" and an empty answer
    are "yes", as in POPE's and LLaVA's `eval_pope.py`)."""
    first = text.split(".")[0]
    words = first.replace(",", "").split(" ")
    return "no" if {"No", "not", "no"} & set(words) else "yes"


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and the share of "yes" answers, "yes" being the positive class. A precision
    or F1 whose denominator is 0 (no "yes" answer) is 0."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"{len(predictions)} answers for {len(labels)} questions.")
    pairs = list(zip(predictions, labels))
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "pope_accuracy": (tp + tn) / len(pairs),
        "pope_precision": precision,
        "pope_recall": recall,
        "pope_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "pope_yes_ratio": (tp + fp) / len(pairs),
    }


def read_pope_file(path: str | os.PathLike) -> list[dict]:
    """The questions of one POPE file, each checked (one line, exit code 2 on the first bad one)."""
    path = Path(path)
    questions, seen = [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error}).") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg}); POPE files are JSON Lines.") from error
        if not isinstance(row, dict) or not {"question_id", "image", "text", "label"} <= set(row):
            raise ValueError(f"{path}, line {number}: expected an object with question_id, image, text and label.")
        if row["label"] not in LABELS or not isinstance(row["text"], str) or not isinstance(row["image"], str):
            raise ValueError(f"{path}, line {number}: label must be 'yes' or 'no' and text and image strings.")
        if row["question_id"] in seen:
            raise ValueError(f"{path}, line {number}: question_id {row['question_id']!r} appears twice.")
        seen.add(row["question_id"])
        questions.append(row)
    if not questions:
        raise ValueError(f"{path}: no questions.")
    return questions


def pope_files(data_dir: str | os.PathLike, splits: Sequence[str] = POPE_SPLITS) -> dict[str, Path]:
    """`{split: file}` of a POPE folder; every asked-for file must be there."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {data_dir}: no such folder.")
    unknown = [split for split in splits if split not in POPE_SPLITS]
    if unknown:
        raise ValueError(f"Unknown POPE split(s) {unknown}; the splits are {', '.join(POPE_SPLITS)}.")
    files = {split: folder / POPE_FILE.format(split) for split in splits}
    missing = [file.name for file in files.values() if not file.is_file()]
    if missing:
        raise FileNotFoundError(f"--data {data_dir}: missing {', '.join(missing)}.")
    return files


def pope_prompt(tokenizer, question: str) -> str:
    """The prompt of one question: the image, the question and LLaVA's instruction, as the user's message of the
    language model's chat template, ready for the assistant's answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("The assistant's tokenizer has no chat template to ask POPE's questions with.")
    message = {"role": "user", "content": f"{IMAGE_TOKEN}\n{question}{PROMPT_SUFFIX}"}
    return tokenizer.apply_chat_template([message], tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def answer_questions(
    model,
    processor,
    questions: Sequence[dict],
    image_folder: str | os.PathLike,
    batch_size: int = 8,
    max_new_tokens: int = 32,
) -> list[str]:
    """The generated answers (special tokens removed, stripped) to `questions`, greedy, `batch_size` at a time
    (left-padded, so every row's answer starts where its prompt ends)."""
    tokenizer = processor.tokenizer
    device, _ = model_device_dtype(model)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers = []
    try:
        for start in range(0, len(questions), batch_size):
            chunk = questions[start : start + batch_size]
            images = []
            for question in chunk:
                try:
                    images.append(open_image(question["image"], root=image_folder))
                except ImageError as error:
                    raise ValueError(f"question {question['question_id']!r}: {error}") from error
            prompts = [pope_prompt(tokenizer, question["text"]) for question in chunk]
            inputs = processor(
                images=images, text=prompts, padding=True, return_tensors="pt", add_special_tokens=False
            )
            inputs = {key: value.to(device) for key, value in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            generated = model.generate(
                **inputs, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
            )
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            answers += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers


def evaluate_pope(
    model,
    processor,
    data_dir: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
    splits: Sequence[str] = POPE_SPLITS,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    progress=None,
) -> dict[str, dict]:
    """Per split: the five POPE metrics, `num_questions`, and `answers` (every question's `question_id`, the
    generated `text` and the parsed `answer`). Images are looked up in `image_folder` (default: `data_dir`)."""
    files = pope_files(data_dir, splits)
    questions = {split: read_pope_file(file) for split, file in files.items()}  # every file checked before asking
    image_folder = data_dir if image_folder is None else image_folder
    report = {}
    for split, rows in questions.items():
        texts = answer_questions(model, processor, rows, image_folder, batch_size, max_new_tokens)
        parsed = [parse_answer(text) for text in texts]
        report[split] = {
            **pope_metrics(parsed, [row["label"] for row in rows]),
            "num_questions": len(rows),
            "answers": [
                {"question_id": row["question_id"], "text": text, "answer": answer}
                for row, text, answer in zip(rows, texts, parsed)
            ],
        }
        if progress is not None:
            progress(split, report[split])
    return report


__all__ = [
    "POPE_FILE",
    "POPE_SPLITS",
    "PROMPT_SUFFIX",
    "answer_questions",
    "evaluate_pope",
    "parse_answer",
    "pope_files",
    "pope_metrics",
    "pope_prompt",
    "read_pope_file",
]
