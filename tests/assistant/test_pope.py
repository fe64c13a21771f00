"""POPE as its authors score it: the parser's edge cases and the five numbers on a hand-worked set of answers; the
question files' checks; `diffclip eval pope` through the installed command (batched answers == one at a time)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from _tiny import COLOURS, colour_image, tiny_config, tiny_language_model

from transformers_diffclip import DiffCLIPModel
from transformers_diffclip.assistant import assemble_assistant, parse_answer, pope_metrics, read_pope_file
from transformers_diffclip.assistant.build import vision_tower_of
from transformers_diffclip.assistant.pope import PROMPT_SUFFIX
from transformers_diffclip.image_processing_diffclip import DiffCLIPImageProcessor


# (generated text, what POPE's eval_pope.py makes of it), worked by hand from its rule: up to the first ".", commas
# removed, split on " ", "No"/"not"/"no" among the words → no, else yes.
PARSER_CASES = [
    ("No.", "no"),
    ("No", "no"),
    ("no", "no"),
    ("Yes", "yes"),
    ("Yes.", "yes"),
    ("not sure", "no"),
    ("Yes, there is no dog.", "no"),  # "Yes there is no dog": "no" is a word
    ("Yes, there is a dog. No cat.", "yes"),  # only the first sentence counts
    ("Nope", "yes"),  # not one of the three words
    ("NO", "yes"),  # case matters
    ("", "yes"),
    ("no,", "no"),  # the comma is removed, "no" remains
    ("yes,no", "yes"),  # commas removed, not split on: "yesno"
    ("There is nothing", "yes"),
    ("No\nthere is not", "no"),  # "No\nthere" is one word, but "not" is another
    ("Not", "yes"),  # "Not" is not "not"
    ("It is not. Yes", "no"),
]


@pytest.mark.parametrize("text, answer", PARSER_CASES)
def test_parser_follows_pope(text, answer):
    assert parse_answer(text) == answer


def test_metrics_on_a_hand_worked_set():
    answers = ["Yes", "No.", "Yes, there is no dog", "Nope", "", "not sure", "yes,no", "No, a cat."]
    labels = ["yes", "yes", "no", "no", "yes", "no", "yes", "no"]
    # parsed: yes no no yes yes no yes no → TP 3 (0, 4, 6), FN 1 (1), FP 1 (3), TN 3 (2, 5, 7)
    metrics = pope_metrics([parse_answer(a) for a in answers], labels)
    assert metrics == pytest.approx(
        {
            "pope_accuracy": 6 / 8,
            "pope_precision": 3 / 4,
            "pope_recall": 3 / 4,
            "pope_f1": 0.75,
            "pope_yes_ratio": 4 / 8,
        }
    )


def test_metrics_when_nothing_is_answered_yes():
    metrics = pope_metrics(["no", "no", "no"], ["yes", "no", "no"])
    assert metrics == {
        "pope_accuracy": 2 / 3,
        "pope_precision": 0.0,
        "pope_recall": 0.0,
        "pope_f1": 0.0,
        "pope_yes_ratio": 0.0,
    }


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: not JSON"),
        (json.dumps({"question_id": 2, "image": "a.png", "text": "q"}), "line 2: expected an object"),
        (json.dumps({"question_id": 2, "image": "a.png", "text": "q", "label": "maybe"}), "label must be"),
        (json.dumps({"question_id": 1, "image": "a.png", "text": "q", "label": "no"}), "question_id 1 appears twice"),
    ],
)
def test_bad_question_files_are_refused_naming_the_line(tmp_path, line, message):
    good = json.dumps({"question_id": 1, "image": "a.png", "text": "q", "label": "yes"})
    path = tmp_path / "coco_pope_random.json"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_pope_file(path)


def _pope_folder(folder, questions):
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("random", "popular", "adversarial"):
        (folder / f"coco_pope_{split}.json").write_text("\n".join(json.dumps(q) for q in questions[split]) + "\n")
    for name, rgb in COLOURS.items():
        colour_image(rgb, seed=3).save(folder / f"{name}.png")


@pytest.fixture(scope="module")
def assistant_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assistant")
    torch.manual_seed(1)
    diffclip = DiffCLIPModel(tiny_config())
    lm, tokenizer = tiny_language_model(seed=3)
    processor = DiffCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model, llava_processor = assemble_assistant(vision_tower_of(diffclip), processor, lm, tokenizer)
    model.save_pretrained(folder)
    llava_processor.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_eval_pope_command_answers_each_question_as_one_at_a_time(assistant_dir, tmp_path):
    """Through the installed command, batches of 3 with left padding: every answer equals the one greedy
    generation of its question alone (prompt: the chat template around the question + LLaVA's instruction), and
    each file's numbers are those of its answers."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    names = list(COLOURS)
    questions = {
        split: [
            {
                "question_id": f"{split}-{i}",
                "image": f"{names[i % len(names)]}.png",
                "text": f"Is there a {names[(i * k) % len(names)]} square in the image?",
                "label": "yes" if (i + k) % 3 else "no",
            }
            for i in range(5)
        ]
        for k, split in enumerate(("random", "popular", "adversarial"), start=1)
    }
    _pope_folder(tmp_path / "pope", questions)
    output = tmp_path / "report.json"
    command = ["diffclip", "eval", "pope", "--model", str(assistant_dir), "--data", str(tmp_path / "pope")]
    command += ["--batch-size", "3", "--max-new-tokens", "4", "--device", "cpu", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())["splits"]
    assert sorted(report) == ["adversarial", "popular", "random"]

    model = AutoModelForImageTextToText.from_pretrained(assistant_dir).eval()
    processor = AutoProcessor.from_pretrained(assistant_dir)
    tokenizer = processor.tokenizer
    for split, rows in questions.items():
        answers = report[split]["answers"]
        assert [a["question_id"] for a in answers] == [row["question_id"] for row in rows]
        for row, answer in zip(rows, answers):
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": "<image>\n" + row["text"] + PROMPT_SUFFIX}],
                tokenize=False,
                add_generation_prompt=True,
            )
            assert prompt.endswith("Answer the question using a single word or phrase. ASSISTANT :")
            image = colour_image(COLOURS[row["image"][:-4]], seed=3)
            inputs = processor(images=[image], text=[prompt], return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
            assert answer["text"] == text
            assert answer["answer"] == (
                "no" if {"No", "no", "not"} & set(text.split(".")[0].replace(",", "").split(" ")) else "yes"
            )
        parsed = [a["answer"] for a in answers]
        labels = [row["label"] for row in rows]
        assert report[split]["pope_accuracy"] == pytest.approx(sum(p == t for p, t in zip(parsed, labels)) / 5)
        assert report[split]["pope_yes_ratio"] == pytest.approx(parsed.count("yes") / 5)
        assert report[split]["num_questions"] == 5


@pytest.mark.slow
def test_eval_pope_refuses_a_missing_file_before_loading(tmp_path):
    (tmp_path / "coco_pope_random.json").write_text("")
    done = subprocess.run(
        ["diffclip", "eval", "pope", "--model", str(tmp_path / "nowhere"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "missing coco_pope_popular.json, coco_pope_adversarial.json" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
