"""The published dataset forms (evaluation.datasets, evaluation.mmvp), written by the tests and read back; MMVP
scoring against hand-worked pairs; the feature cache (encoded once, refused when it does not match, resumed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _paper_data import (
    MMVP_CATEGORIES,
    ForwardCounter,
    image_bytes,
    one_thread,  # noqa: F401 (autouse fixture)
    seed_hub_dataset,
    tiny_model,
    write_karpathy,
    write_mmvp,
    write_split_folders,
    write_wds_classification,
    write_wds_retrieval,
)

from transformers_diffclip.evaluation.datasets import detect_layout, hub_repo_of, image_batches, open_split
from transformers_diffclip.evaluation.features import FeatureCache, encode_split
from transformers_diffclip.evaluation.mmvp import read_mmvp, score_mmvp


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    model, processor = tiny_model(folder)
    return folder, model, processor


def test_webdataset_classification_and_retrieval(tmp_path, tiny):
    _, _, processor = tiny
    root = write_wds_classification(tmp_path / "wds_tiny")
    train = open_split(root, "train")
    assert train.layout == "webdataset" and train.task == "classification"
    assert train.class_names == ["cat", "dog", "car"] and train.templates == [
        "a photo of a {c}.",
        "an image of a {c}.",
    ]
    batches = list(image_batches(train, processor.image_processor, batch_size=5))
    targets = [t for _, batch in batches for t in batch]
    assert targets == [i % 3 for i in range(12)]  # shard order, then sample order
    assert [len(b) for b, _ in batches] == [5, 5, 2] and batches[0][0].shape[1:] == (3, 32, 32)
    resumed = [t for _, batch in image_batches(train, processor.image_processor, batch_size=5, start=7) for t in batch]
    assert resumed == targets[7:]
    # two DataLoader workers decode alternate batches; the batches come back in order
    parallel = list(image_batches(train, processor.image_processor, batch_size=5, num_workers=2, start=1))
    assert [t for _, batch in parallel for t in batch] == targets[1:] and [len(b) for b, _ in parallel] == [5, 5, 1]
    serial = torch.cat([b for b, _ in image_batches(train, processor.image_processor, batch_size=5, start=1)])
    torch.testing.assert_close(torch.cat([b for b, _ in parallel]), serial, rtol=0, atol=0)

    retrieval = open_split(write_wds_retrieval(tmp_path / "wds_ret"), "test")
    assert retrieval.task == "retrieval"
    captions = [t for _, batch in image_batches(retrieval, processor.image_processor, batch_size=3) for t in batch]
    assert captions[2] == ["caption 0 of image 2", "caption 1 of image 2"] and len(captions) == 4


def test_webdataset_from_a_seeded_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder = write_wds_classification(tmp_path / "src")
    cache = tmp_path / "hub"
    snapshot = seed_hub_dataset(cache, "clip-benchmark/wds_vtab-pets", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert hub_repo_of("wds/vtab/pets") == "clip-benchmark/wds_vtab-pets"
    split = open_split("wds/vtab/pets", "test")
    assert split.shards[0].startswith(str(snapshot)) and split.class_names == ["cat", "dog", "car"]
    with pytest.raises(FileNotFoundError, match="clip-benchmark/wds_cifar10"):
        open_split("wds/cifar10", "test")


def test_split_folders_karpathy_and_wrong_layout(tmp_path):
    root = write_split_folders(tmp_path / "fruit")
    train, test = open_split(root, "train"), open_split(root, "test")
    assert train.class_names == ["apple", "pear", "plum"] and len(train.sources) == 18 and len(test.sources) == 9
    assert test.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    named = open_split(root, "test", class_names=["an apple", "a pear", "a plum"])
    assert named.class_names == ["an apple", "a pear", "a plum"] and named.targets == test.targets
    with pytest.raises(ValueError, match="2 class names for the 3 class folders"):
        open_split(root, "test", class_names=["an apple", "a pear"])

    karpathy = open_split(write_karpathy(tmp_path / "flickr"), "test")
    assert karpathy.task == "retrieval" and len(karpathy.sources) == 3
    assert karpathy.targets[1] == ["a picture number 1", "image 1 again"]
    # one image listed twice, by another spelling of its path: one image with the captions of both entries
    path = tmp_path / "flickr" / "dataset_flickr8k.json"
    data = json.loads(path.read_text())
    data["images"].append({"filepath": "x/..", "filename": "1.jpg", "split": "test", "sentences": [{"raw": "more"}]})
    (tmp_path / "flickr" / "images" / "x").mkdir()
    path.write_text(json.dumps(data))
    merged = open_split(path, "test")
    assert merged.sources == karpathy.sources
    assert merged.targets[1] == ["a picture number 1", "image 1 again", "more"]

    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"none of the dataset layouts.*found notes\.txt.*nshards\.txt"):
        detect_layout(tmp_path / "odd")


def test_mmvp_folder_and_hand_worked_scores(tmp_path):
    split = read_mmvp(write_mmvp(tmp_path / "MMVP_VLM"))
    assert len(split.sources) == 18 and split.extra["pair_categories"] == list(MMVP_CATEGORIES)
    assert split.sources[1].endswith("MLLM_VLM Images/Orientation and Direction/2.jpg")
    # images: pair k = (e0, e1); statements: odd ids should pick image 1 (e0), even ids image 2 (e1)
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    images = torch.stack([e0, e1] * 9)
    texts = []
    plan = {  # pair -> (text of id 2k-1, text of id 2k); worked by hand
        0: (e0, e1),  # both right                      -> pair right
        1: (e0, e0),  # second statement picks image 1  -> wrong
        2: (e1, e1),  # first picks image 2             -> wrong
        3: (e1, e0),  # both swapped                    -> wrong
        4: (e0 + 0.01 * e1, e1),  # right with a margin -> right
        5: (e0 + e1, e1),  # a tie: p = 0.5, not > 0.5, picks image 2 -> wrong
        6: (e0, e1),
        7: (e0, e1),
        8: (e1, e1),
    }
    for pair in range(9):
        texts.extend(plan[pair])
    result = score_mmvp(images, torch.stack(texts), math.log(100.0), split)
    expected = [100.0, 0.0, 0.0, 0.0, 100.0, 0.0, 100.0, 100.0, 0.0]
    assert list(result["mmvp_per_category"].values()) == expected
    assert list(result["mmvp_per_category"]) == list(MMVP_CATEGORIES)
    assert result["mmvp_average"] == pytest.approx(400 / 9)
    assert result["pair_correct"].tolist() == [e == 100.0 for e in expected]


def test_mmvp_folder_of_the_wrong_shape(tmp_path):
    root = write_mmvp(tmp_path / "m")
    lines = (root / "Questions.csv").read_text().splitlines()
    (root / "Questions.csv").write_text("\n".join(lines[:-2]) + "\n")  # 8 pairs: not 9 equal runs
    with pytest.raises(ValueError, match="8 pairs"):
        read_mmvp(root)


def test_features_are_encoded_once_and_cached(tmp_path, tiny):
    folder, model, processor = tiny
    split = open_split(write_wds_classification(tmp_path / "wds"), "test")
    cache = FeatureCache(tmp_path / "cache")
    counter = ForwardCounter(model)
    first = encode_split(model, processor, split, str(folder), cache=cache, batch_size=4)
    assert counter.images == 9 and not first.cached
    assert first.pre_projection.shape == (9, 32) and first.projected.shape == (9, 16)
    assert first.labels.tolist() == [i % 3 for i in range(9)]
    # the projected feature is the projection of the pre-projection one, and matches get_image_features
    torch.testing.assert_close(first.projected, model.visual_projection(first.pre_projection).detach())
    again = encode_split(model, processor, split, str(folder), cache=cache, batch_size=4)
    assert counter.images == 9 and again.cached
    torch.testing.assert_close(again.projected, first.projected, rtol=0, atol=0)

    with pytest.raises(ValueError, match="revision"):
        encode_split(model, processor, split, str(folder), revision="v2", cache=cache)
    other = tiny_processor_of_size(48)
    with pytest.raises(ValueError, match="transform"):
        encode_split(model, other, split, str(folder), cache=cache)
    assert counter.images == 9  # refused before any image is encoded


def tiny_processor_of_size(size):
    from _helpers import tiny_processor

    return tiny_processor(image_size=size)


def test_interrupted_encoding_resumes(tmp_path, tiny):
    folder, model, processor = tiny
    split = open_split(write_split_folders(tmp_path / "fruit", train=4), "train")
    cache = FeatureCache(tmp_path / "cache")
    counter = ForwardCounter(model)
    seen = []

    def interrupt(n):
        seen.append(n)
        if sum(seen) >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_split(
            model, processor, split, str(folder), cache=cache, batch_size=2, checkpoint_every=4, on_batch=interrupt
        )
    assert (
        counter.images == 8
        and len(cache.parts({"model": str(folder), "dataset": split.dataset, "split": "train"})) == 2
    )
    resumed = encode_split(model, processor, split, str(folder), cache=cache, batch_size=2, checkpoint_every=4)
    assert counter.images == 12  # only the 4 images not in a part
    full = encode_split(model, processor, split, str(folder), cache=None, batch_size=5)
    torch.testing.assert_close(resumed.pre_projection, full.pre_projection, rtol=1e-5, atol=1e-6)
    assert resumed.labels.tolist() == full.labels.tolist()
    assert not list(Path(cache.root).rglob("*.part-*"))  # parts removed once the whole split is written


def test_non_finite_features_are_an_error(tmp_path, tiny):
    folder, model, processor = tiny
    split = open_split(write_split_folders(tmp_path / "fruit", train=1, test=1), "test")
    broken = type(model)(model.config).eval()
    with torch.no_grad():
        broken.visual_projection.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="not finite"):
        encode_split(broken, processor, split, "broken")


def test_ranks_encode_their_share_and_rank_0_restores_the_order(tmp_path, tiny):
    folder, model, processor = tiny
    split = open_split(write_wds_classification(tmp_path / "wds", per_split={"test": 11}), "test")
    cache = FeatureCache(tmp_path / "cache")
    counter = ForwardCounter(model)
    # without a process group the barrier is a no-op: rank 1 encodes its share first, then rank 0 puts them together
    assert encode_split(model, processor, split, "m", cache=cache, batch_size=2, rank=1, world=2) is None
    assert counter.images == 5  # samples 1, 3, 5, 7, 9
    merged = encode_split(model, processor, split, "m", cache=cache, batch_size=2, rank=0, world=2)
    assert counter.images == 11
    whole = encode_split(model, processor, split, "m", cache=None, batch_size=4)
    torch.testing.assert_close(merged.projected, whole.projected, rtol=1e-5, atol=1e-6)
    assert merged.labels.tolist() == whole.labels.tolist() == [i % 3 for i in range(11)]
    assert not list(Path(cache.root).rglob("*.part-*"))


def test_broken_images_and_text_files_are_named(tmp_path, tiny, monkeypatch):
    """Samples decode through core.images (one error type naming the sample and its shard, the pixel limit);
    dataset text files are read as UTF-8 and a file in another encoding is named."""
    import webdataset as wds

    from transformers_diffclip.core.images import ImageError

    _, _, processor = tiny
    root = write_wds_classification(tmp_path / "wds_bad", per_split={"test": 3}, shards=1)
    with wds.TarWriter(str(root / "test" / "0.tar")) as sink:
        sink.write({"__key__": "good", "png": image_bytes(1), "cls": "0"})
        sink.write({"__key__": "broken", "jpg": b"not a jpeg at all", "cls": "1"})
    split = open_split(root, "test")
    with pytest.raises(ImageError, match=r"broken\.jpg in .*0\.tar"):
        list(image_batches(split, processor.image_processor, batch_size=1))
    monkeypatch.setenv("DIFFCLIP_MAX_IMAGE_PIXELS", "100")  # the samples are 40 x 36 pixels
    with pytest.raises(ImageError, match=r"good\.png in .*0\.tar: 36 x 40 pixels is more than the limit of 100"):
        list(image_batches(split, processor.image_processor, batch_size=1))
    monkeypatch.delenv("DIFFCLIP_MAX_IMAGE_PIXELS")

    (root / "classnames.txt").write_bytes("caf\xe9\ndog\ncar\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"classnames\.txt is not UTF-8 text \(byte 0xe9"):
        open_split(root, "test")
