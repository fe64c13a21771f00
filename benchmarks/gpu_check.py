# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Correctness of DiffCLIP's CUDA attention paths against eager float32 on the same GPU: the test suite runs on the
CPU only, so this is where the CUDA sdpa path (one kernel call per softmax map) is checked. ViT-B/16 sizes, random
weights with λ vectors away from zero, TF32 off. Prints one line per check and exits non-zero if any fails.

    python benchmarks/gpu_check.py                           # seconds on one GPU
    python benchmarks/gpu_check.py --device cpu --tiny       # a smoke test of the script itself
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from transformers_diffclip.modeling_diffclip import DiffCLIPDifferentialAttention  # noqa: E402


def build(attn: str, dtype: torch.dtype, state: dict | None, device: str, tiny: bool):
    model = common.build(common.DiffCLIPModel, common.diffclip_config(tiny), attn, dtype=dtype, device=device)
    if state is None:
        generator = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, DiffCLIPDifferentialAttention):
                    for vector in (module.lambda_q1, module.lambda_k1, module.lambda_q2, module.lambda_k2):
                        vector.normal_(std=0.3, generator=generator)
    else:
        model.load_state_dict(state)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a smoke test)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA device (or --device cpu for a smoke test)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device, tiny = args.device, args.tiny
    eager = build("eager", torch.float32, None, device, tiny)
    state = {k: v.clone() for k, v in eager.state_dict().items()}
    pixels = common.pixel_batch(8, device=device)
    ids = common.random_ids(8, [77, 30, 12, 5, 77, 9, 40, 2]).to(device)
    failures = []

    def check(name, got, want, limit):
        error = (got.double() - want.double()).abs().max().item()
        ok = error <= limit
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max |diff| {error:.2e} (limit {limit:.0e})", flush=True)
        if not ok:
            failures.append(name)

    def cos(name, got, want, limit):
        value = torch.nn.functional.cosine_similarity(got.double(), want.double(), dim=-1).min().item()
        ok = value >= limit
        print(f"{'ok  ' if ok else 'FAIL'} {name}: min cosine {value:.6f} (limit {limit})", flush=True)
        if not ok:
            failures.append(name)

    with torch.no_grad():
        want = eager(input_ids=ids, pixel_values=pixels)
        want_maps = eager.vision_model(pixel_values=pixels, output_attentions=True).attentions
    sdpa = build("sdpa", torch.float32, state, device, tiny)
    with torch.no_grad():
        got = sdpa(input_ids=ids, pixel_values=pixels)
        got_maps = sdpa.vision_model(pixel_values=pixels, output_attentions=True).attentions
    check("fp32 sdpa image embeddings", got.image_embeds, want.image_embeds, 1e-5)
    check("fp32 sdpa text embeddings", got.text_embeds, want.text_embeds, 1e-5)
    check("fp32 sdpa logits", got.logits_per_image, want.logits_per_image, 1e-3)
    check("fp32 sdpa maps (output_attentions)", torch.stack(got_maps), torch.stack(want_maps), 1e-6)

    # gradients through the CUDA path (what Trainer runs) against eager
    for model in (eager, sdpa):
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, pixel_values=pixels, return_loss=True).loss.backward()
    checked = (
        "vision_model.encoder.layers.1.self_attn.q_proj.weight",
        "text_model.encoder.layers.1.self_attn.lambda_q2",
    )
    for name in checked:
        got_grad = dict(sdpa.named_parameters())[name].grad
        want_grad = dict(eager.named_parameters())[name].grad
        scale = want_grad.abs().max().item()
        check(f"fp32 sdpa gradient {name} (relative)", got_grad / scale, want_grad / scale, 1e-4)

    for dtype, limit in ((torch.bfloat16, 0.995), (torch.float16, 0.9999)):
        half = build("sdpa", dtype, state, device, tiny)
        with torch.no_grad():
            out = half(input_ids=ids, pixel_values=pixels.to(dtype))
        cos(f"{dtype} sdpa image embeddings", out.image_embeds, want.image_embeds, limit)
        cos(f"{dtype} sdpa text embeddings", out.text_embeds, want.text_embeds, limit)
        del half
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
