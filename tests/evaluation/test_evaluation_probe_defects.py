"""The evaluation side of the second adversarial probe (issue 27), through the `diffclip` commands: every bad
dataset, feature cache, MMVP folder and suite file ends with one line naming the file and exit code 2, before the
work where it can be, and never with a number computed from broken input."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from _paper_data import (
    image_bytes,
    one_thread,  # noqa: F401 (autouse fixture)
    tiny_model,
    write_image,
    write_karpathy,
    write_mmvp,
    write_wds_classification,
)

from transformers_diffclip import cli


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probe") / "model"
    tiny_model(folder)
    return folder


def _main(argv) -> int:
    return cli.main([str(a) for a in argv])


def _fails(argv, capsys, limit: int = 2000) -> str:
    """Run `diffclip argv`: exit code 2, one short line on stderr naming the problem, no traceback."""
    code = _main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err[-2000:])
    assert "Traceback" not in err and len(err) < limit, err[:3000]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("diffclip"), err
    return lines[0]


def _common(model, tmp_path):
    return ["--model", model, "--device", "cpu", "--no-progress", "--cache-dir", tmp_path / "cache"]


# --------------------------------------------------------------------------------------------------
# 4. nshards.txt
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("99999999999", r"must hold the number of shards, a positive integer; it holds '99999999999'"),
        ("-1", r"must hold the number of shards, a positive integer; it holds '-1'"),
        ("0", r"positive integer; it holds '0'"),
        ("two", r"positive integer; it holds 'two'"),
        ("3", r"says .* has 3 shards, but .* holds 2 \.tar file"),
    ],
)
def test_nshards_is_a_positive_count_of_the_shards_present(text, expected, model, tmp_path, capsys):
    import re

    root = write_wds_classification(tmp_path / "wds", per_split={"test": 4}, shards=2)
    (root / "test" / "nshards.txt").write_text(text + "\n")
    started = time.monotonic()
    line = _fails(["embed", "--data", root, *_common(model, tmp_path)], capsys)
    assert re.search(expected, line) and "nshards.txt" in line, line
    assert time.monotonic() - started < 30
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------------------------------
# 5 (evaluation side) and the tar cut mid-member
# --------------------------------------------------------------------------------------------------


def test_a_shard_member_above_the_size_limit_is_refused_from_its_header(model, tmp_path, capsys, monkeypatch):
    root = write_wds_classification(tmp_path / "wds", per_split={"test": 3}, shards=1)
    monkeypatch.setenv("DIFFCLIP_MAX_IMAGE_BYTES", "1000")  # the samples' images are a few kB
    line = _fails(["embed", "--data", root, *_common(model, tmp_path)], capsys)
    assert "0.tar" in line and "more than the limit of 1000 bytes (DIFFCLIP_MAX_IMAGE_BYTES)" in line, line


@pytest.mark.parametrize("where", ["data", "header"])
def test_a_shard_cut_in_the_middle_of_a_member_exits_2_naming_it(where, model, tmp_path, capsys):
    import tarfile

    root = write_wds_classification(tmp_path / "wds", per_split={"test": 3}, shards=1)
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as archive:
        image = archive.getmembers()[1]  # s00000's image, after its .cls
    cut = image.offset_data + 100 if where == "data" else image.offset + 200
    shard.write_bytes(shard.read_bytes()[:cut])
    line = _fails(["embed", "--data", root, *_common(model, tmp_path)], capsys)
    assert "0.tar" in line and "cut short" in line, line


def test_bmp_and_tiff_members_are_read_as_training_and_search_read_them(model, tmp_path, capsys):
    import webdataset as wds

    root = write_wds_classification(tmp_path / "wds", per_split={"test": 2}, shards=1)
    with wds.TarWriter(str(root / "test" / "0.tar")) as sink:
        sink.write({"__key__": "a", "bmp": image_bytes(1, fmt="BMP"), "cls": "0"})
        sink.write({"__key__": "b", "tiff": image_bytes(2, fmt="TIFF"), "cls": "1"})
    assert _main(["embed", "--data", root, *_common(model, tmp_path)]) == 0
    assert "encoded 2 images" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# 6. the fingerprint notices changed content
# --------------------------------------------------------------------------------------------------


def test_class_labels_changed_in_place_are_not_served_from_the_cache(model, tmp_path, capsys):
    import webdataset as wds

    root = write_wds_classification(tmp_path / "wds", per_split={"test": 3}, shards=1)
    with wds.TarWriter(str(root / "test" / "0.tar")) as sink:
        for i in range(3):
            sink.write({"__key__": f"s{i}", "png": image_bytes(i), "cls": "0"})
    flags = ["--data", root, *_common(model, tmp_path)]
    assert _main(["embed", *flags]) == 0 and "encoded 3" in capsys.readouterr().out
    shard = root / "test" / "0.tar"
    data = shard.read_bytes()
    changed = data.replace(b"\x000\x00", b"\x002\x00")  # every .cls member "0" -> "2": same names, same sizes
    assert changed != data and len(changed) == len(data)
    shard.write_bytes(changed)
    line = _fails(["embed", *flags], capsys)
    assert "fingerprint" in line and "not reused" in line, line
    assert _main(["embed", *flags[:-2], "--cache-dir", tmp_path / "other"]) == 0  # a fresh cache encodes again
    assert "encoded 3" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# 13. every cache read validated
# --------------------------------------------------------------------------------------------------


def _cached(tmp_path) -> Path:
    (path,) = (tmp_path / "cache").rglob("test.safetensors")
    return path


def _rewrite(path: Path, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("rows", "rows"),
        ("label", "class label 57 outside the 3 classes"),
        ("labels", "targets for"),
        ("truncated", "not a readable safetensors file"),
    ],
)
def test_a_damaged_feature_cache_is_refused(damage, expected, model, tmp_path, capsys):
    root = write_wds_classification(tmp_path / "wds", per_split={"train": 12, "test": 12}, shards=1)
    flags = ["--data", root, "--episodes", "5", "--way", "2", "--shot", "2", "--query", "1"]
    flags += _common(model, tmp_path)
    assert _main(["eval", "few-shot", *flags]) == 0
    capsys.readouterr()
    path = _cached(tmp_path)
    if damage == "rows":
        _rewrite(path, lambda t: t.update({k: v[:3].clone() for k, v in t.items()}))
    elif damage == "label":
        _rewrite(path, lambda t: t["labels"].__setitem__(0, 57))
    elif damage == "labels":
        _rewrite(path, lambda t: t.update(labels=t["labels"][:5].clone()))
    else:
        path.write_bytes(path.read_bytes()[:-100])
    line = _fails(["eval", "few-shot", *flags], capsys)
    assert str(path) in line and expected in line, line


# --------------------------------------------------------------------------------------------------
# 10. MMVP
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


def test_mmvp_with_a_nan_logit_scale_exits_2(nan_model, tmp_path, capsys):
    root = write_mmvp(tmp_path / "MMVP_VLM")
    line = _fails(
        ["eval", "mmvp", "--data", root, "--output", tmp_path / "r.json", *_common(nan_model, tmp_path)], capsys
    )
    assert "logit scale is nan" in line, line
    assert not (tmp_path / "r.json").exists()


def _renumber(root: Path, ids) -> None:
    """Rewrite Questions.csv with these question ids (and rename the images to match)."""
    import csv

    rows = list(csv.reader((root / "Questions.csv").open(newline="")))
    header, rows = rows[0], rows[1:]
    for row, new in zip(rows, ids):
        folder = root / "MLLM_VLM Images" / row[1]
        (folder / f"{row[0]}.jpg").rename(folder / f"{new}.tmp")
        row[0] = str(new)
    for image in (root / "MLLM_VLM Images").rglob("*.tmp"):
        image.rename(image.with_suffix(".jpg"))
    with (root / "Questions.csv").open("w", newline="") as file:
        csv.writer(file).writerows([header, *rows])


@pytest.mark.parametrize(
    "ids, expected",
    [
        (range(0, 18), "rows 2-3: question ids 0, 1 are not a pair 2k-1, 2k"),
        ([1, 2, 1, 4, *range(5, 19)], "row 4: the question id 1 is used twice (also row 2)"),
    ],
)
def test_mmvp_questions_numbered_off_the_pairs_are_refused(ids, expected, model, tmp_path, capsys):
    root = write_mmvp(tmp_path / "MMVP_VLM")
    if len(set(ids)) == len(list(ids)):
        _renumber(root, ids)
    else:  # a repeated id: the csv only (the image of the repeated id exists)
        text = (root / "Questions.csv").read_text().splitlines()
        text[3] = "1" + text[3][text[3].index(",") :]
        (root / "Questions.csv").write_text("\n".join(text) + "\n")
    line = _fails(["eval", "mmvp", "--data", root, *_common(model, tmp_path)], capsys)
    assert "Questions.csv" in line and expected in line, line


# --------------------------------------------------------------------------------------------------
# 12. suite files
# --------------------------------------------------------------------------------------------------


ALIAS_BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
datasets: *h
"""


def test_a_suite_alias_bomb_is_refused_at_once_in_one_short_line(model, tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    started = time.monotonic()
    line = _fails(
        ["eval", "suite", path, "--model", model, "--model", model, "--output-dir", tmp_path / "o"], capsys, 600
    )
    assert time.monotonic() - started < 5
    assert "bomb.yaml" in line and "line 2" in line and "aliases" in line, line


def _suite(tmp_path, **settings) -> Path:
    root = write_wds_classification(tmp_path / "wds", per_split={"train": 6, "test": 3}, shards=1)
    config = {"datasets": {"pets": str(root)}, "tasks": {"few_shot": ["pets"]}, **settings}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"bootstrap": 5}, "'bootstrap' must be a mapping"),
        ({"cache_dir": [1, 2]}, "'cache_dir' must be a string"),
        ({"episodes": "many"}, "'episodes' must be an integer from 1 to 1,000,000, got 'many'"),
        ({"episodes": 10**11}, "'episodes' must be an integer from 1 to 1,000,000"),
        ({"bootstrap": {"resamples": 50}}, "'bootstrap.resamples' must be an integer from 1,000"),
        ({"seed": True}, "'seed' must be an integer"),
        ({"models": [{"model": ["x"]}]}, "'models[0].model' must be a string"),
    ],
)
def test_suite_keys_are_typed_and_bounded_before_any_work(settings, expected, tmp_path, capsys):
    path = _suite(tmp_path, **settings)
    flags = ["--model", tmp_path / "no-model", "--allow-single-model", "--output-dir", tmp_path / "o"]
    line = _fails(["eval", "suite", path, *flags], capsys)  # the model does not exist: checked before it loads
    assert "s.yaml" in line and expected in line, line


def test_suite_resamples_from_the_command_line_are_checked_before_any_work(tmp_path, capsys):
    path = _suite(tmp_path)
    flags = ["--model", tmp_path / "no-model", "--allow-single-model", "--output-dir", tmp_path / "o"]
    line = _fails(["eval", "suite", path, *flags, "--resamples", "50"], capsys)
    assert "'bootstrap.resamples' (or --resamples) must be an integer from 1,000" in line, line


def test_suite_model_paths_are_taken_from_the_suite_files_folder(model, tmp_path, monkeypatch):
    from transformers_diffclip.evaluation.suite import load_suite

    folder = tmp_path / "suites"
    folder.mkdir()
    shutil.copytree(model, folder / "m")
    path = _suite(folder, models=[{"name": "M", "model": "./m", "published": "../p"}], cache_dir="./c")
    monkeypatch.chdir(tmp_path)
    suite = load_suite(path)
    assert suite.models[0].model == str((folder / "m").resolve())
    assert suite.models[0].published == str((tmp_path / "p").resolve())
    assert suite.cache_dir == str((folder / "c").resolve())


# --------------------------------------------------------------------------------------------------
# 14. embed: an ambiguous folder; Karpathy typing; few-shot bounds
# --------------------------------------------------------------------------------------------------


def test_embed_refuses_a_folder_of_images_beside_class_folders(model, tmp_path, capsys):
    data = tmp_path / "photos"
    for i in range(3):
        write_image(data / f"{i}.png", i)
    for i in range(2):
        write_image(data / "sub" / f"{i}.png", 10 + i)
    line = _fails(["embed", "--data", data, *_common(model, tmp_path)], capsys)
    assert "ambiguous" in line and "3 image(s) at its top" in line and "sub" in line, line
    # a plain folder of images, and a class tree, still read
    shutil.rmtree(data / "sub")
    assert _main(["embed", "--data", data, *_common(model, tmp_path)]) == 0
    assert "encoded 3 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("raw", 5, "sentences[0]: 'raw' must be the caption (a string), got {'raw': 5}"),
        ("filename", 123, "'filename' must be a file name (a string), got 123"),
    ],
)
def test_karpathy_entries_of_the_wrong_type_exit_2(field, value, expected, model, tmp_path, capsys):
    path = write_karpathy(tmp_path / "flickr")
    data = json.loads(path.read_text())
    if field == "raw":
        data["images"][1]["sentences"][0]["raw"] = value
    else:
        data["images"][1]["filename"] = value
    path.write_text(json.dumps(data))
    line = _fails(["embed", "--data", path, *_common(model, tmp_path)], capsys)
    assert "images[1]" in line and expected in line, line


def test_few_shot_episodes_are_bounded_before_the_data_and_the_model(tmp_path, capsys):
    flags = ["--data", tmp_path / "absent", "--model", tmp_path / "absent-model", "--no-progress"]
    line = _fails(["eval", "few-shot", "--episodes", "100000000000", *flags], capsys)
    assert "--episodes must be an integer from 1 to 1,000,000, got 100000000000" in line, line
