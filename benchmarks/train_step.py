# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Training-step throughput and peak memory of DiffCLIP, with and without gradient checkpointing, and with the
contrastive loss computed in chunks (GradCache, `--contrastive_chunk_size`).

One step is what `DiffCLIPTrainer` does per batch: forward of both towers, the contrastive loss
(`distributed_contrastive_loss`), backward, AdamW step, logit-scale clamp. The model is the released DiffCLIP
ViT-B/16 architecture (149.6 M parameters, random weights), inputs are random: 224×224 images and 77-token captions,
as the original trains.

Each mode runs in a fresh child process so that its peak memory is its own:

- CUDA: `torch.cuda.max_memory_allocated()` — the peak of tensors allocated by PyTorch (weights, gradients, AdamW
  state and activations), and the memory still allocated between steps (weights, gradients, optimizer state).
- CPU: the process's peak resident set size (`ru_maxrss` from `resource.getrusage`; it includes the Python
  interpreter and libraries, about 0.4-0.6 GiB) and the resident set size between steps (`VmRSS`). tracemalloc
  would not see PyTorch's allocations, which bypass Python's allocator.

    python benchmarks/train_step.py                      # CPU or the first GPU, batch 8, both modes
    python benchmarks/train_step.py --device cuda --dtype bfloat16 --steps 20 --warmup 5
    python benchmarks/train_step.py --modes off --chunk_sizes 0,16,8,4 --batch_size 32   # peak falls with the chunk

With a chunk size (0 = the whole batch at once), the step is `chunked_contrastive_backward`: embeddings of every
chunk without gradients, the loss of the whole batch, then every chunk again with its embedding gradients.

Throughput on a machine shared with other work is noisy: the script prints the load average it started with.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_gib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _child(args) -> dict:
    import torch
    from transformers import AutoModel

    import transformers_diffclip
    from transformers_diffclip.training import (
        LogitScaleClampCallback,
        chunked_contrastive_backward,
        distributed_contrastive_loss,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = transformers_diffclip.DiffCLIPConfig()  # DiffCLIP ViT-B/16
    model = AutoModel.from_config(config, attn_implementation=args.attn_implementation).to(device)
    model.train()
    if args.mode == "on":
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    clamp = LogitScaleClampCallback()

    batch = args.batch_size
    vision, text = config.vision_config, config.text_config
    pixel_values = torch.randn(batch, 3, vision.image_size, vision.image_size, device=device)
    input_ids = torch.randint(1, text.vocab_size - 2, (batch, text.max_position_embeddings), device=device)
    input_ids[:, 0] = text.bos_token_id
    input_ids[:, -1] = text.eos_token_id
    autocast = torch.autocast(device.type, dtype=getattr(torch, args.dtype), enabled=args.dtype != "float32")

    def step():
        if args.chunk:
            inputs = {"input_ids": input_ids, "pixel_values": pixel_values}
            loss = chunked_contrastive_backward(model, inputs, args.chunk, forward_context=lambda: autocast)
        else:
            with autocast:
                outputs = model(input_ids=input_ids, pixel_values=pixel_values)
                loss = distributed_contrastive_loss(outputs.image_embeds, outputs.text_embeds, model.logit_scale)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        clamp.on_optimizer_step(None, None, None, model=model)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    held = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else _rss_gib()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        memory = "torch.cuda.max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        memory = "peak RSS (ru_maxrss)"
    seconds = sum(times) / len(times)
    return {
        "checkpointing": args.mode,
        "chunk_size": args.chunk or batch,
        "samples_per_s": batch / seconds,
        "s_per_step": seconds,
        "s_per_step_min": min(times),
        "s_per_step_max": max(times),
        "peak_gib": peak,
        "between_steps_gib": held,
        "memory": memory,
        "loss": float(loss),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (they allocate AdamW state)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="autocast")
    parser.add_argument("--attn_implementation", default="sdpa", choices=["eager", "sdpa", "flash_attention_2"])
    parser.add_argument("--modes", default="off,on", help="gradient checkpointing modes to run, in order")
    parser.add_argument(
        "--chunk_sizes", default="0", help="contrastive chunk sizes to run per mode, 0 = unchunked (e.g. 0,8,4)"
    )
    parser.add_argument("--_chunk", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per mode instead of a table")
    parser.add_argument("--_mode", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    if args._mode is not None:
        args.mode, args.chunk = args._mode, args._chunk
        print(json.dumps(_child(args)))
        return 0

    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or any(mode not in ("off", "on") for mode in modes):
        parser.error(f"--modes must list 'off' and/or 'on', got {args.modes!r}")
    try:
        chunks = [int(chunk) for chunk in args.chunk_sizes.split(",") if chunk.strip()]
    except ValueError:
        chunks = [-1]
    if not chunks or any(chunk < 0 for chunk in chunks):
        parser.error(f"--chunk_sizes must list integers >= 0, got {args.chunk_sizes!r}")
    load = os.getloadavg()
    print(
        f"DiffCLIP ViT-B/16 training step, batch {args.batch_size}, device {args.device}, autocast {args.dtype}, "
        f"attention {args.attn_implementation}, {args.warmup} warm-up + {args.steps} timed steps per mode; "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    forwarded = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--json"]
    rows = []
    for mode, chunk in [(mode, chunk) for mode in modes for chunk in chunks]:
        command = [sys.executable, os.path.abspath(__file__), *forwarded, "--device", args.device, "--_mode", mode]
        command += ["--_chunk", str(chunk)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            return done.returncode
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        if args.json:
            print(json.dumps(row))
    if not args.json:
        print(
            f"{'checkpointing':>13} {'chunk':>6} {'samples/s':>10} {'s/step (min-max)':>20} {'peak GiB':>9} "
            f"{'held GiB':>9}  memory"
        )
        for row in rows:
            spread = f"{row['s_per_step']:.3f} ({row['s_per_step_min']:.3f}-{row['s_per_step_max']:.3f})"
            print(
                f"{row['checkpointing']:>13} {row['chunk_size']:>6} {row['samples_per_s']:>10.2f} {spread:>20} "
                f"{row['peak_gib']:>9.2f} "
                f"{row['between_steps_gib']:>9.2f}  {row['memory']}, {row['device']}, {row['threads']} threads"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
