"""`SearchIndex.search` normalises its queries: a raw embedding of any length gives the same hits, and the same
cosine scores (never above 1), as its unit-length form; checked against brute-force cosine search in numpy."""

from __future__ import annotations

import numpy as np
import pytest


pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (the `search` extra)")

from _tiny_index import random_images, reference_image_embeddings, tiny_model_folder  # noqa: E402

from transformers_diffclip.search import build_index  # noqa: E402


@pytest.mark.parametrize("length", [7.5, 0.03])
def test_a_raw_query_scores_as_its_unit_form(tmp_path, length):
    model, processor = tiny_model_folder(tmp_path / "model")
    paths = random_images(tmp_path / "photos", 6)
    index = build_index(
        tmp_path / "model", tmp_path / "photos", tmp_path / "index", loaded=(model, processor), progress=False
    )
    reference = reference_image_embeddings(model, processor, [index.paths[i] for i in range(len(paths))])
    rng = np.random.default_rng(0)
    unit = rng.normal(size=16).astype(np.float32)
    unit /= np.linalg.norm(unit)
    raw = unit * length
    cosines = reference @ unit
    order = np.argsort(-cosines, kind="stable")
    for query in (raw, unit):
        hits = index.search(query, top_k=6)[0]
        assert [hit.id for hit in hits] == order.tolist()
        scores = np.array([hit.score for hit in hits])
        np.testing.assert_allclose(scores, cosines[order], atol=1e-5)
        assert (np.abs(scores) <= 1 + 1e-5).all()
    # a batch of raw queries of different lengths, rows scored each on its own
    batch = np.stack([unit * 3.0, -unit * 0.2])
    first, second = index.search(batch, top_k=1)
    assert first[0].score == pytest.approx(cosines.max(), abs=1e-5)
    assert second[0].score == pytest.approx(-cosines.min(), abs=1e-5)
