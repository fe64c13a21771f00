"""Shared helpers of the modeling tests: tiny configurations, a tiny tokenizer, the original→HF tensor layout
written out independently of conversion/, and paths to ../shared."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch


SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
BPE_PATH = SHARED_DIR / "data" / "bpe_simple_vocab_16e6.txt.gz"

# The browser tests' Chromium (Debian's) and its headless launch flags.
CHROMIUM = os.environ.get("DIFFCLIP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TINY = dict(
    vision_width=32,
    vision_layers=2,
    vision_heads=4,
    patch_size=8,
    image_size=32,
    text_width=32,
    text_layers=2,
    text_heads=4,
    context_length=77,
    vocab_size=49408,
    embed_dim=16,
)


def require_bpe() -> Path:
    if not BPE_PATH.is_file():
        pytest.skip(f"CLIP BPE file not found at {BPE_PATH} (tests read it from ../shared beside the checkout)")
    return BPE_PATH


# A tiny CLIP-style vocabulary the tests build themselves: the 256 byte symbols, the same with the end-of-word mark,
# a few merges, unused filler, and the CLIP special tokens at their real ids (49406, 49407), so token ids fit the
# tiny models' 49,408-row embedding and pooling at the first end-of-text token works as with the real vocabulary.
# Tests of mechanics use it; only tests that compare ids with the original vocabulary need the real BPE file.
TINY_MERGES = (("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("r", "e"), ("re", "d</w>"), ("a", "r</w>"))


def write_tiny_tokenizer_files(folder: str | Path, model_max_length: int = 77) -> Path:
    """`vocab.json`, `merges.txt` and `tokenizer_config.json` of the tiny vocabulary, in the layout of CLIP's
    tokenizer files (`openai/clip-vit-base-patch16` holds the same three)."""
    from transformers_diffclip.tokenizer_files import END_OF_TEXT, START_OF_TEXT, byte_symbols

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in TINY_MERGES]
    tokens += [f"<|unused_{i}|>" for i in range(49406 - len(tokens))] + [START_OF_TEXT, END_OF_TEXT]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in TINY_MERGES)
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
    config = {"model_max_length": model_max_length, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"
CLIP_TOKENIZER_REPO = "openai/clip-vit-base-patch16"  # where converted models take vocab.json and merges.txt from


def seed_hub_cache(cache: str | Path, repo_id: str, files: dict, revision: str = HUB_REVISION) -> Path:
    """A Hugging Face Hub cache holding `files` (name → source path, or a folder to copy whole under name ".") of
    `repo_id` at `revision` (also its `main`), laid out as huggingface_hub writes it; returns the snapshot."""
    import shutil

    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        if name == ".":
            shutil.copytree(source, snapshot, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def seed_tiny_clip_tokenizer(cache: str | Path) -> Path:
    """The tiny vocabulary's `vocab.json` and `merges.txt` in a Hub cache, standing in for CLIP's tokenizer files."""
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_tokenizer_files(folder)
        files = {name: Path(folder, name) for name in ("vocab.json", "merges.txt")}
        return seed_hub_cache(cache, CLIP_TOKENIZER_REPO, files, revision="f" * 40)


def go_offline(monkeypatch, cache: str | Path, diffclip_cache: str | Path | None = None) -> None:
    """This process: Hub offline, its cache at `cache`, converted folders under `diffclip_cache`."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("DIFFCLIP_CACHE", str(diffclip_cache or Path(cache).parent / "diffclip"))


def tiny_tokenizer(model_max_length: int = 77):
    """A `DiffCLIPTokenizer` over the tiny vocabulary (no file from ../shared needed)."""
    from transformers_diffclip import DiffCLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        write_tiny_tokenizer_files(folder, model_max_length)
        return DiffCLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)


def tiny_processor(image_size: int = 32, model_max_length: int = 77):
    """A `DiffCLIPProcessor`: the tiny tokenizer and the image processor at `image_size`."""
    from transformers_diffclip import DiffCLIPImageProcessor, DiffCLIPProcessor

    size = image_size
    image_processor = DiffCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return DiffCLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(model_max_length))


def tiny_config(diff_text=True, diff_vision=True, schedule="constant", sizes=TINY, **vision_overrides):
    from transformers_diffclip import DiffCLIPConfig

    text = dict(
        hidden_size=sizes["text_width"],
        intermediate_size=4 * sizes["text_width"],
        num_hidden_layers=sizes["text_layers"],
        num_attention_heads=sizes["text_heads"],
        max_position_embeddings=sizes["context_length"],
        vocab_size=sizes["vocab_size"],
        use_differential_attention=diff_text,
        lambda_init_schedule=schedule,
    )
    vision = dict(
        hidden_size=sizes["vision_width"],
        intermediate_size=4 * sizes["vision_width"],
        num_hidden_layers=sizes["vision_layers"],
        num_attention_heads=sizes["vision_heads"],
        image_size=sizes["image_size"],
        patch_size=sizes["patch_size"],
        use_differential_attention=diff_vision,
        layer_norm_eps=1e-5 if diff_vision else 1e-6,
        lambda_init_schedule=schedule,
    )
    vision.update(vision_overrides)
    return DiffCLIPConfig(text_config=text, vision_config=vision, projection_dim=sizes["embed_dim"])


def _attention_to_hf(sd, src, dst, diff, fused_name):
    out = {}
    if diff:
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[f"{dst}.{name}.weight"] = sd[f"{src}.{name}.weight"]
            out[f"{dst}.{name}.bias"] = sd[f"{src}.{name}.bias"]
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            out[f"{dst}.{name}"] = sd[f"{src}.{name}"]
        out[f"{dst}.diff_norm.weight"] = sd[f"{src}.diff_norm.weight"]
        return out
    if fused_name == "timm":  # vision baseline: attn.qkv (3W, W) + attn.proj
        weights, biases = sd[f"{src}.qkv.weight"].chunk(3), sd[f"{src}.qkv.bias"].chunk(3)
        out_w, out_b = sd[f"{src}.proj.weight"], sd[f"{src}.proj.bias"]
    else:  # text baseline: nn.MultiheadAttention in_proj_weight (3W, W) + out_proj
        weights, biases = sd[f"{src}.in_proj_weight"].chunk(3), sd[f"{src}.in_proj_bias"].chunk(3)
        out_w, out_b = sd[f"{src}.out_proj.weight"], sd[f"{src}.out_proj.bias"]
    for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
        out[f"{dst}.{name}.weight"], out[f"{dst}.{name}.bias"] = weight, bias
    out[f"{dst}.out_proj.weight"], out[f"{dst}.out_proj.bias"] = out_w, out_b
    return out


def original_to_hf(sd: dict[str, torch.Tensor], diff_text=True, diff_vision=True) -> dict[str, torch.Tensor]:
    """Original DiffCLIP/CLIP tensor names → this package's parameter names (prefix `module.` removed)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    out = {
        "logit_scale": sd["logit_scale"],
        "text_projection.weight": sd["text_projection"].t(),
        "visual_projection.weight": sd["image_projection"].t(),
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "vision_model.embeddings.class_embedding": sd["visual.cls_token"].reshape(-1),
        "vision_model.embeddings.position_embedding.weight": sd["visual.pos_embed"][0],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.patch_embed.proj.weight"],
        "vision_model.embeddings.patch_embedding.bias": sd["visual.patch_embed.proj.bias"],
        "vision_model.post_layernorm.weight": sd["visual.norm.weight"],
        "vision_model.post_layernorm.bias": sd["visual.norm.bias"],
    }
    text_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    vision_layers = len({k.split(".")[2] for k in sd if k.startswith("visual.blocks.")})
    for i in range(text_layers):
        src, dst = f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}"
        pairs = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for a, b in pairs.items():
            out[f"{dst}.{b}.weight"], out[f"{dst}.{b}.bias"] = sd[f"{src}.{a}.weight"], sd[f"{src}.{a}.bias"]
        out.update(_attention_to_hf(sd, f"{src}.attn", f"{dst}.self_attn", diff_text, "mha"))
    for i in range(vision_layers):
        src, dst = f"visual.blocks.{i}", f"vision_model.encoder.layers.{i}"
        pairs = {"norm1": "layer_norm1", "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        for a, b in pairs.items():
            out[f"{dst}.{b}.weight"], out[f"{dst}.{b}.bias"] = sd[f"{src}.{a}.weight"], sd[f"{src}.{a}.bias"]
        out.update(_attention_to_hf(sd, f"{src}.attn", f"{dst}.self_attn", diff_vision, "timm"))
    return {k: v.clone() for k, v in out.items()}


def text_batch(batch=3, length=77, seed=0, lengths=(5, 11, 9), vocab=49405, pad_id=0):
    """Rows `[49406] + tokens + [49407]` padded with `pad_id` (0 as the original, 49407 as the tokenizer)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, length), pad_id, dtype=torch.long)
    for row in range(batch):
        n = lengths[row % len(lengths)]
        ids[row, 0] = 49406
        ids[row, 1 : n + 1] = torch.randint(1, vocab, (n,), generator=generator)
        ids[row, n + 1] = 49407
    return ids


def record_kernel_calls(monkeypatch, name: str = "sdpa") -> list:
    """Wraps transformers' registered attention kernel `name` so that each call appends to the returned list.
    (Imports nothing from the package, so the remote-code suite uses it too.)"""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls = []
    kernel = ALL_ATTENTION_FUNCTIONS[name]

    def recording(*args, **kwargs):
        calls.append(name)
        return kernel(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, name, recording)
    return calls


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10× faster than two when other processes
    compete for the cores (OpenMP threads spin-wait on each other). Autouse in the modules that import it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Toy data of the training tests: solid-colour squares whose captions name the colour.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 40, 220),
    "yellow": (235, 220, 30),
    "purple": (130, 30, 160),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}


def colour_image(rgb, seed: int | None = None):
    """A 36×36 square of one colour; with a seed, the colour is jittered and light pixel noise added."""
    import numpy as np
    from PIL import Image

    pixels = np.empty((36, 36, 3), dtype=np.float32)
    pixels[:] = rgb
    if seed is not None:
        rng = np.random.default_rng(seed)
        pixels += rng.uniform(-25, 25, size=3) + rng.normal(0, 6, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def assert_gradients_close(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    """Equal to 1e-5 relative to the gradient's largest entry: float32 sums over a batch round at that scale, and
    embedding gradients of the original init reach ~16 (a LayerNorm over 0.02-scale inputs amplifies them)."""
    scale = max(float(want.abs().max()), 1.0)
    torch.testing.assert_close(got, want, atol=1e-5 * scale, rtol=1e-5, msg=name)


# TrainingArguments of the torchrun workers: one quiet CPU step over gloo, 3 pairs per process, no clipping.
ONE_DDP_STEP = dict(
    per_device_train_batch_size=3,
    max_steps=1,
    learning_rate=1e-3,
    max_grad_norm=0.0,
    report_to="none",
    save_strategy="no",
    logging_strategy="no",
    disable_tqdm=True,
    use_cpu=True,
    ddp_backend="gloo",
    dataloader_num_workers=0,
    seed=0,
)


def fsdp_full_shard(model_dir: str):
    """`(model, wrapped)`: the model of `model_dir` (eager attention) with a shardable logit scale, wrapped in FSDP
    FULL_SHARD on the CPU with one unit per encoder layer, as examples/accelerate_fsdp.yaml shards it."""
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers import AutoModel

    from transformers_diffclip import training
    from transformers_diffclip.modeling_diffclip import DiffCLIPEncoderLayer

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    training.make_logit_scale_shardable(model)  # FSDP refuses scalar parameters
    wrapped = FullyShardedDataParallel(
        model,
        auto_wrap_policy=ModuleWrapPolicy({DiffCLIPEncoderLayer}),
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        use_orig_params=True,
        device_id=torch.device("cpu"),
    )
    return model, wrapped


def cpu_run_flags(output_dir, **flags) -> list[str]:
    """Command-line flags of a quiet CPU run of diffclip-finetune / diffclip-pretrain writing to `output_dir`;
    `flags` add to or override the defaults (`name=value` becomes `--name value`)."""
    values = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": "true",
        "use_cpu": "true",
        "dataloader_num_workers": "0",
        "seed": "0",
        **flags,
    }
    return [part for key, value in values.items() for part in (f"--{key}", str(value))]


def save_tiny_diffclip(folder, seed: int = 0, **config_overrides):
    """A tiny DiffCLIP model and processor saved into `folder` (32-pixel images, 16-wide embeddings); returns the
    folder."""
    from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    vision = dict(tower, image_size=32, patch_size=8)
    config = DiffCLIPConfig(text_config=tower, vision_config=vision, projection_dim=16, **config_overrides)
    torch.manual_seed(seed)
    DiffCLIPModel(config).eval().save_pretrained(folder)
    tiny_processor(image_size=32).save_pretrained(folder)
    return Path(folder)
