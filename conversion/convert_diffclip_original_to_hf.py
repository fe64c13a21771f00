#!/usr/bin/env python
# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Convert an original DiffCLIP / CLIP checkpoint (`checkpoint_best.pt`) into a Hub-ready transformers folder.

The folder holds `config.json` (with `auto_map`), `model.safetensors`, the model code files, the tokenizer files,
the image-processor and processor configs and the model card `README.md`; it loads with
`AutoModel.from_pretrained(folder, trust_remote_code=True)`, `AutoProcessor` and the zero-shot pipeline on a
machine without `transformers_diffclip`.

The safe loader, the key map and the architecture detection live in the package (`transformers_diffclip.original`,
which also converts the authors' checkpoints on first use for `from_pretrained`); this script adds the model card,
`--verify` and `--push-to-hub`. The tokenizer files come from the Hub's `openai/clip-vit-base-patch16` (`vocab.json`
and `merges.txt`, the same BPE vocabulary as the original) unless `--bpe-path` names CLIP's
`bpe_simple_vocab_16e6.txt.gz`. Examples:

    python conversion/convert_diffclip_original_to_hf.py --checkpoint hammh0a/DiffCLIP_ViTB16_CC12M \\
        --output-dir converted/DiffCLIP_ViTB16_CC12M --verify
    python conversion/convert_diffclip_original_to_hf.py --checkpoint path/to/checkpoint_best.pt \\
        --model-card ViTB16_CC3M --bpe-path bpe_simple_vocab_16e6.txt.gz --output-dir converted/ViTB16_CC3M --verify

The output is written into a temporary sibling folder and renamed into place at the very end, so a failed run
never leaves a half-written `--output-dir`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path


_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the sibling module, also when this file is imported or run with `python -m`
    sys.path.insert(0, str(_HERE))

import torch  # noqa: E402
from reference_original import lambda_init_schedule, original_forward  # noqa: E402

from transformers_diffclip.original import (  # noqa: E402
    CHECKPOINT_FILENAME,
    CLIP_TOKENIZER_REPO,
    RELEASED_REPOS,
    Architecture,
    ConversionError,
    build_processor,
    convert_checkpoint,
    resolve_checkpoint,
)
from transformers_diffclip.original.checkpoint import UNSAFE_PICKLE_FLAG  # noqa: E402
from transformers_diffclip.original.convert import (  # noqa: E402
    build_tokenizer_for,
    describe,
    save_converted,
    write_folder_atomically,
)


MODEL_CARDS_DIR = _HERE.parent / "model_cards"
# Released checkpoint → the paper's name of its architecture (what `Architecture.variant` must say).
MODEL_CARD_VARIANTS = {
    "DiffCLIP_ViTB16_CC3M": "DiffCLIP",
    "DiffCLIP_ViTB16_CC12M": "DiffCLIP",
    "ViTB16_CC3M": "CLIP",
    "ViTB16_CC12M": "CLIP",
}
REPO_ID_PLACEHOLDER = "__REPO_ID__"
VERIFY_TOLERANCE = 1e-4
VERIFY_TEXTS = (
    "a photo of a dog.",
    "a photo of a cat sitting on a red mat.",
    "a diagram of differential attention",
)


@dataclass
class ConversionResult:
    output_dir: Path
    variant: str
    num_parameters: int
    model_card: str
    source: str
    verification: dict[str, float] | None = None


# --------------------------------------------------------------------------------------------------
# Model, tokenizer, card
# --------------------------------------------------------------------------------------------------


def check_bpe_path(bpe_path) -> Path | None:
    """The BPE file, checked before anything is downloaded or read; None: CLIP's tokenizer files from the Hub."""
    from transformers_diffclip.tokenizer_files import BPE_HINT

    if bpe_path is None:
        return None
    if not Path(bpe_path).is_file():
        raise FileNotFoundError(f"--bpe-path {bpe_path}: no such file. {BPE_HINT}")
    return Path(bpe_path)


def select_model_card(spec: str | None, repo_id: str | None, train_args: dict, variant: str) -> tuple[str, str]:
    """`(card name, card text)`: a released card by name, a Markdown file by path, or (by default) the card of the
    released repo the checkpoint came from / of its training arguments (`args.dataset`)."""
    name = None
    if spec in (None, "", "auto"):
        name = RELEASED_REPOS.get(repo_id or "")
        dataset = str(train_args.get("dataset", "")).lower()
        if name is None and dataset in ("cc3m", "cc12m") and variant in ("DiffCLIP", "CLIP"):
            name = ("DiffCLIP_ViTB16_" if variant == "DiffCLIP" else "ViTB16_") + dataset.upper()
        if name is None:
            raise ConversionError(
                "Cannot tell which model card fits this checkpoint (a local file without a known training dataset). "
                f"Pass --model-card NAME (one of {', '.join(MODEL_CARD_VARIANTS)}) or --model-card PATH to a "
                "Markdown card."
            )
    elif spec in MODEL_CARD_VARIANTS:
        name = spec
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(
                f"--model-card {spec}: neither a released card ({', '.join(MODEL_CARD_VARIANTS)}) nor a file."
            )
        return path.stem, path.read_text(encoding="utf-8")
    if MODEL_CARD_VARIANTS[name] != variant:
        raise ConversionError(
            f"The model card {name} describes {MODEL_CARD_VARIANTS[name]}, but the checkpoint is {variant}. Pass "
            "--model-card with the matching card (or a PATH to your own card for an unreleased variant)."
        )
    card_path = MODEL_CARDS_DIR / f"{name}.md"
    if not card_path.is_file():
        raise FileNotFoundError(f"Model card {card_path} not found; run the script from a checkout of the project.")
    return name, card_path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------


def _verification_images(size: int):
    """Three fixed RGB images: a colour gradient, a checkerboard with a disc, seeded noise."""
    import numpy as np
    from PIL import Image

    side = max(size + size // 3, 8)  # not square and larger than the crop, so resize and crop both act
    y, x = np.mgrid[0:side, 0 : side + 7].astype(np.float64)
    gradient = np.stack([x / x.max(), y / y.max(), 1 - x / x.max()], axis=-1)
    checker = ((x // 5 + y // 5) % 2)[..., None] * np.array([0.9, 0.2, 0.1])
    checker[(x - side / 2) ** 2 + (y - side / 2) ** 2 < (side / 4) ** 2] = (0.1, 0.3, 0.9)
    noise = np.random.default_rng(0).random((side, side + 7, 3))
    return [Image.fromarray((255 * array).round().astype(np.uint8)) for array in (gradient, checker, noise)]


def _embeddings(output):
    """`get_*_features` return the tensor on transformers 4 and a `BaseModelOutputWithPooling` on 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def verify_folder(folder: Path, original_state_dict, architecture: Architecture, converted) -> dict[str, float]:
    """Load the written folder, check every tensor against the converted weights, and compare embeddings and logits
    with the independent original-layout forward. Raises when any difference exceeds `VERIFY_TOLERANCE`."""
    from transformers_diffclip import DiffCLIPModel, DiffCLIPProcessor

    model = DiffCLIPModel.from_pretrained(folder).eval()
    processor = DiffCLIPProcessor.from_pretrained(folder)
    changed = [n for n, t in model.state_dict().items() if n not in converted or not torch.equal(t, converted[n])]
    if changed:
        raise ConversionError(f"Reloading the written folder changed these tensors: {', '.join(changed[:20])}")

    text, vision = architecture.config_kwargs["text_config"], architecture.config_kwargs["vision_config"]
    inputs = processor(
        text=list(VERIFY_TEXTS),
        images=_verification_images(vision["image_size"]),
        padding="max_length",
        max_length=text["max_position_embeddings"],
        return_tensors="pt",
    )
    # the original pads with 0 after the end-of-text token (pooled at the row's largest id)
    original_ids = inputs["input_ids"] * inputs["attention_mask"]
    # the reference computes in the state dict's dtype: float64 here
    layers = max(vision["num_hidden_layers"], text["num_hidden_layers"])
    reference = original_forward(
        {name: tensor.double() for name, tensor in original_state_dict.items()},
        original_ids,
        inputs["pixel_values"].double(),
        vision_heads=vision["num_attention_heads"],
        text_heads=text["num_attention_heads"],
        diff_vision=architecture.differential_vision,
        diff_text=architecture.differential_text,
        lambda_init=lambda_init_schedule(layers, architecture.lambda_init_schedule == "depth"),
        vision_eps=vision["layer_norm_eps"],
        text_eps=text["layer_norm_eps"],
    )
    outputs = model(**inputs)
    ported = {
        "image_embeds": _embeddings(model.get_image_features(pixel_values=inputs["pixel_values"])),
        "text_embeds": _embeddings(
            model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        ),
        "logits_per_image": outputs.logits_per_image,
    }
    differences = {
        key: float((ported[key].double() - reference[key]).abs().max()) for key in ("image_embeds", "text_embeds")
    }
    differences["logits_per_image"] = float(
        (ported["logits_per_image"].double() - reference["logits_per_image"]).abs().max()
    )
    return differences


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def convert(
    checkpoint: str,
    output_dir: str | Path,
    bpe_path: str | Path | None,
    *,
    lambda_init_schedule: str = "constant",
    vision_heads: int | None = None,
    text_heads: int | None = None,
    model_card: str | None = None,
    repo_id: str | None = None,
    verify: bool = False,
    allow_unsafe_pickle: bool = False,
    overwrite: bool = False,
    checkpoint_filename: str = CHECKPOINT_FILENAME,
    revision: str | None = None,
    log=print,
) -> ConversionResult:
    """Convert `checkpoint` (a local file or a Hub repo id) into the Hub-ready folder `output_dir`.

    Everything that can fail on the input (reading, layout, tokenizer, model card) fails before anything is
    written; the folder is then written under a temporary sibling name, verified when `verify`, and renamed into
    place. Any failure removes the temporary folder.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise ConversionError(f"--output-dir {output_dir} already exists; pass --overwrite to replace it.")
    bpe_path = check_bpe_path(bpe_path)
    path, source_repo = resolve_checkpoint(checkpoint, checkpoint_filename, revision)
    conversion = convert_checkpoint(
        path,
        lambda_init_schedule=lambda_init_schedule,
        vision_heads=vision_heads,
        text_heads=text_heads,
        allow_unsafe_pickle=allow_unsafe_pickle,
    )
    architecture = conversion.architecture
    log(f"{source_repo or path}: {describe(architecture)}, {conversion.num_parameters:,} parameters.")
    tokenizer = build_tokenizer_for(architecture, bpe_path, instead=" (or pass the original BPE file with --bpe-path)")
    processor = build_processor(architecture, tokenizer)
    card_name, card_text = select_model_card(model_card, source_repo, conversion.original.args, architecture.variant)
    card_text = card_text.replace(REPO_ID_PLACEHOLDER, repo_id or f"YOUR_ORG/{card_name}")
    result = ConversionResult(
        output_dir, architecture.variant, conversion.num_parameters, card_name, str(source_repo or path)
    )

    def write(folder: Path) -> None:
        save_converted(folder, conversion.model, processor, card_text)
        if verify:
            differences = verify_folder(folder, conversion.original.state_dict, architecture, conversion.converted)
            result.verification = differences
            report = ", ".join(f"{key} {value:.2e}" for key, value in differences.items())
            log(f"verify: max |converted − original| {report} (tolerance {VERIFY_TOLERANCE:.0e})")
            if max(differences.values()) > VERIFY_TOLERANCE:
                raise ConversionError(
                    f"Verification failed: the converted model differs from the original forward by more than "
                    f"{VERIFY_TOLERANCE:.0e} ({report}). Nothing was written."
                )

    write_folder_atomically(output_dir, write)
    log(f"wrote {output_dir} (model card {card_name})")
    return result


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, log=print) -> str:
    """Validate the model card with the Hub, create `repo_id` if needed and upload the folder. Needs network and a
    login (`hf auth login` or `HF_TOKEN`). Returns the commit URL."""
    from huggingface_hub import HfApi, ModelCard

    folder = Path(folder)
    ModelCard.load(folder / "README.md").validate()
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=folder, commit_message="Add DiffCLIP weights converted from the original"
    )
    log(f"pushed {folder} to https://huggingface.co/{repo_id}")
    return str(getattr(commit, "commit_url", commit))


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert_diffclip_original_to_hf.py",
        description="Convert an original DiffCLIP or CLIP checkpoint (checkpoint_best.pt of the DiffCLIP release) "
        "into a Hub-ready transformers folder: config.json with auto_map, model.safetensors, model code, tokenizer, "
        "image processor, processor and model card. The architecture (DiffCLIP, DiffCLIP† or the CLIP baseline) "
        "and its sizes are read from the weights.",
        epilog="Released checkpoints: " + ", ".join(RELEASED_REPOS) + ". Exit status 0 on success, 2 on any error "
        "(nothing is written then).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH_OR_REPO_ID",
        help="a local checkpoint file, or a Hub repo id (e.g. hammh0a/DiffCLIP_ViTB16_CC12M) whose "
        "--checkpoint-filename is downloaded with huggingface_hub (or taken from its cache; HF_HUB_OFFLINE=1 works "
        "with a cached file)",
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="the folder to create")
    parser.add_argument(
        "--bpe-path",
        metavar="FILE",
        help="CLIP's BPE merges bpe_simple_vocab_16e6.txt.gz, from which the tokenizer files are built (it ships "
        "with OpenAI's CLIP and with open_clip: `pip download open_clip_torch --no-deps` and take "
        "open_clip/bpe_simple_vocab_16e6.txt.gz from the wheel). Default: the same vocabulary from the Hub's "
        f"{CLIP_TOKENIZER_REPO} (vocab.json and merges.txt only), downloaded once into the Hugging Face cache",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="reload the written folder and compare its image/text embeddings and logits on fixed images and texts "
        "with an independent forward of the ORIGINAL layout computed from the original weights; prints the max "
        f"differences and fails (writing nothing) above {VERIFY_TOLERANCE:.0e}",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="after a successful conversion, validate the model card with the Hub, create REPO_ID if needed and "
        "upload the folder (needs network and `hf auth login` or HF_TOKEN)",
    )
    parser.add_argument("--private", action="store_true", help="create the --push-to-hub repo as private")
    parser.add_argument(
        "--lambda-init-schedule",
        choices=("constant", "depth"),
        default="constant",
        help="λ_init of the differential layers: 'constant' (0.8, the released DiffCLIP models) or 'depth' "
        "(0.8 − 0.6·exp(−0.3·l), the paper's DiffCLIP*). The weights cannot tell the two apart and --verify uses "
        "the same choice, so take it from how the model was trained",
    )
    parser.add_argument(
        "--model-card",
        metavar="NAME_OR_PATH",
        default="auto",
        help="the README.md to put in the folder: a released card ("
        + ", ".join(MODEL_CARD_VARIANTS)
        + "), a path to your own Markdown card, or 'auto' (the card of the --checkpoint repo id, or of the "
        "training arguments' dataset)",
    )
    parser.add_argument(
        "--repo-id",
        metavar="REPO_ID",
        help="the repo id the model card's examples load from (default: --push-to-hub's REPO_ID, else "
        "YOUR_ORG/<card name>)",
    )
    parser.add_argument(
        "--vision-heads",
        type=int,
        help="heads of a STANDARD-attention vision tower (the weights do not reveal it; default: width / 64). "
        "Differential towers' head counts are read from the weights",
    )
    parser.add_argument(
        "--text-heads", type=int, help="heads of a standard-attention text tower (default: width / 64)"
    )
    parser.add_argument(
        UNSAFE_PICKLE_FLAG,
        action="store_true",
        help="DANGEROUS: load the checkpoint with an unrestricted pickle, which can run arbitrary code from the "
        "file. Only for a file you trust that the safe loader refused (it says which class it refused)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument(
        "--checkpoint-filename", default=CHECKPOINT_FILENAME, help="file to download when --checkpoint is a repo id"
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) when --checkpoint is a repo id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.allow_unsafe_pickle:
        print(
            f"WARNING: {UNSAFE_PICKLE_FLAG} loads {args.checkpoint} with an unrestricted pickle: code inside the file "
            "runs with your permissions. Use it only for files you trust.",
            file=sys.stderr,
        )
    try:
        convert(
            args.checkpoint,
            args.output_dir,
            args.bpe_path,
            lambda_init_schedule=args.lambda_init_schedule,
            vision_heads=args.vision_heads,
            text_heads=args.text_heads,
            model_card=args.model_card,
            repo_id=args.repo_id or args.push_to_hub,
            verify=args.verify,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            overwrite=args.overwrite,
            checkpoint_filename=args.checkpoint_filename,
            revision=args.revision,
        )
        if args.push_to_hub:
            push_to_hub(args.output_dir, args.push_to_hub, private=args.private)
    except (ConversionError, FileNotFoundError, ValueError, OSError) as error:
        print(f"{build_parser().prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
