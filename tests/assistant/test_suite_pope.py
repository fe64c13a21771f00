"""`diffclip eval suite`'s pope task: two assistants compared with the suite's paired bootstrap and McNemar test.

The two assistants are made to answer "yes" and "no" to everything (their saved generation configs suppress every
other token), so each one's right answers, and the counts of the McNemar test, are known from the labels alone."""

from __future__ import annotations

import json

import pytest
import torch
from _tiny import COLOURS, colour_image, tiny_config, tiny_language_model

from transformers_diffclip import DiffCLIPModel
from transformers_diffclip.assistant import assemble_assistant, vision_tower_of
from transformers_diffclip.evaluation.suite import parse_suite, run_suite
from transformers_diffclip.image_processing_diffclip import DiffCLIPImageProcessor


LABELS = {  # per file: the labels of its questions
    "random": ["yes", "no", "yes", "yes", "no"],
    "popular": ["no", "no", "yes", "no", "no"],
    "adversarial": ["yes", "yes", "yes", "no", "yes"],
}


def _saved_assistant(folder, word):
    torch.manual_seed(1)
    lm, tokenizer = tiny_language_model(seed=2)
    image_processor = DiffCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model, processor = assemble_assistant(
        vision_tower_of(DiffCLIPModel(tiny_config())), image_processor, lm, tokenizer
    )
    keep = {tokenizer.convert_tokens_to_ids(word), tokenizer.eos_token_id}
    model.generation_config.suppress_tokens = [i for i in range(len(tokenizer)) if i not in keep]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_suite_compares_two_assistants_on_pope(tmp_path):
    pope = tmp_path / "pope"
    pope.mkdir()
    for split, labels in LABELS.items():
        rows = [
            {"question_id": i, "image": "red.png", "text": "Is there a red square?", "label": label}
            for i, label in enumerate(labels)
        ]
        (pope / f"coco_pope_{split}.json").write_text("\n".join(json.dumps(row) for row in rows))
    colour_image(COLOURS["red"]).save(pope / "red.png")
    config = {
        "assistants": [
            {"name": "says-yes", "model": str(_saved_assistant(tmp_path / "yes", "yes"))},
            {"name": "says-no", "model": str(_saved_assistant(tmp_path / "no", "no"))},
        ],
        "datasets": {"pope": {"data": str(pope)}},
        "tasks": {"pope": ["pope"]},
        "bootstrap": {"resamples": 1000, "seed": 0},
    }
    suite = parse_suite(config)

    def load(entry):
        from transformers_diffclip.assistant import load_assistant

        model, processor = load_assistant(entry.model)
        return model.eval(), processor

    outputs = run_suite(suite, None, tmp_path / "report", charts=False, load_assistant=load)
    saved = json.loads((tmp_path / "report" / "pope.json").read_text())
    assert saved["models"][0]["name"] == "says-yes"
    for split, labels in LABELS.items():
        yes_share = labels.count("yes") / 5
        said_yes = saved["models"][0]["results"][f"pope/{split}"]
        said_no = saved["models"][1]["results"][f"pope/{split}"]
        assert {a["answer"] for a in said_yes["answers"]} == {"yes"}
        assert {a["answer"] for a in said_no["answers"]} == {"no"}
        assert said_yes["pope_accuracy"] == pytest.approx(yes_share)
        assert said_no["pope_accuracy"] == pytest.approx(1 - yes_share)
        # second − first: says-no is right on the "no" questions only, says-yes on the "yes" ones only
        comparison = saved["comparisons"][0]["datasets"][f"pope/{split}"]["correct"]
        assert comparison["difference"] == pytest.approx(100 * (1 - 2 * yes_share))
        assert comparison["mcnemar"]["only_second"] == labels.count("no")
        assert comparison["mcnemar"]["only_first"] == labels.count("yes")
        assert comparison["low"] <= comparison["difference"] <= comparison["high"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## POPE" in report and "says-no − says-yes" in report
    assert outputs["pope"]["bootstrap"]["resamples"] == 1000


def test_pope_task_needs_assistants():
    config = {"datasets": {"pope": {"data": "p"}}, "tasks": {"pope": ["pope"]}}
    with pytest.raises(ValueError, match="name them under 'assistants'"):
        parse_suite(config)
