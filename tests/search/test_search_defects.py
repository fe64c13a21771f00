"""The second adversarial probe's findings on `diffclip index` / `diffclip search` (issue 27), each reproduced the
way a user meets it: two builds into one folder at once, a model that shares only the image tower, one folder
spelled two ways, a file name that is not UTF-8, and damaged or edited index files. Embeddings are checked against
the model's own forward (`get_image_features`), not through the package's search code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (the `search` extra)")

import pyarrow.parquet  # noqa: E402
from _helpers import tiny_processor  # noqa: E402
from _tiny_index import random_image, reference_image_embeddings  # noqa: E402

from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel, cli  # noqa: E402
from transformers_diffclip.search import Searcher, SearchIndex, build_index, list_images, open_item  # noqa: E402
from transformers_diffclip.search import build as build_module  # noqa: E402


def _save_tiny(folder: Path, seed: int = 0, projection_dim: int = 16, text_noise: float = 0.0) -> Path:
    """A tiny DiffCLIP folder; `text_noise` changes only the text tower's projection (same image tower)."""
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = DiffCLIPConfig(
        text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=projection_dim
    )
    torch.manual_seed(seed)
    model = DiffCLIPModel(config).eval()
    if text_noise:
        generator = torch.Generator().manual_seed(99)
        with torch.no_grad():
            weight = model.text_projection.weight
            weight.add_(text_noise * torch.randn(weight.shape, generator=generator))
    model.save_pretrained(folder)
    tiny_processor(image_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread than on several fighting over a shared machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    for i in range(12):
        random_image(folder / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.png", seed=100 + i)
    return folder


def _reference(model_folder: Path, paths) -> np.ndarray:
    """Unit-norm image embeddings straight from DiffCLIPModel.get_image_features, of the model saved in the folder."""
    from transformers_diffclip import DiffCLIPProcessor

    model = DiffCLIPModel.from_pretrained(model_folder).eval()
    return reference_image_embeddings(model, DiffCLIPProcessor.from_pretrained(model_folder), paths)


def _stored_rows(index_folder: Path):
    """Every (id, path, embedding) row of the index's shards, read with pyarrow here."""
    ids, paths, vectors = [], [], []
    for shard in sorted((index_folder / "embeddings").glob("part-*.parquet")):
        table = pyarrow.parquet.read_table(shard)
        ids += table.column("id").to_pylist()
        paths += table.column("path").to_pylist()
        vectors += table.column("embedding").to_pylist()
    return ids, paths, np.asarray(vectors, dtype=np.float32)


def _one_error_line(capsys, code: int) -> str:
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("diffclip")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def _index_argv(model, data, output, *extra):
    return ["index", "--model", str(model), "--data", str(data), "--output", str(output), "--no-progress", *extra]


# --------------------------------------------------------------------------------------------------
# 3. Two builds into one folder at the same time
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_builds_into_one_folder_lose_and_mislabel_nothing(tiny, tmp_path):
    """Two `diffclip index` processes started together on two folders of 100 images each, into one index folder:
    both succeed and the index holds all 200 images once, every id once, each under its own embedding."""
    folders = {name: tmp_path / name for name in ("a", "b")}
    for offset, folder in enumerate(folders.values()):
        for i in range(100):
            random_image(folder / f"{i:03d}.png", seed=1000 * offset + i, size=(24, 24))
    output = tmp_path / "index"
    environment = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "transformers_diffclip.cli"]
            + _index_argv(tiny, folder, output, "--batch-size", "8", "--shard-size", "10", "--device", "cpu"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for folder in folders.values()
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-2000:]
    expected = sorted(str(path.resolve()) for folder in folders.values() for path in folder.glob("*.png"))
    ids, paths, vectors = _stored_rows(output)
    assert sorted(paths) == expected  # no image lost, none twice
    assert sorted(ids) == list(range(200))  # no id twice
    reference = _reference(tiny, paths)
    np.testing.assert_allclose(np.sum(vectors * reference, axis=1), 1.0, atol=1e-4)  # no mislabel
    index = SearchIndex(output)
    assert len(index) == 200 and sorted(index.paths.values()) == expected
    for row in (0, 57, 123, 199):
        hit = index.search(reference[row], 1)[0][0]
        assert hit.path == paths[row] and hit.score == pytest.approx(1.0, abs=1e-4)
    assert not (output / ".diffclip-index.lock").exists()


def test_a_second_build_waits_for_the_first_and_takes_the_next_ids(tiny, photos, tmp_path, monkeypatch, capsys):
    """While a build holds the folder, a second one waits (saying so), then gives its images the ids after the
    ones the first committed: the lock is taken before anything is listed."""
    import threading

    output = tmp_path / "index"
    extra = tmp_path / "extra"
    for i in range(5):
        random_image(extra / f"x{i}.png", seed=500 + i)
    started, release = threading.Event(), threading.Event()
    real_embed = build_module.embed_items

    def slow_first(model, processor, items, *args):
        if not started.is_set():
            started.set()
            assert release.wait(60)
        return real_embed(model, processor, items, *args)

    monkeypatch.setattr(build_module, "embed_items", slow_first)
    first = threading.Thread(target=build_index, args=(tiny, photos, output), kwargs=dict(progress=False))
    first.start()
    assert started.wait(60)
    waiting = threading.Timer(1.0, release.set)  # lets the first build go on once the second is waiting
    waiting.start()
    second = build_index(tiny, extra, output, progress=False)
    first.join(60)
    assert "waiting: another `diffclip index` is writing to" in capsys.readouterr().err
    ids = {path: i for i, path in second.paths.items()}
    assert len(second) == 17 and sorted(second.paths) == list(range(17))
    assert sorted(ids[str((extra / f"x{i}.png").resolve())] for i in range(5)) == list(range(12, 17))


# --------------------------------------------------------------------------------------------------
# 7. Both towers compared
# --------------------------------------------------------------------------------------------------


def test_a_model_with_the_same_image_tower_and_another_text_tower_is_refused(tiny, photos, tmp_path, capsys):
    output = tmp_path / "index"
    assert cli.main(_index_argv(tiny, photos, output, "--device", "cpu")) == 0
    other_text = _save_tiny(tmp_path / "other-text", text_noise=0.5)
    assert "probe_text" in json.loads((output / "manifest.json").read_text())
    capsys.readouterr()
    code = cli.main(["search", "--index", str(output), "--model", str(other_text), "--text", "a dog"])
    assert "embeds text differently" in _one_error_line(capsys, code)
    code = cli.main(_index_argv(other_text, photos, output))
    assert "embeds text differently" in _one_error_line(capsys, code)
    copy = shutil.copytree(tiny, tmp_path / "renamed-copy")  # the same model under another name is accepted
    assert cli.main(["search", "--index", str(output), "--model", str(copy), "--text", "a dog", "--json"]) == 0

    # An index written before text probes were stored: the image tower is checked, a warning says the text tower
    # is not; the next build with the index's own model records the text probe, and the check is whole again.
    manifest = json.loads((output / "manifest.json").read_text())
    del manifest["probe_text"]
    (output / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(["search", "--index", str(output), "--model", str(other_text), "--text", "a dog"]) == 0
    assert "cannot be checked" in capsys.readouterr().err
    assert cli.main(_index_argv(tiny, photos, output)) == 0
    assert "probe_text" in json.loads((output / "manifest.json").read_text())
    capsys.readouterr()
    code = cli.main(["search", "--index", str(output), "--model", str(other_text), "--text", "a dog"])
    assert "embeds text differently" in _one_error_line(capsys, code)


def test_a_model_of_another_dimension_is_named_with_its_own(tiny, photos, tmp_path, capsys):
    output = tmp_path / "index"
    assert cli.main(_index_argv(tiny, photos, output)) == 0
    narrow = _save_tiny(tmp_path / "eight", projection_dim=8)
    capsys.readouterr()
    line = _one_error_line(capsys, cli.main(["search", "--index", str(output), "--model", str(narrow), "--text", "a"]))
    assert "gives 8-d embeddings" in line and "(16-d embeddings)" in line


# --------------------------------------------------------------------------------------------------
# 8. One folder, spelled several ways
# --------------------------------------------------------------------------------------------------


def test_the_same_folder_spelled_another_way_is_indexed_once(tiny, photos, tmp_path, monkeypatch, capsys):
    output = tmp_path / "index"
    assert cli.main(_index_argv(tiny, photos.resolve(), output)) == 0
    shards = sorted(p.name for p in (output / "embeddings").iterdir())
    (tmp_path / "link").symlink_to(photos)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    for spelling in ("photos", "./photos", "photos/../photos", "link", str(tmp_path / "link")):
        assert cli.main(_index_argv(tiny, spelling, "index")) == 0, spelling
        assert "12 images" in capsys.readouterr().out, spelling
    assert sorted(p.name for p in (output / "embeddings").iterdir()) == shards  # nothing embedded again
    _, paths, _ = _stored_rows(output)
    assert sorted(paths) == sorted(str(p.resolve()) for p in photos.rglob("*.png"))
    monkeypatch.chdir(photos / "sub")  # stored paths do not depend on the folder the build ran in
    assert SearchIndex(output).search(np.ones(16), 1)[0][0].path.startswith(str(photos.resolve()))


def test_an_older_index_of_relative_paths_extended_from_its_folder_embeds_nothing_again(
    tiny, photos, tmp_path, monkeypatch, capsys
):
    """Indexes built before stored paths were canonical hold paths relative to the folder their build ran in: run
    from that folder, the next build reads them as those files (written here with pyarrow, as older versions did)."""
    output = tmp_path / "index"
    assert cli.main(_index_argv(tiny, photos, output)) == 0
    for shard in (output / "embeddings").glob("part-*.parquet"):
        table = pyarrow.parquet.read_table(shard)
        relative = [os.path.relpath(path, tmp_path) for path in table.column("path").to_pylist()]
        table = table.set_column(1, "path", pyarrow.array(relative, type=pyarrow.string()))
        pyarrow.parquet.write_table(table, shard)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli.main(_index_argv(tiny, "photos", output)) == 0
    assert "12 images" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# 9. A file name that is not UTF-8
# --------------------------------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_named_and_skipped(tiny, photos, tmp_path, capsys):
    random_image(Path(os.fsdecode(bytes(photos) + b"/\xff\xfe.png")), seed=7)
    output = tmp_path / "index"
    for _ in range(2):  # and a rerun works the same way
        assert cli.main(_index_argv(tiny, photos, output)) == 0
        captured = capsys.readouterr()
        assert "\\xff\\xfe.png" in captured.err and "not UTF-8" in captured.err
        assert "12 images" in captured.out and "1 image(s) skipped" in captured.out
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert [entry["path"] for entry in manifest["failed"]] == [str(photos) + "/\\xff\\xfe.png"]


# --------------------------------------------------------------------------------------------------
# Low: damaged or edited index files, --factory, file names that look like shard samples
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def built(tiny, photos, tmp_path):
    output = tmp_path / "index"
    assert cli.main(_index_argv(tiny, photos, output, "--shard-size", "4")) == 0
    return output


def _search(index, capsys) -> str:
    capsys.readouterr()
    return _one_error_line(capsys, cli.main(["search", "--index", str(index), "--text", "a dog"]))


def _edit_manifest(index: Path, **changes) -> None:
    manifest = json.loads((index / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    (index / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("cut", [0, 0.5])
def test_a_truncated_or_empty_faiss_file_is_one_line(built, capsys, cut):
    faiss_file = next(built.glob("index-*.faiss"))
    data = faiss_file.read_bytes()
    faiss_file.write_bytes(data[: int(len(data) * cut)])
    line = _search(built, capsys)
    assert "damaged" in line and faiss_file.name in line and "--rebuild" in line
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["index"].pop("bytes")  # without the recorded size, FAISS's refusal is caught the same way
    (built / "manifest.json").write_text(json.dumps(manifest))
    assert "damaged" in _search(built, capsys)


def test_a_faiss_file_with_bytes_added_or_other_ids_is_refused_when_opened(built, capsys):
    """A FAISS file that FAISS still reads but that is not the one committed: bytes appended (another size than the
    manifest records), or the same vectors under other ids (written here with FAISS directly)."""
    import faiss

    faiss_file = next(built.glob("index-*.faiss"))
    original = faiss_file.read_bytes()
    faiss_file.write_bytes(original + b"\0" * 8)
    assert faiss.read_index(str(faiss_file)).ntotal == 12  # FAISS alone takes it
    assert "replaced" in _search(built, capsys)
    _, _, vectors = _stored_rows(built)
    other = faiss.index_factory(16, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
    other.add_with_ids(vectors, np.arange(100, 112))
    data = faiss.serialize_index(other).tobytes()
    assert len(data) == len(original)
    faiss_file.write_bytes(data)
    assert "other ids than its committed shards" in _search(built, capsys)


def test_a_manifest_path_out_of_the_folder_is_never_opened_or_echoed(built, tmp_path, capsys):
    secret = tmp_path / "secret.faiss"
    secret.write_bytes(b"SECRETBYTES" * 10)
    manifest = json.loads((built / "manifest.json").read_text())
    for name in ("../secret.faiss", "../../../../etc/passwd", str(secret)):
        manifest["index"].update(file=name, bytes=secret.stat().st_size)
        (built / "manifest.json").write_text(json.dumps(manifest))
        line = _search(built, capsys)
        assert "damaged" in line and "index.file" in line
        assert "SECRET" not in line and "passwd" not in line
    manifest["shards"][0] = "../../secret.faiss"
    (built / "manifest.json").write_text(json.dumps(manifest))
    assert "`shards`" in _search(built, capsys)


def test_a_manifest_without_count_is_one_line(built, capsys):
    _edit_manifest(built, count=None)
    assert "`count`" in _search(built, capsys)
    _edit_manifest(built, count="12")
    assert "`count`" in _search(built, capsys)


def test_a_shard_replaced_by_a_copy_of_another_is_refused_when_loaded(built, capsys):
    shards = sorted((built / "embeddings").glob("part-*.parquet"))
    assert len(shards) == 3
    shutil.copyfile(shards[0], shards[2])
    assert "twice" in _search(built, capsys)


@pytest.mark.parametrize("factory", ["Garbage,42", "PQ5", "Flat"])
def test_a_bad_factory_is_refused_before_any_image_is_embedded(tiny, photos, tmp_path, monkeypatch, capsys, factory):
    def no_embedding(*args, **kwargs):
        raise AssertionError("an image was embedded before --factory was checked")

    monkeypatch.setattr(build_module, "embed_items", no_embedding)
    output = tmp_path / "index"
    line = _one_error_line(capsys, cli.main(_index_argv(tiny, photos, output, "--factory", factory)))
    assert f"--factory {factory!r}" in line and "faiss::" not in line
    assert not output.exists()


def test_a_factory_that_cannot_be_trained_on_the_images_is_one_line(tiny, photos, tmp_path, capsys):
    output = tmp_path / "index"
    line = _one_error_line(capsys, cli.main(_index_argv(tiny, photos, output, "--factory", "IVF64,Flat")))
    assert "cannot be trained on" in line
    assert cli.main(_index_argv(tiny, photos, output)) == 0  # the embeddings were kept: the rerun commits
    assert "12 images" in capsys.readouterr().out


def test_an_image_file_named_like_a_shard_sample_is_a_file(tiny, tmp_path):
    folder = tmp_path / "odd"
    named = random_image(folder / "x.tar#1.png", seed=3)
    random_image(folder / "y.png", seed=4)
    with Image.open(named) as image:
        assert np.array_equal(np.asarray(open_item(str(named))), np.asarray(image.convert("RGB")))
    assert str(named) in list_images(folder)
    index = build_index(tiny, folder, tmp_path / "index", progress=False)
    assert sorted(index.paths.values()) == [str(named), str(folder / "y.png")]
    hit = Searcher(index, device="cpu").search_image(str(named), 1)[0]
    assert hit.path == str(named) and hit.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_a_build_killed_with_sigkill_resumes_to_a_clean_build(tiny, tmp_path):
    """What held stays held: `diffclip index` killed (SIGKILL) mid-build leaves its lock file behind; the next run
    takes the lock, embeds only what is missing, and ends with exactly the index a clean build gives."""
    import signal
    import time

    photos = tmp_path / "many"
    for i in range(100):
        random_image(photos / f"{i:03d}.png", seed=i, size=(24, 24))
    output = tmp_path / "index"
    argv = _index_argv(tiny, photos, output, "--batch-size", "2", "--shard-size", "2", "--device", "cpu")
    environment = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.Popen([sys.executable, "-m", "transformers_diffclip.cli", *argv], env=environment)
    deadline = time.monotonic() + 300
    while len(list((output / "embeddings").glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait(60)
    assert json.loads((output / "manifest.json").read_text())["index"] is None  # killed before its commit
    assert (output / ".diffclip-index.lock").exists()
    kept = {path.name: path.stat().st_mtime_ns for path in (output / "embeddings").glob("part-*.parquet")}
    resumed = build_index(tiny, photos, output, batch_size=16, shard_size=2, progress=False)
    assert {name: (output / "embeddings" / name).stat().st_mtime_ns for name in kept} == kept  # none rewritten
    clean = build_index(tiny, photos, tmp_path / "clean", batch_size=16, shard_size=2, progress=False)
    assert resumed.paths == clean.paths
    query = np.random.default_rng(0).normal(size=16)
    got, want = resumed.search(query, 100)[0], clean.search(query, 100)[0]
    assert [hit.id for hit in got] == [hit.id for hit in want]
    np.testing.assert_allclose([hit.score for hit in got], [hit.score for hit in want], atol=1e-6)
    assert not (output / ".diffclip-index.lock").exists()
