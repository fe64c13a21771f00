"""Writes attention_paths.json: what every attention path of the model computed before the kernel table (main at
b944eaf), for tests/model/test_fast_paths.py::test_every_path_equals_the_recorded_outputs.

Run once with that code on the path: `git show b944eaf:src/... ` or a checkout of b944eaf:
    PYTHONPATH=<checkout of b944eaf>/src python tests/golden/write_attention_paths.py
The models load fixed weights (conversion/reference_original.make_original_state_dict), so the file does not depend on
how a fresh model is initialised.
"""

import json
import sys
from pathlib import Path

import torch


HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "conversion")]

from _helpers import TINY, original_to_hf, text_batch, tiny_config  # noqa: E402
from reference_original import make_original_state_dict  # noqa: E402
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: E402

from transformers_diffclip import DiffCLIPModel  # noqa: E402


VARIANTS = {
    "diffclip": (True, True, "constant"),
    "clip_baseline": (False, False, "constant"),
    "diffclip_dagger": (False, True, "constant"),
    "diffclip_star": (True, True, "depth"),
}


def build(variant: str, implementation: str) -> DiffCLIPModel:
    diff_text, diff_vision, schedule = VARIANTS[variant]
    original = make_original_state_dict(diff_text=diff_text, diff_vision=diff_vision, seed=0, **TINY)
    config = tiny_config(diff_text, diff_vision, schedule)
    model = DiffCLIPModel._from_config(config, attn_implementation="eager").eval()
    model.load_state_dict(original_to_hf(original, diff_text, diff_vision), strict=True)
    for sub in (model.config, model.config.text_config, model.config.vision_config):
        sub._attn_implementation = implementation
    return model


def pixels(batch=2, size=32, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def outputs(model, output_attentions=False) -> dict:
    with torch.no_grad():
        out = model(input_ids=text_batch(), pixel_values=pixels(), output_attentions=output_attentions)
    record = {
        "text_embeds": out.text_embeds,
        "image_embeds": out.image_embeds,
        "text_pooled": out.text_model_output.pooler_output,
        "vision_tokens": out.vision_model_output.last_hidden_state[:, :5],
    }
    if output_attentions:
        record["vision_maps"] = out.vision_model_output.attentions[-1]
        record["text_maps"] = out.text_model_output.attentions[-1][:, :, :12, :12]
    return {name: [float(f"{v:.8g}") for v in t.flatten().tolist()] for name, t in record.items()} | {
        name + "_shape": list(t.shape) for name, t in record.items()
    }


def main() -> None:
    # stand-ins: "per_map" is the fused path that sdpa takes off the CPU (2d-wide values, one call per map);
    # "value_halves" the flash path (d-wide values)
    ALL_ATTENTION_FUNCTIONS._global_mapping["fused_stand_in"] = sdpa_attention_forward
    ALL_ATTENTION_FUNCTIONS._global_mapping["flash_attention_2"] = sdpa_attention_forward
    golden = {}
    for variant in VARIANTS:
        golden[variant] = {
            "eager": outputs(build(variant, "eager")),
            "eager_maps": outputs(build(variant, "eager"), output_attentions=True),
            "sdpa_cpu": outputs(build(variant, "sdpa")),
            "per_map": outputs(build(variant, "fused_stand_in")),
            "value_halves": outputs(build(variant, "flash_attention_2")),
        }
    (HERE / "attention_paths.json").write_text(json.dumps(golden, separators=(",", ":")) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
