# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Stage-1 (`diffclip-llava align`) training throughput with the DiffCLIP vision tower against transformers'
`CLIPVisionModel` of the same size, under the same recipe: the tower and the language model frozen, the projector
trained, plain-template batches (the image tokens, then a caption). Both assistants share one language model and are
timed in interleaved rounds, so a loaded machine slows both alike; the figure is the ratio of the medians.

    python benchmarks/llava_stage1.py                          # small sizes, CPU
    python benchmarks/llava_stage1.py --width 768 --layers 12 --heads 12 --image-size 224 --patch-size 16 \
        --lm-hidden 2048 --lm-layers 16 --batch 8 --device cuda   # ViT-B/16 and a ~1B language model
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from transformers_diffclip import DiffCLIPVisionConfig, DiffCLIPVisionModel
from transformers_diffclip.assistant import assemble_assistant, set_trainable
from transformers_diffclip.image_processing_diffclip import DiffCLIPImageProcessor


def _tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {f"w{i}": i for i in range(vocab - 4)} | {"<pad>": vocab - 4, "<unk>": vocab - 3, "</s>": vocab - 2}
    backend = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--lm-hidden", type=int, default=128)
    parser.add_argument("--lm-layers", type=int, default=2)
    parser.add_argument("--caption-tokens", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    tower = dict(
        hidden_size=args.width,
        intermediate_size=4 * args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        image_size=args.image_size,
        patch_size=args.patch_size,
    )
    towers = {
        "diffclip": DiffCLIPVisionModel(DiffCLIPVisionConfig(**tower)),
        "clip": CLIPVisionModel(CLIPVisionConfig(**tower)),
    }
    size = {"shortest_edge": args.image_size}
    image_processor = DiffCLIPImageProcessor(
        size=size, crop_size={"height": args.image_size, "width": args.image_size}
    )
    lm_config = LlamaConfig(
        hidden_size=args.lm_hidden,
        intermediate_size=4 * args.lm_hidden,
        num_hidden_layers=args.lm_layers,
        num_attention_heads=max(args.lm_hidden // 64, 1),
        vocab_size=1004,
    )
    language_model = LlamaForCausalLM(lm_config)
    assistants = {}
    for name, vision in towers.items():
        model, processor = assemble_assistant(vision, image_processor, language_model, _tokenizer(1004))
        set_trainable(model, "align")
        model.to(args.device).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        assistants[name] = (model, optimizer)
    image_tokens = model.config.image_seq_length
    image_id = model.config.image_token_id
    input_ids = torch.cat(
        [torch.full((args.batch, image_tokens), image_id), torch.randint(0, 1000, (args.batch, args.caption_tokens))],
        dim=1,
    ).to(args.device)
    labels = input_ids.clone()
    labels[:, :image_tokens] = -100
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, device=args.device)

    def step(name: str) -> float:
        model, optimizer = assistants[name]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(input_ids=input_ids, pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in assistants:
        step(name)  # warm-up
    times = {name: [] for name in assistants}
    for _ in range(args.steps):
        for name in assistants:
            times[name].append(step(name))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name}: {median * 1000:.1f} ms/step, {args.batch / median:.1f} rows/s")
    print(
        f"stage-1 step time DiffCLIP / CLIP: {medians['diffclip'] / medians['clip']:.3f} (one run, {args.steps} steps)"
    )


if __name__ == "__main__":
    main()
