"""The browser page (`web/`, copied beside an export by `diffclip export onnx --web`) in Debian's Chromium driven by
Playwright, against the export folder served by a plain static server on 127.0.0.1.

References: `diffclip zero-shot --backend onnx --json` (the installed command) for the probabilities, and the Python
processor of the export (`DiffCLIPProcessor`, Pillow's resampling) for the page's pixel tensor. Photographs: the
export's validation set (export/photos/). The page's screenshot goes to $DIFFCLIP_SCREENSHOTS (default: the test's
temporary folder)."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("onnx", reason="onnx is not installed (the `export` extra)")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the `export` extra)")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (the `export` extra)")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")

from _helpers import CHROMIUM, CHROMIUM_FLAGS, save_tiny_diffclip  # noqa: E402
from test_export import LABELS, _command, _photos, _zero_shot  # noqa: E402


WEB = Path(__file__).resolve().parents[2] / "web"
PIXEL_TOLERANCE = 1e-5  # float32 rescale/normalise order; the resampling itself is Pillow's, integer for integer


def _require_browser():
    node_modules = WEB / "node_modules" / "onnxruntime-web"
    if not node_modules.is_dir():
        reason = f"{node_modules} is missing: run `cd web && npm ci --ignore-scripts`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI installs it; .ci/run)")
        pytest.skip(reason)
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}  # fmt: skip

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny DiffCLIP exported by the command with --web, served by a static server in a thread."""
    _require_browser()
    model = save_tiny_diffclip(tmp_path_factory.mktemp("diffclip"), seed=3)
    output = tmp_path_factory.mktemp("exports") / "diffclip-web"
    done = _command("export", "onnx", "--model", str(model), "--output", str(output), "--web")
    assert done.returncode == 0, done.stderr
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=output))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield dict(folder=output, url=f"http://127.0.0.1:{server.server_address[1]}/")
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def page(served):
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.set_default_timeout(120_000)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(served["url"])
        page.wait_for_function("() => window.diffclip && (window.diffclip.model || window.diffclip.error)")
        assert page.evaluate("window.diffclip.error") is None, (page.evaluate("window.diffclip.error"), errors)
        yield page
        browser.close()


def _classify(page, photo: str) -> dict:
    page.evaluate("window.diffclip.last = null")
    page.locator("#image").set_input_files(photo)
    page.locator("#labels").fill(LABELS)
    page.locator("#classify").click()
    page.wait_for_function("() => window.diffclip.last || window.diffclip.error")
    assert page.evaluate("window.diffclip.error") is None, page.evaluate("window.diffclip.error")
    return page.evaluate("window.diffclip.last")


@pytest.mark.slow
def test_page_gives_the_commands_probabilities_and_the_processors_pixels(served, page):
    from PIL import Image
    from transformers import AutoProcessor

    expected = {r["image"]: r["predictions"] for r in _zero_shot(str(served["folder"]), "--backend", "onnx")}
    processor = AutoProcessor.from_pretrained(served["folder"], trust_remote_code=True)
    photos = _photos()
    worst_pixel = worst_score = 0.0
    for photo in photos:
        shown = _classify(page, photo)
        scores = {p["label"]: p["score"] for p in shown["predictions"]}
        wanted = {p["label"]: p["score"] for p in expected[photo]}
        assert set(scores) == set(wanted) == set(LABELS.split(","))
        assert [p["label"] for p in shown["predictions"]][0] == expected[photo][0]["label"]
        worst_score = max(worst_score, *(abs(scores[label] - wanted[label]) for label in wanted))
        with Image.open(photo) as image:
            pixels = processor.image_processor(images=image, return_tensors="np")["pixel_values"][0]
        page_pixels = np.asarray(shown["pixels"], dtype=np.float32).reshape(pixels.shape)
        worst_pixel = max(worst_pixel, float(np.abs(page_pixels - pixels).max()))
    print(f"\nweb page vs Python on {len(photos)} photographs: pixel max |diff| {worst_pixel:.2e}, "
          f"probability max |diff| {worst_score:.2e}")  # fmt: skip
    assert worst_pixel <= PIXEL_TOLERANCE
    assert worst_score <= 1e-3
    page.screenshot(path=str(Path(os.environ.get("DIFFCLIP_SCREENSHOTS") or served["folder"]) / "web-page.png"))


@pytest.mark.slow
def test_page_resizes_and_crops_as_the_processor_with_both_filters(served, page, tmp_path):
    """DiffCLIP resizes bilinearly (the export's setting), CLIP baselines' processors bicubically: the page's pixels
    with each equal the Python processor's, on the photographs and on a picture whose crop margin is odd (200x244:
    resized to 32x39, offset 3.5, which DiffCLIP's processor rounds half to even, to 4)."""
    from PIL import Image
    from transformers import AutoProcessor

    odd = tmp_path / "odd-margin.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (244, 200, 3), dtype=np.uint8)).save(odd)
    processor = AutoProcessor.from_pretrained(served["folder"], trust_remote_code=True)
    worst = {}
    try:
        for resample in (2, 3):
            page.evaluate(f"window.diffclip.model.imageConfig.resample = {resample}")
            worst[resample] = 0.0
            for photo in [*_photos(), str(odd)]:
                shown = _classify(page, photo)
                with Image.open(photo) as image:
                    pixels = processor.image_processor(images=image, resample=resample, return_tensors="np")
                pixels = pixels["pixel_values"][0]
                page_pixels = np.asarray(shown["pixels"], dtype=np.float32).reshape(pixels.shape)
                worst[resample] = max(worst[resample], float(np.abs(page_pixels - pixels).max()))
    finally:
        page.evaluate("window.diffclip.model.imageConfig.resample = 2")
    print(f"\npixel max |diff|: bilinear {worst[2]:.2e}, bicubic {worst[3]:.2e}")
    assert max(worst.values()) <= PIXEL_TOLERANCE


@pytest.mark.slow  # a command's start, about 15 s on the loaded machine
def test_export_web_without_node_modules_refuses_before_any_work(tmp_path):
    """`--web` with a web/ folder whose npm packages are missing: one line naming `npm ci`, exit 2, no folder."""
    web = tmp_path / "web"
    web.mkdir()
    for name in ("index.html", "app.mjs", "diffclip.mjs", "preprocess.mjs"):
        (web / name).write_text("", encoding="utf-8")
    output = tmp_path / "out"
    missing_model = tmp_path / "no-such-model"  # the refusal must come before the model is looked at
    installed = Path(sys.executable).parent / "diffclip"
    prefix = [str(installed)] if installed.is_file() else [sys.executable, "-m", "transformers_diffclip.cli"]
    argv = ["export", "onnx", "--model", str(missing_model), "--output", str(output), "--web"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", DIFFCLIP_WEB_DIR=str(web))
    done = subprocess.run(prefix + argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert "npm ci" in line and "node_modules" in line, line
    assert not output.exists()
