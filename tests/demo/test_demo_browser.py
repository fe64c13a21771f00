"""`diffclip demo` in a real browser: Debian's Chromium driven by Playwright against the page served on 127.0.0.1
with tiny models. What the page shows is compared with what the commands print: `diffclip zero-shot` (probabilities
to 1e-4), `diffclip attention-map` (the picture cells), `diffclip search --json` (the results).

Screenshots of each tab are written to $DIFFCLIP_SCREENSHOTS (default: the test's temporary folder)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


pytest.importorskip("gradio", reason="gradio is not installed (the `demo` extra)")
pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (the `search` extra)")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")

from _helpers import CHROMIUM, CHROMIUM_FLAGS, tiny_processor  # noqa: E402

from transformers_diffclip import cli  # noqa: E402
from transformers_diffclip.interpret import CAPTION_HEIGHT, PAD  # noqa: E402


LABELS = ["a cat", "a dog", "a red car"]
CELL = 224  # the page draws attention cells at the command's default size


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shapes_photo(seed: int, size=(96, 80)) -> Image.Image:
    """A small picture of coloured shapes on a noisy background."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, 3)
    pixels = np.clip(background + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.integers(0, size[0] - 30), rng.integers(0, size[1] - 30)
        box = (int(x), int(y), int(x + rng.integers(15, 30)), int(y + rng.integers(15, 30)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny DiffCLIP and CLIP folders, photos, an index, and the demo serving them on 127.0.0.1."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)")
    from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel

    root = tmp_path_factory.mktemp("demo")
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    folders = {}
    for name, differential, seed in (("DiffCLIP-tiny", True, 0), ("CLIP-tiny", False, 1)):
        towers = dict(tower, use_differential_attention=differential)
        config = DiffCLIPConfig(
            text_config=towers, vision_config=dict(towers, image_size=32, patch_size=8), projection_dim=16
        )
        torch.manual_seed(seed)
        folders[name] = root / name
        DiffCLIPModel(config).eval().save_pretrained(folders[name])
        tiny_processor(image_size=32).save_pretrained(folders[name])
    photos = root / "photos"
    photos.mkdir()
    for i in range(10):
        _shapes_photo(i).save(photos / f"photo{i}.png")
    index = root / "index"
    argv = ["index", "--model", str(folders["DiffCLIP-tiny"]), "--data", str(photos), "--output", str(index)]
    assert cli.main(argv + ["--device", "cpu", "--no-progress"]) == 0
    port = _free_port()
    command = [sys.executable, "-m", "transformers_diffclip.cli", "demo", "--model", str(folders["DiffCLIP-tiny"])]
    command += ["--baseline", str(folders["CLIP-tiny"]), "--index", str(index), "--device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", NO_PROXY="127.0.0.1,localhost")
    log = open(root / "demo.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the demo did not start: {(root / 'demo.log').read_text()}")
            time.sleep(0.5)
    shots = Path(os.environ.get("DIFFCLIP_SCREENSHOTS") or root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    yield dict(folders=folders, photos=photos, index=index, url=url, root=root, shots=shots)
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def page(setup):
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(120_000)
        page.goto(setup["url"])
        page.locator("#labels").wait_for()
        yield page
        browser.close()


def _field(page, elem_id):
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _wait_for_value(page, elem_id, previous=""):
    field = _field(page, elem_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        value = field.input_value()
        if value and value != previous:
            return value
        time.sleep(0.25)
    raise AssertionError(f"#{elem_id} never showed a result")


def _zero_shot_cli(folder, image, capsys):
    argv = ["zero-shot", "--model", str(folder), "--labels", ",".join(LABELS), "--top-k", str(len(LABELS))]
    assert cli.main(argv + ["--json", "--no-progress", "--device", "cpu", str(image)]) == 0
    predictions = json.loads(capsys.readouterr().out)[0]["predictions"]
    return {p["label"]: p["score"] for p in predictions}


def _upload(page, image):
    page.locator("#image input[type=file]").set_input_files(str(image))
    page.locator("#image img").first.wait_for()


def test_zero_shot_tab_shows_the_commands_probabilities(setup, page, capsys):
    image = setup["photos"] / "photo3.png"
    _upload(page, image)
    _field(page, "labels").fill(", ".join(LABELS))
    page.locator("#classify").click()
    shown = json.loads(_wait_for_value(page, "probabilities"))
    assert len(shown) == 2
    for name, folder in setup["folders"].items():
        (model_label,) = [label for label in shown if label.endswith(f"({name})")]
        expected = _zero_shot_cli(folder, image, capsys)
        assert set(shown[model_label]) == set(LABELS)
        for label in LABELS:
            assert abs(shown[model_label][label] - expected[label]) < 1e-4, (name, label)
    page.locator("#chart").locator("canvas, svg").first.wait_for()
    page.screenshot(path=str(setup["shots"] / "zero-shot.png"), full_page=True)


def _cells(png: Image.Image, rows: int, columns: int) -> list[np.ndarray]:
    array = np.asarray(png.convert("RGB"), dtype=np.int16)
    cells = []
    for r in range(rows):
        top = PAD + r * (CELL + CAPTION_HEIGHT + PAD)
        for c in range(columns):
            left = PAD + c * (CELL + PAD)
            cells.append(array[top : top + CELL, left : left + CELL])
    return cells


def test_where_it_looks_tab_draws_the_commands_maps(setup, page, tmp_path, capsys):
    image = setup["photos"] / "photo3.png"
    page.get_by_role("tab", name="Where it looks").click()
    _field(page, "query").fill("a red car")
    page.locator("#draw").click()
    figure = page.locator("#figure img").first
    figure.wait_for()
    page.wait_for_function(
        "document.querySelector('#figure img') && document.querySelector('#figure img').naturalWidth > 0"
    )
    source = figure.get_attribute("src")
    shown = Image.open(io.BytesIO(page.request.get(source).body()))
    assert shown.size == (PAD + 3 * (CELL + PAD), PAD + 2 * (CELL + CAPTION_HEIGHT + PAD))
    output = tmp_path / "maps.png"
    argv = ["attention-map", "--model", str(setup["folders"]["DiffCLIP-tiny"]), "--image", str(image)]
    argv += ["--compare-model", str(setup["folders"]["CLIP-tiny"]), "--text", "a red car", "--class-token"]
    argv += ["--method", "layer", "--output", str(output), "--device", "cpu"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    for got, want in zip(_cells(shown, 2, 3), _cells(Image.open(output), 2, 3), strict=True):
        assert np.abs(got - want).max() <= 1
    page.screenshot(path=str(setup["shots"] / "where-it-looks.png"), full_page=True)


def test_search_tab_shows_the_commands_results(setup, page, capsys):
    page.get_by_role("tab", name="Search").click()
    _field(page, "search-text").fill("a red car")
    page.locator("#search").click()
    shown = json.loads(_wait_for_value(page, "hits"))
    argv = ["search", "--index", str(setup["index"]), "--text", "a red car", "--top-k", "8", "--json"]
    assert cli.main(argv + ["--device", "cpu"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert [hit["id"] for hit in shown] == [hit["id"] for hit in expected] and len(shown) == 8
    assert [hit["path"] for hit in shown] == [hit["path"] for hit in expected]
    np.testing.assert_allclose([h["score"] for h in shown], [h["score"] for h in expected], atol=1e-5)
    assert page.locator("#results img").count() >= 8
    page.screenshot(path=str(setup["shots"] / "search.png"), full_page=True)


def test_bad_labels_get_a_message_in_the_page(setup, page):
    page.get_by_role("tab", name="Zero-shot").click()
    _field(page, "labels").fill("a cat, a cat")
    page.locator("#classify").click()
    page.get_by_text("appears more than once").first.wait_for()
    _field(page, "labels").fill(" , ")
    page.locator("#classify").click()
    page.get_by_text("is empty").first.wait_for()


@pytest.mark.parametrize("kind", ["not an image", "thin"])
def test_a_bad_upload_gets_a_message_in_the_page(setup, page, tmp_path, kind):
    """Gradio decoded uploads itself (a bare "Error" for a file that is no image, no pixel limit); the page now
    opens them with the commands' limits and says what is wrong (issue 27)."""
    bad = tmp_path / f"{kind.replace(' ', '-')}.png"
    if kind == "thin":
        Image.new("L", (1, 100_000), 50).save(bad)
    else:
        bad.write_text("these are my notes, not a picture")
    page.get_by_role("tab", name="Zero-shot").click()
    _upload(page, bad)
    _field(page, "labels").fill("a cat, a dog")
    page.locator("#classify").click()
    says = "aspect ratio of 100,000:1" if kind == "thin" else "cannot identify image file"
    page.get_by_text("The uploaded file cannot be used as an image").first.wait_for()
    page.get_by_text(says, exact=False).first.wait_for()


def test_screenshots_were_written(setup):
    names = sorted(path.name for path in setup["shots"].glob("*.png"))
    assert names == ["search.png", "where-it-looks.png", "zero-shot.png"]
    if os.environ.get("DIFFCLIP_SCREENSHOTS"):
        print(f"screenshots in {setup['shots']}")
