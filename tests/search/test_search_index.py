"""`diffclip index` / `diffclip search` and the search API, checked against brute-force cosine search written here
with numpy (the embeddings computed directly with the model's forward, not through the package's search code)."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (the `search` extra)")

from _helpers import tiny_processor  # noqa: E402
from _tiny_index import random_image, reference_image_embeddings  # noqa: E402

from transformers_diffclip import cli  # noqa: E402
from transformers_diffclip.search import (  # noqa: E402
    Searcher,
    SearchHit,
    SearchIndex,
    build_faiss_index,
    build_index,
    list_images,
    open_item,
    read_manifest,
)
from transformers_diffclip.search import build as build_module  # noqa: E402


def _tiny_model(seed):
    from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = DiffCLIPConfig(
        text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=16
    )
    torch.manual_seed(seed)
    return DiffCLIPModel(config).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny DiffCLIP folders with different weights: (folder, model, processor) each."""
    processor = tiny_processor(image_size=32)
    out = []
    for seed in (0, 1):
        model = _tiny_model(seed)
        folder = tmp_path_factory.mktemp(f"tiny_diffclip_{seed}")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out.append((folder, model, processor))
    return out


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    for i in range(12):
        random_image(folder / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.png", seed=100 + i)
    return folder


def _reference_text_embedding(model, processor, text):
    tokens = processor.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        features = model.get_text_features(**tokens)
    features = getattr(features, "pooler_output", features)
    return torch.nn.functional.normalize(features.float(), dim=-1)[0].numpy()


def _brute_force(embeddings, query, k):
    scores = embeddings @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


# --------------------------------------------------------------------------------------------------
# FAISS indexes against brute force
# --------------------------------------------------------------------------------------------------


def test_exact_index_gives_the_brute_force_top_k():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1000, 1500)
    index, info = build_faiss_index(ids, vectors)
    assert info["kind"] == "exact" and info["recall_at_10"] == 1.0
    queries = rng.normal(size=(20, 24)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, found = index.search(queries, 10)
    for query, row_scores, row_ids in zip(queries, scores, found):
        order, want = _brute_force(vectors, query, 10)
        assert row_ids.tolist() == (ids[order]).tolist()
        np.testing.assert_allclose(row_scores, want, atol=1e-5)


def _clustered(rng, count, dim=32, clusters=50):
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, count)] + 0.35 * rng.normal(size=(count, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_compressed_index_recall_is_the_stored_one():
    """Above `exact_below` the index is compressed; its stored recall@10 predicts the recall that brute force
    measures on new queries from the same distribution."""
    rng = np.random.default_rng(1)
    vectors = _clustered(rng, 7000)
    vectors, queries = vectors[:6000], vectors[6000:]  # new queries from the same clusters
    ids = np.arange(6000)
    index, info = build_faiss_index(ids, vectors, exact_below=5000)
    assert info["kind"] == "compressed" and info["factory"].startswith("IVF") and info["recall_sample"] == 600
    assert index.ntotal == 6000
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    _, found = index.search(queries, 10)
    measured = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])
    assert 0.5 < info["recall_at_10"] <= 1.0
    assert abs(measured - info["recall_at_10"]) < 0.05, (measured, info["recall_at_10"])


# --------------------------------------------------------------------------------------------------
# build_index / Searcher on real embeddings of a tiny model
# --------------------------------------------------------------------------------------------------


def test_index_of_a_folder_matches_brute_force(tiny, photos, tmp_path):
    folder, model, processor = tiny[0]
    index = build_index(folder, photos, tmp_path / "index", device="cpu", batch_size=5, shard_size=4, progress=False)
    paths = sorted(str(p) for p in photos.rglob("*.png"))
    assert sorted(index.paths.values()) == paths and len(index) == 12
    manifest = read_manifest(tmp_path / "index")
    assert manifest["dim"] == 16 and manifest["embedding"] == "image" and manifest["count"] == 12
    assert manifest["model"] == str(folder.resolve()) and manifest["index"]["kind"] == "exact"
    assert len(manifest["shards"]) == 3  # 12 embeddings, 4 per shard
    reference = reference_image_embeddings(model, processor, [index.paths[i] for i in range(12)])
    searcher = Searcher(tmp_path / "index", device="cpu")
    query = _reference_text_embedding(model, processor, "a red car")
    order, scores = _brute_force(reference, query, 5)
    hits = searcher.search_text("a red car", top_k=5)
    assert [hit.id for hit in hits] == order.tolist()
    np.testing.assert_allclose([hit.score for hit in hits], scores, atol=1e-5)
    image_hits = searcher.search_image(paths[3], top_k=3)
    assert image_hits[0].path == paths[3] and image_hits[0].score == pytest.approx(1.0, abs=1e-5)
    order, _ = _brute_force(reference, reference[[index.paths[i] for i in range(12)].index(paths[3])], 3)
    assert [hit.id for hit in image_hits] == order.tolist()


def test_interrupted_build_resumes_and_never_loads_half_written(tiny, photos, tmp_path, monkeypatch):
    folder, model, processor = tiny[0]
    output = tmp_path / "index"
    written = []
    real_write = build_module.write_shard

    def write_then_die(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(real_write(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(build_module, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_index(folder, photos, output, loaded=(model, processor), batch_size=2, shard_size=3, progress=False)
    with pytest.raises(ValueError, match="interrupted before the first commit"):
        SearchIndex(output)
    assert cli.main(["search", "--index", str(output), "--text", "cat", "--json"]) == 2
    kept = {path: path.stat().st_mtime_ns for path in written}
    monkeypatch.setattr(build_module, "write_shard", real_write)
    embedded = []
    real_embed = build_module.embed_items
    monkeypatch.setattr(
        build_module, "embed_items", lambda m, p, items, *a: embedded.extend(items) or real_embed(m, p, items, *a)
    )
    index = build_index(folder, photos, output, loaded=(model, processor), batch_size=2, shard_size=3, progress=False)
    assert len(embedded) == 6 and len(index) == 12  # only the images not yet in a complete shard
    assert {path: path.stat().st_mtime_ns for path in written} == kept
    assert sorted(index.paths) == list(range(12))
    fresh = build_index(folder, photos, tmp_path / "fresh", loaded=(model, processor), progress=False)
    assert index.paths == fresh.paths
    query = np.random.default_rng(0).normal(size=16)
    assert [h.id for h in index.search(query, 12)[0]] == [h.id for h in fresh.search(query, 12)[0]]


def test_new_images_are_added_without_rebuilding(tiny, photos, tmp_path, monkeypatch):
    folder, model, processor = tiny[0]
    output = tmp_path / "index"
    first = build_index(folder, photos, output, loaded=(model, processor), progress=False)
    old_paths = dict(first.paths)
    for i in range(12, 15):
        random_image(photos / f"new{i}.png", seed=100 + i)
    monkeypatch.setattr(build_module, "build_faiss_index", None)  # adding must not build a new index
    index = build_index(folder, photos, output, loaded=(model, processor), progress=False)
    assert len(index) == 15 and {i: index.paths[i] for i in old_paths} == old_paths
    assert sorted(index.paths) == list(range(15))
    assert [p.name for p in output.glob("index-*.faiss")] == [read_manifest(output)["index"]["file"]]
    ordered = [index.paths[i] for i in range(15)]
    reference = reference_image_embeddings(model, processor, ordered)
    query = reference[13]
    order, scores = _brute_force(reference, query, 15)
    hits = index.search(query, 15)[0]
    assert [hit.id for hit in hits] == order.tolist()


def test_an_index_of_another_model_is_refused(tiny, photos, tmp_path):
    (folder, model, processor), (other, other_model, _) = tiny
    output = tmp_path / "index"
    build_index(folder, photos, output, loaded=(model, processor), progress=False)
    before = sorted(p.name for p in output.rglob("*"))
    with pytest.raises(ValueError, match="embeds images differently"):
        build_index(other, photos, output, device="cpu", progress=False)
    assert sorted(p.name for p in output.rglob("*")) == before
    with pytest.raises(ValueError, match="embeds images differently"):
        Searcher(output, other, device="cpu")
    copy = tmp_path / "renamed-copy"
    shutil.copytree(folder, copy)
    assert Searcher(output, copy, device="cpu").search_text("cat", 1)  # the same model under another name


def test_webdataset_shards_and_list_files(tiny, tmp_path):
    folder, model, processor = tiny[0]
    shard = tmp_path / "shard-00000.tar"
    images = {}
    with tarfile.open(shard, "w") as archive:
        for i in range(4):
            key = f"{i:09d}"
            path = random_image(tmp_path / "raw" / f"{key}.jpg", seed=i)
            images[f"{shard}#{key}"] = path
            archive.add(path, arcname=f"{key}.jpg")
            caption = tmp_path / "raw" / f"{key}.txt"
            caption.write_text(f"caption {i}")
            archive.add(caption, arcname=f"{key}.txt")
    assert list_images(str(shard)) == list(images)
    for item, path in images.items():
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(open_item(item)), np.asarray(image.convert("RGB")))
    index = build_index(folder, str(shard), tmp_path / "index", loaded=(model, processor), progress=False)
    assert sorted(index.paths.values()) == sorted(images)
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nraw/000000000.jpg\n\n" + str(tmp_path / "raw" / "000000001.jpg") + "\n")
    assert list_images(listing) == [str(tmp_path / "raw" / "000000000.jpg"), str(tmp_path / "raw" / "000000001.jpg")]


# --------------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------------


def test_cli_index_and_search_json(tiny, photos, tmp_path, capsys):
    folder, model, processor = tiny[0]
    output = tmp_path / "index"
    argv = ["index", "--model", str(folder), "--data", str(photos), "--output", str(output), "--device", "cpu"]
    assert cli.main(argv + ["--no-progress"]) == 0
    assert "12 images" in capsys.readouterr().out
    assert cli.main(["search", "--index", str(output), "--text", "a dog", "--top-k", "4", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    paths = sorted(str(p) for p in photos.rglob("*.png"))
    reference = reference_image_embeddings(model, processor, paths)
    order, scores = _brute_force(reference, _reference_text_embedding(model, processor, "a dog"), 4)
    assert [hit["path"] for hit in hits] == [paths[i] for i in order]
    np.testing.assert_allclose([hit["score"] for hit in hits], scores, atol=1e-5)
    assert set(hits[0]) == {"id", "path", "score"}


def test_cli_bad_input(tiny, photos, tmp_path, capsys):
    folder, _, _ = tiny[0]
    missing = tmp_path / "nothing"
    assert cli.main(["search", "--index", str(missing), "--text", "cat"]) == 2
    assert "No index at" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["index", "--model", str(folder), "--data", str(empty), "--output", str(tmp_path / "i")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    (photos / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "index"
    argv = ["index", "--model", str(folder), "--data", str(photos), "--output", str(output), "--no-progress"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "1 image(s) skipped" in captured.out
    assert read_manifest(output)["failed"][0]["path"].endswith("broken.png")
    other = tiny[1][0]
    argv = ["index", "--model", str(other), "--data", str(photos), "--output", str(output), "--no-progress"]
    assert cli.main(argv) == 2
    assert "embeds images differently" in capsys.readouterr().err
    assert cli.main(["search", "--index", str(output), "--image", str(photos / "broken.png")]) == 2
    assert "broken.png" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", "--index", str(output), "--text", "a", "--image", "b.png"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_several_processes_split_the_images(tiny, photos, tmp_path):
    """`torchrun --nproc-per-node 2`: each process embeds its share into its own shards, process 0 commits; the
    index is the one a single process builds."""
    import os
    import subprocess
    import sys

    folder, model, processor = tiny[0]
    output = tmp_path / "index"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "transformers_diffclip.cli", "index", "--model", str(folder), "--data", str(photos)]
    command += ["--output", str(output), "--device", "cpu", "--no-progress", "--batch-size", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:  # a hang: end torchrun, which ends its workers
            run.terminate()
            run.wait(timeout=60)
    assert run.returncode == 0, stderr[-3000:]
    shards = read_manifest(output)["shards"]
    assert {name.split("-")[1] for name in shards} == {"000", "001"}
    index = SearchIndex(output)
    single = build_index(folder, photos, tmp_path / "single", loaded=(model, processor), progress=False)
    assert index.paths == single.paths
    query = np.random.default_rng(3).normal(size=16)
    got, want = index.search(query, 12)[0], single.search(query, 12)[0]
    assert [h.id for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)


def test_one_file_is_one_image_however_it_is_spelled(photos, tmp_path):
    """A link to a file of the folder, a link back into the folder and a list file naming one file twice (relative
    and through `..`) give each image once: images are identified by their resolved path."""
    images = sorted(str(p) for p in photos.rglob("*.png"))
    first = Path(images[0])
    (photos / "again.png").symlink_to(first)
    (photos / "loop").symlink_to(photos)
    listed = list_images(photos)
    assert len(listed) == len(images)
    assert sorted(os.path.realpath(item) for item in listed) == sorted(os.path.realpath(path) for path in images)
    listing = tmp_path / "list.txt"
    spelled = os.path.relpath(first, tmp_path)
    twice = os.path.join(os.path.relpath(first.parent, tmp_path), "..", first.parent.name, first.name)
    listing.write_text(f"{spelled}\n{twice}\n{images[1]}\n", encoding="utf-8")
    expected = [os.path.realpath(first), os.path.realpath(images[1])]
    assert [os.path.realpath(item) for item in list_images(listing)] == expected


def test_search_json_refuses_a_non_finite_score(tiny, photos, tmp_path, capsys, monkeypatch):
    """`diffclip search --json` prints valid JSON or nothing: a NaN score is bad input (exit code 2), not `NaN`."""
    folder, _, _ = tiny[0]
    output = tmp_path / "index"
    argv = ["index", "--model", str(folder), "--data", str(photos), "--output", str(output), "--no-progress"]
    assert cli.main(argv + ["--device", "cpu"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(Searcher, "search_text", lambda self, text, top_k: [SearchHit(0, "a.png", float("nan"))])
    assert cli.main(["search", "--index", str(output), "--text", "cat", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "diffclip search: error:" in captured.err and "non-finite" in captured.err
