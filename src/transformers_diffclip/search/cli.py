# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""`diffclip index` and `diffclip search`: parse, call [`build_index`] / [`Searcher`], print."""

from __future__ import annotations

import argparse

from ..core.errors import positive_int
from ..core.files import json_text
from ..core.loading import DTYPES, add_model_arguments
from ..export.runtime import add_backend_arguments, load_backend_model_and_processor
from .index import DEFAULT_EXACT_BELOW


def _search_extra():
    try:
        import faiss  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise OSError(
            f"{error.name} is not installed; search indexes need faiss-cpu and pyarrow: "
            'pip install "transformers-diffclip[search]"'
        ) from error


def _loader_options(args: argparse.Namespace) -> dict:
    """How the model is loaded: the flags both commands share."""
    return {
        "revision": args.revision,
        "trust_remote_code": args.trust_remote_code,
        "device": args.device,
        "dtype": args.dtype,
    }


def _onnx_loaded(args: argparse.Namespace, model: str):
    """The ONNX Runtime encoder and processor of `--backend onnx` (`None` for torch: the library loads the model)."""
    if args.backend != "onnx":
        return None
    return load_backend_model_and_processor(model, "onnx", args.onnx_precision, args.device, args.dtype)


def _run_index(args: argparse.Namespace) -> int:
    _search_extra()
    from .build import build_index

    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    index = build_index(
        args.model,
        args.data,
        args.output,
        **_loader_options(args),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        shard_size=args.shard_size,
        exact_below=args.exact_below,
        factory=args.factory,
        rebuild=args.rebuild,
        progress=not args.no_progress,
        loaded=_onnx_loaded(args, args.model),
    )
    if index is None:  # a process other than the first of a distributed run
        return 0
    info = index.manifest["index"]
    recall = "" if info["kind"] == "exact" else f", recall@10 {info['recall_at_10']:.4f} vs exact search"
    failed = index.manifest.get("failed") or []
    skipped = f"; {len(failed)} image(s) skipped (unreadable; retried on the next run)" if failed else ""
    print(f"Index {args.output}: {len(index)} images, {info['factory']} ({info['kind']}{recall}){skipped}.")
    return 0


def _run_search(args: argparse.Namespace) -> int:
    _search_extra()
    from .searcher import Searcher

    loaded = None
    if args.backend == "onnx":
        from .index import SearchIndex

        index = SearchIndex(args.index)
        loaded = _onnx_loaded(args, args.model or index.manifest["model"])
        args.index, args.model = index, args.model or index.manifest["model"]
    searcher = Searcher(args.index, args.model, **_loader_options(args), loaded=loaded)
    if args.text is not None:
        hits = searcher.search_text(args.text, args.top_k)
    else:
        hits = searcher.search_image(args.image, args.top_k)
    if args.json:
        print(json_text([hit.to_dict() for hit in hits]))
    else:
        for hit in hits:
            print(f"{hit.score:.4f}  {hit.path}")
    return 0


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device` and `--dtype`, the same for both commands."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default: float32)")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `diffclip index` and `diffclip search`."""
    parser = subparsers.add_parser(
        "index",
        help="embed images (folder, list of paths/URLs, webdataset shards) into a FAISS search index",
        description="Embed the images of --data with the model's image tower into Parquet shards under --output and "
        "commit a FAISS index over them (exact search below --exact-below vectors, a compressed index with its "
        "measured recall@10 above). Run it again to resume an interrupted build or to add new images.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--data",
        required=True,
        metavar="SOURCE",
        help="an image folder, a text file of image paths or URLs (one per line), or webdataset shards "
        "(x.tar, a brace pattern such as 'shards/{00000..00009}.tar', or a folder of .tar files)",
    )
    parser.add_argument("--output", required=True, metavar="INDEX_DIR", help="the index folder (created or resumed)")
    _add_device_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default: 64)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader processes reading images (default: 0)")
    parser.add_argument(
        "--shard-size", type=positive_int, default=10_000, help="embeddings per Parquet shard (default: 10000)"
    )
    parser.add_argument(
        "--exact-below",
        type=int,
        default=DEFAULT_EXACT_BELOW,
        help=f"exact search below this many images, a compressed index from there on (default: {DEFAULT_EXACT_BELOW})",
    )
    parser.add_argument("--factory", help="a FAISS index_factory string overriding the choice, e.g. 'IVF4096,PQ64'")
    parser.add_argument(
        "--rebuild", action="store_true", help="build the FAISS index anew instead of adding new images to it"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_backend_arguments(parser)
    parser.set_defaults(func=_run_index)

    search = subparsers.add_parser(
        "search",
        help="query a search index by text or image",
        description="Find the images of an index (built with `diffclip index`) closest to a text or an image; "
        "the query is embedded with the index's model.",
    )
    search.add_argument("--index", required=True, metavar="INDEX_DIR", help="an index folder")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a text query")
    query.add_argument("--image", metavar="PATH", help="an image query (path or http(s) URL)")
    search.add_argument("--top-k", type=positive_int, default=10, help="results (default: 10)")
    search.add_argument("--json", action="store_true", help='print [{"id", "path", "score"}] best first')
    search.add_argument("--model", help="the model to embed the query with (default: the index's; must match it)")
    search.add_argument("--revision", help="Hub branch, tag or commit of --model")
    search.add_argument("--trust-remote-code", action="store_true", help="as for the other commands")
    _add_device_arguments(search)
    add_backend_arguments(search)
    search.set_defaults(func=_run_search)
