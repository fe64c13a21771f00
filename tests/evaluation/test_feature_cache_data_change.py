"""The feature cache never answers for data that changed: encoding a split whose images changed, under the same
dataset name and split, either refuses the cache or encodes again — it never returns the old features."""

from __future__ import annotations

import pytest
import torch
from _paper_data import ForwardCounter, image_bytes, one_thread, tiny_model  # noqa: F401 (autouse fixture)

from transformers_diffclip.evaluation.datasets import open_split
from transformers_diffclip.evaluation.features import FeatureCache, encode_split


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    model, processor = tiny_model(folder)
    return folder, model, processor


def _write_folders(root, seeds, size=(40, 36)):
    for name, seed in seeds.items():
        path = root / "test" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(seed, size=size))
    return root


def _encode_or_refuse(model, processor, root, name, cache):
    split = open_split(str(root), "test")
    try:
        return encode_split(model, processor, split, "tiny", cache=cache, batch_size=4)
    except ValueError:
        return None  # refused: acceptable


@pytest.mark.parametrize(
    "change",
    ["new image", "image replaced by another of another size"],
)
def test_changed_data_under_the_same_name_is_not_answered_from_the_cache(tmp_path, tiny, change):
    folder, model, processor = tiny
    root = tmp_path / "data"
    seeds = {"cat/0.png": 1, "cat/1.png": 2, "dog/0.png": 3, "dog/1.png": 4}
    _write_folders(root, seeds)
    cache = FeatureCache(tmp_path / "cache")
    first = encode_split(model, processor, open_split(str(root), "test"), "tiny", cache=cache)
    assert not first.cached and first.projected.shape[0] == 4
    if change == "new image":
        _write_folders(root, {"dog/2.png": 5})
    else:
        _write_folders(root, {"cat/1.png": 6}, size=(52, 44))
    again = _encode_or_refuse(model, processor, root, "pets", cache)
    if again is None:
        return
    fresh = encode_split(model, processor, open_split(str(root), "test"), "tiny", cache=None)
    assert not again.cached
    assert again.projected.shape == fresh.projected.shape
    torch.testing.assert_close(again.projected, fresh.projected, rtol=1e-5, atol=1e-6)
    assert again.labels.tolist() == fresh.labels.tolist()
