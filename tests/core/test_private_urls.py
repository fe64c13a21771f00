"""URLs of local and private addresses (issue 27, probe 11): refused when asked (the demo page's default), after name
resolution (every address a name resolves to), on the address actually connected to (a second DNS answer cannot
switch it), and on redirects; the refusal reads the same whether or not anything listens there. Only servers on
127.0.0.1 started here are contacted; other names are resolved by a stand-in resolver."""

from __future__ import annotations

import http.server
import socket
import threading

import numpy as np
import pytest
from PIL import Image

from transformers_diffclip.core import images
from transformers_diffclip.core.images import ImageError, is_private_address, open_image


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", "http://" + self.path.removeprefix("/redirect-to/"))
            self.end_headers()
            return
        data = self.server.png
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    Image.fromarray(np.full((6, 5, 3), 90, np.uint8)).save(tmp_path / "served.png")
    httpd.png = (tmp_path / "served.png").read_bytes()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "address, private",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # shared address space
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("8.8.8.8", False),
        ("93.184.216.34", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_private_addresses(address, private):
    assert is_private_address(address) is private


def test_loopback_is_refused_the_same_whether_a_port_is_open_or_not(server):
    closed = _closed_port()
    messages = []
    for port in (server, closed):
        with pytest.raises(ImageError) as caught:
            open_image(f"http://127.0.0.1:{port}/x.png", allow_private_urls=False)
        messages.append(str(caught.value).replace(str(port), "PORT"))
    assert messages[0] == messages[1]
    assert "local, private or reserved network address" in messages[0]
    with pytest.raises(ImageError, match="local, private or reserved"):
        open_image(f"http://localhost:{server}/x.png", allow_private_urls=False)  # a name, resolved first
    # the commands' default, and the variable for trusted local use, fetch it
    assert open_image(f"http://127.0.0.1:{server}/x.png").size == (5, 6)


def test_the_variable_allows_private_addresses(server, monkeypatch):
    monkeypatch.setenv("DIFFCLIP_ALLOW_PRIVATE_URLS", "1")
    assert open_image(f"http://127.0.0.1:{server}/x.png", allow_private_urls=False).size == (5, 6)
    monkeypatch.setenv("DIFFCLIP_ALLOW_PRIVATE_URLS", "0")
    with pytest.raises(ImageError, match="DIFFCLIP_ALLOW_PRIVATE_URLS=1 allows it"):
        open_image(f"http://127.0.0.1:{server}/x.png", allow_private_urls=False)


@pytest.fixture
def resolver(monkeypatch):
    """Names resolved by a table: `public.test` to 127.0.0.1, which stands for a public address here (the check
    is told so), `internal.test` to 0.0.0.0 (unspecified: private; were it ever connected to, Linux would reach the
    127.0.0.1 server, so a missing check shows as a fetched image, and nothing else is contacted)."""
    table = {"public.test": ["127.0.0.1"], "internal.test": ["0.0.0.0"], "mixed.test": ["127.0.0.1", "0.0.0.0"]}
    calls = []
    real_resolve, real_check = socket.getaddrinfo, images.is_private_address

    def getaddrinfo(host, port, *args, **kwargs):
        calls.append(host)
        if host not in table:
            return real_resolve(host, port, *args, **kwargs)
        addresses = table[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(images, "is_private_address", lambda address: address != "127.0.0.1" and real_check(address))
    return table, calls


def test_every_resolved_address_is_checked(server, resolver):
    assert open_image(f"http://public.test:{server}/x.png", allow_private_urls=False).size == (5, 6)
    for host in ("internal.test", "mixed.test"):
        with pytest.raises(ImageError, match="local, private or reserved"):
            open_image(f"http://{host}:{server}/x.png", allow_private_urls=False)


def test_a_redirect_to_a_private_address_is_refused(server, resolver):
    url = f"http://public.test:{server}/redirect-to/internal.test:{server}/x.png"
    with pytest.raises(ImageError, match="local, private or reserved"):
        open_image(url, allow_private_urls=False)
    assert open_image(url).size == (5, 6)  # allowed: the redirect is followed
    ok = f"http://public.test:{server}/redirect-to/public.test:{server}/x.png"
    assert open_image(ok, allow_private_urls=False).size == (5, 6)


def test_the_name_is_resolved_once_and_the_checked_address_connected_to(server, resolver):
    """A DNS rebind: the first answer is checked, a second one would be private. One resolution per connection."""
    table, calls = resolver

    class Rebinding(list):
        def __iter__(self):
            answer = ["127.0.0.1"] if not calls.count("rebind.test") > 1 else ["0.0.0.0"]
            return iter(answer)

    table["rebind.test"] = Rebinding()
    assert open_image(f"http://rebind.test:{server}/x.png", allow_private_urls=False).size == (5, 6)
    assert calls.count("rebind.test") == 1
