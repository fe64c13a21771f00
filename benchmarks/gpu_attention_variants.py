# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Which way of running differential attention through PyTorch's SDPA is fastest on a CUDA GPU: each strategy is
swapped into DiffCLIP's attention layers in turn and the whole image and text towers are timed against
transformers' CLIPModel in the same interleaved rounds (bf16). Also records which SDPA backends accept each shape
and a profiler breakdown of one forward of each tower. An experiment that chose the model's CUDA path; not part of
the benchmark tables.

    python benchmarks/gpu_attention_variants.py --output variants.json
    python benchmarks/gpu_attention_variants.py --dry-run --output /tmp/v.json   # tiny models on the CPU

Strategies besides the package's own path (q/k heads of width d in pairs, values 2d wide per pair):
  regrouped_v2d       heads regrouped [first | second], values repeated, one call with 2d-wide values
  two_calls           as above, but two calls with d-wide value halves (flash-eligible)
  regrouped_padded    q/k zero-padded to 2d so every head width is equal, one call (flash-eligible)
  interleaved_v2d     heads kept interleaved (views, no regrouping copy), values repeated per head, one call
  interleaved_padded  interleaved heads, q/k zero-padded to 2d, one call
  interleaved_two_calls  interleaved heads, two calls with d-wide value halves (flash-eligible)
  combined_maps       both maps written out and combined before the value product (the CPU path's
                      arithmetic, without its chunking)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from transformers_diffclip.modeling_diffclip import DiffCLIPDifferentialAttention  # noqa: E402


ORIGINAL_FORWARD = DiffCLIPDifferentialAttention.forward


def _sdpa(self, q, k, v):
    return F.scaled_dot_product_attention(q, k, v, scale=self.scaling, is_causal=self.is_causal)


def _regrouped(self, hidden_states):
    b, s, _ = hidden_states.shape
    p, d = self.num_pairs, self.head_dim
    q = self.q_proj(hidden_states).view(b, s, p, 2, d)
    k = self.k_proj(hidden_states).view(b, s, p, 2, d)
    q = torch.cat([q[:, :, :, 0], q[:, :, :, 1]], dim=2).transpose(1, 2)
    k = torch.cat([k[:, :, :, 0], k[:, :, :, 1]], dim=2).transpose(1, 2)
    v = self.v_proj(hidden_states).view(b, s, p, 2 * d).transpose(1, 2)
    return q, k, v


def _interleaved(self, hidden_states):
    b, s, _ = hidden_states.shape
    p, d = self.num_pairs, self.head_dim
    q = self.q_proj(hidden_states).view(b, s, 2 * p, d).transpose(1, 2)
    k = self.k_proj(hidden_states).view(b, s, 2 * p, d).transpose(1, 2)
    v = self.v_proj(hidden_states).view(b, s, p, 2 * d).repeat_interleave(2, dim=2).transpose(1, 2)
    return q, k, v


def _finish(self, out_1, out_2, shape):
    """out_1, out_2: (batch, pairs, seq, 2d)."""
    combined = torch.addcmul(out_1, out_2, self.lambda_full(), value=-1).transpose(1, 2)
    combined = self.diff_norm(combined, scale=1 - self.lambda_init)
    return self.out_proj(combined.reshape(shape)), None


def _one_call(interleaved: bool, padded: bool):
    """A forward that runs both maps in one SDPA call: heads regrouped [first | second] by copying, or kept
    interleaved (views; values repeated per head); q/k optionally zero-padded to 2d (equal widths everywhere)."""

    def forward(self, hidden_states, attention_mask=None, output_attentions=False, **kwargs):
        p, d = self.num_pairs, self.head_dim
        if interleaved:
            q, k, v = _interleaved(self, hidden_states)
        else:
            q, k, v = _regrouped(self, hidden_states)
            v = v.repeat(1, 2, 1, 1)
        if padded:
            q, k = F.pad(q, (0, d)), F.pad(k, (0, d))
        out = _sdpa(self, q, k, v)
        first, second = (out[:, 0::2], out[:, 1::2]) if interleaved else (out[:, :p], out[:, p:])
        return _finish(self, first, second, hidden_states.shape)

    return forward


def two_calls(self, hidden_states, attention_mask=None, output_attentions=False, **kwargs):
    q, k, v = _regrouped(self, hidden_states)
    p, d = self.num_pairs, self.head_dim
    v = v.repeat(1, 2, 1, 1)
    out = torch.cat([_sdpa(self, q, k, v[..., :d].contiguous()), _sdpa(self, q, k, v[..., d:].contiguous())], -1)
    return _finish(self, out[:, :p], out[:, p:], hidden_states.shape)


def interleaved_two_calls(self, hidden_states, attention_mask=None, output_attentions=False, **kwargs):
    b, s, _ = hidden_states.shape
    p, d = self.num_pairs, self.head_dim
    q = self.q_proj(hidden_states).view(b, s, 2 * p, d).transpose(1, 2)
    k = self.k_proj(hidden_states).view(b, s, 2 * p, d).transpose(1, 2)
    v = self.v_proj(hidden_states).view(b, s, p, 1, 2, d)
    halves = [v[..., j, :].expand(b, s, p, 2, d).reshape(b, s, 2 * p, d).transpose(1, 2) for j in (0, 1)]
    out = torch.cat([_sdpa(self, q, k, half) for half in halves], dim=-1)
    return _finish(self, out[:, 0::2], out[:, 1::2], hidden_states.shape)


def combined_maps(self, hidden_states, attention_mask=None, output_attentions=False, **kwargs):
    b, s, _ = hidden_states.shape
    p, d = self.num_pairs, self.head_dim
    q = self.q_proj(hidden_states).view(b, s, 2 * p, d).transpose(1, 2)
    k = self.k_proj(hidden_states).view(b, s, 2 * p, d).transpose(1, 2)
    v = self.v_proj(hidden_states).view(b, s, p, 2 * d).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) * self.scaling
    if self.is_causal:
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    maps = torch.softmax(scores, dim=-1, dtype=torch.float32).view(b, p, 2, s, s)
    combined = (maps[:, :, 0] - self.lambda_full() * maps[:, :, 1]).to(v.dtype) @ v
    combined = self.diff_norm(combined.transpose(1, 2), scale=1 - self.lambda_init)
    return self.out_proj(combined.reshape(hidden_states.shape)), None


STRATEGIES = {
    "package": ORIGINAL_FORWARD,
    "regrouped_v2d": _one_call(interleaved=False, padded=False),
    "two_calls": two_calls,
    "regrouped_padded": _one_call(interleaved=False, padded=True),
    "interleaved_v2d": _one_call(interleaved=True, padded=False),
    "interleaved_padded": _one_call(interleaved=True, padded=True),
    "interleaved_two_calls": interleaved_two_calls,
    "combined_maps": combined_maps,
}


def backend_support(device, dtype, tiny: bool) -> dict:
    """Which SDPA backends accept (heads of d, values of 2d), (all d) and (all 2d), non-causal and causal."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    d = 16 if tiny else 64
    shapes = {"qk_d_v_2d": (d, 2 * d), "all_d": (d, d), "all_2d": (2 * d, 2 * d)}
    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    result = {}
    for shape_name, (dqk, dv) in shapes.items():
        q = torch.randn(2, 4, 77, dqk, device=device, dtype=dtype)
        v = torch.randn(2, 4, 77, dv, device=device, dtype=dtype)
        for causal in (False, True):
            for backend_name, backend in backends.items():
                try:
                    with sdpa_kernel([backend]):
                        F.scaled_dot_product_attention(q, q, v, is_causal=causal)
                    ok = True
                except RuntimeError:
                    ok = False
                result[f"{shape_name}{'_causal' if causal else ''}:{backend_name}"] = ok
    return result


def profile(function, device, rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode():
        function()
        with torch_profile(activities=activities) as prof:
            function()
            if device.type == "cuda":
                torch.cuda.synchronize()
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--image-batch", type=int, default=128)
    parser.add_argument("--text-batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.image_batch, args.text_batch, args.rounds, args.iterations = 2, 4, 1, 1
    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.bfloat16
    started = time.perf_counter()

    from benchmark_gpu import Timer

    timer = Timer(device)
    clip = common.build(common.CLIPModel, common.clip_config(args.dry_run), "sdpa", dtype=dtype, device=device)
    diffclip = common.build(
        common.DiffCLIPModel, common.diffclip_config(args.dry_run), "sdpa", dtype=dtype, device=device
    )
    reference = common.build(
        common.DiffCLIPModel, common.diffclip_config(args.dry_run), "eager", dtype=torch.float32, device=device
    )
    reference.load_state_dict({k: v.float() for k, v in diffclip.state_dict().items()})
    pixels = common.pixel_batch(args.image_batch, device=device)
    ids = common.random_ids(args.text_batch, [common.CONTEXT_LENGTH]).to(device)
    workloads = {
        "images_224": (lambda m: m.get_image_features(pixel_values=pixels.to(m.dtype)), args.image_batch),
        "texts_77": (lambda m: m.get_text_features(input_ids=ids), args.text_batch),
    }
    result = {"backends": backend_support(device, dtype, args.dry_run), "workloads": {}, "profiles": {}}
    print("SDPA backends:", result["backends"], file=sys.stderr, flush=True)

    for workload, (call, batch) in workloads.items():
        with torch.inference_mode():
            expected = common.features(call(reference))[:8]
            functions, cosines = {"clip": lambda call=call: call(clip)}, {}
            for name, forward in STRATEGIES.items():
                DiffCLIPDifferentialAttention.forward = forward
                cosines[name] = common.cosine(common.features(call(diffclip))[:8], expected)

                def run(forward=forward, call=call):
                    DiffCLIPDifferentialAttention.forward = forward
                    return call(diffclip)

                functions[name] = run
            for function in functions.values():
                for _ in range(3):
                    function()
            seconds = {name: [] for name in functions}
            for _ in range(args.rounds):
                for name, function in functions.items():
                    seconds[name].append(timer(function, args.iterations))
        clip_seconds = seconds["clip"]
        rows = {}
        for name, values in seconds.items():
            rows[name] = {
                "per_second": batch / statistics.median(values),
                "speed_vs_clip": statistics.median(c / v for c, v in zip(clip_seconds, values)),
                "cosine_to_fp32_eager": cosines.get(name),
            }
            print(
                f"{workload:10s} {name:18s} {rows[name]['per_second']:9.0f}/s  vs CLIP "
                f"{rows[name]['speed_vs_clip']:.3f}  cos {cosines.get(name, 1.0):.5f}",
                file=sys.stderr,
                flush=True,
            )
        result["workloads"][workload] = rows
        DiffCLIPDifferentialAttention.forward = ORIGINAL_FORWARD
        result["profiles"][workload] = {
            "clip": profile(lambda call=call: call(clip), device),
            "diffclip": profile(lambda call=call: call(diffclip), device),
        }
    DiffCLIPDifferentialAttention.forward = ORIGINAL_FORWARD
    for workload, tables in result["profiles"].items():
        for name, table in tables.items():
            print(f"\n== profile {workload} {name}\n{table}")
    result["runtime_s"] = time.perf_counter() - started
    result["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)"
    result["environment"] = common.environment()
    common.write_json(Path(args.output), result)
    print(f"wrote {args.output} in {result['runtime_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
