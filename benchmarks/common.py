# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Shared pieces of the CPU and GPU benchmarks: the models at ViT-B/16 sizes, typical prompts, interleaved timing,
peak memory, FLOP counting, and a plain eager implementation of the original formulation (a baseline, not package
code)."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import CLIPConfig, CLIPModel

from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel


BPE_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
BOS, EOS = 49406, 49407

# Short zero-shot prompts ("a photo of a {label}."-style), all ≤ 16 tokens with the CLIP BPE.
PROMPTS = [
    "a photo of a goldfish.",
    "a bad photo of the tench.",
    "a photo of a great white shark.",
    "a close-up photo of a tree frog.",
    "a photo of the small hummingbird.",
    "a bright photo of a mountain bike.",
    "a photo of a cup of espresso.",
    "a cropped photo of a school bus.",
]
# Token counts (with start and end tokens) of PROMPTS under the CLIP BPE: used when the BPE file is absent.
PROMPT_LENGTHS = [7, 8, 9, 9, 8, 8, 9, 8]

# transformers' CLIP and DiffCLIP at the sizes of the released DiffCLIP ViT-B/16.
VISION_SIZES = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
TEXT_SIZES = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
# Tiny sizes for smoke tests (`--quick`).
TINY_VISION_SIZES = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
TINY_TEXT_SIZES = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)


# --------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------


def clip_config(tiny: bool = False, image_size: int = 224, patch_size: int = 16) -> CLIPConfig:
    """transformers' CLIP with its defaults (QuickGELU, pre-LayerNorm) at the DiffCLIP sizes."""
    vision = dict(TINY_VISION_SIZES if tiny else VISION_SIZES, image_size=image_size, patch_size=patch_size)
    text = dict(TINY_TEXT_SIZES if tiny else TEXT_SIZES, max_position_embeddings=CONTEXT_LENGTH)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32 if tiny else 512)


def diffclip_config(
    tiny: bool = False, differential: bool = True, image_size: int = 224, patch_size: int = 16
) -> DiffCLIPConfig:
    """DiffCLIP ViT-B/16 (or its CLIP baseline with `differential=False`)."""
    vision = dict(
        TINY_VISION_SIZES if tiny else VISION_SIZES,
        image_size=image_size,
        patch_size=patch_size,
        use_differential_attention=differential,
    )
    text = dict(TINY_TEXT_SIZES if tiny else TEXT_SIZES, use_differential_attention=differential)
    return DiffCLIPConfig(text_config=text, vision_config=vision, projection_dim=32 if tiny else 512)


def build(model_class, config, attn_implementation: str, dtype=torch.float32, device="cpu", seed: int = 0):
    """A randomly initialised model in eval mode."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_class._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    return model.to(device).eval()


def build_clip(tiny=False, attn_implementation="sdpa", **kwargs):
    return build(CLIPModel, clip_config(tiny), attn_implementation, **kwargs)


def build_diffclip(tiny=False, attn_implementation="sdpa", differential=True, **kwargs):
    return build(DiffCLIPModel, diffclip_config(tiny, differential), attn_implementation, **kwargs)


def pixel_batch(batch_size: int, image_size: int = 224, device="cpu", dtype=torch.float32, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device=device, dtype=dtype)


def random_ids(batch_size: int, lengths: list[int], pad_to: int | None = None, seed: int = 2) -> torch.Tensor:
    """Token rows `[BOS, words…, EOS]` of the given lengths, right-padded (with 0, as the original tokenizer) to
    `pad_to` or the longest row."""
    generator = torch.Generator().manual_seed(seed)
    width = pad_to or max(lengths)
    ids = torch.zeros(batch_size, width, dtype=torch.long)
    for row in range(batch_size):
        length = lengths[row % len(lengths)]
        ids[row, 0] = BOS
        ids[row, 1 : length - 1] = torch.randint(1, BOS, (length - 2,), generator=generator)
        ids[row, length - 1] = EOS
    return ids


def prompt_batch(batch_size: int, pad_to: int | None = None) -> tuple[torch.Tensor, str]:
    """Token ids of `batch_size` typical prompts, padded to the longest (dynamic padding) or to `pad_to`. Uses the
    DiffCLIP tokenizer when the CLIP BPE file is found beside the checkout, else random ids of the same lengths."""
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(batch_size)]
    if BPE_PATH.is_file():
        from transformers_diffclip.tokenizer_files import build_tokenizer

        tokenizer = build_tokenizer(BPE_PATH)
        padding = "max_length" if pad_to else "longest"
        encoded = tokenizer(texts, padding=padding, max_length=pad_to, truncation=True, return_tensors="pt")
        return encoded["input_ids"], "DiffCLIP tokenizer (CLIP BPE)"
    return random_ids(batch_size, PROMPT_LENGTHS, pad_to), "random ids with the prompts' token counts"


# --------------------------------------------------------------------------------------------------
# The original formulation, written straightforwardly (benchmark baseline)
# --------------------------------------------------------------------------------------------------


class OriginalFormulation(nn.Module):
    """DiffCLIP computed the way the original code does: per layer explicit maps `A1 = softmax(Q1·K1ᵀ/√d + mask)`,
    `A2` likewise, `(A1 − λ·A2)·V`, RMSNorm, `× (1 − λ_init)`; the text always at 77 tokens. Reads the weights of a
    [`DiffCLIPModel`] (shared, not copied), so both compute the same function."""

    def __init__(self, model: DiffCLIPModel):
        super().__init__()
        self.model = model

    @staticmethod
    def _attention(attn, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, tokens, width = x.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(batch, tokens, heads, head_dim).transpose(1, 2)
        k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(batch, tokens, heads, head_dim).transpose(1, 2)
        v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias)
        v = v.view(batch, tokens, heads // 2, 2 * head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * head_dim**-0.5
        if mask is not None:
            scores = scores + mask
        maps = torch.softmax(scores, dim=-1).view(batch, heads // 2, 2, tokens, tokens)
        lambda_1 = torch.exp(torch.sum(attn.lambda_q1 * attn.lambda_k1))
        lambda_2 = torch.exp(torch.sum(attn.lambda_q2 * attn.lambda_k2))
        lambda_full = lambda_1 - lambda_2 + attn.lambda_init
        out = (maps[:, :, 0] - lambda_full * maps[:, :, 1]) @ v
        out = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + attn.diff_norm.eps) * attn.diff_norm.weight
        out = (out * (1 - attn.lambda_init)).transpose(1, 2).reshape(batch, tokens, width)
        return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)

    def _blocks(self, layers, x, mask, activation):
        for layer in layers:
            h = F.layer_norm(x, (x.shape[-1],), layer.layer_norm1.weight, layer.layer_norm1.bias, 1e-5)
            x = x + self._attention(layer.self_attn, h, mask)
            h = F.layer_norm(x, (x.shape[-1],), layer.layer_norm2.weight, layer.layer_norm2.bias, 1e-5)
            h = activation(F.linear(h, layer.mlp.fc1.weight, layer.mlp.fc1.bias))
            x = x + F.linear(h, layer.mlp.fc2.weight, layer.mlp.fc2.bias)
        return x

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tower = self.model.vision_model
        embeddings = tower.embeddings
        patch = embeddings.patch_embedding
        x = F.conv2d(pixel_values, patch.weight, patch.bias, stride=patch.stride).flatten(2).transpose(1, 2)
        cls = embeddings.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + embeddings.position_embedding.weight
        x = self._blocks(tower.encoder.layers, x, None, F.gelu)
        x = F.layer_norm(x, (x.shape[-1],), tower.post_layernorm.weight, tower.post_layernorm.bias, 1e-5)
        return self.model.visual_projection(x[:, 0])

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        tower = self.model.text_model
        if input_ids.shape[1] != CONTEXT_LENGTH:
            raise ValueError(f"the original formulation always runs {CONTEXT_LENGTH} tokens")
        x = tower.embeddings.token_embedding(input_ids) + tower.embeddings.position_embedding.weight
        mask = torch.full((CONTEXT_LENGTH, CONTEXT_LENGTH), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        x = self._blocks(tower.encoder.layers, x, mask, lambda h: h * torch.sigmoid(1.702 * h))
        norm = tower.final_layer_norm
        x = F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, 1e-5)
        pooled = x[torch.arange(x.shape[0], device=x.device), input_ids.argmax(dim=-1)]
        return self.model.text_projection(pooled)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.encode_image(pixel_values), dim=-1)
        text = F.normalize(self.encode_text(input_ids), dim=-1)
        return self.model.logit_scale.exp() * image @ text.t()


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def interleaved_times(
    functions: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function: after `warmup` calls each, `repeats` rounds that call every function
    once in turn, so slow drifts of the machine hit all of them alike."""
    sync = synchronize or (lambda: None)
    for function in functions.values():
        for _ in range(warmup):
            function()
    sync()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            sync()
            start = time.perf_counter()
            function()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: dict[str, list[float]], baseline: str | None = None) -> dict[str, dict]:
    """Median, spread and (against `baseline`) the median of the per-round time ratios."""
    summary = {}
    for name, values in times.items():
        entry = {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "spread": (max(values) - min(values)) / statistics.median(values),
            "repeats": len(values),
        }
        if baseline is not None and name != baseline:
            ratios = [a / b for a, b in zip(values, times[baseline])]
            entry["ratio_to_" + baseline] = statistics.median(ratios)
        summary[name] = entry
    return summary


def cpu_peak_memory(function: Callable[[], object]) -> int:
    """Peak bytes of tensors allocated during one call and alive at once (weights and inputs excluded), from the
    allocator records of the PyTorch profiler. Buffers a fused kernel allocates outside the tensor allocator (oneDNN
    scratch pads) are not seen."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def count_flops(function: Callable[[], object]) -> int:
    """FLOPs of one call as PyTorch's FlopCounterMode counts them (matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest row-wise cosine similarity of two embedding batches, in float64."""
    return float(F.cosine_similarity(a.double(), b.double(), dim=-1).min())


def features(output) -> torch.Tensor:
    """`get_*_features` returns a tensor on transformers 4.x and a `BaseModelOutputWithPooling` on 5.x."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def cpu_description() -> dict:
    """The CPU model, core count and the instruction-set flags that decide which dtypes are fast."""
    model_name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model_name in ("unknown", "", "x86_64"):
                model_name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    interesting = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "amx_fp16")
    return {
        "model": model_name,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "flags": {flag: flag in flags for flag in interesting},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def environment() -> dict:
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_json(path: str | os.PathLike, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_bytes(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
