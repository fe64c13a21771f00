"""`diffclip embed`, `diffclip index` and `diffclip eval suite` through the installed `diffclip` command under
`torchrun --nproc_per_node 2 --no-python diffclip ...` (CPU, gloo), end to end: two processes give what one process
gives (the features, the index, the suite's results). The training commands are in
tests/training/test_torchrun_commands.py.

Data in its published forms, written here: a webdataset classification set in CLIP_benchmark's layout
(`classnames.txt`, `SPLIT/nshards.txt`, `SPLIT/N.tar` of `KEY.png` + `KEY.cls`) and a folder of photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _commands import installed, run, torchrun
from _helpers import save_tiny_diffclip


pytestmark = pytest.mark.slow

CLASSES = ("cat", "dog", "car")


def png(seed: int) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (36, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    wds = pytest.importorskip("webdataset")
    root = tmp_path_factory.mktemp("torchrun_world")
    save_tiny_diffclip(root / "model", seed=1)
    save_tiny_diffclip(root / "baseline", seed=2)
    data = root / "pets"
    data.mkdir()
    (data / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (data / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    seed = 0
    for split, count in (("train", 15), ("test", 9)):
        (data / split).mkdir()
        (data / split / "nshards.txt").write_text("2\n")
        for shard in range(2):
            with wds.TarWriter(str(data / split / f"{shard}.tar")) as sink:
                for i in range(shard * count // 2, (shard + 1) * count // 2 if shard == 0 else count):
                    seed += 1
                    sink.write({"__key__": f"s{i:05d}", "png": png(seed), "cls": str(i % len(CLASSES))})
    photos = root / "photos"
    photos.mkdir()
    for i in range(7):
        (photos / f"photo{i}.png").write_bytes(png(100 + i))
    return root


def test_torchrun_embed_gives_the_features_of_one_process(world, tmp_path):
    from safetensors.torch import load_file

    common = ["embed", "--data", world / "pets", "--split", "test", "--model", world / "model", "--device", "cpu"]
    common += ["--no-progress", "--batch-size", "2"]
    two = torchrun("diffclip", [*common, "--cache-dir", tmp_path / "c2", "--output", tmp_path / "two.safetensors"])
    assert two.returncode == 0, two.explain()
    one = run(
        [installed("diffclip"), *common, "--cache-dir", tmp_path / "c1", "--output", tmp_path / "one.safetensors"]
    )
    assert one.returncode == 0, one.explain()
    got, expected = load_file(tmp_path / "two.safetensors"), load_file(tmp_path / "one.safetensors")
    assert got["projected"].shape == (9, 16)
    for kind in ("projected", "pre_projection"):
        torch.testing.assert_close(got[kind], expected[kind], rtol=1e-5, atol=1e-6)
    assert two.stdout.count(" 9 images of ") == 1  # said once, by process 0


def test_torchrun_index_is_the_index_of_one_process(world, tmp_path):
    from transformers_diffclip.search import SearchIndex

    common = ["index", "--model", world / "model", "--data", world / "photos", "--device", "cpu", "--no-progress"]
    common += ["--batch-size", "2"]
    two = torchrun("diffclip", [*common, "--output", tmp_path / "two"])
    assert two.returncode == 0, two.explain()
    one = run([installed("diffclip"), *common, "--output", tmp_path / "one"])
    assert one.returncode == 0, one.explain()
    got, expected = SearchIndex(tmp_path / "two"), SearchIndex(tmp_path / "one")
    assert sorted(got.paths.values()) == sorted(expected.paths.values()) and len(got.paths) == 7
    query = np.random.default_rng(3).normal(size=16)
    hits, reference = got.search(query, 7)[0], expected.search(query, 7)[0]
    assert [h.path for h in hits] == [h.path for h in reference]
    np.testing.assert_allclose([h.score for h in hits], [h.score for h in reference], atol=1e-5)


def test_torchrun_eval_suite_gives_the_results_of_one_process(world, tmp_path):
    import yaml

    suite = {
        "datasets": {"pets": str(world / "pets")},
        "tasks": {"zeroshot": ["pets"], "linear_probe": ["pets"]},
        "probe_max_iter": 10,
        "bootstrap": {"resamples": 1000, "seed": 0},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    common = ["eval", "suite", path, "--model", f"CLIP={world / 'baseline'}", "--model", f"DiffCLIP={world / 'model'}"]
    common += ["--device", "cpu", "--batch-size", "4"]
    two = torchrun("diffclip", [*common, "--cache-dir", tmp_path / "c2", "--output-dir", tmp_path / "two"])
    assert two.returncode == 0, two.explain()
    # every image was encoded by the two processes sharing the split (their progress bars), none by one alone
    bars = {line.split(":")[0] for line in two.stderr.replace("\r", "\n").splitlines() if "img" in line}
    assert bars and all("[rank " in bar for bar in bars), bars
    for split in ("train", "test"):
        for rank in (0, 1):
            assert any(f"({split})" in bar and f"[rank {rank}/2]" in bar for bar in bars), (split, rank, bars)
    one = run(
        [
            installed("diffclip"),
            *common,
            "--no-progress",
            "--cache-dir",
            tmp_path / "c1",
            "--output-dir",
            tmp_path / "one",
        ]
    )
    assert one.returncode == 0, one.explain()
    for task in ("zeroshot", "linear_probe"):
        got = json.loads((tmp_path / "two" / f"{task}.json").read_text())
        expected = json.loads((tmp_path / "one" / f"{task}.json").read_text())
        assert [m["name"] for m in got["models"]] == ["CLIP", "DiffCLIP"]
        assert got["comparisons"] and got["models"][0]["results"]["pets"]
        assert_same_json(got, expected, task)
    # the report, its charts and the JSONs, written once (by process 0) and listed once
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert two.stdout.count("report.md") == 1, two.explain()
    assert (tmp_path / "two" / "report.md").read_text() == (tmp_path / "one" / "report.md").read_text()


def assert_same_json(got, expected, where: str) -> None:
    """Every value of `expected` in `got`: numbers equal to 1e-6, everything else exactly."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(expected), where
        for key in expected:
            assert_same_json(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (mine, reference) in enumerate(zip(got, expected)):
            assert_same_json(mine, reference, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert got == pytest.approx(expected, abs=1e-6), where
    else:
        assert got == expected, where
