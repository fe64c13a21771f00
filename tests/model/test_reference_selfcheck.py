"""Fast self-checks of conversion/reference_original.py (the independent reference of the original model).

These do not need transformers_diffclip.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import TINY as SHARED_TINY
from PIL import Image


try:
    import reference_original as ref
except ModuleNotFoundError:  # e.g. pytest --import-mode=importlib, or tests/ made a package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import reference_original as ref

SHARED = Path(__file__).resolve().parents[3] / "shared"
BPE_PATH = SHARED / "data" / "bpe_simple_vocab_16e6.txt.gz"
LAYOUT_PATH = SHARED / "reference" / "original_layout.json"

# the shared tiny sizes with a 100-token vocabulary, so random ids exercise the end-of-text id often
TINY = dict(SHARED_TINY, vocab_size=100)
EOT = TINY["vocab_size"] - 1


def tiny_state_dict(diff_vision=True, diff_text=True, seed=0, dtype=torch.float64, **overrides):
    return ref.make_original_state_dict(
        diff_vision=diff_vision, diff_text=diff_text, seed=seed, dtype=dtype, **{**TINY, **overrides}
    )


def tiny_forward(sd, input_ids=None, pixel_values=None, diff_vision=True, diff_text=True, **kwargs):
    return ref.original_forward(
        sd,
        input_ids,
        pixel_values,
        vision_heads=TINY["vision_heads"],
        text_heads=TINY["text_heads"],
        diff_vision=diff_vision,
        diff_text=diff_text,
        **kwargs,
    )


def tiny_inputs(seed=0, batch_text=3, batch_image=2, length=12, eot_at=(5, 9, 11)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, EOT, (batch_text, length), generator=g)
    for row, pos in enumerate(eot_at[:batch_text]):
        ids[row, pos] = EOT
        ids[row, pos + 1 :] = 0
    pixels = torch.randn(batch_image, 3, TINY["image_size"], TINY["image_size"], generator=g, dtype=torch.float64)
    return ids, pixels


def layer_lambda(sd, key_prefix, lambda_init):
    sd = ref.strip_prefix(sd)
    q1, k1 = sd[key_prefix + "lambda_q1"], sd[key_prefix + "lambda_k1"]
    q2, k2 = sd[key_prefix + "lambda_q2"], sd[key_prefix + "lambda_k2"]
    return math.exp(float((q1 * k1).sum())) - math.exp(float((q2 * k2).sum())) + lambda_init


# ------------------------------------------------------------------------------------------ layout


needs_layout = pytest.mark.skipif(
    not LAYOUT_PATH.exists(),
    reason=f"original_layout.json not found at {LAYOUT_PATH} (keep ../shared beside the checkout)",
)


@needs_layout
@pytest.mark.parametrize(
    "kind,diff,n_params",
    [("DiffCLIP_VITB16", True, 149_629_185), ("CLIP_VITB16", False, 149_619_969)],
)
def test_full_size_layout_and_parameter_count(kind, diff, n_params):
    sd = ref.make_original_state_dict(diff_vision=diff, diff_text=diff, shapes_only=True)
    assert all(k.startswith("module.") for k in sd)
    assert ref.layout_matches(sd, kind, LAYOUT_PATH) == []
    assert ref.count_parameters(sd) == n_params
    layout = ref.load_layout(kind, LAYOUT_PATH)
    assert layout["num_parameters"] == n_params
    assert layout["num_tensors"] == len(sd)
    # key order follows the file too
    assert list(ref.strip_prefix(sd)) == list(layout["tensors"])


@needs_layout
def test_layout_matches_reports_differences():
    sd = ref.make_original_state_dict(shapes_only=True, prefix="")
    assert ref.layout_matches(sd, "CLIP_VITB16", LAYOUT_PATH) != []
    sd.pop("visual.blocks.3.attn.lambda_q2")
    sd["visual.norm.weight"] = torch.empty(767, device="meta")
    sd["extra"] = torch.empty(1, device="meta")
    diffs = ref.layout_matches(sd, "DiffCLIP_VITB16", LAYOUT_PATH)
    assert len(diffs) == 3
    assert any("visual.blocks.3.attn.lambda_q2" in d for d in diffs)
    assert any("visual.norm.weight" in d for d in diffs)
    assert any("extra" in d for d in diffs)


def test_mixed_variant_keys():
    sd = ref.make_original_state_dict(diff_vision=True, diff_text=False, shapes_only=True, prefix="")
    assert "visual.blocks.0.attn.lambda_q1" in sd and "visual.blocks.0.attn.qkv.weight" not in sd
    assert "transformer.resblocks.0.attn.in_proj_weight" in sd
    assert "transformer.resblocks.0.attn.q_proj.weight" not in sd


def test_random_state_dict_matches_shapes_and_dtype():
    meta = ref.make_original_state_dict(**TINY, shapes_only=True)
    real = ref.make_original_state_dict(**TINY, dtype=torch.bfloat16)
    assert list(meta) == list(real)
    assert all(meta[k].shape == real[k].shape for k in meta)
    assert all(t.dtype == torch.bfloat16 for t in real.values())
    assert torch.isclose(real["module.logit_scale"].float(), torch.tensor(math.log(1 / 0.07)), rtol=1e-2)
    again = ref.make_original_state_dict(**TINY, dtype=torch.bfloat16)
    assert all(torch.equal(real[k], again[k]) for k in real)
    other = ref.make_original_state_dict(**TINY, seed=1, dtype=torch.bfloat16)
    key = "module.visual.blocks.0.attn.q_proj.weight"
    assert not torch.equal(other[key], real[key])


# ------------------------------------------------------------------------------------------ forward


def test_forward_outputs_and_logits():
    sd = tiny_state_dict()
    ids, pixels = tiny_inputs()
    out = tiny_forward(sd, ids, pixels)
    assert out["image_embeds"].shape == (2, TINY["embed_dim"])
    assert out["text_embeds"].shape == (3, TINY["embed_dim"])
    assert out["vision_last_hidden"].shape == (2, 1 + (32 // 8) ** 2, 32)
    assert out["text_last_hidden"].shape == (3, 12, 32)
    assert torch.allclose(out["vision_pooled"], out["vision_last_hidden"][:, 0])
    assert torch.allclose(out["text_pooled"][1], out["text_last_hidden"][1, 9])
    scale = out["logit_scale"]
    assert torch.isclose(scale, torch.tensor(1 / 0.07, dtype=scale.dtype))
    cos = torch.nn.functional.cosine_similarity(out["image_embeds"][:, None], out["text_embeds"][None], dim=-1)
    assert torch.allclose(out["logits_per_image"], scale * cos)
    assert torch.equal(out["logits_per_text"], out["logits_per_image"].t())
    assert out["logits_per_image"].std() > 0.1  # non-trivial

    # prefix stripped or not: identical
    unprefixed = ref.strip_prefix(sd)
    out2 = tiny_forward(unprefixed, ids, pixels)
    assert torch.equal(out2["logits_per_image"], out["logits_per_image"])

    # towers run alone
    only_text = tiny_forward(sd, ids, None)
    assert "image_embeds" not in only_text and "logits_per_image" not in only_text
    assert torch.equal(only_text["text_embeds"], out["text_embeds"])
    only_image = tiny_forward(sd, None, pixels)
    assert "text_embeds" not in only_image and "logits_per_image" not in only_image
    assert torch.equal(only_image["image_embeds"], out["image_embeds"])


@pytest.mark.parametrize("diff_vision,diff_text", [(False, False), (True, False)])
def test_standard_attention_variants(diff_vision, diff_text):
    sd = tiny_state_dict(diff_vision=diff_vision, diff_text=diff_text)
    ids, pixels = tiny_inputs()
    out = tiny_forward(sd, ids, pixels, diff_vision=diff_vision, diff_text=diff_text, return_attentions=True)
    n_vision_maps = TINY["vision_heads"] // 2 if diff_vision else TINY["vision_heads"]
    assert out["vision_attentions"][0].shape == (2, n_vision_maps, 17, 17)
    for maps in out["text_attentions"]:
        assert maps.shape == (3, TINY["text_heads"], 12, 12)
        assert torch.allclose(maps.sum(-1), torch.ones((), dtype=maps.dtype))
        assert (maps >= 0).all()
        assert torch.all(maps.triu(1) == 0)  # causal


def test_vision_eps_default_depends_on_variant():
    _, pixels = tiny_inputs()
    for diff, eps in ((True, 1e-5), (False, 1e-6)):
        sd = tiny_state_dict(diff_vision=diff, diff_text=diff)
        default = tiny_forward(sd, None, pixels, diff_vision=diff, diff_text=diff)["image_embeds"]
        explicit = tiny_forward(sd, None, pixels, diff_vision=diff, diff_text=diff, vision_eps=eps)["image_embeds"]
        other = tiny_forward(sd, None, pixels, diff_vision=diff, diff_text=diff, vision_eps=eps * 10)["image_embeds"]
        assert torch.equal(default, explicit)
        assert not torch.equal(default, other)


def _zero_lambdas(sd):
    sd = dict(sd)
    for k in sd:
        if k.rsplit(".", 1)[-1] in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            sd[k] = torch.zeros_like(sd[k])
    return sd


def test_attention_rows_sum_to_one_minus_lambda():
    sd = tiny_state_dict()
    ids, pixels = tiny_inputs()
    schedule = ref.lambda_init_schedule(2, depth_scheduled=True)
    out = tiny_forward(sd, ids, pixels, lambda_init=schedule, return_attentions=True)
    for tower, prefix in (("vision", "visual.blocks.{}.attn."), ("text", "transformer.resblocks.{}.attn.")):
        maps = out[f"{tower}_attentions"]
        assert len(maps) == 2
        for layer, m in enumerate(maps):
            lam = layer_lambda(sd, prefix.format(layer), schedule[layer])
            assert abs(lam) > 0.05
            assert m.shape[1] == 2  # H/2 effective heads
            assert torch.allclose(m.sum(-1), torch.full((), 1 - lam, dtype=m.dtype))
            assert (m < 0).any()  # a difference of two softmaxes


def test_lambda_zero_reduces_to_softmax_of_first_head_of_each_pair():
    sd = _zero_lambdas(tiny_state_dict())
    ids, pixels = tiny_inputs()
    out = tiny_forward(sd, ids, pixels, lambda_init=0.0, return_attentions=True)
    for maps in out["vision_attentions"] + out["text_attentions"]:
        assert torch.allclose(maps.sum(-1), torch.ones((), dtype=maps.dtype))
        assert (maps >= 0).all()

    # check layer-0 vision maps against softmax(Q_{2i} K_{2i}^T / sqrt(d)) computed here
    p = ref.strip_prefix(sd)
    x = out["vision_hidden_states"][0]
    h = torch.nn.functional.layer_norm(
        x, (32,), p["visual.blocks.0.norm1.weight"], p["visual.blocks.0.norm1.bias"], 1e-5
    )
    q = h @ p["visual.blocks.0.attn.q_proj.weight"].t() + p["visual.blocks.0.attn.q_proj.bias"]
    k = h @ p["visual.blocks.0.attn.k_proj.weight"].t() + p["visual.blocks.0.attn.k_proj.bias"]
    d = 32 // 4
    q = q.view(2, 17, 4, d).transpose(1, 2)
    k = k.view(2, 17, 4, d).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    assert torch.allclose(out["vision_attentions"][0], expected[:, 0::2], atol=1e-10)
    assert not torch.allclose(out["vision_attentions"][0], expected[:, 1::2], atol=1e-3)


def _perturb_heads(sd, head_parity, tower="visual.blocks", heads=4, width=32):
    """Perturb the q/k projection rows of heads with the given parity, in every layer."""
    sd = dict(sd)
    d = width // heads
    g = torch.Generator().manual_seed(123)
    for k in list(sd):
        if k.startswith(f"module.{tower}.") and k.endswith(("attn.q_proj.weight", "attn.k_proj.weight")):
            w = sd[k].clone()
            for head in range(head_parity, heads, 2):
                w[head * d : (head + 1) * d] += torch.randn(d, width, generator=g, dtype=w.dtype)
            sd[k] = w
    return sd


@pytest.mark.parametrize("tower", ["visual.blocks", "transformer.resblocks"])
def test_interleaved_pairs(tower):
    """With λ = 0 the second head of each pair (odd heads) cannot matter; the first (even) must."""
    ids, pixels = tiny_inputs()
    key = "image_embeds" if tower == "visual.blocks" else "text_embeds"
    zero = _zero_lambdas(tiny_state_dict())
    base = tiny_forward(zero, ids, pixels, lambda_init=0.0)[key]
    odd = tiny_forward(_perturb_heads(zero, 1, tower), ids, pixels, lambda_init=0.0)[key]
    even = tiny_forward(_perturb_heads(zero, 0, tower), ids, pixels, lambda_init=0.0)[key]
    assert torch.allclose(base, odd, atol=1e-12)
    assert not torch.allclose(base, even, atol=1e-4)
    # with λ != 0 both heads of a pair matter
    sd = tiny_state_dict()
    base = tiny_forward(sd, ids, pixels)[key]
    odd = tiny_forward(_perturb_heads(sd, 1, tower), ids, pixels)[key]
    assert not torch.allclose(base, odd, atol=1e-4)


def test_lambda_init_float_and_list_agree():
    sd = tiny_state_dict()
    ids, pixels = tiny_inputs()
    a = tiny_forward(sd, ids, pixels, lambda_init=0.8)
    b = tiny_forward(sd, ids, pixels, lambda_init=[0.8, 0.8])
    c = tiny_forward(sd, ids, pixels, lambda_init=ref.lambda_init_schedule(2, True))
    assert torch.equal(a["logits_per_image"], b["logits_per_image"])
    assert not torch.allclose(a["logits_per_image"], c["logits_per_image"], atol=1e-4)


@pytest.mark.parametrize("diff_text", [True, False])
def test_text_is_causal(diff_text):
    sd = tiny_state_dict(diff_text=diff_text)
    ids, _ = tiny_inputs()
    out = tiny_forward(sd, ids, None, diff_text=diff_text)
    changed_after = ids.clone()
    changed_after[0, 6:] = torch.arange(1, 7)  # after the end-of-text at position 5 (ids < EOT)
    after = tiny_forward(sd, changed_after, None, diff_text=diff_text)
    assert torch.allclose(after["text_embeds"][0], out["text_embeds"][0], atol=1e-12)
    assert torch.allclose(after["text_last_hidden"][0, :6], out["text_last_hidden"][0, :6], atol=1e-12)
    assert not torch.allclose(after["text_last_hidden"][0, 6:], out["text_last_hidden"][0, 6:], atol=1e-4)
    changed_before = ids.clone()
    changed_before[0, 2] = (ids[0, 2] % (EOT - 1)) + 1
    before = tiny_forward(sd, changed_before, None, diff_text=diff_text)
    assert not torch.allclose(before["text_embeds"][0], out["text_embeds"][0], atol=1e-4)
    # shorter sequences (prefix of the zero-padded 77) give the same pooled embedding
    padded = torch.zeros(3, 77, dtype=torch.long)
    padded[:, :12] = ids
    full = tiny_forward(sd, padded, None, diff_text=diff_text)
    assert torch.allclose(full["text_embeds"], out["text_embeds"], atol=1e-12)


def _fused_differential_attention(x, p, num_heads, lambda_init, mask):
    """Vectorised form of the documented math, (A1 − λA2)V = A1·V − λ·A2·V, written independently."""
    batch, seq, width = x.shape
    d = width // num_heads
    q = (x @ p["q_proj.weight"].t() + p["q_proj.bias"]).view(batch, seq, num_heads // 2, 2, d)
    k = (x @ p["k_proj.weight"].t() + p["k_proj.bias"]).view(batch, seq, num_heads // 2, 2, d)
    v = (x @ p["v_proj.weight"].t() + p["v_proj.bias"]).view(batch, seq, num_heads // 2, 2 * d).transpose(1, 2)
    q1, q2 = q[..., 0, :].transpose(1, 2), q[..., 1, :].transpose(1, 2)
    k1, k2 = k[..., 0, :].transpose(1, 2), k[..., 1, :].transpose(1, 2)
    lam = (
        torch.exp((p["lambda_q1"] * p["lambda_k1"]).sum())
        - torch.exp((p["lambda_q2"] * p["lambda_k2"]).sum())
        + lambda_init
    )
    a1 = torch.nn.functional.scaled_dot_product_attention(q1, k1, v, attn_mask=mask)
    a2 = torch.nn.functional.scaled_dot_product_attention(q2, k2, v, attn_mask=mask)
    o = a1 - lam * a2
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * p["diff_norm.weight"] * (1 - lambda_init)
    o = o.transpose(1, 2).reshape(batch, seq, width)
    return o @ p["out_proj.weight"].t() + p["out_proj.bias"]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lambda_init", [0.8, 0.35])
def test_differential_attention_matches_fused_form(causal, lambda_init):
    sd = ref.strip_prefix(tiny_state_dict(vision_heads=8, vision_width=64))
    p = {k.removeprefix("visual.blocks.1.attn."): v for k, v in sd.items() if k.startswith("visual.blocks.1.attn.")}
    x = torch.randn(2, 9, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mask = torch.full((9, 9), float("-inf"), dtype=x.dtype).triu(1) if causal else None
    out, maps = ref._differential_attention(x, p, 8, lambda_init, mask)
    assert maps.shape == (2, 4, 9, 9)
    expected = _fused_differential_attention(x, p, 8, lambda_init, mask)
    assert torch.allclose(out, expected, atol=1e-10)


def test_standard_attention_matches_torch_modules():
    sd = ref.strip_prefix(tiny_state_dict(diff_vision=False, diff_text=False))
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    mask = torch.full((9, 9), float("-inf"), dtype=x.dtype).triu(1)
    # text: torch.nn.MultiheadAttention with the packed weights
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True, dtype=torch.float64)
    mha.load_state_dict(
        {
            k.removeprefix("transformer.resblocks.0.attn."): v
            for k, v in sd.items()
            if k.startswith("transformer.resblocks.0.attn.")
        }
    )
    expected, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    out, maps = ref._standard_attention(
        x,
        sd["transformer.resblocks.0.attn.in_proj_weight"],
        sd["transformer.resblocks.0.attn.in_proj_bias"],
        sd["transformer.resblocks.0.attn.out_proj.weight"],
        sd["transformer.resblocks.0.attn.out_proj.bias"],
        4,
        mask,
    )
    assert torch.allclose(out, expected, atol=1e-10)
    # vision: timm layout, qkv reshaped as (B, N, 3, H, d)
    qkv = (x @ sd["visual.blocks.0.attn.qkv.weight"].t() + sd["visual.blocks.0.attn.qkv.bias"]).view(2, 9, 3, 4, 8)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 9, 32)
    expected = o @ sd["visual.blocks.0.attn.proj.weight"].t() + sd["visual.blocks.0.attn.proj.bias"]
    out, maps = ref._standard_attention(
        x,
        sd["visual.blocks.0.attn.qkv.weight"],
        sd["visual.blocks.0.attn.qkv.bias"],
        sd["visual.blocks.0.attn.proj.weight"],
        sd["visual.blocks.0.attn.proj.bias"],
        4,
        None,
    )
    assert torch.allclose(out, expected, atol=1e-10)
    assert torch.allclose(maps, torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1), atol=1e-12)


class _QuickGELU(torch.nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def _torch_encoder_layer(p, width, heads, eps, activation, names):
    """A pre-norm torch.nn.TransformerEncoderLayer loaded from one original block."""
    layer = torch.nn.TransformerEncoderLayer(
        width,
        heads,
        dim_feedforward=p[names["fc1"] + ".weight"].shape[0],
        dropout=0.0,
        activation=activation,
        layer_norm_eps=eps,
        batch_first=True,
        norm_first=True,
        dtype=torch.float64,
    )
    mapping = {
        "self_attn.in_proj_weight": names["qkv_w"],
        "self_attn.in_proj_bias": names["qkv_b"],
        "self_attn.out_proj.weight": names["out"] + ".weight",
        "self_attn.out_proj.bias": names["out"] + ".bias",
        "linear1.weight": names["fc1"] + ".weight",
        "linear1.bias": names["fc1"] + ".bias",
        "linear2.weight": names["fc2"] + ".weight",
        "linear2.bias": names["fc2"] + ".bias",
        "norm1.weight": names["ln1"] + ".weight",
        "norm1.bias": names["ln1"] + ".bias",
        "norm2.weight": names["ln2"] + ".weight",
        "norm2.bias": names["ln2"] + ".bias",
    }
    layer.load_state_dict({new: p[old] for new, old in mapping.items()})
    return layer.eval()


def test_baseline_matches_torch_transformer_layers():
    """The CLIP baseline, rebuilt from torch.nn.TransformerEncoderLayer (pre-norm, packed q/k/v)."""
    sd = ref.strip_prefix(tiny_state_dict(diff_vision=False, diff_text=False))
    ids, pixels = tiny_inputs()
    out = tiny_forward(sd, ids, pixels, diff_vision=False, diff_text=False)

    vision_names = {
        "qkv_w": "attn.qkv.weight",
        "qkv_b": "attn.qkv.bias",
        "out": "attn.proj",
        "fc1": "mlp.fc1",
        "fc2": "mlp.fc2",
        "ln1": "norm1",
        "ln2": "norm2",
    }
    patches = torch.nn.functional.conv2d(
        pixels, sd["visual.patch_embed.proj.weight"], sd["visual.patch_embed.proj.bias"], stride=8
    )
    x = torch.cat([sd["visual.cls_token"].expand(2, 1, 32), patches.flatten(2).transpose(1, 2)], 1)
    x = x + sd["visual.pos_embed"]
    for i in range(2):
        p = {k.removeprefix(f"visual.blocks.{i}."): v for k, v in sd.items() if k.startswith(f"visual.blocks.{i}.")}
        x = _torch_encoder_layer(p, 32, 4, 1e-6, "gelu", vision_names)(x)
    x = torch.nn.functional.layer_norm(x, (32,), sd["visual.norm.weight"], sd["visual.norm.bias"], 1e-6)
    assert torch.allclose(out["vision_last_hidden"], x, atol=1e-9)
    assert torch.allclose(out["image_embeds"], x[:, 0] @ sd["image_projection"], atol=1e-9)

    text_names = {
        "qkv_w": "attn.in_proj_weight",
        "qkv_b": "attn.in_proj_bias",
        "out": "attn.out_proj",
        "fc1": "mlp.c_fc",
        "fc2": "mlp.c_proj",
        "ln1": "ln_1",
        "ln2": "ln_2",
    }
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    mask = torch.nn.Transformer.generate_square_subsequent_mask(ids.shape[1], dtype=torch.float64)
    for i in range(2):
        prefix = f"transformer.resblocks.{i}."
        p = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
        x = _torch_encoder_layer(p, 32, 4, 1e-5, _QuickGELU(), text_names)(x, src_mask=mask)
    x = torch.nn.functional.layer_norm(x, (32,), sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)
    assert torch.allclose(out["text_last_hidden"], x, atol=1e-9)
    pooled = x[torch.arange(3), torch.tensor([5, 9, 11])]
    assert torch.allclose(out["text_embeds"], pooled @ sd["text_projection"], atol=1e-9)


def test_lambda_init_schedule():
    assert ref.lambda_init_schedule(12, False) == [0.8] * 12
    sched = ref.lambda_init_schedule(12, True)
    assert len(sched) == 12
    assert sched[0] == pytest.approx(0.2)
    assert sched[1] == pytest.approx(0.8 - 0.6 * math.exp(-0.3))
    assert all(a < b for a, b in itertools.pairwise(sched))


# ------------------------------------------------------------------------------------------ images


def _column_image(width, height):
    """An RGB image whose red channel encodes the column index and green the row index."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[..., 0] = (np.arange(width) % 256)[None, :]
    arr[..., 1] = (np.arange(height) % 256)[:, None]
    return Image.fromarray(arr)


@pytest.mark.parametrize("width,left", [(299, 38), (297, 36), (298, 37), (224, 0)])
def test_center_crop_rounds_half_to_even(width, left):
    # shorter side already 224, so no resize happens and the crop offset is visible directly
    out = ref.original_image_transform(_column_image(width, 224))
    assert out.shape == (3, 224, 224)
    red = out[0] * ref.IMAGENET_STD[0] + ref.IMAGENET_MEAN[0]
    columns = torch.round(red[0] * 255).long()
    assert columns[0].item() == left
    assert torch.equal(columns, torch.arange(left, left + 224) % 256)


def test_resize_sizes_and_portrait():
    assert ref.original_resize_size(640, 480) == (298, 224)  # int(224 * 640 / 480) = int(298.67)
    assert ref.original_resize_size(480, 640) == (224, 298)
    assert ref.original_crop_box(224, 299) == (0, 38, 224, 262)
    out = ref.original_image_transform(_column_image(100, 150), size=64)
    assert out.shape == (3, 64, 64)


def test_resize_is_pil_bilinear_and_normalization():
    img = _column_image(640, 480)
    expected = img.resize((298, 224), Image.BILINEAR).crop((37, 0, 261, 224))
    arr = torch.from_numpy(np.asarray(expected, dtype=np.float32) / 255).permute(2, 0, 1)
    mean = torch.tensor(ref.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(ref.IMAGENET_STD)[:, None, None]
    assert torch.allclose(ref.original_image_transform(img), (arr - mean) / std, atol=1e-6)
    # constant gray, non-RGB mode: converted after the crop, normalized with ImageNet values
    gray = Image.new("L", (300, 260), color=128)
    out = ref.original_image_transform(gray)
    for c in range(3):
        assert torch.allclose(out[c], torch.tensor((128 / 255 - ref.IMAGENET_MEAN[c]) / ref.IMAGENET_STD[c]))


# ------------------------------------------------------------------------------------------ tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    if not BPE_PATH.exists():
        pytest.skip(f"CLIP BPE file not found at {BPE_PATH} (keep ../shared beside the checkout)")
    return ref.OriginalTokenizer(BPE_PATH)


def test_tokenizer_vocab(tokenizer):
    assert tokenizer.vocab_size == 49408
    assert tokenizer.encoder["<|startoftext|>"] == 49406
    assert tokenizer.encoder["<|endoftext|>"] == 49407
    assert tokenizer.decoder[0] == "!" and tokenizer.decoder[256] == "!</w>"
    # well-known CLIP ids
    assert tokenizer.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]


def test_tokenizer_rows(tokenizer):
    rows = tokenizer(["hello world", "a dog"])
    assert rows.shape == (2, 77) and rows.dtype == torch.long
    ids = tokenizer.encode("hello world")
    assert len(ids) == 2
    assert rows[0, :4].tolist() == [49406, *ids, 49407]
    assert rows[0, 4:].eq(0).all()
    assert tokenizer.decode(ids) == "hello world"
    assert tokenizer.decode(rows[1, 1:3].tolist()) == "a dog"
    assert tokenizer("hello world").shape == (1, 77)


def test_tokenizer_cleaning(tokenizer):
    assert ref.clean_text("&amp;amp;") == "&"
    assert tokenizer.encode("&amp;amp;") == tokenizer.encode("&")
    # ftfy leaves HTML alone when the text contains '<' or '>': then both unescapes are needed
    assert ref.clean_text("<b> &amp;amp; </b>") == "<b> & </b>"
    assert ref.clean_text("cafÃ©") == "café"
    assert tokenizer.encode("cafÃ©") == tokenizer.encode("café")
    assert tokenizer.decode(tokenizer.encode("cafÃ©")) == "café"
    assert ref.clean_text("  A \t\n big   DOG  ") == "a big dog"
    assert tokenizer.encode("  A \t\n big   DOG  ") == tokenizer.encode("a big dog")
    assert tokenizer.encode("it's") == tokenizer.encode("it") + tokenizer.encode("'s")


def test_tokenizer_truncation(tokenizer):
    long_text = " ".join(["cat"] * 100)
    rows = tokenizer([long_text, "cat " * 75, "cat " * 76])
    assert rows[0, 0] == 49406
    assert (rows[0, 1:] == tokenizer.encode("cat")[0]).all()  # end-of-text lost
    assert 49407 not in rows[0].tolist()
    assert rows[1, 76] == 49407  # 75 tokens + 2 specials fit exactly
    assert 49407 not in rows[2].tolist()
