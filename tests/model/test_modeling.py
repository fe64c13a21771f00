"""DiffCLIP modeling against the independent reference of the original math (conversion/reference_original.py)."""

import math

import pytest
import torch
from _helpers import TINY, original_to_hf, record_kernel_calls, text_batch, tiny_config
from reference_original import lambda_init_schedule, make_original_state_dict, original_forward

from transformers_diffclip import (
    DiffCLIPConfig,
    DiffCLIPModel,
    DiffCLIPTextModel,
    DiffCLIPTextModelWithProjection,
    DiffCLIPVisionModel,
    DiffCLIPVisionModelWithProjection,
)


# (diff_text, diff_vision, λ schedule): DiffCLIP, the CLIP baseline, DiffCLIP† and DiffCLIP*
VARIANTS = {
    "diffclip": (True, True, "constant"),
    "clip_baseline": (False, False, "constant"),
    "diffclip_dagger": (False, True, "constant"),
    "diffclip_star": (True, True, "depth"),
}
SIZES = {
    "tiny": TINY,
    "wide_heads": dict(TINY, vision_width=48, vision_heads=6, text_width=64, text_heads=2, vision_layers=3),
}


def build(variant, sizes=TINY, seed=0, attn_implementation="eager"):
    diff_text, diff_vision, schedule = VARIANTS[variant]
    original = make_original_state_dict(diff_text=diff_text, diff_vision=diff_vision, seed=seed, **sizes)
    config = tiny_config(diff_text, diff_vision, schedule, sizes)
    config._attn_implementation = attn_implementation
    model = DiffCLIPModel(config).eval()
    missing, unexpected = model.load_state_dict(original_to_hf(original, diff_text, diff_vision), strict=True)
    assert not missing and not unexpected
    return model, original


def reference(original, variant, sizes, input_ids=None, pixel_values=None, attentions=False):
    diff_text, diff_vision, schedule = VARIANTS[variant]
    layers = max(sizes["vision_layers"], sizes["text_layers"])
    return original_forward(
        original,
        input_ids,
        pixel_values,
        vision_heads=sizes["vision_heads"],
        text_heads=sizes["text_heads"],
        diff_vision=diff_vision,
        diff_text=diff_text,
        lambda_init=lambda_init_schedule(layers, schedule == "depth"),
        return_attentions=attentions,
    )


def pixels(batch=2, size=32, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sizes_name", list(SIZES))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_matches_original_math(variant, sizes_name, attn_implementation):
    sizes = SIZES[sizes_name]
    model, original = build(variant, sizes, attn_implementation=attn_implementation)
    input_ids, pixel_values = text_batch(), pixels()
    expected = reference(original, variant, sizes, input_ids, pixel_values)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        image_features = model.visual_projection(out.vision_model_output.pooler_output)
        text_features = model.text_projection(out.text_model_output.pooler_output)
    torch.testing.assert_close(image_features, expected["image_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text_features, expected["text_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.vision_model_output.last_hidden_state, expected["vision_last_hidden"], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        out.text_model_output.last_hidden_state, expected["text_last_hidden"], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(out.logits_per_image, expected["logits_per_image"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.logits_per_text, expected["logits_per_text"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_float64_model_is_float64_accurate(attn_implementation):
    """No step of the model rounds through float32: in float64 it agrees with the float64 reference to 1e-10."""
    model, original = build("diffclip", attn_implementation=attn_implementation)
    model = model.double()
    original = {name: tensor.double() for name, tensor in original.items()}
    input_ids, pixel_values = text_batch(), pixels().double()
    expected = reference(original, "diffclip", TINY, input_ids, pixel_values)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
    assert out.logits_per_image.dtype == torch.float64
    torch.testing.assert_close(
        out.vision_model_output.last_hidden_state, expected["vision_last_hidden"], atol=1e-10, rtol=0
    )
    torch.testing.assert_close(
        out.text_model_output.last_hidden_state, expected["text_last_hidden"], atol=1e-10, rtol=0
    )
    torch.testing.assert_close(out.logits_per_image, expected["logits_per_image"], atol=1e-9, rtol=0)


@pytest.mark.parametrize("variant", ["diffclip", "clip_baseline", "diffclip_star"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_attention_maps_and_hidden_states_match_original(variant, attn_implementation):
    model, original = build(variant, attn_implementation=attn_implementation)
    input_ids, pixel_values = text_batch(), pixels()
    expected = reference(original, variant, TINY, input_ids, pixel_values, attentions=True)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values, output_attentions=True, output_hidden_states=True)
    diff_text, diff_vision, _ = VARIANTS[variant]
    vision, text = out.vision_model_output, out.text_model_output
    assert len(vision.attentions) == TINY["vision_layers"] and len(text.attentions) == TINY["text_layers"]
    assert vision.attentions[0].shape == (2, TINY["vision_heads"] // (2 if diff_vision else 1), 17, 17)
    assert text.attentions[0].shape == (3, TINY["text_heads"] // (2 if diff_text else 1), 77, 77)
    for got, want in zip(
        vision.attentions + text.attentions, expected["vision_attentions"] + expected["text_attentions"]
    ):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # hidden states: embeddings + one per layer, before the final norm
    assert len(vision.hidden_states) == TINY["vision_layers"] + 1
    for got, want in zip(vision.hidden_states, expected["vision_hidden_states"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for got, want in zip(text.hidden_states, expected["text_hidden_states"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_differential_maps_are_a1_minus_lambda_a2():
    """Rows of softmax maps sum to 1, so rows of A1 − λ·A2 sum to 1 − λ (λ read off the parameters)."""
    model, _ = build("diffclip")
    with torch.no_grad():
        out = model.vision_model(pixel_values=pixels(), output_attentions=True)
    for layer, maps in zip(model.vision_model.encoder.layers, out.attentions):
        attn = layer.self_attn
        lam = (
            math.exp(float((attn.lambda_q1 * attn.lambda_k1).sum().detach()))
            - math.exp(float((attn.lambda_q2 * attn.lambda_k2).sum().detach()))
            + 0.8
        )
        torch.testing.assert_close(maps.sum(-1), torch.full_like(maps.sum(-1), 1 - lam), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["diffclip", "clip_baseline"])
def test_eager_and_sdpa_agree(variant):
    eager, _ = build(variant, attn_implementation="eager")
    sdpa, _ = build(variant, attn_implementation="sdpa")
    inputs = dict(input_ids=text_batch(), pixel_values=pixels())
    with torch.no_grad():
        a, b = eager(**inputs), sdpa(**inputs)
    torch.testing.assert_close(a.image_embeds, b.image_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.text_embeds, b.text_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.logits_per_image, b.logits_per_image, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_dynamic_padding_equals_padding_to_77(attn_implementation):
    model, _ = build("diffclip", attn_implementation=attn_implementation)
    full_zero = text_batch(pad_id=0)  # the original: zero padding to 77
    full_eot = text_batch(pad_id=49407)  # the tokenizer: <|endoftext|> padding
    longest = int((full_zero == 49407).int().argmax(-1).max()) + 1
    dynamic = full_eot[:, :longest]
    mask = (torch.arange(longest)[None] <= (dynamic == 49407).int().argmax(-1)[:, None]).long()
    with torch.no_grad():
        embeds = [
            model.text_model(input_ids=full_zero).pooler_output,
            model.text_model(input_ids=full_eot).pooler_output,
            model.text_model(input_ids=dynamic).pooler_output,
            model.text_model(input_ids=dynamic, attention_mask=mask).pooler_output,
        ]
        singles = torch.cat(
            [model.text_model(input_ids=row[None, : int(m.sum())]).pooler_output for row, m in zip(dynamic, mask)]
        )
    for other in embeds[1:] + [singles]:
        torch.testing.assert_close(other, embeds[0], atol=1e-5, rtol=0)


def test_row_without_end_token_pools_like_the_original():
    """The original cuts long texts at 77 tokens, losing <|endoftext|>; it then pools at argmax(input_ids)."""
    model, original = build("diffclip")
    ids = torch.randint(1, 49000, (2, 77), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = 49406
    expected = reference(original, "diffclip", TINY, input_ids=ids)
    with torch.no_grad():
        got = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    torch.testing.assert_close(got, expected["text_embeds"], atol=1e-5, rtol=0)


def test_contrastive_loss_formula():
    model, _ = build("diffclip")
    out = model(input_ids=text_batch(batch=2), pixel_values=pixels(), return_loss=True)
    logits = out.logits_per_image.detach()
    targets = torch.arange(2)
    # written out: mean over rows of -log softmax at the diagonal, both directions
    per_image = -(logits.log_softmax(dim=1)[targets, targets]).mean()
    per_text = -(logits.t().log_softmax(dim=1)[targets, targets]).mean()
    torch.testing.assert_close(out.loss.detach(), (per_image + per_text) / 2)
    out.loss.backward()
    assert (
        model.logit_scale.grad is not None
        and model.text_model.encoder.layers[0].self_attn.lambda_q1.grad.abs().sum() > 0
    )


def test_return_dict_false_gives_tuples():
    model, _ = build("diffclip")
    with torch.no_grad():
        as_tuple = model(input_ids=text_batch(), pixel_values=pixels(), return_dict=False)
        as_output = model(input_ids=text_batch(), pixel_values=pixels())
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_output.logits_per_image)


def test_features_follow_installed_transformers():
    import transformers

    model, original = build("diffclip")
    expected = reference(original, "diffclip", TINY, text_batch(), pixels())
    with torch.no_grad():
        image, text = model.get_image_features(pixel_values=pixels()), model.get_text_features(input_ids=text_batch())
    if int(transformers.__version__.split(".")[0]) >= 5:
        image, text = image.pooler_output, text.pooler_output
    torch.testing.assert_close(image, expected["image_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text, expected["text_embeds"], atol=1e-5, rtol=0)


def test_features_honour_the_config_like_forward():
    """On transformers 5 the feature methods return what `forward` would (config's hidden states, maps, tuples)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4.x's CLIP returns the projected tensor from the feature methods")
    model, original = build("diffclip")
    model.config.output_hidden_states = True
    model.config.output_attentions = True
    with torch.no_grad():
        text = model.get_text_features(input_ids=text_batch())
        image = model.get_image_features(pixel_values=pixels())
        out = model(input_ids=text_batch(), pixel_values=pixels())
        model.config.return_dict = False
        as_tuple = model.get_image_features(pixel_values=pixels())
    assert len(text.hidden_states) == TINY["text_layers"] + 1 and len(text.attentions) == TINY["text_layers"]
    assert len(image.hidden_states) == TINY["vision_layers"] + 1
    torch.testing.assert_close(image.attentions[-1], out.vision_model_output.attentions[-1])
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[1], image.pooler_output)


@pytest.mark.parametrize("variant", ["diffclip", "clip_baseline"])
def test_returned_attention_maps_carry_the_gradient(variant):
    """The maps `output_attentions=True` returns are the ones the output is computed from, so ∂out/∂maps exists
    (differential maps were once computed beside the output, and had no gradient)."""
    model, _ = build(variant)
    out = model.vision_model(pixel_values=pixels(), output_attentions=True)
    for maps in out.attentions:
        maps.retain_grad()
    out.pooler_output.pow(2).sum().backward()
    for maps in out.attentions:
        assert maps.grad is not None and maps.grad.abs().sum() > 0


def test_attn_implementation_reaches_both_towers(tmp_path):
    config = tiny_config()
    config._attn_implementation = None
    config = DiffCLIPConfig.from_dict({**config.to_dict(), "attn_implementation": "sdpa"})
    assert [c._attn_implementation for c in (config, config.text_config, config.vision_config)] == ["sdpa"] * 3
    per_tower = DiffCLIPConfig(attn_implementation={"text_config": "sdpa", "vision_config": "eager"})
    assert (per_tower.text_config._attn_implementation, per_tower.vision_config._attn_implementation) == (
        "sdpa",
        "eager",
    )
    model, _ = build("clip_baseline")
    model.save_pretrained(tmp_path)
    for implementation in ("eager", "sdpa"):
        loaded = DiffCLIPModel.from_pretrained(tmp_path, attn_implementation=implementation)
        towers = (loaded.text_model.config, loaded.vision_model.config)
        assert [c._attn_implementation for c in towers] == [implementation] * 2


def test_set_attn_implementation_switches_the_kernel(monkeypatch):
    calls = record_kernel_calls(monkeypatch, "sdpa")
    model, _ = build("clip_baseline")  # standard attention calls the registry in every layer
    inputs = dict(input_ids=text_batch(), pixel_values=pixels())
    with torch.no_grad():
        want = model(**inputs).logits_per_image
        model.set_attn_implementation("sdpa")
        got = model(**inputs).logits_per_image
        assert len(calls) == TINY["text_layers"] + TINY["vision_layers"]
        model.set_attn_implementation("eager")
        model(**inputs)
    assert len(calls) == TINY["text_layers"] + TINY["vision_layers"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_tower_models_load_from_the_dual_encoder(tmp_path):
    model, original = build("diffclip")
    model.save_pretrained(tmp_path)
    expected = reference(original, "diffclip", TINY, text_batch(), pixels())
    config = model.config
    text = DiffCLIPTextModelWithProjection.from_pretrained(tmp_path, config=config.text_config).eval()
    vision = DiffCLIPVisionModelWithProjection.from_pretrained(tmp_path, config=config.vision_config).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            text(input_ids=text_batch()).text_embeds, expected["text_embeds"], atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            vision(pixel_values=pixels()).image_embeds, expected["image_embeds"], atol=1e-5, rtol=0
        )
        text_plain = DiffCLIPTextModel.from_pretrained(tmp_path, config=config.text_config).eval()
        vision_plain = DiffCLIPVisionModel.from_pretrained(tmp_path, config=config.vision_config).eval()
        torch.testing.assert_close(
            text_plain(input_ids=text_batch()).pooler_output, expected["text_pooled"], atol=1e-5, rtol=0
        )
        hidden = vision_plain(pixel_values=pixels(), output_hidden_states=True)
        assert len(hidden.hidden_states) == TINY["vision_layers"] + 1
        torch.testing.assert_close(hidden.pooler_output, expected["vision_pooled"], atol=1e-5, rtol=0)


def test_interpolate_pos_encoding():
    model, _ = build("diffclip")
    with torch.no_grad():
        native = model.vision_model(pixel_values=pixels()).pooler_output
        same = model.vision_model(pixel_values=pixels(), interpolate_pos_encoding=True).pooler_output
        larger = model.vision_model(pixel_values=pixels(size=48), interpolate_pos_encoding=True)
    torch.testing.assert_close(same, native)  # the native grid uses the table unchanged
    assert larger.last_hidden_state.shape == (2, 1 + 6 * 6, TINY["vision_width"])
    # the interpolated table: class entry unchanged, patch grid resized bicubically from 4×4 to 6×6
    table = model.vision_model.embeddings.position_embedding.weight
    grid = table[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    got = model.vision_model.embeddings.interpolate_pos_encoding(48, 48)
    torch.testing.assert_close(got[0, 0], table[0])
    torch.testing.assert_close(got[0, 1:], resized.permute(0, 2, 3, 1).reshape(36, -1))


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model, _ = build("diffclip", attn_implementation="sdpa")
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.vision_model.encoder.layers)
        out = model(input_ids=text_batch(batch=2), pixel_values=pixels(), return_loss=True)
        out.loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stays_close_to_float32(dtype):
    model, _ = build("diffclip", attn_implementation="sdpa")
    with torch.no_grad():
        reference_out = model(input_ids=text_batch(), pixel_values=pixels())
        half = model.to(dtype)
        out = half(input_ids=text_batch(), pixel_values=pixels().to(dtype))
    assert out.image_embeds.dtype == dtype
    for got, want in ((out.image_embeds, reference_out.image_embeds), (out.text_embeds, reference_out.text_embeds)):
        cosine = torch.nn.functional.cosine_similarity(got.float(), want, dim=-1)
        assert cosine.min() > 0.99, cosine
    # the norms run in float32: a LayerNorm of a bf16 input equals the float32 computation rounded once
    layer_norm = half.text_model.final_layer_norm
    x = torch.randn(4, TINY["text_width"]).to(dtype)
    want = torch.nn.functional.layer_norm(
        x.float(), (TINY["text_width"],), layer_norm.weight.float(), layer_norm.bias.float(), 1e-5
    )
    assert torch.equal(layer_norm(x), want.to(dtype))


def test_device_map_auto_loads_through_accelerate(tmp_path):
    model, _ = build("diffclip")
    model.save_pretrained(tmp_path)
    loaded = DiffCLIPModel.from_pretrained(tmp_path, device_map="auto").eval()
    # materialised (no meta tensor) on the device "auto" picks for a model this small: the first GPU, else the CPU
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert {p.device for p in loaded.parameters()} == {expected}
    # every class accelerate is told never to split must exist in the model, or multi-device maps split it
    classes = {type(m).__name__ for m in loaded.modules()}
    assert set(loaded._no_split_modules) <= classes, set(loaded._no_split_modules) - classes
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=text_batch(), pixel_values=pixels()).logits_per_image,
            model(input_ids=text_batch(), pixel_values=pixels()).logits_per_image,
        )


def test_default_configs_are_the_released_vit_b16():
    with torch.device("meta"):
        diffclip = DiffCLIPModel(DiffCLIPConfig())
        baseline = DiffCLIPModel(
            DiffCLIPConfig(
                text_config={"use_differential_attention": False},
                vision_config={"use_differential_attention": False, "layer_norm_eps": 1e-6},
            )
        )
    assert sum(p.numel() for p in diffclip.parameters()) == 149_629_185
    assert sum(p.numel() for p in baseline.parameters()) == 149_619_969
    config = DiffCLIPConfig()
    assert (config.vision_config.patch_size, config.vision_config.image_size, config.vision_config.hidden_act) == (
        16,
        224,
        "gelu",
    )
    assert config.text_config.hidden_act == "quick_gelu" and config.vision_config.layer_norm_eps == 1e-5
    assert not config.vision_config.use_pre_layernorm and config.vision_config.patch_embedding_bias
    assert math.isclose(config.logit_scale_init_value, math.log(1 / 0.07))


def test_depth_schedule_lambda_init():
    model, _ = build("diffclip_star")
    for index, layer in enumerate(model.vision_model.encoder.layers):
        assert math.isclose(layer.self_attn.lambda_init, 0.8 - 0.6 * math.exp(-0.3 * index))
    model, _ = build("diffclip")
    assert all(layer.self_attn.lambda_init == 0.8 for layer in model.text_model.encoder.layers)


@pytest.mark.parametrize("name", ["flash_attention_2", "paged|flash_attention_2", "kernels-community/flash-attn3"])
def test_flash_attention_path_splits_values_to_the_query_width(monkeypatch, name):
    """Flash attention needs equal query and value widths and takes no mask (causality through `is_causal`). A
    stand-in kernel registered under its name enforces both; the result must equal the eager model."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls = []

    def strict_flash(module, query, key, value, attention_mask, **kwargs):
        assert query.shape[-1] == value.shape[-1], "flash attention needs equal head dims"
        assert attention_mask is None
        calls.append(kwargs.get("is_causal"))
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, name, strict_flash)
    # transformers 5.x's registry resolves the deprecated `paged|` names to the unprefixed kernel
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, name.removeprefix("paged|"), strict_flash)
    eager, original = build("diffclip", attn_implementation="eager")
    flash, _ = build("diffclip", attn_implementation="eager")
    for config in (flash.config, flash.config.text_config, flash.config.vision_config):
        config._attn_implementation = name
    inputs = dict(input_ids=text_batch(), pixel_values=pixels())
    with torch.no_grad():
        want, got = eager(**inputs), flash(**inputs)
    torch.testing.assert_close(got.logits_per_image, want.logits_per_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.text_embeds, want.text_embeds, atol=1e-6, rtol=0)
    # per differential layer: two maps, each over two value halves; text layers causal, vision layers not
    layers = TINY["text_layers"] + TINY["vision_layers"]
    assert len(calls) == 4 * layers and calls.count(True) == 4 * TINY["text_layers"]


@pytest.mark.parametrize(
    "input_dtype, weight_dtype, compute_dtype",
    [
        (torch.bfloat16, torch.float32, torch.float32),  # autocast-style: half activations, float32 weights
        (torch.float64, torch.float32, torch.float64),  # a float64 input is never rounded through float32
        (torch.float16, torch.float16, torch.float32),  # same dtype: the kernel accumulates in float32
    ],
)
def test_norms_compute_in_the_wider_dtype_and_return_the_input_dtype(input_dtype, weight_dtype, compute_dtype):
    from transformers_diffclip.modeling_diffclip import DiffCLIPLayerNorm, DiffCLIPRMSNorm

    generator = torch.Generator().manual_seed(7)
    x = (torch.randn(4, 6, 16, generator=generator, dtype=torch.float64) * 3 + 1).to(input_dtype)
    weight, bias = (torch.randn(16, generator=generator, dtype=torch.float64) for _ in range(2))
    layer_norm = DiffCLIPLayerNorm(16, eps=1e-5).to(weight_dtype)
    rms_norm = DiffCLIPRMSNorm(16, eps=1e-5).to(weight_dtype)
    with torch.no_grad():
        layer_norm.weight.copy_(weight), layer_norm.bias.copy_(bias), rms_norm.weight.copy_(weight)
    # the formulas, written out in compute_dtype from the same (rounded) operands
    xc = x.to(compute_dtype)
    w, b = layer_norm.weight.to(compute_dtype), layer_norm.bias.to(compute_dtype)
    centred = xc - xc.mean(-1, keepdim=True)
    want_ln = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5) * w + b
    want_rms = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + 1e-5) * w * 0.2
    with torch.no_grad():
        got_ln, got_rms = layer_norm(x), rms_norm(x, scale=0.2)
    assert got_ln.dtype == got_rms.dtype == input_dtype
    tolerance = 1e-12 if input_dtype == torch.float64 else 1e-5
    # compared before the final rounding to the input dtype: identical up to that one rounding
    rounding = torch.finfo(input_dtype).eps * 16 if input_dtype != torch.float64 else 0.0
    for got, want in ((got_ln, want_ln), (got_rms, want_rms)):
        limit = tolerance + rounding * want.abs().max().item()
        assert (got.to(compute_dtype) - want).abs().max().item() <= limit
