"""Captions of any length are laid out with a bounded number of measurements (issue 27, probe 2: a 100,000-character
query held `attention-map` for 90 s and the demo's "Where it looks" tab for 15 minutes, cutting one character at a
time), giving the same caption as cutting one character at a time; and the picture's size is bounded before any
model is loaded (`--cell-size 60000` was killed by the OOM killer at 23.8 GB)."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_config, tiny_processor
from PIL import Image, ImageDraw, ImageFont

from transformers_diffclip import DiffCLIPModel, cli
from transformers_diffclip.interpret import RelevanceMap, render_attention_grid
from transformers_diffclip.interpret import render as render_module


def _one_char_at_a_time(draw, text, font, width):
    """The reference: drop the last character until the rest, with "...", fits."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


@pytest.fixture
def draw():
    return ImageDraw.Draw(Image.new("RGB", (8, 8))), ImageFont.load_default()


@pytest.mark.parametrize("width", [0, 3, 20, 46, 120, 222])
@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "cat",
        "a photo of a cat",
        "a photo of a very small red sports car on a rainy street at night",
        "WWWWWWWWWWWWWWWWWWWWWWWWWWWWWW",
        "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii",
        "cat " * 60,
    ],
)
def test_captions_are_the_one_character_at_a_time_ones(draw, text, width):
    canvas, font = draw
    assert render_module._fit_text(canvas, text, font, width) == _one_char_at_a_time(canvas, text, font, width)


class _Counting:
    def __init__(self, monkeypatch):
        self.calls, self.characters = 0, 0
        real = ImageDraw.ImageDraw.textlength

        def textlength(draw, text, *args, **kwargs):
            self.calls += 1
            self.characters += len(text)
            return real(draw, text, *args, **kwargs)

        monkeypatch.setattr(ImageDraw.ImageDraw, "textlength", textlength)


def test_a_long_caption_takes_a_logarithmic_number_of_short_measurements(draw, monkeypatch):
    canvas, font = draw
    counter = _Counting(monkeypatch)
    text = "cat " * 25000
    fitted = render_module._fit_text(canvas, text, font, 222)
    assert fitted.endswith("...") and text.startswith(fitted[:-3]) and len(fitted) > 10
    assert counter.calls <= 14  # log2(4 * 222 + 4) + 2
    assert counter.characters <= counter.calls * (4 * 222 + 8)  # the text is cut before it is measured


def _maps(label):
    image = Image.new("RGB", (32, 32), (90, 120, 150))
    patch = torch.rand(4, 4)
    return [RelevanceMap(patch, torch.rand(32, 32), image, label)]


def test_the_grid_with_a_100000_character_query(monkeypatch):
    counter = _Counting(monkeypatch)
    grid = render_attention_grid([("DiffCLIP", _maps("cat " * 25000)), ("CLIP", _maps("dog " * 25000))], 224)
    assert grid.size == render_module.grid_size(2, 2, 224)
    assert counter.calls <= 4 * 14 and counter.characters <= counter.calls * (4 * 222 + 8)


def test_cell_size_and_picture_are_bounded():
    with pytest.raises(ValueError, match="cell_size must be between 8 and 2048 pixels, got 60000"):
        render_attention_grid([("m", _maps("a"))], cell_size=60000)
    with pytest.raises(ValueError, match="cell_size must be between 8 and 2048 pixels, got 7"):
        render_attention_grid([("m", _maps("a"))], cell_size=7)
    render_module.check_grid(2, 7, 2048)  # 2 models, 6 queries at the largest cell: allowed
    with pytest.raises(ValueError, match=r"more than the limit of 67108864 pixels \(DIFFCLIP_MAX_IMAGE_PIXELS\)"):
        render_module.check_grid(2, 400, 2048)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_text")
    torch.manual_seed(0)
    DiffCLIPModel(tiny_config()).eval().save_pretrained(root / "model")
    tiny_processor().save_pretrained(root / "model")
    Image.new("RGB", (40, 36), (200, 30, 30)).save(root / "photo.png")
    return root


def test_the_command_draws_a_100000_character_query(tiny, tmp_path, capsys, monkeypatch):
    counter = _Counting(monkeypatch)
    argv = ["attention-map", "--model", str(tiny / "model"), "--image", str(tiny / "photo.png"), "--device", "cpu"]
    argv += ["--text", "cat " * 25000, "--output", str(tmp_path / "maps.png"), "--cell-size", "64"]
    assert cli.main(argv) == 0
    assert Image.open(tmp_path / "maps.png").size == render_module.grid_size(1, 2, 64)
    assert counter.calls <= 2 * 14
    assert "Wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--cell-size", "60000"], "--cell-size must be between 8 and 2048 pixels, got 60000"),
        (["--cell-size", "0"], "--cell-size must be between 8 and 2048 pixels, got 0"),
        (["--cell-size", "2048", *["--text", "a"] * 300], "more than the limit of 67108864 pixels"),
    ],
)
def test_the_command_refuses_a_picture_too_big_before_loading_a_model(tmp_path, capsys, flags, says):
    argv = ["attention-map", "--model", str(tmp_path / "no-such-model"), "--image", str(tmp_path / "none.png")]
    assert cli.main(argv + ["--output", str(tmp_path / "maps.png"), *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("diffclip attention-map: error: ") and says in error[0], error
    assert not (tmp_path / "maps.png").exists()


def test_the_demo_draws_a_100000_character_query(tiny, monkeypatch):
    """The demo's "Where it looks" tab (held at 100 % CPU for 15 minutes by such a query before)."""
    from transformers_diffclip.core.loading import load_model_and_processor
    from transformers_diffclip.demo.logic import ModelCache, ModelPair, attention_figure

    loaded = load_model_and_processor(str(tiny / "model"), "cpu")
    cache = ModelCache(loader=lambda *args, **kwargs: loaded)
    counter = _Counting(monkeypatch)
    figure = attention_figure(
        cache, ModelPair("a", "b"), Image.open(tiny / "photo.png").convert("RGB"), query="cat " * 25000
    )
    assert figure.size == render_module.grid_size(2, 3, 224)
    assert counter.calls <= 6 * 14
