"""The one image opener (core.images) and the one (rank, world) helper (core.distributed): every source kind, one
error type whose message names the image, one extension list, one folder scan."""

from __future__ import annotations

import http.server
import io
import threading

import numpy as np
import pytest
from PIL import Image

from transformers_diffclip.core.distributed import rank_world
from transformers_diffclip.core.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    ImageNotFoundError,
    check_image_sources,
    is_url,
    open_image,
    probe_image,
    scan_images,
)


PIXELS = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)


def png_bytes(mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "photo.png").write_bytes(png_bytes())
    (tmp_path / "grey.png").write_bytes(png_bytes("L"))
    (tmp_path / "broken.png").write_bytes(b"this is not an image")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    (tmp_path / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return tmp_path


def test_every_source_kind_gives_the_same_rgb_pixels(files):
    sources = [
        files / "photo.png",
        str(files / "photo.png"),
        png_bytes(),
        bytearray(png_bytes()),
        {"bytes": png_bytes(), "path": None},
        {"bytes": None, "path": str(files / "photo.png")},
        Image.fromarray(PIXELS).convert("RGBA"),
    ]
    for source in sources:
        image = open_image(source)
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), PIXELS), type(source)
    assert open_image("photo.png", root=files).size == (6, 4)  # relative to root
    assert open_image(files / "grey.png").mode == "RGB"


def test_an_http_url_is_read(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a local server, whatever proxy the machine has
    body = png_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            found = self.path == "/photo.png"
            self.send_response(200 if found else 404)
            self.end_headers()
            if found:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert np.array_equal(np.asarray(open_image(f"{url}/photo.png")), PIXELS)
        with pytest.raises(ImageError, match=f"Cannot read image {url}/gone.png: .*404"):
            open_image(f"{url}/gone.png")
    finally:
        server.shutdown()


def test_one_error_type_names_the_image(files):
    with pytest.raises(ImageNotFoundError, match=r"Image not found: .*missing\.png") as missing:
        open_image(files / "missing.png")
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, ImageError)
    with pytest.raises(ImageError, match=r"Cannot read image .*broken\.png: ") as broken:
        open_image(files / "broken.png")
    assert not isinstance(broken.value, FileNotFoundError) and isinstance(broken.value, ValueError)
    with pytest.raises(ImageError, match=r"Cannot read image .*truncated\.png: "):
        open_image(files / "truncated.png")
    with pytest.raises(ImageError, match=r"Cannot read image <image bytes>: "):
        open_image(b"garbage")
    with pytest.raises(ImageError, match=r"Cannot read image key\.jpg: "):
        open_image({"bytes": b"garbage", "path": "key.jpg"})
    for nothing in (None, "", "  ", 3, {"bytes": None, "path": None}):
        with pytest.raises(ImageError, match="No image"):
            open_image(nothing)


def test_probe_reads_the_header_only(files):
    probe_image(files / "photo.png")
    probe_image(files / "truncated.png")  # the header is there: decoding fails later, when the row is used
    with pytest.raises(ImageNotFoundError):
        probe_image(files / "missing.png")
    with pytest.raises(ImageError, match="broken.png"):
        probe_image(files / "broken.png")


def test_check_image_sources_names_the_missing_files(files):
    check_image_sources([str(files / "photo.png"), "https://example.invalid/x.jpg"])  # URLs are not fetched
    missing = [str(files / f"gone{i}.png") for i in range(7)]
    with pytest.raises(ImageNotFoundError, match=r"gone0\.png.*gone4\.png \(and 2 more\)"):
        check_image_sources([str(files / "photo.png"), *missing])


def test_scan_images_uses_the_one_extension_list(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a.JPG", "b/c.webp", "b/deep/d.tiff", "notes.txt", ".e.png", ".hidden/f.png", "g.jpeg.bak"):
        (tmp_path / name).write_bytes(b"")
    found = [str(p.relative_to(tmp_path)) for p in map(type(tmp_path), scan_images(tmp_path))]
    assert found == ["a.JPG", "b/c.webp", "b/deep/d.tiff"]
    assert {".jpg", ".jpeg", ".png", ".webp"} <= set(IMAGE_EXTENSIONS)
    assert all(extension == extension.lower() and extension.startswith(".") for extension in IMAGE_EXTENSIONS)


def test_is_url():
    assert is_url("https://x/y.png") and is_url("http://x")
    assert not is_url("/data/http://x") and not is_url("ftp://x") and not is_url(b"http://x")


def test_rank_world_outside_a_process_group(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert rank_world() == (0, 1)  # no process group: one process, whatever the environment says
    assert rank_world(from_environment=True) == (3, 8)  # e.g. a spawned data-loader worker of a torchrun job
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert rank_world(from_environment=True) == (0, 1)
