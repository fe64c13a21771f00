"""Every kernel of DiffCLIP's attention computes what the eager float32 model computes, and what the model computed
before the kernel table (tests/golden/attention_paths.json).

Kernels: the CPU sdpa kernel of differential attention (both maps written out and combined before the value
product, in chunks of head pairs), the fused per-map kernel calls that sdpa takes on other devices, the value halves
of flash attention, the causal text path without a mask, half precision, gradients through the in-place score
updates, and torch.compile tracing. Nothing here is timed; benchmarks/ measures speed.
"""

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import TINY, text_batch, tiny_config

from transformers_diffclip import DiffCLIPModel, DiffCLIPVisionConfig, modeling_diffclip
from transformers_diffclip.modeling_diffclip import (
    DiffCLIPDifferentialAttention,
    combined_maps_attention,
    eager_differential_attention,
    per_map_attention,
    value_halves_attention,
)


VARIANTS = {  # (diff_text, diff_vision, λ schedule)
    "diffclip": (True, True, "constant"),
    "diffclip_dagger": (False, True, "constant"),
    "diffclip_star": (True, True, "depth"),
    "clip_baseline": (False, False, "constant"),
}


def build_pair(variant="diffclip", fast="sdpa", seed=0, **vision_overrides):
    """The eager float32 model and a copy with the same weights that runs `fast`."""
    diff_text, diff_vision, schedule = VARIANTS[variant]
    config = tiny_config(diff_text, diff_vision, schedule, **vision_overrides)
    torch.manual_seed(seed)
    eager = DiffCLIPModel._from_config(copy.deepcopy(config), attn_implementation="eager").eval()
    for module in eager.modules():  # λ vectors away from zero so both maps matter
        if isinstance(module, DiffCLIPDifferentialAttention):
            for vector in (module.lambda_q1, module.lambda_k1, module.lambda_q2, module.lambda_k2):
                torch.nn.init.normal_(vector, std=0.3)
    other = DiffCLIPModel._from_config(copy.deepcopy(config), attn_implementation="eager").eval()
    other.load_state_dict(eager.state_dict())
    for sub_config in (other.config, other.config.text_config, other.config.vision_config):
        sub_config._attn_implementation = fast
    return eager, other


def pixels(batch=2, size=32, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def pair_loop_reference(attention, query, key, value, mask):
    """(A1 − λ·A2)·V_i for every effective head i, one pair at a time, from the (batch, seq, width) projections."""
    batch, seq, _ = query.shape
    d = attention.head_dim
    lam = attention.lambda_full()
    outputs = []
    for i in range(attention.num_pairs):
        q1, q2 = query[..., 2 * i * d : (2 * i + 1) * d], query[..., (2 * i + 1) * d : (2 * i + 2) * d]
        k1, k2 = key[..., 2 * i * d : (2 * i + 1) * d], key[..., (2 * i + 1) * d : (2 * i + 2) * d]
        a1 = torch.softmax(q1 @ k1.transpose(-1, -2) * d**-0.5 + mask, dim=-1)
        a2 = torch.softmax(q2 @ k2.transpose(-1, -2) * d**-0.5 + mask, dim=-1)
        outputs.append((a1 - lam * a2) @ value[..., 2 * i * d : 2 * (i + 1) * d])
    return torch.stack(outputs, dim=2)  # (batch, seq, pairs, 2d)


# --------------------------------------------------------------------------------------------------
# The CPU sdpa path: combined maps, chunked over head pairs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("budget", [450, 2700, 2**20])  # a row and a pair per chunk, 3 rows × 2 pairs, one chunk
def test_combined_maps_match_a_loop_over_pairs(monkeypatch, budget, causal):
    monkeypatch.setattr(modeling_diffclip, "_MAP_CHUNK_ELEMENTS", budget)
    config = DiffCLIPVisionConfig(hidden_size=48, num_attention_heads=6, num_hidden_layers=1)
    attention = DiffCLIPDifferentialAttention(config, layer_idx=0)
    generator = torch.Generator().manual_seed(0)
    for vector in (attention.lambda_q1, attention.lambda_k1, attention.lambda_q2, attention.lambda_k2):
        vector.data = torch.randn(vector.shape, generator=generator) * 0.3
    batch, seq = 3, 15  # both maps of one pair for one row: 2 · 15² = 450 values
    query, key, value = (torch.randn(batch, seq, 48, generator=generator) for _ in range(3))
    mask = torch.zeros(seq, seq)
    if causal:
        mask = torch.full((seq, seq), torch.finfo(torch.float32).min).triu(1)
    with torch.no_grad():
        got, maps = combined_maps_attention(attention, query, key, value, mask[None, None] if causal else None)
        want = pair_loop_reference(attention, query, key, value, mask)
    assert got.shape == (batch, seq, attention.num_pairs, 2 * attention.head_dim) and maps is None
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_combined_maps_slice_a_per_row_mask_with_the_rows(monkeypatch):
    """A (batch, 1, seq, seq) mask must follow the rows of each chunk."""
    monkeypatch.setattr(modeling_diffclip, "_MAP_CHUNK_ELEMENTS", 2 * 9 * 9)  # one row and one pair per chunk
    config = DiffCLIPVisionConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1)
    attention = DiffCLIPDifferentialAttention(config, layer_idx=0)
    generator = torch.Generator().manual_seed(1)
    query, key, value = (torch.randn(2, 9, 32, generator=generator) for _ in range(3))
    masks = torch.zeros(2, 1, 9, 9)
    masks[1, :, :, 5:] = torch.finfo(torch.float32).min  # the second row may not look past token 4
    with torch.no_grad():
        got = combined_maps_attention(attention, query, key, value, masks)[0]
        for row in range(2):
            one = slice(row, row + 1)
            want = pair_loop_reference(attention, query[one], key[one], value[one], masks[row, 0])
            torch.testing.assert_close(got[one], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sdpa_fast_path_equals_eager(variant):
    eager, fast = build_pair(variant)
    inputs = dict(input_ids=text_batch(length=20), pixel_values=pixels())
    with torch.no_grad():
        want = eager(**inputs, output_hidden_states=True)
        got = fast(**inputs, output_hidden_states=True)
    torch.testing.assert_close(got.logits_per_image, want.logits_per_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.image_embeds, want.image_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.text_embeds, want.text_embeds, atol=1e-6, rtol=0)
    for tower in ("vision_model_output", "text_model_output"):
        for a, b in zip(got[tower].hidden_states, want[tower].hidden_states):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# chunks of one row and one pair; of both rows and one pair at 32 px (2 · 17² values per row and pair); one chunk
@pytest.mark.parametrize("budget", [1, 1500, 2**20])
@pytest.mark.parametrize("size", [32, 48])
def test_image_sizes_and_chunkings_agree(monkeypatch, size, budget):
    monkeypatch.setattr(modeling_diffclip, "_MAP_CHUNK_ELEMENTS", budget)
    eager, fast = build_pair()
    with torch.no_grad():
        want = eager.vision_model(pixel_values=pixels(size=size), interpolate_pos_encoding=True)
        got = fast.vision_model(pixel_values=pixels(size=size), interpolate_pos_encoding=True)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [3, 9, 77])
def test_causal_text_path_equals_eager_at_any_length(length):
    """Fused kernels get `is_causal` and no mask (standard layers); the CPU differential path adds the mask."""
    for variant in ("diffclip", "clip_baseline"):
        eager, fast = build_pair(variant)
        ids = text_batch(length=77, lengths=(1, 5, 7))[:, :length]
        with torch.no_grad():
            want = eager.text_model(input_ids=ids).last_hidden_state
            got = fast.text_model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _loss_gradients(model, pixel_values):
    model.train()
    output = model(input_ids=text_batch(batch=2, length=16), pixel_values=pixel_values, return_loss=True)
    output.loss.backward()
    return {name: p.grad.double() for name, p in model.named_parameters()}


# chunks of one row and one pair; of both rows and one pair (2 · 17² values per row and pair); one chunk
@pytest.mark.parametrize("budget", [1, 1500, 2**20])
def test_gradients_through_the_fast_path_equal_eager(monkeypatch, budget):
    """The score products are scaled and masked in place and the maps combined chunk by chunk; autograd must still
    give the eager model's gradients.

    Both float32 models are compared with the eager model in float64: the gradients of biases and embeddings are
    sums over every token of terms larger than the sum, so their float32 rounding depends on the order of the sums
    (the combined-maps path subtracts `λ·A2` from `A1` before the value product, eager after it) and reaches a few
    1e-6 of the tensor's largest entry for either model. The bound, 2e-5 of that entry (about 170 float32 ulps), is
    far below what a wrong mask, scale or λ gives (the size of the gradient itself)."""
    monkeypatch.setattr(modeling_diffclip, "_MAP_CHUNK_ELEMENTS", budget)
    eager, fast = build_pair()
    reference = copy.deepcopy(eager).double()
    want = _loss_gradients(reference, pixels().double())
    got = {"eager": _loss_gradients(eager, pixels()), "fast": _loss_gradients(fast, pixels())}
    lambda_grads = [name for name in want if "lambda_q1" in name]
    assert lambda_grads and all(want[name].abs().sum() > 0 for name in lambda_grads)
    for name, expected in want.items():
        scale = max(float(expected.abs().max()), 1.0)
        for which, grads in got.items():
            torch.testing.assert_close(grads[name], expected, atol=2e-5 * scale, rtol=0, msg=f"{which}: {name}")


def test_attention_dropout_of_standard_layers_is_off_in_eval_and_on_in_training():
    """The CLIP baselines' standard layers take attention dropout (the configuration refuses it for differential
    attention: tests/test_invalid_inputs.py), in the eager kernel and in the registry's."""
    eager, fast = build_pair("clip_baseline")
    for model in (eager, fast):
        for module in model.modules():
            if isinstance(module, modeling_diffclip.DiffCLIPAttention):
                module.dropout = 0.5
    with torch.no_grad():
        want = eager.vision_model(pixel_values=pixels()).last_hidden_state
        got = fast.vision_model(pixel_values=pixels()).last_hidden_state
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for model in (eager, fast):
            model.train()
            torch.manual_seed(0)
            dropped = model.vision_model(pixel_values=pixels()).last_hidden_state
            assert (dropped - want).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_fast_path_stays_close_to_eager_float32(dtype):
    eager, fast = build_pair()
    fast = fast.to(dtype)
    inputs = dict(input_ids=text_batch(), pixel_values=pixels())
    with torch.no_grad():
        want = eager(**inputs)
        got = fast(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].to(dtype))
    for a, b in ((got.image_embeds, want.image_embeds), (got.text_embeds, want.text_embeds)):
        assert a.dtype == dtype
        assert F.cosine_similarity(a.double(), b.double(), dim=-1).min() >= 0.999


# --------------------------------------------------------------------------------------------------
# The other paths: the fused single call (sdpa off the CPU) and attention maps under sdpa
# --------------------------------------------------------------------------------------------------


def test_fused_per_map_path_equals_eager(monkeypatch):
    """Off the CPU, sdpa runs each softmax map as one kernel call over all head pairs, with `2d`-wide values. With the
    CPU rule switched off (`cpu_combined_maps`, the documented override) the CPU takes that path too, through a
    recording stand-in registered as sdpa, and must reproduce eager."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls = []

    def fused_kernel(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.shape[1], value.shape[1], value.shape[-1] // query.shape[-1], attention_mask is None))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", fused_kernel)
    monkeypatch.setattr(DiffCLIPDifferentialAttention, "cpu_combined_maps", frozenset())
    eager, fused = build_pair(fast="sdpa")
    inputs = dict(input_ids=text_batch(length=20), pixel_values=pixels())
    with torch.no_grad():
        want, got = eager(**inputs), fused(**inputs)
    torch.testing.assert_close(got.logits_per_image, want.logits_per_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.text_embeds, want.text_embeds, atol=1e-6, rtol=0)
    # two calls per layer (one per map), each over all pairs, values twice the query width, no mask (text causal
    # via is_causal)
    assert len(calls) == 2 * (TINY["text_layers"] + TINY["vision_layers"])
    pairs = TINY["vision_heads"] // 2
    assert all(call == (pairs, pairs, 2, True) for call in calls)


@pytest.mark.parametrize(
    "implementation, device, output_attentions, kernel",
    [
        ("eager", "cpu", False, eager_differential_attention),
        ("sdpa", "cpu", True, eager_differential_attention),  # only the eager kernel materialises maps
        ("sdpa", "cpu", False, combined_maps_attention),  # the CPU rule
        ("sdpa", "cuda", False, per_map_attention),
        ("flash_attention_2", "cuda", False, value_halves_attention),
        ("kernels-community/flash-attn3", "cuda", False, value_halves_attention),
        ("some_registered_kernel", "cpu", False, value_halves_attention),  # d-wide values: every kernel takes them
    ],
)
def test_the_kernel_table(implementation, device, output_attentions, kernel):
    config = DiffCLIPVisionConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1)
    config._attn_implementation_internal = implementation
    attention = DiffCLIPDifferentialAttention(config)
    assert attention.attention_kernel(torch.device(device), output_attentions) is kernel
    if kernel is combined_maps_attention:  # the documented override, per layer
        attention.cpu_combined_maps = frozenset()
        assert attention.attention_kernel(torch.device(device), output_attentions) is per_map_attention


GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "attention_paths.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", ["eager", "eager_maps", "sdpa_cpu", "per_map", "value_halves"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_path_equals_the_recorded_outputs(monkeypatch, variant, path):
    """Each kernel gives what the model computed before the kernel table (b944eaf; tests/golden/
    write_attention_paths.py) to 1e-6 in float32, from the same fixed weights."""
    from _helpers import original_to_hf
    from reference_original import make_original_state_dict
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", sdpa_attention_forward)
    implementation = {"eager": "eager", "eager_maps": "eager", "sdpa_cpu": "sdpa"}.get(path, path)
    if path == "per_map":  # sdpa off the CPU, reached on the CPU through the override
        implementation = "sdpa"
        monkeypatch.setattr(DiffCLIPDifferentialAttention, "cpu_combined_maps", frozenset())
    elif path == "value_halves":
        implementation = "flash_attention_2"
    diff_text, diff_vision, schedule = VARIANTS[variant]
    original = make_original_state_dict(diff_text=diff_text, diff_vision=diff_vision, seed=0, **TINY)
    model = DiffCLIPModel._from_config(tiny_config(diff_text, diff_vision, schedule), attn_implementation="eager")
    model.load_state_dict(original_to_hf(original, diff_text, diff_vision), strict=True)
    for sub_config in (model.config, model.config.text_config, model.config.vision_config):
        sub_config._attn_implementation = implementation
    with torch.no_grad():
        out = model.eval()(input_ids=text_batch(), pixel_values=pixels(), output_attentions=path == "eager_maps")
    got = {
        "text_embeds": out.text_embeds,
        "image_embeds": out.image_embeds,
        "text_pooled": out.text_model_output.pooler_output,
        "vision_tokens": out.vision_model_output.last_hidden_state[:, :5],
    }
    if path == "eager_maps":
        got["vision_maps"] = out.vision_model_output.attentions[-1]
        got["text_maps"] = out.text_model_output.attentions[-1][:, :, :12, :12]
    want = GOLDEN[variant][path]
    assert sorted(got) == sorted(k for k in want if not k.endswith("_shape"))
    for name, tensor in got.items():
        assert list(tensor.shape) == want[name + "_shape"], name
        expected = torch.tensor(want[name], dtype=torch.float32).reshape(tensor.shape)
        torch.testing.assert_close(tensor, expected, atol=1e-6, rtol=0, msg=f"{variant}/{path}: {name}")


def test_attention_maps_under_sdpa_are_the_eager_maps():
    eager, fast = build_pair()
    with torch.no_grad():
        want = eager.vision_model(pixel_values=pixels(), output_attentions=True)
        got = fast.vision_model(pixel_values=pixels(), output_attentions=True)
    assert len(got.attentions) == TINY["vision_layers"]
    for a, b in zip(got.attentions, want.attentions):
        assert a.shape == (2, TINY["vision_heads"] // 2, 17, 17)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_both_towers_trace_without_graph_breaks():
    _, model = build_pair()
    ids = text_batch(length=16)
    mask = (ids != 0).long()
    cases = [
        (model.vision_model, dict(pixel_values=pixels())),
        (model.text_model, dict(input_ids=ids)),
        (model.text_model, dict(input_ids=ids, attention_mask=mask)),
    ]
    for module, kwargs in cases:
        torch._dynamo.reset()
        with torch.no_grad():
            explanation = torch._dynamo.explain(module)(**kwargs)
            compiled = torch.compile(module, backend="eager", fullgraph=True)
            got = compiled(**kwargs).pooler_output
            want = module(**kwargs).pooler_output
        assert explanation.graph_break_count == 0, explanation.break_reasons
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------------------
# The benchmark's baseline computes the same function
# --------------------------------------------------------------------------------------------------


def test_benchmark_original_formulation_matches_the_model():
    """benchmarks/ times DiffCLIP against a plain eager implementation of the original formulation; it must
    compute the same embeddings, or the comparison is not at equal work."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import common
    finally:
        sys.path.pop(0)
    eager, fast = build_pair()
    baseline = common.OriginalFormulation(fast)
    ids = text_batch()  # zero padding to 77, as the original
    with torch.no_grad():
        want = eager(input_ids=ids, pixel_values=pixels())
        torch.testing.assert_close(
            baseline.encode_image(pixels()),
            eager.visual_projection(eager.vision_model(pixel_values=pixels()).pooler_output),
            atol=1e-5,
            rtol=0,
        )
        torch.testing.assert_close(
            baseline.encode_text(ids),
            eager.text_projection(eager.text_model(input_ids=ids).pooler_output),
            atol=1e-5,
            rtol=0,
        )
        torch.testing.assert_close(baseline(ids, pixels()), want.logits_per_image, atol=1e-4, rtol=0)
