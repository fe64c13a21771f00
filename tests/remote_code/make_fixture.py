"""Write the converted-style folders that the remote-code suite loads without the package.

Run once, under the environment that has `transformers_diffclip` installed (the system Python in CI):

    python tests/remote_code/make_fixture.py --out .ci-venvs/fixture

For each variant (`diffclip`: differential attention in both towers; `baseline`: the CLIP baseline's standard
attention, vision LayerNorm eps 1e-6) it writes

- `<variant>/`: `save_pretrained` of a tiny model and of the processor — config, `model.safetensors`, the four
  remote-code files and the tokenizer / image-processor files with their `auto_map`;
- `<variant>.original.safetensors`: the same weights under the ORIGINAL checkpoint's names and layout, which is
  what `conversion/reference_original.original_forward` reads.

Weights are random, drawn per tensor from a seed derived from the tensor's original name (so they do not depend
on the order of the layout table), and written in the original layout first: the Hugging Face folder is made from
them with the key table below, taken from `shared/reference/ORIGINAL_MODEL.md` (not from the package). Beside the
folders: `inputs.safetensors` (fixed token ids and pixel values) and `fixture.json` (what the tests need to know:
tower sizes, which attention each tower uses, whether the real CLIP BPE file was used, a fingerprint of weights and
inputs for the golden file).

Without `shared/data/bpe_simple_vocab_16e6.txt.gz` the tokenizer is a stand-in with the same special ids (byte
symbols only, no merges), so the model side of the suite still runs; the tokenizer checks against the original
tokenizer are then skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file


TESTS_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(__file__).resolve().parents[3] / "shared"
BPE_PATH = SHARED_DIR / "data" / "bpe_simple_vocab_16e6.txt.gz"

FIXTURE_FORMAT = 1
SOT_ID, EOT_ID, VOCAB_SIZE = 49406, 49407, 49408
# Tiny towers: hidden 32, 2 layers, 4 heads, image 32, patch 8 (MLP ratio 4 as in the original).
TINY = {
    "vision_width": 32,
    "vision_layers": 2,
    "vision_heads": 4,
    "patch_size": 8,
    "image_size": 32,
    "text_width": 32,
    "text_layers": 2,
    "text_heads": 4,
    "context_length": 77,
    "vocab_size": VOCAB_SIZE,
    "embed_dim": 16,
}
VARIANTS = {
    "diffclip": {"diff_vision": True, "diff_text": True, "vision_eps": 1e-5, "seed": 1},
    "baseline": {"diff_vision": False, "diff_text": False, "vision_eps": 1e-6, "seed": 2},
}


def _import_reference():
    sys.path.insert(0, str(TESTS_DIR.parent / "conversion"))  # the one reference, shared with the converter
    import reference_original

    return reference_original


# ------------------------------------------------------------------------------------------------ weights


def _tensor_for(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random values with scales that keep the outputs non-trivial (attention maps far from uniform)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))

    def randn(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32) * std

    leaf = name.rsplit(".", 1)[-1]
    if name == "logit_scale":
        return torch.tensor(2.5, dtype=torch.float32)
    if leaf.startswith("lambda_"):
        return randn(0.2)
    if name.endswith("diff_norm.weight") or (leaf == "weight" and ("norm" in name or ".ln_" in name)):
        return 1.0 + randn(0.1)
    if leaf in ("bias", "in_proj_bias"):
        return randn(0.05)
    if name.endswith(("q_proj.weight", "k_proj.weight", "attn.qkv.weight", "attn.in_proj_weight")):
        return randn(shape[-1] ** -0.5)
    if name in ("image_projection", "text_projection"):
        return randn(shape[0] ** -0.5)
    return randn(0.05)


def original_state_dict(ref, variant: dict) -> dict[str, torch.Tensor]:
    shapes = ref.original_shapes(diff_vision=variant["diff_vision"], diff_text=variant["diff_text"], **TINY)
    return {name: _tensor_for(name, tuple(shape), variant["seed"]) for name, shape in shapes.items()}


def _split3(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = tensor.shape[0] // 3
    return tensor[:width], tensor[width : 2 * width], tensor[2 * width :]


def original_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original key names and layout → the Hugging Face parameter names of DiffCLIPModel."""
    out: dict[str, torch.Tensor] = {}
    attention_leaves = ("q_proj", "k_proj", "v_proj", "out_proj", "lambda_", "diff_norm")
    for name, tensor in state_dict.items():
        if name == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = tensor
        elif name == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = tensor
        elif name == "image_projection":
            out["visual_projection.weight"] = tensor.t().contiguous()
        elif name == "text_projection":
            out["text_projection.weight"] = tensor.t().contiguous()
        elif name == "logit_scale":
            out["logit_scale"] = tensor
        elif name == "visual.cls_token":
            out["vision_model.embeddings.class_embedding"] = tensor.reshape(-1)
        elif name == "visual.pos_embed":
            out["vision_model.embeddings.position_embedding.weight"] = tensor[0]
        elif name.startswith("visual.patch_embed.proj."):
            out["vision_model.embeddings.patch_embedding." + name.rsplit(".", 1)[1]] = tensor
        elif name.startswith("visual.norm."):
            out["vision_model.post_layernorm." + name.rsplit(".", 1)[1]] = tensor
        elif name.startswith("ln_final."):
            out["text_model.final_layer_norm." + name.rsplit(".", 1)[1]] = tensor
        elif name.startswith(("visual.blocks.", "transformer.resblocks.")):
            parts = name.split(".")
            tower, index, rest = (
                ("vision_model", parts[2], parts[3:])
                if parts[0] == "visual"
                else (
                    "text_model",
                    parts[2],
                    parts[3:],
                )
            )
            layer = f"{tower}.encoder.layers.{index}."
            rest_name = ".".join(rest)
            renames = {"norm1": "layer_norm1", "norm2": "layer_norm2", "ln_1": "layer_norm1", "ln_2": "layer_norm2"}
            renames.update({"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2", "attn.proj": "self_attn.out_proj"})
            if rest_name in ("attn.qkv.weight", "attn.qkv.bias", "attn.in_proj_weight", "attn.in_proj_bias"):
                leaf = "weight" if "weight" in rest_name else "bias"
                for projection, piece in zip(("q_proj", "k_proj", "v_proj"), _split3(tensor)):
                    out[f"{layer}self_attn.{projection}.{leaf}"] = piece.contiguous()
            elif rest[0] == "attn" and rest[1].startswith(attention_leaves):
                out[layer + "self_attn." + ".".join(rest[1:])] = tensor
            else:
                module = ".".join(rest[:-1])
                out[layer + renames.get(module, module) + "." + rest[-1]] = tensor
        else:
            raise KeyError(f"no Hugging Face name for original tensor {name!r}")
    return out


# ------------------------------------------------------------------------------------------------ inputs


def fixed_inputs() -> dict[str, torch.Tensor]:
    """Three right-padded token rows (CLIP style: start token, ids, end token, padded with the end token) and two
    images' pixel values (already normalised)."""
    generator = torch.Generator().manual_seed(1234)
    length, ends = 12, (5, 9, 11)
    input_ids = torch.randint(1, SOT_ID, (len(ends), length), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, end in enumerate(ends):
        input_ids[row, 0] = SOT_ID
        input_ids[row, end:] = EOT_ID
        attention_mask[row, : end + 1] = 1
    pixel_values = torch.randn(2, 3, TINY["image_size"], TINY["image_size"], generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ folders


def _standin_tokenizer(folder: Path, tokenizer_class):
    """A tokenizer with the CLIP special ids but no merges (byte symbols only), for when the BPE file is absent."""
    from transformers_diffclip.tokenizer_files import END_OF_TEXT, START_OF_TEXT, byte_symbols

    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += [f"<|unused_{i}|>" for i in range(SOT_ID - len(tokens))] + [START_OF_TEXT, END_OF_TEXT]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {"model_max_length": TINY["context_length"], "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tokenizer_class.from_pretrained(folder, model_max_length=TINY["context_length"])


def build_processor(use_bpe: bool):
    from transformers_diffclip import DiffCLIPImageProcessor, DiffCLIPProcessor, DiffCLIPTokenizer, build_tokenizer

    size = TINY["image_size"]
    image_processor = DiffCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    if use_bpe:
        tokenizer = build_tokenizer(BPE_PATH, model_max_length=TINY["context_length"])
    else:
        with tempfile.TemporaryDirectory() as scratch:
            tokenizer = _standin_tokenizer(Path(scratch), DiffCLIPTokenizer)
    return DiffCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def hf_config(variant: dict):
    from transformers_diffclip import DiffCLIPConfig

    text = {
        "vocab_size": TINY["vocab_size"],
        "hidden_size": TINY["text_width"],
        "intermediate_size": 4 * TINY["text_width"],
        "num_hidden_layers": TINY["text_layers"],
        "num_attention_heads": TINY["text_heads"],
        "max_position_embeddings": TINY["context_length"],
        "use_differential_attention": variant["diff_text"],
    }
    vision = {
        "hidden_size": TINY["vision_width"],
        "intermediate_size": 4 * TINY["vision_width"],
        "num_hidden_layers": TINY["vision_layers"],
        "num_attention_heads": TINY["vision_heads"],
        "image_size": TINY["image_size"],
        "patch_size": TINY["patch_size"],
        "layer_norm_eps": variant["vision_eps"],
        "use_differential_attention": variant["diff_vision"],
    }
    return DiffCLIPConfig(text_config=text, vision_config=vision, projection_dim=TINY["embed_dim"])


def write_fixture(out: Path, use_bpe: bool | None = None) -> dict:
    import transformers

    from transformers_diffclip import DiffCLIPModel

    ref = _import_reference()
    if use_bpe is None:
        use_bpe = BPE_PATH.is_file()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    processor = build_processor(use_bpe)
    inputs = fixed_inputs()
    save_file(inputs, out / "inputs.safetensors")
    all_tensors = {f"inputs.{k}": v for k, v in inputs.items()}
    variants = {}
    for name, variant in VARIANTS.items():
        original = original_state_dict(ref, variant)
        save_file(original, out / f"{name}.original.safetensors")
        all_tensors.update({f"{name}.{k}": v for k, v in original.items()})
        model = DiffCLIPModel(hf_config(variant)).eval()
        # strict: every parameter of the model comes from the original tensors, and nothing is left over
        model.load_state_dict(original_to_hf(original), strict=True)
        model.save_pretrained(out / name)
        processor.save_pretrained(out / name)
        variants[name] = {
            "folder": name,
            "original_weights": f"{name}.original.safetensors",
            "diff_vision": variant["diff_vision"],
            "diff_text": variant["diff_text"],
            "vision_eps": variant["vision_eps"],
            "lambda_init": 0.8,
        }
    description = {
        "format": FIXTURE_FORMAT,
        "tiny": TINY,
        "variants": variants,
        "real_bpe": use_bpe,
        "sot_id": SOT_ID,
        "eot_id": EOT_ID,
        "written_with_transformers": transformers.__version__,
        "written_with_torch": torch.__version__,
        "fingerprint": fingerprint(all_tensors),
    }
    (out / "fixture.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return description


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to (re)create")
    parser.add_argument("--no-bpe", action="store_true", help="use the stand-in tokenizer even if the BPE file exists")
    args = parser.parse_args(argv)
    description = write_fixture(args.out, use_bpe=False if args.no_bpe else None)
    print(
        f"wrote {args.out} (transformers {description['written_with_transformers']}, "
        f"real BPE: {description['real_bpe']}, fingerprint {description['fingerprint'][:12]})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
