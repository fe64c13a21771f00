"""What the demo page does with what a visitor uploads or types into its URL box (issue 27): uploads are opened by
the commands' one image opener with the same limits (pixels and aspect ratio read from the header, nothing decoded
before), and a file that is no image, an empty file or a decompression bomb is answered with a message that says
so; the URL box refuses local and private addresses unless the demo is started for trusted local use. Only servers
on 127.0.0.1 started here are contacted."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transformers_diffclip import cli
from transformers_diffclip.demo.logic import ModelCache, SearchTab, pick_image, read_upload


gradio = pytest.importorskip("gradio", reason="gradio is not installed (the `demo` extra)")


def _png(path, size, mode="L"):
    Image.new(mode, size, 100).save(path)
    return path


@pytest.fixture
def bad_uploads(tmp_path):
    """name → (file, what the message must say)."""
    (tmp_path / "notes.png").write_text("these are my notes, not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    return {
        "thin": (_png(tmp_path / "thin.png", (1, 100_000)), "1 x 100000 pixels has an aspect ratio of 100,000:1"),
        "big": (_png(tmp_path / "big.png", (9000, 9000), "1"), "9000 x 9000 pixels is more than the limit"),
        # far above PIL's own bomb limit (2 x 89,478,485 pixels): PIL refuses it when it reads the header
        "bomb": (_png(tmp_path / "bomb.png", (20000, 20000), "1"), "could be decompression bomb"),
        "not an image": (tmp_path / "notes.png", "cannot identify image file"),
        "empty": (tmp_path / "empty.png", "cannot identify image file"),
    }


def test_uploads_are_opened_with_the_commands_limits(bad_uploads, monkeypatch):
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    for name, (path, says) in bad_uploads.items():
        with pytest.raises(ValueError) as caught:
            pick_image(str(path), "")
        message = str(caught.value)
        assert message.startswith("The uploaded file cannot be used as an image: "), message
        assert says in message and path.name in message, (name, message)
        assert str(path.parent) not in message  # the server's upload folder is not shown
    assert not decoded  # none was decoded
    with pytest.raises(ValueError, match="aspect ratio"):
        pick_image(Image.new("RGB", (1, 100_000)), "")  # a PIL image (the Python API) gets the same limits
    with pytest.raises(ValueError, match="cannot identify image file"):
        read_upload(b"")


def test_a_good_upload_opens_as_rgb(tmp_path):
    path = _png(tmp_path / "grey.png", (7, 5))
    image = pick_image(str(path), "http://ignored.example/x.png")
    assert image.mode == "RGB" and image.size == (7, 5)
    assert np.asarray(image)[0, 0].tolist() == [100, 100, 100]


def _page_function(demo, name):
    return next(block.fn for block in demo.fns.values() if getattr(block.fn, "__name__", "") == name)


def test_the_page_passes_uploads_undecoded_and_answers_bad_ones_with_a_message(bad_uploads, tmp_path):
    from gradio.data_classes import ImageData

    from transformers_diffclip.demo import app as app_module
    from transformers_diffclip.demo.app import build_demo

    loads = []
    cache = ModelCache(loader=lambda *args, **kwargs: loads.append(args))
    demo = build_demo(model="a/b", baseline="c/d", cache=cache)
    upload = demo.blocks[next(i for i, b in demo.blocks.items() if getattr(b, "elem_id", None) == "image")]
    run_zero_shot = _page_function(demo, "run_zero_shot")
    run_attention = _page_function(demo, "run_attention")
    for name, (path, says) in bad_uploads.items():
        value = upload.preprocess(ImageData(path=str(path), orig_name=path.name))
        assert value == str(path)  # Gradio's own preprocessing would decode it whole here
        quiet = dict(progress=lambda *a, **k: None)
        calls = (
            (run_zero_shot, (value, "", "a cat, a dog", "given")),
            (run_attention, (value, "", "given", "One layer", -1, -1, "", 0)),
        )
        for function, arguments in calls:
            with pytest.raises(gradio.Error) as caught:
                function(*arguments, **quiet)
            assert says in caught.value.message and "uploaded file" in caught.value.message, (name, caught.value)
    assert not loads  # refused before any model is loaded
    assert not list(Path(app_module.__file__).parent.glob("*.pyi"))  # Gradio writes one for a component subclass
    inline = upload.preprocess(ImageData(url="data:image/png;base64,bm90IGFuIGltYWdl"))
    with pytest.raises(ValueError, match="cannot identify image file"):
        read_upload(inline)


def test_the_search_tab_refuses_a_bad_query_image(bad_uploads, tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
    tab = SearchTab(ModelCache(), tmp_path)
    tab.searcher = lambda: pytest.fail("the index is opened only for a usable query")
    path, says = bad_uploads["thin"]
    with pytest.raises(ValueError, match=says):
        tab.search("", str(path), 5)


# --------------------------------------------------------------------------------------------------
# The URL box
# --------------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        data = self.server.png
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def local_server(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.png = _png(tmp_path / "served.png", (4, 3)).read_bytes()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_url_box_refuses_this_machine_unless_allowed(local_server):
    with pytest.raises(ValueError, match="local, private or reserved network address") as refused:
        pick_image(None, f"{local_server}/x.png")
    closed = "http://127.0.0.1:1/x.png"
    with pytest.raises(ValueError) as closed_refused:
        pick_image(None, closed)
    # the same answer whether something listens there or not: the page cannot be used to scan ports
    assert str(refused.value).replace(f"{local_server}/x.png", "URL") == str(closed_refused.value).replace(
        closed, "URL"
    )
    assert pick_image(None, f"{local_server}/x.png", allow_private_urls=True).size == (4, 3)


def test_the_page_refuses_this_machine_by_default_and_the_flag_allows_it(local_server, monkeypatch):
    from transformers_diffclip.demo import app

    real_build = app.build_demo
    built = []

    class Launched(Exception):
        pass

    def fake_build(*args, **kwargs):
        built.append(kwargs["allow_private_urls"])
        raise Launched

    monkeypatch.setattr(app, "build_demo", fake_build)
    for argv in ([], ["--allow-private-urls"]):
        with pytest.raises(Launched):
            cli.main(["demo", "--debug", *argv])
    assert built == [False, True]
    monkeypatch.setattr(app, "build_demo", real_build)
    page = app.build_demo(model="a/b", baseline="c/d", cache=ModelCache(loader=lambda *a, **k: None))
    run_zero_shot = _page_function(page, "run_zero_shot")
    with pytest.raises(gradio.Error, match="local, private or reserved"):
        run_zero_shot(None, f"{local_server}/x.png", "a cat, a dog", "given", progress=lambda *a, **k: None)
