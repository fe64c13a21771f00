"""Thin images (issue 27, probe 1): the pixel limit alone let a 2 KB PNG of 1,000,000 x 1 pixels through, and the
processors' shortest-edge resize then made it 224 x 224,000,000. The aspect ratio is bounded too, read from the
header before anything is decoded; every command refuses such an image with one line and exit code 2, before
decoding it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from transformers_diffclip.core.images import ImageError, max_image_aspect, open_image, probe_image


def _thin(path, size):
    Image.new("L", size, 128).save(path)  # a few KB however long: PNG compresses the constant rows
    return path


@pytest.mark.parametrize("size", [(1_000_000, 1), (1, 100_000), (3000, 20)])
def test_thin_images_are_refused_before_decoding(tmp_path, size, monkeypatch):
    path = _thin(tmp_path / "thin.png", size)
    loaded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(self.size))  # nothing may be decoded
    with pytest.raises(
        ImageError,
        match=rf"thin\.png: {size[0]} x {size[1]} pixels has an aspect ratio of .* more "
        r"than the limit of 100:1 \(DIFFCLIP_MAX_IMAGE_ASPECT",
    ):
        open_image(path)
    with pytest.raises(ImageError, match="aspect ratio"):
        probe_image(path)
    with pytest.raises(ImageError, match="aspect ratio"):
        open_image({"path": "member.png", "bytes": path.read_bytes()})
    assert not loaded


def test_the_aspect_limit_is_inclusive_and_can_be_changed(tmp_path, monkeypatch):
    assert max_image_aspect() == 100
    assert open_image(_thin(tmp_path / "wide.png", (1000, 10))).size == (1000, 10)  # 100:1 exactly
    with pytest.raises(ImageError, match="1001 x 10 pixels"):
        open_image(_thin(tmp_path / "wider.png", (1001, 10)))
    with pytest.raises(ImageError, match="aspect ratio"):
        open_image(Image.new("RGB", (1, 500)))  # a PIL image given directly
    monkeypatch.setenv("DIFFCLIP_MAX_IMAGE_ASPECT", "200")
    assert open_image(tmp_path / "wider.png").size == (1001, 10)
    monkeypatch.setenv("DIFFCLIP_MAX_IMAGE_ASPECT", "wide")
    with pytest.raises(ValueError, match="DIFFCLIP_MAX_IMAGE_ASPECT='wide' must be a positive number"):
        open_image(tmp_path / "wide.png")


@pytest.mark.slow
def test_the_zero_shot_command_refuses_a_thin_image_in_one_line(tmp_path):
    """Through the installed command, as users run it: exit code 2, one line naming the image, in seconds."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
    from _helpers import tiny_config, tiny_processor

    from transformers_diffclip import DiffCLIPModel

    DiffCLIPModel(tiny_config()).save_pretrained(tmp_path / "model")
    tiny_processor().save_pretrained(tmp_path / "model")
    thin = _thin(tmp_path / "thin.png", (1_000_000, 1))
    command = [os.path.join(os.path.dirname(sys.executable), "diffclip"), "zero-shot", str(thin)]
    command += ["--labels", "a cat,a dog", "--model", str(tmp_path / "model"), "--device", "cpu"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=os.environ | {"HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("diffclip zero-shot: error: Cannot read image ") and errors[0].endswith(
        "thin.png: 1000000 x 1 pixels has an aspect ratio of 1,000,000:1, more than the limit of 100:1 "
        "(DIFFCLIP_MAX_IMAGE_ASPECT)"
    ), errors
