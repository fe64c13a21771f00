# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Build DiffCLIP's tokenizer from the original CLIP BPE merges file (`bpe_simple_vocab_16e6.txt.gz`).

The original vocabulary is not stored as such; it is derived from the merges: the 256 byte symbols (in the
byte-to-unicode order of GPT-2/CLIP), the same symbols with the end-of-word mark `</w>`, one entry per merge for
the first 48,894 merges, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407) — 49,408 ids in all. This
module writes that vocabulary as `vocab.json` + `merges.txt`, the files transformers' CLIP tokenizer reads (the
Hub's `openai/clip-vit-base-patch16` holds the same two files, which `tokenizer_from_files` also accepts).
"""

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

from .processing_diffclip import DiffCLIPTokenizer


NUM_MERGES = 49152 - 256 - 2  # 48,894: the merges the released CLIP vocabulary uses
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"
BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_HINT = (
    f"The CLIP BPE file `{BPE_FILENAME}` ships with OpenAI's CLIP and open_clip (e.g. `pip download open_clip_torch` "
    "and take `open_clip/bpe_simple_vocab_16e6.txt.gz` from the wheel)."
)


def byte_symbols() -> list[str]:
    """The printable stand-in of each byte 0..255, in vocabulary order: printable Latin-1 bytes map to themselves,
    the others to code points from 256 upwards, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in printable] + [mapping[b] for b in range(256) if b not in printable]


def read_merges(bpe_path: str | os.PathLike) -> list[tuple[str, str]]:
    """The first `NUM_MERGES` merges of the gzipped BPE file (its first line is a version header)."""
    path = Path(bpe_path)
    if not path.is_file():
        raise FileNotFoundError(f"BPE merges file not found: {path}. {BPE_HINT}")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable gzipped CLIP BPE file ({error}). {BPE_HINT}") from error
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(merge) != 2 for merge in merges):
        raise ValueError(f"{path} does not hold {NUM_MERGES} BPE merges; is it the CLIP file? {BPE_HINT}")
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = byte_symbols()
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer_files(bpe_path: str | os.PathLike, output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `vocab.json` and `merges.txt` for transformers' CLIP tokenizer into `output_dir`."""
    merges = read_merges(bpe_path)
    vocab = build_vocab(merges)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = output_dir / "vocab.json", output_dir / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def tokenizer_from_files(
    vocab_path: str | os.PathLike, merges_path: str | os.PathLike, model_max_length: int = 77
) -> DiffCLIPTokenizer:
    """A [`DiffCLIPTokenizer`] over CLIP's `vocab.json` + `merges.txt` (written by `write_tokenizer_files`, or those
    of the Hub's `openai/clip-vit-base-patch16`), ready for `save_pretrained`. Only these two files are read."""
    with tempfile.TemporaryDirectory() as folder:
        for source, name in ((vocab_path, "vocab.json"), (merges_path, "merges.txt")):
            shutil.copyfile(source, Path(folder, name))
        config = {"model_max_length": model_max_length, "tokenizer_class": "CLIPTokenizer"}
        Path(folder, "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        return DiffCLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)


def build_tokenizer(bpe_path: str | os.PathLike, model_max_length: int = 77) -> DiffCLIPTokenizer:
    """A [`DiffCLIPTokenizer`] built from the original BPE file, ready for `save_pretrained`."""
    with tempfile.TemporaryDirectory() as folder:
        vocab_path, merges_path = write_tokenizer_files(bpe_path, folder)
        return tokenizer_from_files(vocab_path, merges_path, model_max_length)
