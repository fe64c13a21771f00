"""MMVP-VLM: both images of a pair are read from the category folder of the pair's FIRST row (Tong et al.'s
evaluate_vlm.py), also when the pair's second row names another category. The folder is written here in the
published layout (`Questions.csv`, `MLLM_VLM Images/<category>/<id>.jpg`)."""

from __future__ import annotations

import csv
from pathlib import Path

from _paper_data import MMVP_CATEGORIES, write_image

from transformers_diffclip.evaluation.mmvp import read_mmvp


def _write(root: Path, second_row_category) -> Path:
    rows, qid = [], 0
    for category in MMVP_CATEGORIES:
        for side in ("left", "right"):
            qid += 1
            # the published file's rows of one pair can disagree; the images live in the first row's folder
            named = second_row_category(category) if side == "right" else category
            rows.append([str(qid), named, f"the thing faces {side}"])
            write_image(root / "MLLM_VLM Images" / category / f"{qid}.jpg", 5000 + qid)
    with (root / "Questions.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    return root


def test_both_images_of_a_pair_come_from_the_first_rows_folder(tmp_path):
    others = {c: MMVP_CATEGORIES[(i + 1) % len(MMVP_CATEGORIES)] for i, c in enumerate(MMVP_CATEGORIES)}
    root = _write(tmp_path / "MMVP_VLM", lambda category: others[category])
    # a decoy image in the second row's own folder, which must not be read
    write_image(root / "MLLM_VLM Images" / MMVP_CATEGORIES[1] / "2.jpg", 1)
    split = read_mmvp(root)
    expected = []
    for pair, category in enumerate(MMVP_CATEGORIES):
        for qid in (2 * pair + 1, 2 * pair + 2):
            expected.append(str(root / "MLLM_VLM Images" / category / f"{qid}.jpg"))
    assert split.sources == expected
    assert split.extra["question_ids"] == list(range(1, 19))
