"""`core.images.scan_images` follows a link to a folder only inside the scanned tree. "Inside" means below the
tree's folder, not "its path starts with the same characters": a link from `d/cat` to the sibling `d/cat2` (whose
path begins with `d/cat`) leads out of the tree and is not followed."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from transformers_diffclip.core.images import scan_images


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)
    return path


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_link_to_a_sibling_sharing_the_prefix_is_not_followed(tmp_path):
    tree = tmp_path / "d" / "cat"
    inside = _png(tree / "a.png")
    _png(tmp_path / "d" / "cat2" / "outside.png")
    _png(tmp_path / "d" / "cat-other" / "outside.png")
    os.symlink(tmp_path / "d" / "cat2", tree / "to_cat2")
    os.symlink(tmp_path / "d" / "cat-other", tree / "to_cat_other")
    assert scan_images(tree) == [str(inside)]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_link_to_a_folder_inside_the_tree_is_still_followed_once(tmp_path):
    tree = tmp_path / "d" / "cat"
    kept = _png(tree / "sub" / "b.png")
    os.symlink(tree / "sub", tmp_path / "d" / "cat" / "alias")  # same folder twice: listed once
    assert [os.path.realpath(p) for p in scan_images(tree)] == [os.path.realpath(kept)]
