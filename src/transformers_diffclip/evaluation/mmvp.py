# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""MMVP-VLM (the paper's Figure 4), scored as Tong et al.'s `scripts/evaluate_vlm.py` scores it.

**Data.** `Questions.csv` (a header, then rows `question id, category, statement`) and
`MLLM_VLM Images/<category>/<id>.jpg`. Rows come in pairs (ids 2k-1, 2k); both images of a pair are read from the
category folder of the pair's first row. The published folder has 9 categories x 15 pairs = 135 pairs (270 rows).

**Scoring.** Each statement is encoded as `"a photo of " + statement`; its logits over the pair's two images
(`exp(logit_scale) * cosine`) go through a softmax, and it picks image 1 when that probability is above 0.5 (image 2
on a tie). Image 1 is right for odd ids. A pair scores only when both its statements pick their own image. Pair `n`
(in file order) belongs to category `CATEGORIES[n // pairs_per_category]`, with the categories in evaluate_vlm.py's
fixed order (not the CSV's column); per-category pair accuracy and the average over the categories, in percent.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..core.text_files import read_text
from .classifier import check_logit_scale
from .metrics import check_finite
from .splits import Split, file_fingerprint


CATEGORIES = (
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
)
IMAGE_FOLDER = "MLLM_VLM Images"
PROMPT_PREFIX = "a photo of "


def read_mmvp(root: str | Path, name: str | None = None) -> Split:
    """The MMVP-VLM folder as a split: one image per question (`sources`), its statement (`targets`), the question
    ids (`extra["question_ids"]`) and pair categories (`extra["pair_categories"]`)."""
    root = Path(root)
    questions = root / "Questions.csv"
    layout = f"expected Questions.csv and '{IMAGE_FOLDER}/<category>/<id>.jpg' in {root}"
    if not questions.is_file() or not (root / IMAGE_FOLDER).is_dir():
        raise ValueError(f"{root} is not an MMVP-VLM folder: {layout}.")
    rows = list(csv.reader(io.StringIO(read_text(questions), newline="")))[1:]
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows or len(rows) % 2:
        raise ValueError(f"{questions} must hold pairs of rows (ids 2k-1, 2k); it has {len(rows)} rows.")
    pairs = len(rows) // 2
    if pairs % len(CATEGORIES):
        raise ValueError(
            f"{questions} has {pairs} pairs; evaluate_vlm.py assigns them to the {len(CATEGORIES)} categories in "
            f"equal runs (the published file: 135 pairs, 15 per category)."
        )
    ids, statements, sources, categories = [], [], [], []
    for number, row in enumerate(rows):
        if len(row) != 3:
            shown = repr(row)[:200]
            raise ValueError(
                f"{questions} row {number + 2}: expected 3 columns (id, category, statement), got {shown}."
            )
        try:
            ids.append(int(row[0]))
        except ValueError as error:
            raise ValueError(
                f"{questions} row {number + 2}: the question id {row[0][:40]!r} is not an integer."
            ) from error
        statements.append(row[2])
        folder = rows[number - number % 2][1]  # both images of a pair come from the first row's category folder
        sources.append(str(root / IMAGE_FOLDER / folder / f"{ids[-1]}.jpg"))
    _check_question_ids(ids, questions)
    missing = [s for s in sources if not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} MMVP images are missing ({layout}), e.g. {missing[0]}.")
    per_category = pairs // len(CATEGORIES)
    categories = [CATEGORIES[n // per_category] for n in range(pairs)]
    return Split(
        dataset=name or str(root),
        split="test",
        task="mmvp",
        layout="mmvp",
        fingerprint=file_fingerprint(sources + [str(questions)], root),
        sources=sources,
        targets=statements,
        extra={"question_ids": ids, "pair_categories": categories},
    )


def _check_question_ids(ids: list[int], questions: Path) -> None:
    """Each pair is ids `2k-1, 2k` (the odd id's statement is right for the pair's first image), every id once:
    a file numbered from 0, or with a repeated id, would score every pair against the wrong image."""
    seen: dict[int, int] = {}
    for number, question in enumerate(ids):
        if question in seen:
            raise ValueError(
                f"{questions} row {number + 2}: the question id {question} is used twice (also row {seen[question]})."
            )
        seen[question] = number + 2
    for first in range(0, len(ids), 2):
        a, b = ids[first], ids[first + 1]
        if a < 1 or a % 2 != 1 or b != a + 1:
            raise ValueError(
                f"{questions} rows {first + 2}-{first + 3}: question ids {a}, {b} are not a pair 2k-1, 2k (the "
                "published file numbers its questions from 1; the odd id's statement matches the pair's first image)."
            )


def mmvp_prompts(split: Split) -> list[str]:
    return [PROMPT_PREFIX + statement for statement in split.targets]


def score_mmvp(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: float, split: Split
) -> dict[str, Any]:
    """`mmvp_average`, `mmvp_per_category` (category → %), `pair_correct` (a bool tensor, one per pair, for paired
    statistics) from the projected image and text embeddings of every question (row order)."""
    scale = math.exp(check_logit_scale(logit_scale))  # NaN would make every pair wrong: 0 %, silently
    check_finite(image_embeds, "MMVP image")
    check_finite(text_embeds, "MMVP text")
    images = F.normalize(image_embeds.float(), dim=-1)
    texts = F.normalize(text_embeds.float(), dim=-1)
    ids = split.extra["question_ids"]
    correct = []
    for first in range(0, len(ids), 2):
        pair = images[first : first + 2]
        right = True
        for row in (first, first + 1):
            probability = (scale * texts[row] @ pair.t()).softmax(dim=-1)[0].item()
            picks_first = probability > 0.5
            right &= picks_first == (ids[row] % 2 == 1)
        correct.append(right)
    per_category_pairs = len(correct) // len(CATEGORIES)
    per_category = {
        category: 100.0 * sum(correct[i * per_category_pairs : (i + 1) * per_category_pairs]) / per_category_pairs
        for i, category in enumerate(CATEGORIES)
    }
    return {
        "mmvp_average": sum(per_category.values()) / len(per_category),
        "mmvp_per_category": per_category,
        "num_pairs": len(correct),
        "pair_correct": torch.tensor(correct),
    }


__all__ = ["CATEGORIES", "IMAGE_FOLDER", "mmvp_prompts", "read_mmvp", "score_mmvp"]
