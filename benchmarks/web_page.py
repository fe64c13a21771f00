# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The browser page's speed: images/s of an export's vision graph in headless Chromium (onnxruntime-web,
single-threaded WebAssembly), with and without the page's image transform, against ONNX Runtime in Python on one
thread with the same graph, in one run.

    diffclip export onnx --model MODEL --output EXPORT --web          # the page beside the model (web/: npm ci)
    python benchmarks/web_page.py --export EXPORT --output web.json --markdown web.md

The export folder is served on 127.0.0.1 by a static server in a thread; Debian's Chromium ($DIFFCLIP_CHROMIUM,
default /usr/bin/chromium) is driven by Playwright. One photograph of the export's validation set is used; timing is
sequential (one image per call, as the page classifies), medians reported with the machine's load average.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from common import cpu_description, environment, markdown_table, write_json

from transformers_diffclip.export.graphs import graph_file
from transformers_diffclip.export.validation import PHOTOS_FOLDER


CHROMIUM = os.environ.get("DIFFCLIP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

PAGE_TIMING = """async ([photo, repeats]) => {
  const model = window.diffclip.model;
  const pixels = await model.pixelValues(photo);
  await model.imageEmbedding(pixels);  // warm-up
  const graph = [], whole = [];
  for (let i = 0; i < repeats; i++) {
    let start = performance.now();
    await model.imageEmbedding(pixels);
    graph.push(performance.now() - start);
    start = performance.now();
    await model.imageEmbedding(await model.pixelValues(photo));
    whole.push(performance.now() - start);
  }
  return { graph, whole, size: pixels.dims };
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}  # fmt: skip

    def log_message(self, *args):
        pass


def browser_times(export: Path, precision: str, photo: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=export))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data_url = "data:image/jpeg;base64," + base64.b64encode(photo.read_bytes()).decode()
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.set_default_timeout(600_000)
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/?precision={precision}")
            page.wait_for_function("() => window.diffclip && (window.diffclip.model || window.diffclip.error)")
            error = page.evaluate("window.diffclip.error")
            if error:
                raise SystemExit(f"the page did not load the model: {error}")
            result = page.evaluate(PAGE_TIMING, [data_url, repeats])
            result["browser"] = browser.version
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return result


def python_times(export: Path, precision: str, size: list[int], repeats: int) -> list[float]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(graph_file(export, "vision", precision)), options, providers=["CPUExecutionProvider"]
    )
    pixels = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    session.run(["image_embeds"], {"pixel_values": pixels})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(["image_embeds"], {"pixel_values": pixels})
        times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, help="a folder written by `diffclip export onnx --web`")
    parser.add_argument("--precision", choices=("fp32", "int8", "fp16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--markdown", help="write the table as Markdown here")
    args = parser.parse_args()
    export = Path(args.export)
    if not (export / "index.html").is_file():
        raise SystemExit(f"{export} holds no page: export it with `diffclip export onnx ... --web`.")
    photo = Path(PHOTOS_FOLDER) / "grace_hopper.jpg"
    page = browser_times(export, args.precision, photo, args.repeats)
    python = python_times(export, args.precision, page["size"], args.repeats)
    medians = {
        "Chromium, onnxruntime-web wasm (1 thread): graph": statistics.median(page["graph"]),
        "Chromium: the page's image transform + graph": statistics.median(page["whole"]),
        "Python onnxruntime (1 thread): graph": statistics.median(python),
    }
    reference = medians["Python onnxruntime (1 thread): graph"]
    rows = [[name, f"{1000 / ms:.2f}", f"{ms:.1f}", f"{reference / ms:.3g}×"] for name, ms in medians.items()]
    table = markdown_table(["variant", "images/s", "ms per image", "vs Python onnxruntime"], rows)
    print(table)
    load = os.getloadavg()[0]
    print(f"({args.precision} graphs of {export}; {page['browser']}; load average {load:.1f})")
    results = dict(export=str(export), precision=args.precision, medians_ms=medians, browser=page["browser"],
                   times_ms=dict(page=page, python=python), load_average=load, cpu=cpu_description(),
                   environment=environment())  # fmt: skip
    if args.output:
        write_json(args.output, results)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
