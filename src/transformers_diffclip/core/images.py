# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The one image opener of every command: local paths, http(s) URLs, raw bytes, the `{"path", "bytes"}` values of
`datasets.Image(decode=False)` and PIL images become RGB PIL images, and every failure is an [`ImageError`] whose
message names the image. One list of image file extensions, one folder scan.

Limits (each overridable by an environment variable, read when an image is opened):

- `DIFFCLIP_URL_TIMEOUT` (seconds, default 30): the whole download of one image URL, connection to last byte;
- `DIFFCLIP_MAX_IMAGE_BYTES` (default 64 MiB): the size of one downloaded image;
- `DIFFCLIP_MAX_IMAGE_PIXELS` (default 8192 × 8192 = 67,108,864): width × height of any image, read from its
  header before it is decoded;
- `DIFFCLIP_MAX_IMAGE_ASPECT` (default 100): the longer side over the shorter one, also read from the header. The
  processors resize the shorter side to the model's input size `S` before cropping, so an image of aspect ratio `r`
  becomes `r · S²` pixels: without this bound a 2 KB PNG of 1,000,000 × 1 pixels is under the pixel limit and
  grows to 224 × 224,000,000 pixels when resized. With it, what is resized is at most `100 · S²` pixels.

URLs of loopback, private, link-local, multicast, reserved and unspecified addresses can be refused
(`allow_private_urls=False`, what the demo page does unless told otherwise): every address the host name resolves
to is checked, the connection goes to the address checked (a second DNS answer cannot switch it), redirects are
checked the same way, and the refusal reads the same whatever listens at the address. `DIFFCLIP_ALLOW_PRIVATE_URLS=1`
allows them everywhere (trusted local use). The commands allow them: a local user may fetch `http://localhost`.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image


# Image files by extension: what folder scans pick up, and the sample keys read from webdataset shards (in this
# order of preference).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
URL_TIMEOUT = 30.0
MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_IMAGE_ASPECT = 100.0
URL_TIMEOUT_ENV, MAX_IMAGE_BYTES_ENV, MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_ASPECT_ENV = (
    "DIFFCLIP_URL_TIMEOUT",
    "DIFFCLIP_MAX_IMAGE_BYTES",
    "DIFFCLIP_MAX_IMAGE_PIXELS",
    "DIFFCLIP_MAX_IMAGE_ASPECT",
)
ALLOW_PRIVATE_URLS_ENV = "DIFFCLIP_ALLOW_PRIVATE_URLS"
_CHUNK = 64 * 1024


def _limit(name: str, default: float, kind: type = int) -> float:
    """The limit the environment variable `name` sets (a positive number), else `default`."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise ValueError(f"The environment variable {name}={text!r} must be a positive number.")
    return value


def url_timeout() -> float:
    return _limit(URL_TIMEOUT_ENV, URL_TIMEOUT, float)


def max_image_bytes() -> int:
    return _limit(MAX_IMAGE_BYTES_ENV, MAX_IMAGE_BYTES)


def max_image_pixels() -> int:
    return _limit(MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS)


def max_image_aspect() -> float:
    return _limit(MAX_IMAGE_ASPECT_ENV, MAX_IMAGE_ASPECT, float)


def private_urls_allowed() -> bool:
    """Whether `DIFFCLIP_ALLOW_PRIVATE_URLS` is set (not 0/false/no): URLs of local and private addresses allowed
    everywhere, the demo page included."""
    return os.environ.get(ALLOW_PRIVATE_URLS_ENV, "").strip().lower() not in ("", "0", "false", "no")


class ImageError(ValueError):
    """An image that cannot be opened; the message names it (its path, URL or `<image bytes>`)."""


class ImageNotFoundError(ImageError, FileNotFoundError):
    """An [`ImageError`] for a local image file that does not exist (also a `FileNotFoundError`)."""


def is_url(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(("http://", "https://"))


def _resolve(path: str | os.PathLike, root: str | os.PathLike | None) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and root is not None:
        resolved = Path(root) / resolved
    return resolved


def _handle(
    source: Any, root: str | os.PathLike | None, timeout: float | None, allow_private_urls: bool = True
) -> tuple[Any, str]:
    """`(what PIL opens, the image's name for messages)`; raises [`ImageError`] for a source that is no image."""
    data = source
    if isinstance(source, dict):
        data = source["bytes"] if source.get("bytes") is not None else source.get("path")
    if isinstance(data, (bytes, bytearray)):
        path = source.get("path") if isinstance(source, dict) else None
        return io.BytesIO(data), (str(path) if path else "<image bytes>")
    if not isinstance(data, (str, os.PathLike)) or not str(data).strip():
        raise ImageError(f"No image (got {source!r})")
    if is_url(str(data)):
        return io.BytesIO(download(str(data), timeout, allow_private_urls=allow_private_urls)), str(data)
    path = _resolve(data, root)
    if path.is_dir():
        raise ImageError(f"Cannot read image {path}: it is a folder, not an image file")
    if not path.is_file():
        raise ImageNotFoundError(f"Image not found: {path}")
    return path, str(path)


# --------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------


class _RefusedAddress(ImageError):
    """A URL whose host resolves to an address that is not fetched (see [`is_private_address`])."""


def is_private_address(address: str) -> bool:
    """Whether `address` (an IPv4 or IPv6 address, as `getaddrinfo` gives it) is loopback, private, link-local,
    multicast, reserved, unspecified or otherwise not a global address, also when an IPv6 address embeds one (IPv4
    mapped, 6to4, Teredo)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    embedded = []
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [a for a in (ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())) if a is not None]
    return any(
        not a.is_global
        or a.is_loopback
        or a.is_private
        or a.is_link_local
        or a.is_multicast
        or a.is_reserved
        or a.is_unspecified
        for a in (ip, *embedded)
    )


def _connector(url: str, allow_private: bool):
    """A `socket.create_connection` for `http.client` that resolves the host once, refuses (unless
    `allow_private`) when any of its addresses is private, and connects to an address it checked."""

    def create_connection(address, timeout=None, source_address=None):
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not allow_private and any(is_private_address(info[4][0]) for info in infos):
            raise _RefusedAddress(
                f"Cannot read image {url}: it (or a redirect) leads to a local, private or reserved network "
                f"address, which is not fetched here ({ALLOW_PRIVATE_URLS_ENV}=1 allows it for trusted local use)"
            )
        error: OSError | None = None
        for family, kind, protocol, _, sockaddr in infos:
            sock = socket.socket(family, kind, protocol)
            try:
                if isinstance(timeout, (int, float)):  # else http.client's "no timeout given" marker
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as failure:
                sock.close()
                error = failure
        raise error or OSError(f"{host} has no address")

    return create_connection


def _pinned(connection_class, create_connection):
    def make(host, **kwargs):
        connection = connection_class(host, **kwargs)
        connection._create_connection = create_connection  # http.client's hook for opening the socket
        return connection

    return make


def _opener(url: str, allow_private: bool) -> urllib.request.OpenerDirector:
    """http(s) only (a redirect to `file:` or `ftp:` is an error), every connection through [`_connector`];
    without `allow_private`, no proxy (the address checked is the one connected to)."""
    create_connection = _connector(url, allow_private)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, request):
            return self.do_open(_pinned(http.client.HTTPConnection, create_connection), request)

    handlers = [
        HTTPHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ]
    if hasattr(urllib.request, "HTTPSHandler"):

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def https_open(self, request):
                connection = _pinned(http.client.HTTPSConnection, create_connection)
                return self.do_open(connection, request, context=self._context)

        handlers.append(HTTPSHandler())
    if allow_private:
        handlers.append(urllib.request.ProxyHandler())
    opener = urllib.request.OpenerDirector()
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def _download(url: str, deadline: float, max_bytes: int, allow_private: bool, outcome: dict) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "transformers-diffclip"})
    try:
        opener = _opener(url, allow_private)
        with opener.open(request, timeout=max(deadline - time.monotonic(), 0.01)) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > max_bytes:
                raise ImageError(
                    f"Cannot read image {url}: it is {int(length)} bytes, more than the limit of {max_bytes} "
                    f"({MAX_IMAGE_BYTES_ENV})"
                )
            chunks, size = [], 0
            while time.monotonic() < deadline:
                chunk = response.read1(_CHUNK)
                if not chunk:
                    outcome["data"] = b"".join(chunks)
                    return
                size += len(chunk)
                if size > max_bytes:
                    raise ImageError(
                        f"Cannot read image {url}: the response exceeds the limit of {max_bytes} bytes "
                        f"({MAX_IMAGE_BYTES_ENV})"
                    )
                chunks.append(chunk)
    except ImageError as error:
        outcome["error"] = error
    except Exception as error:  # HTTP, socket and TLS errors
        outcome["error"] = ImageError(f"Cannot read image {url}: {error}")


def download(url: str, timeout: float | None = None, allow_private_urls: bool = True) -> bytes:
    """The bytes at an http(s) `url`, bounded in total time (`timeout`, default [`url_timeout`]: connection to last
    byte, however slowly the server sends) and size ([`max_image_bytes`]). Without `allow_private_urls` (and unless
    `DIFFCLIP_ALLOW_PRIVATE_URLS` is set), a URL or redirect to a local or private address is refused before any
    connection (see the module docstring). Raises [`ImageError`] naming the URL."""
    timeout = url_timeout() if timeout is None else timeout
    allow_private = allow_private_urls or private_urls_allowed()
    max_bytes = max_image_bytes()
    deadline = time.monotonic() + timeout
    outcome: dict = {}
    # A daemon thread: a server that stalls a single read past the deadline cannot hold the command.
    worker = threading.Thread(target=_download, args=(url, deadline, max_bytes, allow_private, outcome), daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if "error" in outcome:
        raise outcome["error"]
    if "data" not in outcome:
        raise ImageError(
            f"Cannot read image {url}: the download did not finish within {timeout:g} s ({URL_TIMEOUT_ENV})"
        )
    return outcome["data"]


def check_pixels(size: tuple[int, int], name: str) -> None:
    """Refuse an image of `size = (width, height)` above [`max_image_pixels`], or whose longer side is more than
    [`max_image_aspect`] times its shorter side (what the processors' shortest-edge resize would blow up)."""
    width, height = size
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageError(
            f"Cannot read image {name}: {width} x {height} pixels is more than the limit of {limit} pixels "
            f"({MAX_IMAGE_PIXELS_ENV})"
        )
    if min(width, height) < 1:
        raise ImageError(f"Cannot read image {name}: it is {width} x {height} pixels (empty)")
    aspect, aspect_limit = max(width, height) / min(width, height), max_image_aspect()
    if aspect > aspect_limit:
        shown = f"{aspect:,.1f}".removesuffix(".0")
        raise ImageError(
            f"Cannot read image {name}: {width} x {height} pixels has an aspect ratio of {shown}:1, more than the "
            f"limit of {aspect_limit:g}:1 ({MAX_IMAGE_ASPECT_ENV})"
        )


def _read(
    source: Any, root: str | os.PathLike | None, timeout: float | None, decode: bool, allow_private_urls: bool = True
) -> Image.Image | None:
    handle, name = _handle(source, root, timeout, allow_private_urls)
    try:
        with Image.open(handle) as image:
            check_pixels(image.size, name)
            if not decode:
                return None
            image.load()
            return image.convert("RGB")
    except ImageError:
        raise
    except Exception as error:  # PIL's UnidentifiedImageError, truncated files, decompression bombs, ...
        raise ImageError(f"Cannot read image {name}: {error}") from error


def open_image(
    source: Any,
    *,
    root: str | os.PathLike | None = None,
    timeout: float | None = None,
    allow_private_urls: bool = True,
) -> Image.Image:
    """An RGB PIL image from a PIL image, a local path (relative paths are taken from `root` when given), an
    http(s) URL, raw bytes or a `{"path", "bytes"}` dict. A missing local file raises [`ImageNotFoundError`], any
    other failure an [`ImageError`], each naming the image. URLs and pixels are bounded, and URLs of local or private
    addresses refused without `allow_private_urls` (see the module docstring).
    """
    if isinstance(source, Image.Image):
        check_pixels(source.size, "<PIL image>")
        return source.convert("RGB")
    return _read(source, root, timeout, True, allow_private_urls)


def probe_image(
    source: Any,
    *,
    root: str | os.PathLike | None = None,
    timeout: float | None = None,
    allow_private_urls: bool = True,
) -> None:
    """Check cheaply that `source` is an image [`open_image`] can open: it exists and PIL recognises its header
    (nothing is decoded). Raises what [`open_image`] raises."""
    if isinstance(source, Image.Image):
        check_pixels(source.size, "<PIL image>")
    else:
        _read(source, root, timeout, False, allow_private_urls)


def check_image_sources(sources: Sequence[str]) -> None:
    """Fail early, before any model is loaded, on local image paths that do not exist or are folders."""
    for source in sources:
        if not is_url(str(source)) and os.path.isdir(source):
            raise ImageError(f"Cannot read image {source}: it is a folder, not an image file")
    missing = [str(s) for s in sources if not is_url(str(s)) and not os.path.isfile(s)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ImageNotFoundError(f"Image not found: {shown}")


def image_key(source: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """What identifies an image: a URL as written, a local file by its resolved path (links followed, `..` and
    relative spellings removed), so that two spellings of one file are one image."""
    if is_url(str(source)):
        return str(source)
    return os.path.realpath(_resolve(source, root))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_images(folder: str | os.PathLike, seen: set[str] | None = None) -> list[str]:
    """The image files below `folder` (by [`IMAGE_EXTENSIONS`], any case), sorted, skipping hidden files and
    folders.

    A link to a folder is followed only when it leads to a folder inside the scanned tree that the scan has not
    visited yet: a link out of the tree, back into it (`ln -s . self`, `ln -s .. up`) or to an ancestor is never
    followed, so the scan ends and visits each folder once. Each file is listed once, by its resolved path (a link
    to a file counts as that file; `seen`, shared between scans, drops files another scan already listed)."""
    root = os.path.realpath(folder)
    seen = set() if seen is None else seen
    visited = {root}
    files = []
    for directory, subdirectories, filenames in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(subdirectories):
            if name.startswith("."):
                continue
            real = os.path.realpath(os.path.join(directory, name))
            if _within(real, root) and real not in visited:
                visited.add(real)
                kept.append(name)
        subdirectories[:] = kept
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if real not in seen and os.path.isfile(real):
                seen.add(real)
                files.append(path)
    return files


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "ImageNotFoundError",
    "check_image_sources",
    "check_pixels",
    "download",
    "image_key",
    "is_private_address",
    "is_url",
    "max_image_aspect",
    "max_image_bytes",
    "max_image_pixels",
    "open_image",
    "private_urls_allowed",
    "probe_image",
    "scan_images",
    "url_timeout",
]
