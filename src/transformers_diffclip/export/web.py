# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`diffclip export onnx --web`: the browser page (the repository's `web/` folder) copied beside an export, with the
runtime files it imports from `web/node_modules` (onnxruntime-web's single-threaded wasm build, onnxruntime-common,
transformers.js's browser bundle), so that any static server run in the export folder serves a working page.

The page's import map names the runtime files by their `node_modules/...` paths; the copy keeps those paths, so the
page is the same file in `web/` (development) and in an export (deployment, a static Hugging Face Space).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


# The page itself, then the runtime files it loads (paths under web/); a folder is copied whole.
PAGE_FILES = ("index.html", "app.mjs", "diffclip.mjs", "preprocess.mjs")
RUNTIME_FILES = (
    "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",
    "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    "node_modules/onnxruntime-web/package.json",
    "node_modules/onnxruntime-common/dist/esm",
    "node_modules/onnxruntime-common/package.json",
    "node_modules/@huggingface/transformers/dist/transformers.web.min.js",
    "node_modules/@huggingface/transformers/LICENSE",
)


def web_source() -> Path:
    """The `web/` folder: $DIFFCLIP_WEB_DIR, else the repository's (beside `src/`)."""
    given = os.environ.get("DIFFCLIP_WEB_DIR")
    return Path(given).expanduser() if given else Path(__file__).resolve().parents[3] / "web"


def check_web_source(source: Path | None = None) -> Path:
    """Refuse `--web` before any work when the page or its npm packages are missing."""
    source = source or web_source()
    missing = [name for name in PAGE_FILES if not (source / name).is_file()]
    if missing:
        raise ValueError(
            f"--web: the page is not at {source} (missing {', '.join(missing)}); run from a checkout of the "
            "repository or set DIFFCLIP_WEB_DIR to its web/ folder."
        )
    absent = [name for name in RUNTIME_FILES if not (source / name).exists()]
    if absent:
        raise ValueError(
            f"--web: {source / 'node_modules'} lacks the page's runtime files ({absent[0]}); run `cd {source} && "
            "npm ci --ignore-scripts` first."
        )
    return source


def copy_web_page(folder: Path, source: Path | None = None) -> list[str]:
    """Copy the page and its runtime files into the export `folder`; returns the paths written (relative)."""
    source = check_web_source(source)
    written = []
    for name in PAGE_FILES + RUNTIME_FILES:
        origin, target = source / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(origin, target)
        written.append(name)
    return written


__all__ = ["PAGE_FILES", "RUNTIME_FILES", "check_web_source", "copy_web_page", "web_source"]
