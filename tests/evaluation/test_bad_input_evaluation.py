"""The `diffclip` commands against bad input (issue 23): every case ends with exit code 2 and one line naming the
file and the problem (no traceback), prints and writes only finite numbers as valid JSON, checks --output before
the work, and writes classifiers whole or not at all, also against a concurrent writer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import save_tiny_diffclip
from PIL import Image

from transformers_diffclip.cli import main as diffclip
from transformers_diffclip.evaluation import ZeroShotClassifier


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_diffclip(tmp_path_factory.mktemp("bad-input") / "model")


def _fails(argv, capsys) -> tuple[str, str]:
    """Run `diffclip argv`: exit code 2, one line on stderr, no traceback; returns (stdout, stderr)."""
    code = diffclip(argv + ["--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("diffclip")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return out, lines[0]


def _zero_shot(model, *images, labels="cat,dog"):
    return ["zero-shot", "--model", str(model), "--labels", labels, *map(str, images)]


# --------------------------------------------------------------------------------------------------
# 1. symlink loops, 3. two spellings: through the commands
# --------------------------------------------------------------------------------------------------


def test_eval_zero_shot_counts_each_image_once_despite_symlink_loops(model, tmp_path, capsys):
    data = tmp_path / "d"
    _image(data / "cat" / "a.png", 0)
    _image(data / "dog" / "b.png", 1)
    os.symlink(".", data / "cat" / "self")
    os.symlink("..", data / "cat" / "up")
    os.symlink(tmp_path, data / "dog" / "ancestor")
    start = time.monotonic()
    assert diffclip(["eval", "zero-shot", "--model", str(model), "--data", str(data), "--no-progress"]) == 0
    assert time.monotonic() - start < 60
    assert "zero-shot on 2 images, 2 classes" in capsys.readouterr().out


def test_two_spellings_of_one_image_give_the_metrics_of_one(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --data given relative, as the probe did: `ok0.png` and `/abs/ok0.png` differ
    for seed in range(3):
        _image(tmp_path / f"ok{seed}.png", seed)
    one = tmp_path / "one.jsonl"
    one.write_text(
        '{"image": "ok0.png", "captions": ["a cat", "a kitty"]}\n'
        '{"image": "ok1.png", "captions": ["a dog"]}\n{"image": "ok2.png", "captions": ["a car"]}\n'
    )
    two = tmp_path / "two.jsonl"
    two.write_text(
        '{"image": "ok0.png", "captions": ["a cat"]}\n'
        '{"image": "ok1.png", "captions": ["a dog"]}\n{"image": "ok2.png", "captions": ["a car"]}\n'
        f'{{"image": "{tmp_path / "ok0.png"}", "captions": ["a kitty"]}}\n'
    )
    reports = []
    for data in (one, two):
        output = tmp_path / f"{data.stem}.json"
        argv = ["eval", "retrieval", "--model", str(model), "--data", data.name, "--output", str(output)]
        assert diffclip(argv + ["--no-progress"]) == 0
        reports.append(json.loads(output.read_text()))
    capsys.readouterr()
    assert reports[1]["num_images"] == reports[0]["num_images"] == 3
    # caption order differs (a kitty comes last), so image->text ranks may differ only where captions tie
    for k in (1, 5, 10):
        assert reports[1][f"image_retrieval_recall@{k}"] == reports[0][f"image_retrieval_recall@{k}"]
        assert reports[1][f"text_retrieval_recall@{k}"] == reports[0][f"text_retrieval_recall@{k}"]


# --------------------------------------------------------------------------------------------------
# 4. non-finite numbers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_model(model, tmp_path_factory) -> Path:
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("nan") / "model"
    shutil.copytree(model, folder)
    weights = load_file(folder / "model.safetensors")
    weights["logit_scale"] = torch.full_like(weights["logit_scale"], float("nan"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_a_nan_logit_scale_exits_2_with_no_invalid_json(nan_model, tmp_path, capsys):
    out, err = _fails(_zero_shot(nan_model, _image(tmp_path / "a.png")) + ["--json"], capsys)
    assert "NaN" not in out and (out.strip() == "" or json.loads(out) is not None)
    assert "logit scale is nan" in err


def test_a_classifier_with_an_infinite_scale_exits_2(model, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    saved = tmp_path / "classifier"
    assert diffclip(_zero_shot(model) + ["--save-classifier", str(saved), "--no-progress"]) == 0
    tensors = load_file(saved / "classifier.safetensors")
    tensors["logit_scale"] = torch.tensor([float("inf")])
    from safetensors import safe_open

    with safe_open(str(saved / "classifier.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, saved / "classifier.safetensors", metadata=metadata)
    capsys.readouterr()
    argv = ["zero-shot", "--model", str(model), "--classifier", str(saved), str(_image(tmp_path / "a.png")), "--json"]
    out, err = _fails(argv, capsys)
    assert out.strip() == "" and "logit scale is inf" in err


# --------------------------------------------------------------------------------------------------
# 5. --output checked first
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_output_is_checked_before_the_evaluation(where, tmp_path, capsys):
    data = tmp_path / "d"
    _image(data / "cat" / "a.png")
    output = tmp_path if where == "folder" else _image(tmp_path / "x.png") / "report.json"
    # a model that does not exist: the --output check comes first, before any model is loaded
    argv = ["eval", "zero-shot", "--model", str(tmp_path / "no-model"), "--data", str(data), "--output", str(output)]
    _, err = _fails(argv, capsys)
    assert f"--output {output}" in err and ("is a folder" in err or "is not a folder" in err)


# --------------------------------------------------------------------------------------------------
# 6. classifiers: whole or not at all, concurrent writers, overwriting said
# --------------------------------------------------------------------------------------------------

CONCURRENT_SAVES = textwrap.dedent(
    """
    import sys, torch
    from transformers_diffclip.evaluation import ZeroShotClassifier
    folder, value = sys.argv[1], float(sys.argv[2])
    weights = torch.nn.functional.normalize(torch.full((3, 4), value) + torch.arange(4.0), dim=-1)
    classifier = ZeroShotClassifier(weights, ["cat", "dog", "car"], [f"template {value} {{}}"], 4.6)
    for _ in range(40):
        classifier.save_pretrained(folder)
    """
)


def _agrees(classifier: ZeroShotClassifier) -> bool:
    value = float(classifier.templates[0].split()[1])
    expected = torch.nn.functional.normalize(torch.full((3, 4), value) + torch.arange(4.0), dim=-1)
    return torch.allclose(classifier.weights, expected)


@pytest.mark.slow
def test_concurrent_classifier_saves_never_mix_files(tmp_path):
    folder = tmp_path / "classifier"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_SAVES, str(folder), value], env=environment)
        for value in ("1", "2")
    ]
    loads = 0
    while any(writer.poll() is None for writer in writers):
        try:
            classifier = ZeroShotClassifier.from_pretrained(folder)
        except (FileNotFoundError, ValueError):  # not there yet, or between two renames: refused, never mixed
            continue
        loads += 1
        assert _agrees(classifier), classifier.templates
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    assert _agrees(ZeroShotClassifier.from_pretrained(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier"]  # no temporary folders left
    assert loads > 0


def test_a_classifier_whose_two_files_come_from_two_saves_is_refused(tmp_path):
    # same labels, other templates: only the config digest recorded in the weights tells the two saves apart
    weights = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    first = ZeroShotClassifier(weights, ["cat", "dog", "car"], ["a {}."], 4.6).save_pretrained(tmp_path / "first")
    second = ZeroShotClassifier(weights, ["cat", "dog", "car"], ["b {}."], 4.6).save_pretrained(tmp_path / "second")
    (second / "classifier.safetensors").write_bytes((first / "classifier.safetensors").read_bytes())
    with pytest.raises(ValueError, match="come from different saves"):
        ZeroShotClassifier.from_pretrained(second)
    assert ZeroShotClassifier.from_pretrained(first).templates == ["a {}."]


def test_save_classifier_never_replaces_silently(model, tmp_path, capsys):
    saved = tmp_path / "classifier"
    assert diffclip(_zero_shot(model) + ["--save-classifier", str(saved), "--no-progress"]) == 0
    before = (saved / "classifier.json").read_text()
    _, err = _fails(_zero_shot(model, labels="a,b") + ["--save-classifier", str(saved)], capsys)
    assert "already holds one; pass --overwrite" in err and (saved / "classifier.json").read_text() == before
    assert diffclip(_zero_shot(model, labels="a,b") + ["--save-classifier", str(saved), "--overwrite"]) == 0
    assert json.loads((saved / "classifier.json").read_text())["labels"] == ["a", "b"]
    # a folder with anything else in it is never replaced, --overwrite or not
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    _, err = _fails(_zero_shot(model) + ["--save-classifier", str(tmp_path / "notes"), "--overwrite"], capsys)
    assert "holds other files (mine.txt)" in err and (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_a_classifier_from_another_model_of_the_same_width_is_refused(model, tmp_path, capsys):
    other = save_tiny_diffclip(tmp_path / "other", seed=1)
    saved = tmp_path / "classifier"
    assert diffclip(_zero_shot(other) + ["--save-classifier", str(saved), "--no-progress"]) == 0
    capsys.readouterr()
    argv = ["zero-shot", "--model", str(model), "--classifier", str(saved), str(_image(tmp_path / "a.png"))]
    _, err = _fails(argv, capsys)
    assert f"The classifier {saved} was built with another model" in err
    # with the model it was built with: accepted
    argv[2] = str(other)
    assert diffclip(argv + ["--no-progress"]) == 0


def test_reports_classifiers_follow_the_umask(model, tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        data = tmp_path / "d"
        _image(data / "cat" / "a.png")
        report = tmp_path / "report.json"
        argv = ["eval", "zero-shot", "--model", str(model), "--data", str(data), "--output", str(report)]
        assert diffclip(argv + ["--no-progress"]) == 0
        assert diffclip(_zero_shot(model) + ["--save-classifier", str(tmp_path / "c"), "--no-progress"]) == 0
    finally:
        os.umask(previous)
    assert report.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "c" / "classifier.json").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------------
# 8. broken model folders and the smaller items
# --------------------------------------------------------------------------------------------------


def _broken(model, tmp_path, damage) -> tuple[Path, str]:
    from safetensors.torch import load_file

    folder = tmp_path / damage
    shutil.copytree(model, folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return folder, f"{weights}: it is not a readable safetensors file"
    if damage == "shapes":
        config = json.loads((folder / "config.json").read_text())
        config["projection_dim"] = 24
        (folder / "config.json").write_text(json.dumps(config))
        return folder, f"{weights}: its weights do not have the shapes its config.json describes"
    state = load_file(weights)
    weights.unlink()
    state["args"] = _Payload()
    torch.save(state, folder / "pytorch_model.bin")
    return folder, f"{folder / 'pytorch_model.bin'}: it is a pickle that the safe loader refuses"


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("damage", ["truncated", "shapes", "pickle"])
def test_a_broken_model_folder_exits_2_naming_the_file(damage, model, tmp_path, capsys):
    folder, message = _broken(model, tmp_path, damage)
    _, err = _fails(_zero_shot(folder, _image(tmp_path / "a.png")), capsys)
    assert message in err


def test_debug_shows_the_traceback(model, tmp_path, capsys, monkeypatch):
    folder, _ = _broken(model, tmp_path, "truncated")
    with pytest.raises(OSError, match="not a readable safetensors file"):
        diffclip(["--debug", *_zero_shot(folder, _image(tmp_path / "a.png"))])
    monkeypatch.setenv("DIFFCLIP_DEBUG", "1")
    with pytest.raises(OSError, match="not a readable safetensors file"):
        diffclip(_zero_shot(folder, _image(tmp_path / "a.png")))


def test_a_folder_given_as_an_image_is_named_as_a_folder(model, tmp_path, capsys):
    _, err = _fails(_zero_shot(model, tmp_path), capsys)
    assert f"{tmp_path}: it is a folder, not an image file" in err and "not found" not in err


def test_a_label_with_a_comma_is_quoted(model, tmp_path, capsys):
    argv = _zero_shot(model, _image(tmp_path / "a.png"), labels='cat,"dog, small"') + ["--json", "--no-progress"]
    assert diffclip(argv) == 0
    predictions = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert sorted(p["label"] for p in predictions) == ["cat", "dog, small"]


@pytest.mark.parametrize("option", ["--labels-file", "--templates"])
def test_a_non_utf8_labels_or_templates_file_is_named(option, model, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 {}\nna\xefve {}\n".encode("latin-1"))
    argv = ["zero-shot", "--model", str(model), str(_image(tmp_path / "a.png")), option, str(bad)]
    if option == "--templates":
        argv += ["--labels", "cat,dog"]
    _, err = _fails(argv, capsys)
    assert f"{bad} is not UTF-8 text (byte 0xe9" in err


def test_an_oversized_image_exits_2(model, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.new("1", (13000, 13000)).save(big)
    _, err = _fails(_zero_shot(model, big), capsys)
    assert f"{big}: 13000 x 13000 pixels is more than the limit" in err


@pytest.mark.parametrize("field", ["lambda_init", "max_logit_scale"])
def test_a_nan_in_the_config_is_refused(field):
    from transformers_diffclip import DiffCLIPConfig

    kwargs = {"text_config": {"lambda_init": float("nan")}} if field == "lambda_init" else {field: float("nan")}
    with pytest.raises(ValueError, match=rf"{field} must be a number \(finite\), got nan"):
        DiffCLIPConfig(**kwargs)


def test_attention_map_output_is_checked_before_the_model_loads(tmp_path, capsys):
    argv = ["attention-map", "--model", str(tmp_path / "no-model"), "--image", str(_image(tmp_path / "a.png"))]
    code = diffclip(argv + ["--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"--output {tmp_path}: it is a folder" in err and "Traceback" not in err


def test_zero_shot_reads_the_classifier_before_the_model_loads(tmp_path, capsys):
    """A folder that holds no classifier is named before any model loads (the model here does not exist)."""
    not_a_classifier = tmp_path / "empty"
    not_a_classifier.mkdir()
    argv = ["zero-shot", "--model", str(tmp_path / "no-model"), "--classifier", str(not_a_classifier)]
    _, line = _fails(argv + [str(_image(tmp_path / "a.png"))], capsys)
    assert f"{not_a_classifier} is not a saved zero-shot classifier" in line
