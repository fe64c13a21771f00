"""One evaluation stack: `diffclip eval zero-shot | retrieval` read every layout the suite reads (CLIP_benchmark's
webdataset folder, Karpathy JSON, ...) and give the suite's numbers, with CLIP_benchmark's metric names.

References are written here: the tar shards are read with `tarfile` (not webdataset), every image and prompt is
encoded alone, and the metrics are counted by sorting; the suite is run through its installed command."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _paper_data import (
    one_thread,  # noqa: F401 (autouse fixture)
    tiny_model,
    write_image,
    write_karpathy,
    write_wds_classification,
    write_wds_retrieval,
)
from PIL import Image

from transformers_diffclip import cli


CLASSES = ("cat", "dog", "car", "tree", "boat", "bird")
TEMPLATES = ("a photo of a {c}.", "an image of a {c}.")  # what write_wds_classification writes


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_stack")
    folder = root / "model"
    model, processor = tiny_model(folder, seed=3)
    pets = write_wds_classification(root / "wds_pets", CLASSES, {"test": 14}, shards=2)
    return root, folder, model, processor, pets


def _image_embedding(model, processor, image: Image.Image) -> torch.Tensor:
    pixel_values = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = model.get_image_features(pixel_values=pixel_values)
    return F.normalize(getattr(output, "pooler_output", output)[0].double(), dim=-1)


def _text_embedding(model, processor, text: str) -> torch.Tensor:
    input_ids = processor.tokenizer([text], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        output = model.get_text_features(input_ids=input_ids)
    return F.normalize(getattr(output, "pooler_output", output)[0].double(), dim=-1)


def _tar_samples(split_folder: Path) -> list[dict[str, bytes]]:
    """The samples of CLIP_benchmark shards `0.tar ...` (in shard and member order), read with `tarfile`."""
    samples = []
    count = int((split_folder / "nshards.txt").read_text())
    for shard in range(count):
        with tarfile.open(split_folder / f"{shard}.tar") as tar:
            by_key: dict[str, dict[str, bytes]] = {}
            for member in tar.getmembers():
                key, _, extension = member.name.partition(".")
                if key not in by_key:
                    by_key[key] = {}
                    samples.append(by_key[key])
                by_key[key][extension] = tar.extractfile(member).read()
    return samples


def _zero_shot_by_hand(model, processor, root: Path) -> dict[str, float]:
    """acc1, acc5 and mean per-class recall: prompts normalised, averaged per class, renormalised; ranks by
    sorting the cosine scores."""
    weights = []
    for name in CLASSES:
        mean = torch.stack([_text_embedding(model, processor, t.replace("{c}", name)) for t in TEMPLATES]).mean(0)
        weights.append(mean / mean.norm())
    weights = torch.stack(weights)
    hits1, hits5, per_class = [], [], {}
    for sample in _tar_samples(root / "test"):
        extension = next(e for e in ("png", "jpg", "webp") if e in sample)
        target = int(sample["cls"])
        scores = (weights @ _image_embedding(model, processor, Image.open(io.BytesIO(sample[extension])))).tolist()
        ranked = sorted(range(len(CLASSES)), key=lambda c: -scores[c])
        hits1.append(ranked[0] == target)
        hits5.append(target in ranked[:5])
        per_class.setdefault(target, []).append(ranked[0] == target)
    return {
        "acc1": sum(hits1) / len(hits1),
        "acc5": sum(hits5) / len(hits5),
        "mean_per_class_recall": sum(sum(v) / len(v) for v in per_class.values()) / len(per_class),
        "num_images": len(hits1),
    }


def _diffclip(*argv: str) -> subprocess.CompletedProcess:
    """The installed `diffclip` command (beside this interpreter), as a user runs it."""
    command = Path(sys.executable).parent / "diffclip"
    done = subprocess.run(
        [str(command), *argv, "--device", "cpu", "--no-progress"],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_eval_zero_shot_on_a_clip_benchmark_webdataset_prints_the_suites_numbers(world, tmp_path):
    """The issue's done-when: `diffclip eval zero-shot --data <CLIP_benchmark webdataset folder>` works and prints
    the numbers of the suite's zero-shot task on that folder (both through the installed command), which are the
    numbers counted by hand."""
    _, folder, model, processor, pets = world
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"datasets": {"pets": str(pets)}, "tasks": {"zeroshot": ["pets"]}}))
    _diffclip(
        "eval",
        "suite",
        str(suite),
        "--model",
        str(folder),
        "--allow-single-model",
        "--output-dir",
        str(tmp_path / "s"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    by_suite = json.loads((tmp_path / "s" / "zeroshot.json").read_text())["models"][0]["results"]["pets"]

    output = tmp_path / "pets.json"
    done = _diffclip("eval", "zero-shot", "--model", str(folder), "--data", str(pets), "--output", str(output))
    report = json.loads(output.read_text())
    expected = _zero_shot_by_hand(model, processor, pets)
    assert 0 < expected["acc1"] < 1  # a number that can be wrong
    for key in ("acc1", "acc5", "mean_per_class_recall", "num_images"):
        assert report[key] == by_suite[key], key
        assert report[key] == pytest.approx(expected[key], abs=1e-12), key
    assert report["num_classes"] == by_suite["num_classes"] == len(CLASSES)
    assert report["num_templates"] == len(TEMPLATES)  # the dataset's own templates, as the suite takes them
    printed = re.search(r"top-1 ([\d.]+)%  top-5 ([\d.]+)%  mean per-class ([\d.]+)%", done.stdout)
    assert printed, done.stdout
    shown = [f"{100 * by_suite[key]:.2f}" for key in ("acc1", "acc5", "mean_per_class_recall")]
    assert list(printed.groups()) == shown


def test_eval_zero_shot_reads_a_webdataset_in_process_with_class_names_and_a_clip_benchmark_file(world, tmp_path):
    """`--classnames` renames a webdataset's classes (and changes the prompts); `--format clip_benchmark` writes the
    same metrics in CLIP_benchmark's envelope, `acc5` null under 5 classes."""
    _, folder, model, processor, pets = world
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"a {c}" for c in CLASSES) + "\n")
    output, bench = tmp_path / "renamed.json", tmp_path / "bench.json"
    base = ["eval", "zero-shot", "--model", str(folder), "--data", str(pets), "--device", "cpu", "--no-progress"]
    assert cli.main([*base, "--classnames", str(names), "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["metadata"]["num_classes"] == len(CLASSES)
    assert report["per_class"].keys() == {f"a {c}" for c in CLASSES}  # keyed by the names given
    assert cli.main([*base, "--classnames", str(names), "--output", str(bench), "--format", "clip_benchmark"]) == 0
    assert json.loads(bench.read_text())["metrics"] == {
        key: report[key] for key in ("acc1", "acc5", "mean_per_class_recall")
    }
    few = tmp_path / "few.txt"
    few.write_text("cat\ndog\n")
    assert cli.main([*base, "--classnames", str(few)]) == 2  # 2 names for 6 classes


def _retrieval_by_hand(model, processor, images: list[Image.Image], captions: list[list[str]]) -> dict[str, float]:
    image_embeds = torch.stack([_image_embedding(model, processor, image) for image in images])
    flat = [(i, text) for i, texts in enumerate(captions) for text in texts]
    text_embeds = torch.stack([_text_embedding(model, processor, text) for _, text in flat])
    similarity = (text_embeds @ image_embeds.t()).tolist()
    result = {}
    for k in (1, 5, 10):
        hits = [
            owner in sorted(range(len(images)), key=lambda i: -row[i])[:k] for (owner, _), row in zip(flat, similarity)
        ]
        result[f"image_retrieval_recall@{k}"] = sum(hits) / len(hits)
        hits = []
        for i in range(len(images)):
            ranked = sorted(range(len(flat)), key=lambda j: -similarity[j][i])[:k]
            hits.append(any(flat[j][0] == i for j in ranked))
        result[f"text_retrieval_recall@{k}"] = sum(hits) / len(hits)
    return result


def test_eval_retrieval_reads_a_webdataset_and_a_karpathy_file(world, tmp_path, capsys):
    root, folder, model, processor, _ = world
    coco = write_wds_retrieval(tmp_path / "wds_coco", images=5)
    samples = _tar_samples(coco / "test")
    images = [Image.open(io.BytesIO(sample["jpg"])) for sample in samples]
    captions = [[line for line in sample["txt"].decode().splitlines() if line.strip()] for sample in samples]
    karpathy = write_karpathy(tmp_path / "flickr")
    entries = [e for e in json.loads(karpathy.read_text())["images"] if e["split"] == "test"]
    flickr_images = [Image.open(karpathy.parent / "images" / e["filename"]) for e in entries]
    flickr_captions = [[s["raw"] for s in e["sentences"]] for e in entries]
    for data, expected in (
        (coco, _retrieval_by_hand(model, processor, images, captions)),
        (karpathy, _retrieval_by_hand(model, processor, flickr_images, flickr_captions)),
    ):
        output = tmp_path / f"{data.name}.json"
        argv = ["eval", "retrieval", "--model", str(folder), "--data", str(data), "--output", str(output)]
        assert cli.main([*argv, "--device", "cpu", "--no-progress"]) == 0, capsys.readouterr().err
        report = json.loads(output.read_text())
        assert {key: report[key] for key in expected} == pytest.approx(expected, abs=1e-12)
        assert not {"text_to_image", "image_to_text", "top1"} & set(report)  # the old keys are gone
    assert "text to image: R@1" in capsys.readouterr().out


def test_features_cached_by_embed_are_scored_with_this_runs_class_names(world, tmp_path):
    """`diffclip embed` caches an ImageFolder's features with the folder order as classes; `eval zero-shot
    --cache-dir` with class names in another order reuses them and scores as without the
    cache."""
    root, folder, _, _, _ = world
    tree = root / "tree"
    for index, name in enumerate(("bird", "cat", "dog")):
        for copy in range(2):
            write_image(tree / name / f"{copy}.png", 900 + 10 * index + copy)
    names = tmp_path / "names.txt"
    names.write_text("dog\ncat\nbird\n")  # matched to the folders by name, in another order than theirs
    common = ["--model", str(folder), "--data", str(tree), "--device", "cpu", "--no-progress"]
    cache = tmp_path / "cache"
    assert cli.main(["embed", *common, "--cache-dir", str(cache)]) == 0
    reports = []
    for extra in ([], ["--cache-dir", str(cache)]):
        output = tmp_path / f"report{len(reports)}.json"
        argv = ["eval", "zero-shot", *common, "--classnames", str(names), "--output", str(output), *extra]
        assert cli.main(argv) == 0
        reports.append(json.loads(output.read_text()))
    assert 0 < reports[0]["acc1"] < 1
    for key in ("acc1", "mean_per_class_recall", "per_class"):
        assert reports[1][key] == pytest.approx(reports[0][key], abs=1e-12), key
