"""The demo page's logic without a browser: the checks of what a visitor gives (each a clear message), the shared
model cache, and the one-head attention map against the maps the model itself returns."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_diffclip import cli
from transformers_diffclip.demo.logic import (
    ModelCache,
    SearchTab,
    head_map,
    model_pairs,
    parse_labels,
    pick_image,
    whole_number,
)


def test_labels_are_checked():
    assert parse_labels(" a cat ,a dog,, a red car ") == ["a cat", "a dog", "a red car"]
    with pytest.raises(ValueError, match="is empty"):
        parse_labels(" , ")
    with pytest.raises(ValueError, match="'a cat' appears more than once"):
        parse_labels("a cat, a dog, a cat")


def test_images_are_checked():
    image = Image.new("L", (5, 4), 7)
    assert pick_image(image, "ignored").mode == "RGB"
    with pytest.raises(ValueError, match="Give an image first"):
        pick_image(None, "  ")
    with pytest.raises(ValueError, match="not an http"):
        pick_image(None, "/etc/passwd")
    with socket.socket() as sock:  # a port nothing listens on: the URL does not answer
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError, match=f"Could not get an image from http://127.0.0.1:{port}/x.png"):
        pick_image(None, f"http://127.0.0.1:{port}/x.png")


def test_numbers_are_checked():
    assert whole_number(-1.0, "Layer") == -1
    for bad in ("two", 1.5, None):
        with pytest.raises(ValueError, match="Layer must be a whole number"):
            whole_number(bad, "Layer")


def test_pairs():
    pairs = model_pairs()
    assert list(pairs) == ["CC12M", "CC3M"]
    assert pairs["CC12M"].diffclip == "hammh0a/DiffCLIP_ViTB16_CC12M" and pairs["CC12M"].clip == "hammh0a/ViTB16_CC12M"
    given = model_pairs("a/b", "c/d")
    assert list(given)[0] == "given" and (given["given"].diffclip, given["given"].clip) == ("a/b", "c/d")


def test_models_load_once_and_are_shared(tmp_path):
    calls = []
    cache = ModelCache(loader=lambda name, device, trust_remote_code: calls.append(name) or (name, None))
    folder = tmp_path / "model"
    folder.mkdir()
    assert cache.get(str(folder)) == cache.get(str(tmp_path / "." / "model")) == (str(folder.resolve()), None)
    assert calls == [str(folder.resolve())]


def test_search_before_an_index_exists(tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
    with pytest.raises(ValueError, match="No search index: start the demo with --index"):
        SearchTab(ModelCache(), None).search("a cat", None, 5)
    with pytest.raises(FileNotFoundError, match="No index at"):
        SearchTab(ModelCache(), tmp_path / "missing").search("a cat", None, 5)
    with pytest.raises(ValueError, match="Type a text query or upload a query image"):
        SearchTab(ModelCache(), tmp_path).search(" ", None, 5)


def test_demo_command_refuses_a_missing_index(tmp_path, capsys):
    pytest.importorskip("gradio", reason="gradio is not installed (the `demo` extra)")
    assert cli.main(["demo", "--index", str(tmp_path / "missing"), "--port", "1"]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("differential", [True, False])
def test_one_head_map_is_the_models_own_attention(differential):
    from transformers_diffclip import DiffCLIPConfig, DiffCLIPImageProcessor, DiffCLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    tower["use_differential_attention"] = differential
    config = DiffCLIPConfig(text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8))
    torch.manual_seed(0)
    model = DiffCLIPModel(config).eval()
    processor = DiffCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        attentions = model.vision_model(pixel_values=pixel_values, output_attentions=True).attentions
    heads = 2 if differential else 4  # a differential head is a pair of softmax heads
    assert attentions[0].shape[1] == heads
    for layer in (0, -1):
        for head in range(heads):
            expected = attentions[layer][0, head, 0, 1:].clamp(min=0).reshape(4, 4)
            got = head_map(model, processor, image, layer, head)
            torch.testing.assert_close(got.patch_map, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=f"Head {heads} does not exist"):
        head_map(model, processor, image, -1, heads)
    with pytest.raises(ValueError, match="Layer 2 does not exist"):
        head_map(model, processor, image, 2, 0)
