"""Tiny parts of an assistant, built by the tests: a DiffCLIP folder (tests/_helpers.py's tiny config, 32 px
images, patch 8: 16 patch tokens), a Llama-architecture causal LM (hidden 32, 2 layers) with a word-level tokenizer
made with the `tokenizers` library and a chat template, and toy LLaVA-format data of colour squares."""

from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _helpers import COLOURS, colour_image, tiny_config, tiny_processor  # noqa: E402


SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
WORDS = sorted(
    set(COLOURS)
    | set("a square is there in the image yes no not sure what colour ? . , USER ASSISTANT : Nope".split())
    | set("Answer question using single word or phrase".split())
)
# A Vicuna-like template: every turn prefixed by its speaker; the assistant's turns end with </s>.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}ASSISTANT : {{ m['content'] }} </s> "
    "{% else %}USER : {{ m['content'] }} {% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT :{% endif %}"
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )


def tiny_language_model(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


def write_language_model(folder: Path) -> Path:
    model, tokenizer = tiny_language_model()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_diffclip(folder: Path, differential: bool = True) -> Path:
    import torch

    from transformers_diffclip import DiffCLIPModel

    torch.manual_seed(1)
    DiffCLIPModel(tiny_config(diff_text=differential, diff_vision=differential)).save_pretrained(folder)
    tiny_processor(image_size=32).save_pretrained(folder)
    return folder


def write_toy_data(folder: Path) -> dict[str, Path]:
    """`images/<colour>.png`, `align.json` (one caption per image), `tune.json` (a yes/no question per image, and a
    text-only row) in LLaVA's layouts."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    align, tune = [], []
    names = list(COLOURS)
    for index, (name, rgb) in enumerate(COLOURS.items()):
        colour_image(rgb, seed=index).save(images / f"{name}.png")
        align.append(
            {
                "id": f"a{index}",
                "image": f"{name}.png",
                "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": f"a {name} square"}],
            }
        )
        other = names[(index + 1) % len(names)]
        for asked, answer in ((name, "yes"), (other, "no")):
            tune.append(
                {
                    "id": f"t{index}{asked}",
                    "image": f"{name}.png",
                    "conversations": [
                        {"from": "human", "value": f"<image>\nis there a {asked} square in the image ?"},
                        {"from": "gpt", "value": answer},
                    ],
                }
            )
    tune.append(
        {"id": "text", "conversations": [{"from": "human", "value": "what colour ?"}, {"from": "gpt", "value": "red"}]}
    )
    (folder / "align.json").write_text(json.dumps(align))
    (folder / "tune.json").write_text(json.dumps(tune))
    return {"images": images, "align": folder / "align.json", "tune": folder / "tune.json"}
