# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The Gradio page of `diffclip demo` (and of the Space in `space/`): one image at the top, three tabs.

- *Zero-shot*: DiffCLIP's and CLIP's label probabilities side by side (bar chart, and the numbers as JSON);
- *Where it looks*: both models' attention maps in one figure (a layer — all heads or one — or the rollout, and
  with a text query the text-conditioned map), as `diffclip attention-map` draws them;
- *Search*: a text or image query over a `diffclip index` folder, the top results in a grid with their scores.

Models load on first use, once, shared by the tabs; loading (and converting a released checkpoint the first
time) shows its progress in the page. Bad input is answered with a message in the page, never a stack trace.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..core.files import json_text
from .logic import (
    MAX_TOP_K,
    ModelCache,
    SearchTab,
    attention_figure,
    model_pairs,
    parse_labels,
    pick_image,
    probabilities_json,
    thumbnail,
    whole_number,
    zero_shot_table,
)


def _gradio():
    try:
        import gradio
    except ImportError as error:
        raise OSError('The demo needs Gradio: pip install "transformers-diffclip[demo]"') from error
    return gradio


def _undecoded(component):
    """`component` (a `gr.Image`) made to hand the page's functions the uploaded file's path, undecoded: Gradio's own
    preprocessing decodes the whole upload with PIL (no pixel limit, a bare "Error" for a file that is no image), so
    the file is opened by [`read_upload`] instead, with the commands' limits and messages. (The method is replaced on
    the instance: a subclass of a Gradio component makes Gradio write a `.pyi` file beside this module.)"""
    import base64
    import binascii

    def preprocess(payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):  # an API client's inline image
            try:
                return base64.b64decode(payload.url.partition(",")[2], validate=False)
            except (binascii.Error, ValueError):
                return b""
        return payload.path

    component.preprocess = preprocess
    return component


INTRO = (
    "# DiffCLIP beside CLIP\n"
    "DiffCLIP is CLIP with differential attention in both towers (Hammoud & Ghanem, 2025). Give an image, then "
    "compare the two models' zero-shot answers, see where each looks, or search an image index."
)


def build_demo(
    model: str | None = None,
    baseline: str | None = None,
    index: str | os.PathLike | None = None,
    device: str | None = None,
    examples: Sequence[str] = (),
    cache: ModelCache | None = None,
    trust_remote_code: bool = False,
    allow_private_urls: bool = False,
):
    """The page as a `gradio.Blocks` (call `.launch()` on it). `model`/`baseline` add a pair to the released
    CC12M and CC3M pairs and make it the default; `index` is a `diffclip index` folder for the search tab. Image URLs
    of local, private or reserved addresses are refused unless `allow_private_urls` (trusted local use)."""
    gr = _gradio()
    import pandas as pd

    cache = cache or ModelCache(device=device, trust_remote_code=trust_remote_code)
    pairs = model_pairs(model, baseline)
    search_tab = SearchTab(cache, index)

    def fail(error: Exception):
        return gr.Error(str(error).strip() or type(error).__name__, print_exception=False)

    def load_pair(pair_name, progress):
        pair = pairs[pair_name]
        members = pair.members()
        for step, (label, name) in enumerate(members):
            if name not in cache:
                progress(step / len(members), desc=f"Loading {label} ({name}); the first use converts it")
            cache.get(name)
        return pair

    def run_zero_shot(upload, url, labels_text, pair_name, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        try:
            image = pick_image(upload, url, allow_private_urls)
            labels = parse_labels(labels_text)
            pair = load_pair(pair_name, progress)
            rows = zero_shot_table(cache, pair, image, labels)
        except (OSError, ValueError) as error:
            raise fail(error) from None
        frame = pd.DataFrame(rows)
        frame["bar"] = frame["label"] + " · " + frame["model"]
        return frame, probabilities_json(rows)

    def run_attention(
        upload,
        url,
        pair_name,
        method,
        layer,
        head,
        query,
        start_layer,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):
        try:
            image = pick_image(upload, url, allow_private_urls)
            layer = whole_number(layer, "Layer")
            head = whole_number(head, "Head")
            start_layer = whole_number(start_layer, "Text map from layer")
            pair = load_pair(pair_name, progress)
            return attention_figure(
                cache,
                pair,
                image,
                method="rollout" if method.startswith("Rollout") else "layer",
                layer=layer,
                head=None if head < 0 else head,
                query=query,
                start_layer=start_layer,
            )
        except (OSError, ValueError) as error:
            raise fail(error) from None

    def run_search(text, image, top_k, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        try:
            progress(0, desc="Opening the index (loading its model on first use)")
            hits = search_tab.search(text, image, whole_number(top_k, "Top-k"))
            read_out = json_text([hit.to_dict() for hit in hits], indent=1)
        except (OSError, ValueError) as error:
            raise fail(error) from None
        gallery = [(thumbnail(hit.path), f"{hit.score:.4f} · {os.path.basename(hit.path)}") for hit in hits]
        return gallery, read_out

    with gr.Blocks(title="DiffCLIP beside CLIP", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            upload = _undecoded(
                gr.Image(
                    label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id="image"
                )
            )
            with gr.Column():
                url = gr.Textbox(label="…or an image URL", placeholder="https://…", elem_id="image-url")
                pair = gr.Dropdown(
                    choices=list(pairs),
                    value=next(iter(pairs)),
                    label="Model pair (DiffCLIP and CLIP trained on the same data)",
                    elem_id="pair",
                )
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[upload], label="Examples")
        with gr.Tabs():
            with gr.Tab("Zero-shot", id="zero-shot"):
                labels = gr.Textbox(
                    label="Labels (comma-separated)", placeholder="a dog, a cat, a car", elem_id="labels"
                )
                classify = gr.Button("Classify", variant="primary", elem_id="classify")
                chart = gr.BarPlot(
                    x="bar",
                    y="probability",
                    color="model",
                    y_lim=[0, 1],
                    sort=None,
                    label="Probabilities",
                    x_title="label · model",
                    elem_id="chart",
                )
                numbers = gr.Textbox(label="Probabilities (JSON)", lines=6, interactive=False, elem_id="probabilities")
                classify.click(run_zero_shot, [upload, url, labels, pair], [chart, numbers])
            with gr.Tab("Where it looks", id="attention"):
                with gr.Row():
                    method = gr.Radio(["One layer", "Rollout over layers"], value="One layer", label="Class-token map")
                    layer = gr.Number(value=-1, precision=0, label="Layer (-1: the last)", elem_id="layer")
                    head = gr.Number(
                        value=-1,
                        precision=0,
                        elem_id="head",
                        label="Head (-1: all; DiffCLIP's head i is its i-th differential head pair)",
                    )
                with gr.Row():
                    query = gr.Textbox(label="Text query (optional): adds the text-conditioned map", elem_id="query")
                    start_layer = gr.Number(value=0, precision=0, label="Text map from layer", elem_id="start-layer")
                draw = gr.Button("Draw", variant="primary", elem_id="draw")
                figure = gr.Image(
                    label="Attention maps: DiffCLIP (top) and CLIP (bottom)",
                    type="pil",
                    format="png",
                    elem_id="figure",
                )
                draw.click(run_attention, [upload, url, pair, method, layer, head, query, start_layer], [figure])
            with gr.Tab("Search", id="search"):
                gr.Markdown(
                    f"Index: `{index}`" if index else "No index loaded: start the demo with `--index INDEX_DIR`."
                )
                with gr.Row():
                    search_text = gr.Textbox(label="Text query", elem_id="search-text")
                    search_image = _undecoded(
                        gr.Image(label="…or a query image", type="filepath", image_mode=None, elem_id="search-image")
                    )
                top_k = gr.Slider(1, MAX_TOP_K, value=8, step=1, label="Results", elem_id="top-k")
                go = gr.Button("Search", variant="primary", elem_id="search")
                results = gr.Gallery(label="Results (score · file)", columns=4, elem_id="results")
                hits = gr.Textbox(label="Results (JSON)", lines=6, interactive=False, elem_id="hits")
                go.click(run_search, [search_text, search_image, top_k], [results, hits])
    demo.diffclip_cache = cache
    return demo


__all__ = ["build_demo"]
