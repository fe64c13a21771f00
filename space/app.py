# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The DiffCLIP Space: the page of `diffclip demo`, unchanged.

Settings (Space variables, all optional): DIFFCLIP_MODEL / DIFFCLIP_BASELINE (a pair to offer first; default: the
released CC12M and CC3M pairs), DIFFCLIP_INDEX (a `diffclip index` folder in the Space for the search tab),
DIFFCLIP_EXAMPLES (a folder of example images; default: `examples/` beside this file when present).
"""

import os
from pathlib import Path

from transformers_diffclip.demo.app import build_demo
from transformers_diffclip.search import list_images


HERE = Path(__file__).resolve().parent
examples = os.environ.get("DIFFCLIP_EXAMPLES") or (str(HERE / "examples") if (HERE / "examples").is_dir() else None)

demo = build_demo(
    model=os.environ.get("DIFFCLIP_MODEL") or None,
    baseline=os.environ.get("DIFFCLIP_BASELINE") or None,
    index=os.environ.get("DIFFCLIP_INDEX") or None,
    examples=list_images(examples) if examples else (),
)

if __name__ == "__main__":
    demo.queue().launch(ssr_mode=False)
