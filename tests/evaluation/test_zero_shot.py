"""Zero-shot classification and retrieval evaluation (transformers_diffclip.evaluation) and their commands.

Metrics are checked against brute-force computations written here (explicit loops, one text or image at a time);
the classifier against the template-averaging formula; the commands through `cli.main` and once as a process.
Mechanics use the tiny tokenizer of `_helpers`; only the SLIP file test needs ../shared.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import tiny_processor
from PIL import Image

from transformers_diffclip import cli
from transformers_diffclip.core.loading import load_model_and_processor
from transformers_diffclip.core.text_files import load_class_names, load_templates
from transformers_diffclip.evaluation import (
    DEFAULT_TEMPLATE,
    ZeroShotClassifier,
    classification_report,
    find_image_folder,
    match_ranks,
    parse_label_list,
    read_retrieval_jsonl,
    retrieval_recall,
)


SHARED = Path(__file__).resolve().parents[3] / "shared"
SLIP_LABELS = SHARED / "data" / "slip_labels.json"
SLIP_TEMPLATES = SHARED / "data" / "slip_templates.json"
CLASSES = ("cat", "dog", "red car")


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path.name} not found at {path} (tests read it from ../shared beside the checkout)")
    return path


# --------------------------------------------------------------------------------------------------
# Fixtures: a tiny DiffCLIP folder, generated images
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny DiffCLIP model + processor saved as a model folder; returns (folder, model, processor)."""
    from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = DiffCLIPConfig(
        text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=16
    )
    torch.manual_seed(0)
    model = DiffCLIPModel(config).eval()
    processor = tiny_processor(image_size=32)
    folder = tmp_path_factory.mktemp("tiny_diffclip")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def _random_image(path: Path, seed: int, size=(40, 48)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """ImageFolder tree: one folder per class of CLASSES, 3 images each (one in a sub-folder, one JPEG)."""
    root = tmp_path_factory.mktemp("imagefolder")
    seed = 0
    for name in CLASSES:
        for relative in ("a.png", "b.jpg", "nested/c.png"):
            _random_image(root / name / relative, seed, size=(36 + seed, 44))
            seed += 1
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def _embed_image(model, processor, path) -> torch.Tensor:
    pixel_values = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = model.get_image_features(pixel_values=pixel_values)
    return F.normalize(getattr(output, "pooler_output", output)[0].double(), dim=-1)


def _embed_text(model, processor, text) -> torch.Tensor:
    """One text alone: no padding, no batching (the reference for the batched, length-sorted encoder)."""
    input_ids = processor.tokenizer([text], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        output = model.get_text_features(input_ids=input_ids)
    return F.normalize(getattr(output, "pooler_output", output)[0].double(), dim=-1)


def _class_weights(model, processor, labels, templates) -> torch.Tensor:
    """The original evaluation's formula, written out: normalise each prompt, average per class, renormalise."""
    rows = []
    for label in labels:
        names = [label] if isinstance(label, str) else label
        prompts = [template.format(name) for name in names for template in templates]
        mean = torch.stack([_embed_text(model, processor, prompt) for prompt in prompts]).mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def _run(argv, capsys):
    code = cli.main([*argv, "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------------------
# Label and template files
# --------------------------------------------------------------------------------------------------


def test_parse_label_list():
    assert parse_label_list(" cat, dog,,a red car ") == ["cat", "dog", "a red car"]
    with pytest.raises(ValueError, match="empty"):
        parse_label_list(" , ,")


def test_slip_json_files_load():
    labels = load_class_names(_require(SLIP_LABELS), key="imagenet")
    templates = load_templates(_require(SLIP_TEMPLATES), key="imagenet")
    assert len(labels) == 1000 and labels[0] == "tench" and labels[1] == "goldfish"
    assert len(templates) == 7 and all("{}" in t for t in templates)
    assert templates[0].replace("{}", "tench") == templates[0].format("tench")
    fer = load_class_names(SLIP_LABELS, key="fer2013")  # synonyms: lists of names
    assert fer[3] == ["happy", "smiling"]
    for loader, path in ((load_class_names, SLIP_LABELS), (load_templates, SLIP_TEMPLATES)):
        with pytest.raises(ValueError, match="--key"):
            loader(path)
        with pytest.raises(ValueError, match="no key 'nope'.*imagenet"):
            loader(path, key="nope")


def test_plain_text_and_mapping_files(tmp_path):
    plain = tmp_path / "names.txt"
    plain.write_text("cat\n\n dog \nred car\n")
    assert load_class_names(plain) == ["cat", "dog", "red car"]
    mapping = tmp_path / "map.tsv"
    mapping.write_text("n01\ttench\nn02\tgoldfish\n")
    assert load_class_names(mapping) == {"n01": "tench", "n02": "goldfish"}
    as_json = tmp_path / "map.json"
    as_json.write_text(json.dumps({"n01": "tench", "n02": "goldfish"}))
    assert load_class_names(as_json) == {"n01": "tench", "n02": "goldfish"}
    as_json.write_text(json.dumps({"mine": {"n01": "tench", "n02": ["goldfish", "carassius"]}}))  # keyed, synonyms
    assert load_class_names(as_json, key="mine") == {"n01": "tench", "n02": ["goldfish", "carassius"]}
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("n01\ttench\ngoldfish\n")
    with pytest.raises(ValueError, match="mixes"):
        load_class_names(mixed)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\nart of the {}.\n")
    assert load_templates(templates) == ["a photo of a {}.", "art of the {}."]
    templates.write_text("a photo of a {}.\nno placeholder\n")
    with pytest.raises(ValueError, match="no placeholder"):
        load_templates(templates)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_class_names(tmp_path / "missing.txt")


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------


def test_template_averaging_matches_formula(tiny):
    _, model, processor = tiny
    labels = ["cat", ["dog", "puppy"], "a very long class name with many words in it", "red car"]
    templates = ["a photo of a {}.", "itap of the {}.", "{}"]
    classifier = ZeroShotClassifier.from_model(model, processor, labels, templates, batch_size=5)
    expected = _class_weights(model, processor, labels, templates)
    torch.testing.assert_close(classifier.weights.double(), expected, atol=2e-6, rtol=0)
    assert classifier.class_names == ["cat", "dog", labels[2], "red car"]
    # logits = exp(logit_scale) · cos, probabilities = their softmax
    image = torch.randn(3, classifier.embed_dim)
    cosine = F.normalize(image.double(), dim=-1) @ expected.t()
    scale = math.exp(model.logit_scale.item())
    torch.testing.assert_close(classifier.logits(image).double(), scale * cosine, atol=1e-5, rtol=1e-5)
    scores, indices = classifier.predict(image, top_k=2)
    reference = torch.softmax(scale * cosine, dim=-1)
    for row in range(3):
        order = sorted(range(len(labels)), key=lambda c: -reference[row, c].item())[:2]
        assert indices[row].tolist() == order
        torch.testing.assert_close(scores[row].double(), reference[row, order], atol=1e-6, rtol=1e-5)


def test_classifier_save_load_round_trip(tiny, tmp_path):
    _, model, processor = tiny
    classifier = ZeroShotClassifier.from_model(model, processor, ["cat", ["dog", "puppy"]], ["a {}.", "the {}!"])
    saved = classifier.save_pretrained(tmp_path / "clf")
    assert sorted(p.name for p in saved.iterdir()) == ["classifier.json", "classifier.safetensors"]  # no temp files
    loaded = ZeroShotClassifier.from_pretrained(saved)
    assert torch.equal(loaded.weights, classifier.weights)
    assert loaded.labels == ["cat", ["dog", "puppy"]] and loaded.templates == ["a {}.", "the {}!"]
    assert loaded.logit_scale == pytest.approx(classifier.logit_scale, abs=1e-6)
    config = json.loads((saved / "classifier.json").read_text())
    config["num_classes"] = 3
    (saved / "classifier.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not belong together"):
        ZeroShotClassifier.from_pretrained(saved)
    with pytest.raises(FileNotFoundError, match="not a saved zero-shot classifier"):
        ZeroShotClassifier.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="another model"):
        classifier.logits(torch.randn(1, classifier.embed_dim + 1))


def test_classifier_files_from_two_saves_are_refused(tiny, tmp_path):
    """An interrupted re-save (new weights written, old classifier.json left) must not load with the old labels."""
    import shutil

    _, model, processor = tiny
    old = ZeroShotClassifier.from_model(model, processor, ["cat", "dog"], ["a {}."]).save_pretrained(tmp_path / "a")
    new = ZeroShotClassifier.from_model(model, processor, ["car", "boat"], ["a {}."]).save_pretrained(tmp_path / "b")
    shutil.copy(new / "classifier.safetensors", old / "classifier.safetensors")  # same shapes, other classes
    with pytest.raises(ValueError, match="made for other labels"):
        ZeroShotClassifier.from_pretrained(old)
    shutil.copy(new / "classifier.json", old / "classifier.json")  # the save completed: loads
    assert ZeroShotClassifier.from_pretrained(old).labels == ["car", "boat"]


def test_classify_streams_and_matches_model_forward(tiny, image_tree):
    """One template "{}": the probabilities must be those of DiffCLIPModel's forward (what the pipeline computes)."""
    _, model, processor = tiny
    images = sorted(str(p) for p in image_tree.rglob("*.png")) + sorted(str(p) for p in image_tree.rglob("*.jpg"))
    labels = list(CLASSES)
    classifier = ZeroShotClassifier.from_model(model, processor, labels, ["{}"])
    results = classifier.classify(model, processor, images, top_k=3, batch_size=2)  # several batches
    assert [r["image"] for r in results] == images
    for path, result in zip(images, results):
        inputs = processor(text=labels, images=Image.open(path).convert("RGB"), return_tensors="pt", padding=True)
        with torch.no_grad():
            probabilities = model(**inputs).logits_per_image[0].softmax(-1)
        expected = sorted(zip(probabilities.tolist(), labels), reverse=True)
        assert [p["label"] for p in result["predictions"]] == [label for _, label in expected]
        np.testing.assert_allclose([p["score"] for p in result["predictions"]], [s for s, _ in expected], atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Metrics against brute force
# --------------------------------------------------------------------------------------------------


def _brute_force_recall(image_embeds, text_embeds, caption_image, ks):
    similarity = (text_embeds @ image_embeds.t()).tolist()
    text_to_image = {}  # CLIP_benchmark's image_retrieval_recall@k
    image_to_text = {}  # CLIP_benchmark's text_retrieval_recall@k
    for k in ks:
        hits = 0
        for j, row in enumerate(similarity):
            ranked = sorted(range(len(row)), key=lambda i: -row[i])
            hits += caption_image[j] in ranked[:k]
        text_to_image[f"image_retrieval_recall@{k}"] = hits / len(similarity)
        hits = 0
        for i in range(len(image_embeds)):
            column = [row[i] for row in similarity]
            ranked = sorted(range(len(column)), key=lambda j: -column[j])
            hits += any(caption_image[j] == i for j in ranked[:k])
        image_to_text[f"text_retrieval_recall@{k}"] = hits / len(image_embeds)
    return {**text_to_image, **image_to_text}


def test_retrieval_recall_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    num_images = 23
    captions_per_image = torch.randint(1, 6, (num_images,), generator=generator).tolist()  # 1 to 5 captions
    caption_image = [i for i, n in enumerate(captions_per_image) for _ in range(n)]
    permutation = torch.randperm(len(caption_image), generator=generator).tolist()  # captions out of image order
    caption_image = [caption_image[p] for p in permutation]
    image_embeds = F.normalize(torch.randn(num_images, 8, generator=generator), dim=-1)
    # captions near their image, so recall is neither 0 nor 1
    text_embeds = image_embeds[caption_image] + 0.9 * torch.randn(len(caption_image), 8, generator=generator)
    text_embeds = F.normalize(text_embeds, dim=-1)
    ks = (1, 2, 5, 10)
    got = retrieval_recall(image_embeds, text_embeds, caption_image, ks, chunk_size=4)
    expected = _brute_force_recall(image_embeds.double(), text_embeds.double(), caption_image, ks)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got["image_retrieval_recall@1"] < 1 and 0 < got["text_retrieval_recall@1"] < 1
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_recall(image_embeds, text_embeds[:2], [0, 1])


def test_classification_report_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 7, generator=generator)
    targets = torch.randint(0, 6, (40,), generator=generator)  # class 6 has no images
    report = classification_report(match_ranks(logits, targets), targets, [f"c{c}" for c in range(7)], num_classes=7)
    order = [sorted(range(7), key=lambda c: -row[c]) for row in logits.tolist()]
    truth = targets.tolist()
    assert report["acc1"] == pytest.approx(sum(o[0] == t for o, t in zip(order, truth)) / 40)
    assert report["acc5"] == pytest.approx(sum(t in o[:5] for o, t in zip(order, truth)) / 40)
    for c in set(truth):
        members = [o[0] == t for o, t in zip(order, truth) if t == c]
        assert report["per_class"][f"c{c}"] == pytest.approx(sum(members) / len(members))
    assert "c6" not in report["per_class"]
    assert report["mean_per_class_recall"] == pytest.approx(np.mean(list(report["per_class"].values())))


# --------------------------------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------------------------------


def test_read_retrieval_jsonl(tmp_path):
    path = tmp_path / "set.jsonl"
    lines = [
        {"image": "a.jpg", "captions": ["one", "two"]},
        {"image": "b.jpg", "caption": "three"},
        {"image": "a.jpg", "caption": "four"},  # same image again: its captions are merged
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    data = read_retrieval_jsonl(path)
    assert data.images == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert data.captions == ["one", "two", "three", "four"] and data.caption_image == [0, 0, 1, 0]
    assert read_retrieval_jsonl(path, image_root="/data").images[0] == str(Path("/data/a.jpg"))
    for bad, message in (
        ('{"image": "a.jpg", "captions": []}', "line 1: 'captions' must be a non-empty list"),
        ('{"image": "a.jpg"}', "line 1: expected 'captions'"),
        ('{"caption": "x"}', "line 1: expected an object with an 'image'"),
        ('{"image": "a.jpg", "caption": "x"}\nnot json', "line 2: not valid JSON"),
        ("\n", "no entries"),
    ):
        path.write_text(bad)
        with pytest.raises(ValueError, match=message):
            read_retrieval_jsonl(path)


def test_find_image_folder(image_tree, tmp_path):
    data = find_image_folder(image_tree)
    assert data.folders == ["cat", "dog", "red car"] and data.labels == ["cat", "dog", "red car"]
    assert len(data.samples) == 9 and all(not p.endswith(".txt") for p, _ in data.samples)
    # names matching the folders: matched by name, in a larger label set
    data = find_image_folder(image_tree, ["airplane", "red car", "dog", "cat"])
    assert data.folder_classes == [3, 2, 1]
    assert data.matching == "name" and data.duplicates == []
    # no folder named after a class, as many names as folders: the ImageFolder convention (sorted folders ↔ names)
    data = find_image_folder(image_tree, ["kitty", "puppy", "kitty"])
    assert data.labels == ["kitty", "puppy", "kitty"] and data.folder_classes == [0, 1, 2]
    assert data.matching == "position" and data.duplicates == ["kitty"]
    # an explicit mapping must name every folder
    with pytest.raises(ValueError, match="1 class folder.*missing from the class-name file.*'red car'"):
        find_image_folder(image_tree, {"cat": "kitty", "dog": "puppy", "bus": "bus"})
    # some folders named after classes but not all: an error listing them, never a fallback to position
    for names in (["cat", "dog"], ["cat", "dog", "auto"]):
        with pytest.raises(ValueError, match="2 of the 3 class folders .* 1 are not: 'red car'.*never by a mix"):
            find_image_folder(image_tree, names)
    with pytest.raises(ValueError, match="'cat' match several classes"):
        find_image_folder(image_tree, ["cat", "dog", "red car", "cat"])
    with pytest.raises(ValueError, match="cannot be matched to the 3 folders by position"):
        find_image_folder(image_tree, ["kitty", "puppy"])
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="No images found"):
        find_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="No class folders"):
        find_image_folder(tmp_path / "empty" / "a")


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def test_cli_zero_shot_text_and_json(tiny, image_tree, capsys, tmp_path):
    folder, model, processor = tiny
    images = [str(image_tree / "cat" / "a.png"), str(image_tree / "dog" / "b.jpg")]
    code, out, err = _run(["zero-shot", "--model", str(folder), "--labels", "cat,dog,red car", *images], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == images[0] and len(out.splitlines()) == 2 * (1 + 3)

    templates = ["a photo of a {}.", "art of the {}."]
    argv = ["zero-shot", "--model", str(folder), "--labels", "cat,dog,red car", "--json", "--top-k", "2"]
    argv += ["--template", templates[0], "--template", templates[1], "--save-classifier", str(tmp_path / "c"), *images]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    results = json.loads(out)
    weights = _class_weights(model, processor, list(CLASSES), templates)
    scale = math.exp(model.logit_scale.item())
    for path, result in zip(images, results):
        probabilities = torch.softmax(scale * weights @ _embed_image(model, processor, path), dim=0).tolist()
        expected = sorted(zip(probabilities, CLASSES), reverse=True)[:2]
        assert result["image"] == path
        assert [p["label"] for p in result["predictions"]] == [label for _, label in expected]
        np.testing.assert_allclose([p["score"] for p in result["predictions"]], [s for s, _ in expected], atol=1e-5)

    # the saved classifier gives the same answers without re-encoding labels
    argv = ["zero-shot", "--model", str(folder), "--classifier", str(tmp_path / "c"), "--json", "--top-k", "2"]
    code, out, err = _run([*argv, *images], capsys)
    assert code == 0, err
    assert json.loads(out) == results


def test_cli_eval_zero_shot_matches_brute_force(tiny, image_tree, capsys, tmp_path):
    folder, model, processor = tiny
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"bench": ["airplane", "cat", "dog", "red car", "tree", "house"]}))
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\na drawing of the {}.\n")
    output = tmp_path / "report" / "zero_shot.json"
    argv = ["eval", "zero-shot", "--model", str(folder), "--data", str(image_tree), "--classnames", str(names)]
    argv += ["--key", "bench", "--templates", str(templates), "--output", str(output), "--batch-size", "4"]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "top-1" in out
    report = json.loads(output.read_text())

    labels = json.loads(names.read_text())["bench"]
    weights = _class_weights(model, processor, labels, templates.read_text().split("\n")[:2])
    hits1, hits5, per_class = 0, 0, {}
    for folder_name in CLASSES:
        target = labels.index(folder_name)
        paths = [image_tree / folder_name / "a.png", image_tree / folder_name / "b.jpg"]
        paths.append(image_tree / folder_name / "nested" / "c.png")
        correct = 0
        for path in paths:
            scores = (weights @ _embed_image(model, processor, path)).tolist()
            ranked = sorted(range(len(labels)), key=lambda c: -scores[c])
            correct += ranked[0] == target
            hits5 += target in ranked[:5]
        hits1 += correct
        per_class[folder_name] = correct / len(paths)
    assert report["num_images"] == 9 and report["num_classes"] == 6
    assert report["acc1"] == pytest.approx(hits1 / 9) and report["acc5"] == pytest.approx(hits5 / 9)
    assert report["per_class"] == pytest.approx(per_class)
    assert all(0 <= report[key] <= 1 for key in ("acc1", "acc5", "mean_per_class_recall"))


def test_cli_eval_retrieval_matches_brute_force(tiny, tmp_path, capsys):
    folder, model, processor = tiny
    images = [_random_image(tmp_path / "img" / f"{i}.png", 100 + i, size=(32 + 3 * i, 40)) for i in range(8)]
    captions = {i: [f"photo number {i} of {n} things" for n in range(1 + i % 3)] for i in range(8)}
    lines = []
    for i in range(8):
        if len(captions[i]) > 1:
            lines.append({"image": f"img/{i}.png", "captions": captions[i][:-1]})
        lines.append({"image": f"img/{i}.png", "caption": captions[i][-1]})  # a second line for the same image
    data = tmp_path / "set.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines))
    output = tmp_path / "retrieval.json"
    argv = ["eval", "retrieval", "--model", str(folder), "--data", str(data), "--output", str(output)]
    code, out, err = _run([*argv, "--batch-size", "3", "--text-batch-size", "4"], capsys)
    assert code == 0, err
    report = json.loads(output.read_text())

    image_embeds = torch.stack([_embed_image(model, processor, path) for path in images])
    flat = [(i, text) for i in range(8) for text in captions[i]]
    text_embeds = torch.stack([_embed_text(model, processor, text) for _, text in flat])
    expected = _brute_force_recall(image_embeds, text_embeds, [i for i, _ in flat], (1, 5, 10))
    assert report["num_images"] == 8 and report["num_captions"] == len(flat)
    assert {key: report[key] for key in expected} == pytest.approx(expected)


def test_cli_errors(tiny, image_tree, tmp_path, capsys):
    folder, _, _ = tiny
    image = str(image_tree / "cat" / "a.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not a JPEG")
    bad_tree = tmp_path / "bad_tree"
    _random_image(bad_tree / "cat" / "ok.png", 1)
    (bad_tree / "dog").mkdir()
    (bad_tree / "dog" / "corrupt.png").write_bytes(b"\x89PNG broken")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    cases = [
        (["zero-shot", "--model", str(tmp_path / "no_such_model"), "--labels", "a,b", image], "no_such_model"),
        (["zero-shot", "--model", "nobody/no-such-diffclip", "--labels", "a,b", image], "nobody/no-such-diffclip"),
        (["zero-shot", "--model", str(folder), "--labels", " , ", image], "label list ' , ' is empty"),
        (["zero-shot", "--model", str(folder), "--labels", "a,b", str(broken)], "Cannot read image .*broken.jpg"),
        (["zero-shot", "--model", str(folder), "--labels", "a,b", str(tmp_path / "gone.png")], "not found.*gone.png"),
        (  # a class folder without images: no layout the split readers know (found cat/)
            ["eval", "zero-shot", "--model", str(folder), "--data", str(tmp_path / "empty")],
            "empty is in none of the dataset layouts .*found cat/",
        ),
        (["eval", "zero-shot", "--model", str(folder), "--data", str(bad_tree)], "Cannot read image .*corrupt.png"),
        (
            ["eval", "zero-shot", "--model", str(folder), "--data", str(image_tree), "--classnames", str(names)],
            "2 of the 3 class folders are named after classes .* 'red car'",
        ),
        (["eval", "retrieval", "--model", str(folder), "--data", str(tmp_path / "none.jsonl")], "none.jsonl"),
    ]
    for argv, message in cases:
        code, _, err = _run(argv, capsys)
        assert code == 2, (argv, err)
        assert err.startswith("diffclip "), err
        assert re.search(message, err), (message, err)


def test_unknown_model_error_names_it():
    with pytest.raises(OSError, match="'nobody/nothing-here'"):
        load_model_and_processor("nobody/nothing-here", device="cpu")


@pytest.mark.slow
def test_cli_as_a_process(tiny, image_tree):
    """`python -m transformers_diffclip.cli` exits 0 and prints the JSON (the error exit code 2 is checked through
    `cli.main` above; one process start costs seconds)."""
    folder, _, _ = tiny
    command = [sys.executable, "-m", "transformers_diffclip.cli", "zero-shot", "--model", str(folder), "--json"]
    command += ["--no-progress", "--device", "cpu", "--labels", "cat,dog", str(image_tree / "cat" / "a.png")]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout)[0]["predictions"]
    assert sorted(p["label"] for p in predictions) == ["cat", "dog"]
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------------------------
# Results that cannot flatter a broken model; class matching by name; reports
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tiny, tmp_path_factory):
    """Two broken copies of the tiny model: `collapsed` (zero projections: every embedding equal) and `nan` (a NaN
    in the image projection: every image embedding NaN)."""
    folder, model, processor = tiny
    root = tmp_path_factory.mktemp("broken")
    state = model.state_dict()
    collapsed = {**state, "visual_projection.weight": torch.zeros_like(state["visual_projection.weight"])}
    collapsed["text_projection.weight"] = torch.zeros_like(state["text_projection.weight"])
    nan = {**state, "visual_projection.weight": state["visual_projection.weight"].clone()}
    nan["visual_projection.weight"][0, 0] = float("nan")
    paths = {}
    for name, weights in (("collapsed", collapsed), ("nan", nan)):
        copy = type(model)(model.config)
        copy.load_state_dict(weights)
        paths[name] = root / name
        copy.save_pretrained(paths[name])
        processor.save_pretrained(paths[name])
    return paths


def _retrieval_file(tmp_path, captions_per_image=(1, 2, 1, 3)):
    lines = []
    for i, count in enumerate(captions_per_image):
        _random_image(tmp_path / "img" / f"{i}.png", 200 + i)
        lines.append({"image": f"img/{i}.png", "captions": [f"picture {i} caption {n}" for n in range(count)]})
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


def test_a_collapsed_model_scores_at_most_chance_and_a_nan_model_is_an_error(broken, image_tree, tmp_path, capsys):
    captions_per_image = (1, 2, 1, 3)
    data = _retrieval_file(tmp_path, captions_per_image)
    output = tmp_path / "collapsed.json"
    argv = ["eval", "retrieval", "--model", str(broken["collapsed"]), "--data", str(data), "--output", str(output)]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    report = json.loads(output.read_text())
    images, texts = len(captions_per_image), sum(captions_per_image)
    for k in (1, 5, 10):
        assert report[f"image_retrieval_recall@{k}"] <= min(k, images) / images
        # chance: one of the image's m captions among k of the texts drawn at random
        chance = sum(
            1.0 if k > texts - m else 1 - math.comb(texts - m, k) / math.comb(texts, k) for m in captions_per_image
        )
        chance /= images
        assert report[f"text_retrieval_recall@{k}"] <= chance + 1e-12
    assert report["image_retrieval_recall@1"] == 0 and report["text_retrieval_recall@1"] == 0
    output = tmp_path / "collapsed_zero_shot.json"
    argv = ["eval", "zero-shot", "--model", str(broken["collapsed"]), "--data", str(image_tree)]
    code, _, err = _run([*argv, "--output", str(output)], capsys)
    assert code == 0, err
    assert json.loads(output.read_text())["acc1"] == 0  # chance would be 1/3

    for argv in (
        ["eval", "retrieval", "--model", str(broken["nan"]), "--data", str(data)],
        ["eval", "zero-shot", "--model", str(broken["nan"]), "--data", str(image_tree), "--batch-size", "2"],
    ):
        code, out, err = _run(argv, capsys)
        total = 4 if argv[1] == "retrieval" else 9
        assert code == 2 and f"{total} of the {total} image embeddings are not finite" in err, err


def test_a_saved_classifier_is_matched_to_the_folders_by_name(tiny, image_tree, tmp_path, capsys):
    folder, model, processor = tiny
    reference = tmp_path / "reference.json"
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nred car\n")
    base = ["eval", "zero-shot", "--model", str(folder), "--data", str(image_tree)]
    code, _, err = _run([*base, "--classnames", str(names), "--output", str(reference)], capsys)
    assert code == 0, err
    expected = json.loads(reference.read_text())
    shuffled = ZeroShotClassifier.from_model(model, processor, ["red car", "cat", "dog"], [DEFAULT_TEMPLATE])
    shuffled.save_pretrained(tmp_path / "shuffled")
    for extra in ([], ["--classnames", str(names)]):
        output = tmp_path / "shuffled.json"
        code, _, err = _run(
            [*base, "--classifier", str(tmp_path / "shuffled"), *extra, "--output", str(output)], capsys
        )
        assert code == 0, err
        got = json.loads(output.read_text())
        for key in ("acc1", "acc5", "mean_per_class_recall", "per_class", "num_images", "num_classes"):
            assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    other = ZeroShotClassifier.from_model(model, processor, ["cat", "dog", "bus", "tree"], [DEFAULT_TEMPLATE])
    other.save_pretrained(tmp_path / "other")
    code, _, err = _run([*base, "--classnames", str(names), "--classifier", str(tmp_path / "other")], capsys)
    assert code == 2
    assert "1 class(es) of " in err and "'red car'" in err and "2 class(es) of the classifier not in" in err, err
    assert "'bus', 'tree'" in err
    with pytest.raises(ValueError, match="cannot be resolved by name"):
        ZeroShotClassifier(torch.eye(3), ["a", "a", "b"], ["{}"], 0.0).class_order(["a", "b", "a"])
    assert ZeroShotClassifier(torch.eye(3), ["a", "a", "b"], ["{}"], 0.0).class_order(["a", "a", "b"]) == [0, 1, 2]


def test_ties_in_predictions_and_duplicate_names(tiny, image_tree, capsys):
    """Equal logits (a name given twice) come in class-list order, and the duplicate is reported."""
    folder, model, processor = tiny
    classifier = ZeroShotClassifier.from_model(model, processor, ["dog", "cat", "dog"], ["{}"])
    assert torch.equal(classifier.weights[0], classifier.weights[2])
    image = torch.randn(6, classifier.embed_dim)
    scores, classes = classifier.predict(image, top_k=3)
    for row_scores, row_classes in zip(scores.tolist(), classes.tolist()):
        assert row_classes.index(0) < row_classes.index(2)
        assert row_scores == sorted(row_scores, reverse=True)
    argv = ["zero-shot", "--model", str(folder), "--labels", "dog,cat,dog", str(image_tree / "cat" / "a.png")]
    code, out, err = _run(argv, capsys)
    assert code == 0 and "names 'dog' more than once" in err


def test_reports_carry_metadata_and_the_clip_benchmark_layout(tiny, image_tree, tmp_path, capsys):
    import transformers

    import transformers_diffclip

    folder, _, _ = tiny
    data = _retrieval_file(tmp_path)
    report_path, bench_path = tmp_path / "report.json", tmp_path / "bench.json"
    base = ["eval", "zero-shot", "--model", str(folder), "--data", str(image_tree), "--template", "a {}."]
    code, _, err = _run([*base, "--output", str(report_path)], capsys)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    keys = {"model", "data", "acc1", "acc5", "mean_per_class_recall", "per_class", "num_images", "num_classes"}
    assert keys <= set(report)
    metadata = report["metadata"]
    assert metadata["model"] == str(folder) and metadata["revision"] is None and metadata["dtype"] == "float32"
    assert metadata["templates"] == ["a {}."] and metadata["num_images"] == 9 and metadata["num_classes"] == 3
    assert metadata["model_type"] == "diffclip" and metadata["class_matching"] == "folder names"
    assert metadata["versions"]["transformers"] == transformers.__version__
    assert metadata["versions"]["transformers_diffclip"] == transformers_diffclip.__version__
    assert "ties count against the match" in metadata["tie_rule"]
    code, _, err = _run([*base, "--output", str(bench_path), "--format", "clip_benchmark"], capsys)
    assert code == 0, err
    bench = json.loads(bench_path.read_text())
    assert set(bench) == {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert bench["task"] == "zeroshot_classification" and bench["dataset"] == image_tree.name
    assert bench["metrics"] == {
        "acc1": report["acc1"],
        "acc5": None,
        "mean_per_class_recall": report["mean_per_class_recall"],
    }
    argv = ["eval", "retrieval", "--model", str(folder), "--data", str(data), "--format", "clip_benchmark"]
    code, _, err = _run([*argv, "--output", str(bench_path), "--dataset-name", "mine"], capsys)
    assert code == 0, err
    bench = json.loads(bench_path.read_text())
    assert bench["task"] == "zeroshot_retrieval" and bench["dataset"] == "mine" and bench["language"] == "en"
    assert sorted(bench["metrics"]) == sorted(
        [f"image_retrieval_recall@{k}" for k in (1, 5, 10)] + [f"text_retrieval_recall@{k}" for k in (1, 5, 10)]
    )
