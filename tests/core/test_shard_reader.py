"""core.shards, the one webdataset shard reader of training, evaluation and search (issue 27): one list of image
members, a member size limit read from the tar header before any byte of the member, shards cut short and
repeated keys named. Shards are written by the tests with webdataset's TarWriter and GNU tar (a sparse member)."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transformers_diffclip.search.sources import list_images, open_item


def _image(fmt: str, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    array = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar of `(name, bytes)` members, in this order (TarWriter cannot write a key twice, out of order)."""
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _sparse_shard(folder: Path, megabytes: int = 100) -> Path:
    """A tar of a few kB holding one sparse image member of `megabytes` MB (GNU tar --sparse)."""
    if shutil.which("tar") is None:
        pytest.skip("needs GNU tar (to write a sparse member)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "big.png").touch()
    (folder / "big.txt").write_text("a huge sparse image")
    subprocess.run(["truncate", "-s", f"{megabytes}M", str(folder / "big.png")], check=True)
    shard = folder / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(shard), "-C", str(folder), "big.png", "big.txt"], check=True)
    (folder / "big.png").unlink()
    assert shard.stat().st_size < 64 * 1024
    return shard


def test_bmp_and_tiff_members_are_read_by_search_and_training(tmp_path):
    from transformers_diffclip.training.shards import decode_sample

    shard = _tar(
        tmp_path / "s.tar",
        [("a.bmp", _image("BMP", 1)), ("a.txt", b"a"), ("b.tiff", _image("TIFF", 2)), ("b.txt", b"b")],
    )
    items = list_images(str(shard))
    assert [item.rsplit("#", 1)[1] for item in items] == ["a", "b"]
    assert [open_item(item).size for item in items] == [(24, 20), (24, 20)]
    for key, fmt, seed in (("a", "bmp", 1), ("b", "tiff", 2)):
        sample = {"__key__": key, "__url__": str(shard), fmt: _image(fmt.upper(), seed), "txt": b"a caption"}
        image, caption, problem = decode_sample(sample)
        assert problem == "" and caption == "a caption" and image.size == (24, 20)


def test_a_sparse_member_of_100_mb_is_refused_from_its_header_by_search(tmp_path):
    shard = _sparse_shard(tmp_path / "sparse")
    with pytest.raises(ValueError, match=r"big\.png' is 104857600 bytes, more than the limit of 67108864 bytes"):
        list_images(str(shard))


def test_a_sparse_member_stops_only_its_shard_in_a_training_stream(tmp_path, caplog):
    import webdataset as wds

    from transformers_diffclip.training.shards import ImageTextShards

    sparse = _sparse_shard(tmp_path / "sparse")
    good = tmp_path / "good.tar"
    with wds.TarWriter(str(good)) as sink:
        for i in range(3):
            sink.write({"__key__": f"g{i}", "png": _image("PNG", i), "txt": f"caption {i}"})
    stream = ImageTextShards([str(sparse), str(good)], split_by_node=False)
    with caplog.at_level(logging.WARNING):
        samples = list(stream)
    assert [s["caption"] for s in samples] == ["caption 0", "caption 1", "caption 2"]
    assert "sparse.tar" in caplog.text and "more than the limit" in caplog.text


def test_a_repeated_key_is_listed_once_and_named_when_read(tmp_path):
    from transformers_diffclip.core.shards import ShardError, shard_samples

    shard = _tar(
        tmp_path / "r.tar",
        [("a.jpg", _image("JPEG", 1)), ("b.jpg", _image("JPEG", 2)), ("a.cls", b"0")],
    )
    assert [item.rsplit("#", 1)[1] for item in list_images(str(shard))] == ["a", "b"]
    with pytest.raises(ShardError) as caught:
        list(shard_samples(shard))
    assert str(caught.value).endswith(
        "the sample key 'a' appears twice (its members are not consecutive: two samples under one key)"
    )
    assert "(" not in str(caught.value).split(":")[0] and caught.value.shard == str(shard)


def test_member_names_group_as_webdataset_groups_them():
    from transformers_diffclip.core.images import IMAGE_EXTENSIONS
    from transformers_diffclip.core.shards import IMAGE_KEYS, split_member_name

    assert IMAGE_KEYS == tuple(e[1:] for e in IMAGE_EXTENSIONS)
    assert split_member_name("a/b.c.JPG") == ("a/b", "c.jpg")
    assert split_member_name("x.png") == ("x", "png")
    assert split_member_name("dir/.hidden.png") is None and split_member_name("README") is None
