"""Bad input to the one image opener and the one folder scan (issue 23): symlink loops, two spellings of one
image, a folder given as an image, oversized images, and image URLs that drip or flood (a local HTTP server on
127.0.0.1, never the network)."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transformers_diffclip.core.images import ImageError, open_image, scan_images
from transformers_diffclip.evaluation.data import find_image_folder, read_retrieval_jsonl


def _image(path: Path, seed: int = 0, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """`d/cat/a.jpg`, `d/dog/b.jpg` and a big ancestor folder of 50 images above `d`."""
    _image(tmp_path / "d" / "cat" / "a.png", 0)
    _image(tmp_path / "d" / "dog" / "b.png", 1)
    for i in range(50):
        _image(tmp_path / "many" / f"{i}.png", i)
    return tmp_path


def _timed(function, *args):
    start = time.monotonic()
    result = function(*args)
    return result, time.monotonic() - start


@pytest.mark.parametrize("link", [".", "..", "ancestor", "../..", "outside"])
def test_folder_scan_never_follows_a_link_out_of_or_back_into_the_tree(tree, link):
    # self (.), parent (..), the ancestor holding the whole tmp folder, and a folder elsewhere with 50 images
    target = {"ancestor": str(tree), "outside": str(tree / "many")}.get(link, link)
    os.symlink(target, tree / "d" / "cat" / "loop", target_is_directory=True)
    data, seconds = _timed(find_image_folder, tree / "d")
    assert seconds < 10
    assert sorted(Path(path).name for path, _ in data.samples) == ["a.png", "b.png"]
    assert len(scan_images(tree / "d")) == 2


def test_links_inside_the_tree_count_each_file_once(tree):
    cat = tree / "d" / "cat"
    os.symlink(cat / "a.png", cat / "alias.png")  # a link to a file: the same image
    (cat / "sub").mkdir()
    _image(cat / "sub" / "c.png", 2)
    os.symlink(cat / "sub", cat / "also-sub", target_is_directory=True)  # a second way into sub/
    files = scan_images(cat)
    assert len(files) == 2
    assert sorted({os.path.realpath(f) for f in files}) == sorted(
        str((cat / n).resolve()) for n in ("a.png", "sub/c.png")
    )


def test_one_image_in_two_class_folders_is_an_error(tree):
    os.symlink(tree / "d" / "cat" / "a.png", tree / "d" / "dog" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png is in two class folders"):
        find_image_folder(tree / "d")


def test_retrieval_lines_naming_one_image_twice_are_merged(tmp_path):
    image = _image(tmp_path / "ok0.png")
    _image(tmp_path / "ok1.png", 1)
    lines = [
        '{"image": "ok0.png", "captions": ["a cat"]}',
        f'{{"image": "{image}", "captions": ["a kitty"]}}',
        '{"image": "./sub/../ok0.png", "caption": "a small cat"}',
        '{"image": "ok1.png", "caption": "a dog"}',
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    data = read_retrieval_jsonl(tmp_path / "data.jsonl")
    assert len(data.images) == 2
    assert data.caption_image == [0, 0, 0, 1]


def test_a_folder_given_as_an_image_is_named_as_a_folder(tmp_path):
    with pytest.raises(ImageError, match=f"{tmp_path}.*is a folder"):
        open_image(str(tmp_path))


def test_images_are_bounded_in_pixels(tmp_path, monkeypatch):
    # 13000 x 13000 is under PIL's bomb limit; the default limit of 8192 x 8192 refuses it before decoding
    big = tmp_path / "big.png"
    Image.new("1", (13000, 13000)).save(big)
    with pytest.raises(ImageError, match=r"big\.png: 13000 x 13000 pixels is more than the limit"):
        open_image(big)
    monkeypatch.setenv("DIFFCLIP_MAX_IMAGE_PIXELS", str(40))
    with pytest.raises(ImageError, match="DIFFCLIP_MAX_IMAGE_PIXELS"):
        open_image(_image(tmp_path / "small.png", size=(7, 7)))
    monkeypatch.setenv("DIFFCLIP_MAX_IMAGE_PIXELS", str(49))
    assert open_image(tmp_path / "small.png").size == (7, 7)


# --------------------------------------------------------------------------------------------------
# URLs: a local server that drips or floods
# --------------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            if self.path == "/drip":
                self.end_headers()
                for _ in range(60):  # one byte every 0.5 s: never a 30 s pause between two reads
                    self.wfile.write(b"\x89")
                    self.wfile.flush()
                    time.sleep(0.5)
            elif self.path == "/flood":  # no Content-Length: the size shows only while reading
                self.end_headers()
                block = b"\0" * 65536
                for _ in range(2000):  # 125 MiB
                    self.wfile.write(block)
            elif self.path == "/big-header":
                self.send_header("Content-Length", str(2**40))
                self.end_headers()
            else:
                data = Path(self.server.image).read_bytes()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        except OSError:  # the client hung up, as it should
            pass


@pytest.fixture
def server(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.image = _image(tmp_path / "served.png", size=(5, 6))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_url_image_opens(server):
    assert open_image(f"{server}/ok.png").size == (6, 5)


def test_a_dripping_server_is_cut_off_at_the_total_timeout(server, monkeypatch):
    monkeypatch.setenv("DIFFCLIP_URL_TIMEOUT", "2")
    start = time.monotonic()
    with pytest.raises(ImageError, match=r"/drip: the download did not finish within 2 s \(DIFFCLIP_URL_TIMEOUT\)"):
        open_image(f"{server}/drip")
    assert time.monotonic() - start < 5


def test_a_flooding_server_is_cut_off_at_the_size_limit(server, monkeypatch):
    monkeypatch.setenv("DIFFCLIP_MAX_IMAGE_BYTES", str(2**20))
    with pytest.raises(ImageError, match=r"/flood: the response exceeds the limit of 1048576 bytes"):
        open_image(f"{server}/flood")
    with pytest.raises(ImageError, match=r"/big-header: it is 1099511627776 bytes, more than the limit"):
        open_image(f"{server}/big-header")


def test_a_bad_limit_is_an_error(monkeypatch, server):
    monkeypatch.setenv("DIFFCLIP_URL_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="DIFFCLIP_URL_TIMEOUT='soon' must be a positive number"):
        open_image(f"{server}/ok.png")
