"""Attention maps against explicit computations from independently computed attention weights
(tests/reference_original.py), autograd, and the `diffclip attention-map` command end to end."""

import copy

import numpy as np
import pytest
import torch
from _helpers import TINY, original_to_hf, text_batch, tiny_config, tiny_tokenizer
from PIL import Image
from reference_original import (
    lambda_init_schedule,
    make_original_state_dict,
    original_forward,
    original_image_transform,
)

from transformers_diffclip import (
    DiffCLIPImageProcessor,
    DiffCLIPModel,
    DiffCLIPProcessor,
    DiffCLIPTextModel,
    DiffCLIPVisionModel,
    cli,
    modeling_diffclip,
)
from transformers_diffclip import interpret as am
from transformers_diffclip.core.images import open_image


VARIANTS = {"diffclip": (True, True), "clip_baseline": (False, False)}
GRID = TINY["image_size"] // TINY["patch_size"]  # 4×4 patches
TOKENS = GRID * GRID + 1


def build(variant, attn_implementation="eager", seed=0):
    diff_text, diff_vision = VARIANTS[variant]
    original = make_original_state_dict(diff_text=diff_text, diff_vision=diff_vision, seed=seed, **TINY)
    config = tiny_config(diff_text, diff_vision)
    config._attn_implementation = attn_implementation
    model = DiffCLIPModel(config).eval()
    model.load_state_dict(original_to_hf(original, diff_text, diff_vision), strict=True)
    return model, original


def reference_vision_maps(original, variant, pixel_values):
    diff_text, diff_vision = VARIANTS[variant]
    out = original_forward(
        original,
        None,
        pixel_values,
        vision_heads=TINY["vision_heads"],
        text_heads=TINY["text_heads"],
        diff_vision=diff_vision,
        diff_text=diff_text,
        lambda_init=lambda_init_schedule(TINY["vision_layers"], False),
        return_attentions=True,
    )
    return out["vision_attentions"]


def image_processor():
    return DiffCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def photo(seed=0, size=(48, 40)):
    """A non-square RGB image with a bright square on noise, so that crops and maps are far from constant."""
    rng = np.random.default_rng(seed)
    array = (rng.random((size[1], size[0], 3)) * 120).astype(np.uint8)
    array[8:24, 10:26] = (250, 40, 40)
    return Image.fromarray(array, mode="RGB")


def pixels(batch=1, seed=1):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Class-token maps and rollout
# --------------------------------------------------------------------------------------------------


def explicit_class_token_map(maps, batch_index=0):
    """mean over heads of max(A[h, 0, 1 + p], 0), written as loops."""
    heads = maps.shape[1]
    values = []
    for patch in range(maps.shape[-1] - 1):
        total = 0.0
        for head in range(heads):
            total += max(float(maps[batch_index, head, 0, 1 + patch]), 0.0)
        values.append(total / heads)
    return torch.tensor(values).reshape(GRID, GRID)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("layer", [0, -1])
def test_class_token_map_equals_direct_computation(variant, layer):
    """Through the whole API (image → processor → model → map) against the original math on the original
    transform of the same image."""
    model, original = build(variant)
    image = photo()
    expected_maps = reference_vision_maps(original, variant, original_image_transform(image, size=32)[None])
    result = am.image_attention_map(model, image_processor(), image, method="layer", layer=layer)
    expected = explicit_class_token_map(expected_maps[layer])
    torch.testing.assert_close(result.patch_map, expected, atol=1e-5, rtol=0)
    assert result.image_map.shape == (32, 32) and result.image.size == (32, 32)
    # bilinear upsampling is a convex combination of patch values
    assert result.image_map.min() >= expected.min() - 1e-6 and result.image_map.max() <= expected.max() + 1e-6
    assert (result.patch_map >= 0).all()
    if variant == "clip_baseline":  # softmax rows: the class token's patch attention sums to at most 1
        assert float(result.patch_map.sum()) <= 1 + 1e-5
    else:  # the clamp is doing something: differential maps do have negative entries
        assert (expected_maps[layer] < 0).any()
    assert result.label == f"class token (layer {layer % TINY['vision_layers']})"


def explicit_rollout(maps_per_layer, batch_index=0):
    """Rollout written row by row with Python lists (positive part, head mean, row renormalisation, identity rows
    for rows without positive mass, 0.5·Â + 0.5·I, layers multiplied first to last)."""
    tokens = maps_per_layer[0].shape[-1]
    rollout = np.eye(tokens)
    for maps in maps_per_layer:
        heads = maps.shape[1]
        mixing = np.zeros((tokens, tokens))
        for i in range(tokens):
            row = [
                sum(max(float(maps[batch_index, h, i, j]), 0.0) for h in range(heads)) / heads for j in range(tokens)
            ]
            total = sum(row)
            row = [float(i == j) for j in range(tokens)] if total <= 0 else [v / total for v in row]
            for j in range(tokens):
                mixing[i, j] = 0.5 * row[j] + 0.5 * float(i == j)
        rollout = mixing @ rollout
    return torch.tensor(rollout, dtype=torch.float32)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rollout_equals_its_formula(variant):
    model, original = build(variant)
    pixel_values = pixels()
    maps = am.vision_attentions(model, pixel_values)
    for got, want in zip(maps, reference_vision_maps(original, variant, pixel_values)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    rollout = am.attention_rollout(maps)
    torch.testing.assert_close(rollout[0], explicit_rollout(maps), atol=1e-5, rtol=0)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(1, TOKENS), atol=1e-5, rtol=0)
    assert (rollout >= 0).all()
    torch.testing.assert_close(am.attention_rollout(maps, start_layer=-1)[0], explicit_rollout(maps[-1:]))


def test_rollout_handles_negative_and_empty_rows():
    """Hand-made differential-like maps: negative entries are dropped, rows renormalised, a row with no positive
    entry becomes an identity row."""
    attention = torch.tensor(
        [
            [[0.6, -0.2, 0.0], [0.1, 0.1, 0.2], [-0.3, -0.1, -0.2]],
            [[0.2, 0.4, -0.5], [0.3, -0.1, 0.1], [0.0, -0.4, 0.0]],
        ]
    )[None]  # (1, 2 heads, 3, 3)
    mixing = am.positive_mixing(attention)[0]
    expected = torch.tensor([[0.8 / 1.2, 0.4 / 1.2, 0.0], [0.4 / 0.8, 0.1 / 0.8, 0.3 / 0.8], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(mixing, expected)
    rollout = am.attention_rollout([attention, attention])[0]
    step = 0.5 * expected + 0.5 * torch.eye(3)
    torch.testing.assert_close(rollout, step @ step)


# --------------------------------------------------------------------------------------------------
# Text-conditioned maps
# --------------------------------------------------------------------------------------------------


def cosine_scores(outputs):
    image = outputs.image_embeds / outputs.image_embeds.norm(dim=-1, keepdim=True)
    text = outputs.text_embeds / outputs.text_embeds.norm(dim=-1, keepdim=True)
    return (image * text).sum(-1)


def test_map_gradients_equal_autograd_for_standard_attention():
    """Standard eager layers return the softmax maps that the forward uses, so autograd gives ∂s/∂A directly."""
    model, _ = build("clip_baseline")
    pixel_values, input_ids = pixels(3), text_batch(3)
    outputs = model(input_ids=input_ids, pixel_values=pixel_values, output_attentions=True)
    want = torch.autograd.grad(cosine_scores(outputs).sum(), outputs.vision_model_output.attentions)
    maps, gradients, scores = am.text_attention_gradients(model, pixel_values, input_ids)
    torch.testing.assert_close(scores, cosine_scores(outputs).detach(), atol=1e-6, rtol=0)
    for got, expected in zip(gradients, want):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    assert not any(p.grad is not None for p in model.parameters())  # parameters untouched


def test_map_gradients_equal_autograd_for_differential_attention(monkeypatch):
    """Since out = (A1 − λ·A2)·V, ∂s/∂A1 must equal the gradient for the differential map and ∂s/∂A2 = −λ times it
    (A1, A2: the softmax maps the layer computes)."""
    model, _ = build("diffclip")
    kernel_maps = []
    original_maps = modeling_diffclip._softmax_maps

    def recording_maps(*args, **kwargs):
        maps = original_maps(*args, **kwargs)
        kernel_maps.append(maps)
        return maps

    monkeypatch.setattr(modeling_diffclip, "_softmax_maps", recording_maps)
    pixel_values, input_ids = pixels(2), text_batch(2)
    outputs = model(input_ids=input_ids, pixel_values=pixel_values, output_attentions=True)
    # the vision tower runs first; every layer calls the kernel once for A1, then once for A2
    vision_kernel_maps = kernel_maps[: 2 * TINY["vision_layers"]]
    assert all(k.shape[-1] == TOKENS for k in vision_kernel_maps)
    want = torch.autograd.grad(cosine_scores(outputs).sum(), vision_kernel_maps)
    _, gradients, _ = am.text_attention_gradients(model, pixel_values, input_ids)
    pairs = TINY["vision_heads"] // 2
    for index, (layer, got) in enumerate(zip(model.vision_model.encoder.layers, gradients)):
        lam = float(layer.self_attn.lambda_full().detach())
        assert got.shape == (2, pairs, TOKENS, TOKENS)
        torch.testing.assert_close(got, want[2 * index], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(-lam * got, want[2 * index + 1], atol=1e-6, rtol=1e-4)


def test_gradient_weighted_relevance_formula():
    """Chefer et al.'s rule R ← R + mean_h((∇A ⊙ A)⁺)·R from R = I, written out with loops."""
    generator = torch.Generator().manual_seed(3)
    maps = [torch.randn(2, 3, 5, 5, generator=generator) for _ in range(3)]
    grads = [torch.randn(2, 3, 5, 5, generator=generator) for _ in range(3)]
    for start in (0, 1):
        got = am.gradient_weighted_relevance(maps, grads, start_layer=start)
        for b in range(2):
            relevance = np.eye(5)
            for attention, gradient in zip(maps[start:], grads[start:]):
                cam = np.zeros((5, 5))
                for h in range(3):
                    cam += np.maximum(gradient[b, h].numpy() * attention[b, h].numpy(), 0) / 3
                relevance = relevance + cam @ relevance
            torch.testing.assert_close(got[b], torch.tensor(relevance[0, 1:], dtype=torch.float32))


def test_text_map_changes_with_the_query():
    model, _ = build("diffclip")
    pixel_values = pixels().repeat(3, 1, 1, 1)
    input_ids = text_batch(3, seed=5)
    maps, gradients, scores = am.text_attention_gradients(model, pixel_values, input_ids)
    relevance = am.gradient_weighted_relevance(maps, gradients)
    assert relevance.shape == (3, GRID * GRID) and (relevance >= 0).all()
    # same image, different queries: different maps (normalised, so not just a scale)
    shapes = [row / row.sum() for row in relevance]
    assert (shapes[0] - shapes[1]).abs().max() > 1e-3 and (shapes[1] - shapes[2]).abs().max() > 1e-3
    # each row depends only on its own pair: one query alone gives the same map
    alone = am.gradient_weighted_relevance(*am.text_attention_gradients(model, pixel_values[:1], input_ids[1:2])[:2])
    torch.testing.assert_close(alone[0], relevance[1], atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Attention kernels: sdpa models, transformers' CLIP
# --------------------------------------------------------------------------------------------------


def attn_implementations(model):
    config = model.config
    return (
        config._attn_implementation,
        config.vision_config._attn_implementation,
        config.text_config._attn_implementation,
    )


def test_sdpa_model_gives_eager_maps_and_is_restored():
    eager, _ = build("diffclip", "eager")
    sdpa, _ = build("diffclip", "sdpa")
    with torch.no_grad():  # DiffCLIP itself already computes maps under sdpa (eagerly, for that call)
        direct = sdpa.vision_model(pixel_values=pixels(), output_attentions=True).attentions
    sdpa.train()
    for got, direct_map, want in zip(
        am.vision_attentions(sdpa, pixels()), direct, am.vision_attentions(eager, pixels())
    ):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(direct_map, want, atol=1e-6, rtol=0)
    assert attn_implementations(sdpa) == ("sdpa", "sdpa", "sdpa") and sdpa.training
    with pytest.raises(RuntimeError, match="inside"):
        with am.eager_attention(sdpa):
            assert attn_implementations(sdpa) == ("eager", "eager", "eager") and not sdpa.training
            raise RuntimeError("failure inside the block")
    assert attn_implementations(sdpa) == ("sdpa", "sdpa", "sdpa") and sdpa.training


def test_transformers_clip_with_sdpa():
    """transformers' CLIP returns no maps under sdpa; the switch to eager gives them, and the config comes back."""
    from transformers import CLIPConfig, CLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(tower, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    sdpa = CLIPModel._from_config(copy.deepcopy(config), attn_implementation="sdpa").eval()
    eager = CLIPModel._from_config(copy.deepcopy(config), attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    assert attn_implementations(sdpa) == ("sdpa", "sdpa", "sdpa")
    with torch.no_grad():  # the reason for the switch: no maps under sdpa (none, or a None per layer on 4.57)
        returned = sdpa.vision_model(pixel_values=pixels(), output_attentions=True).attentions
    assert all(a is None for a in returned or ())
    maps = am.vision_attentions(sdpa, pixels())
    assert len(maps) == 2 and maps[0].shape == (1, 4, TOKENS, TOKENS)
    with torch.no_grad():
        want = eager.vision_model(pixel_values=pixels(), output_attentions=True).attentions
    for got, expected in zip(maps, want):
        torch.testing.assert_close(got, expected)
    assert attn_implementations(sdpa) == ("sdpa", "sdpa", "sdpa")
    # gradients of CLIP's standard maps: autograd through the eager copy
    input_ids = text_batch(2, pad_id=49407)
    outputs = eager(input_ids=input_ids, pixel_values=pixels(2), output_attentions=True)
    want = torch.autograd.grad(cosine_scores(outputs).sum(), outputs.vision_model_output.attentions)
    _, gradients, _ = am.text_attention_gradients(sdpa, pixels(2), input_ids)
    for got, expected in zip(gradients, want):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_clear_errors(tmp_path):
    model, _ = build("diffclip")
    processor = image_processor()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="Cannot read image"):
        open_image(broken)
    with pytest.raises(FileNotFoundError, match="Image not found"):
        open_image(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="list of text queries is empty"):
        am.text_relevance_maps(model, processor, photo(), [])
    with pytest.raises(ValueError, match="non-empty string"):
        am.text_relevance_maps(model, processor, photo(), ["a dog", "  "])
    text_only = DiffCLIPTextModel(tiny_config().text_config)
    with pytest.raises(ValueError, match="DiffCLIPTextModel has no vision tower"):
        am.image_attention_map(text_only, processor, photo())
    with pytest.raises(ValueError, match="DiffCLIPTextModel has no vision tower"):
        am.text_relevance_maps(text_only, processor, photo(), ["a dog"])
    vision_only = DiffCLIPVisionModel(tiny_config().vision_config)
    with pytest.raises(ValueError, match="DiffCLIPVisionModel has no text tower"):
        am.text_relevance_maps(vision_only, processor, photo(), ["a dog"])
    with pytest.raises(ValueError, match="method must be one of"):
        am.image_attention_map(model, processor, photo(), method="mean")
    with pytest.raises(ValueError, match=r"layer must be in \[-2, 1\]"):
        am.image_attention_map(model, processor, photo(), method="layer", layer=2)


# --------------------------------------------------------------------------------------------------
# Rendering and the command
# --------------------------------------------------------------------------------------------------


def test_colormap_and_overlay():
    colors = am.colorize(np.array([0.0, 0.5, 1.0, 2.0]))
    assert colors.tolist() == [[0, 0, 128], [128, 255, 128], [128, 0, 0], [128, 0, 0]]
    assert am.normalize_map(np.full((4, 4), 3.0)).max() == 0
    image = Image.new("RGB", (32, 32), (100, 100, 100))
    heat = np.zeros((32, 32))
    heat[:, 16:] = 1
    overlay = np.asarray(am.overlay_heatmap(image, heat, alpha=0.5), dtype=np.int32)
    assert overlay[0, 0].tolist() == [50, 50, 114] and overlay[0, 31].tolist() == [114, 50, 50]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Hub-style folders: DiffCLIP (sdpa) and the CLIP baseline with processors, a vision tower, a text tower."""
    tokenizer = tiny_tokenizer()
    processor = DiffCLIPProcessor(image_processor(), tokenizer)
    root = tmp_path_factory.mktemp("attention_maps")
    paths = {}
    for name, variant, implementation in (
        ("DiffCLIP-tiny", "diffclip", "sdpa"),
        ("CLIP-tiny", "clip_baseline", "eager"),
    ):
        model, _ = build(variant, implementation)
        paths[name] = root / name
        model.save_pretrained(paths[name])
        processor.save_pretrained(paths[name])
    vision = DiffCLIPVisionModel(tiny_config().vision_config)
    paths["vision"] = root / "vision"
    vision.save_pretrained(paths["vision"])
    image_processor().save_pretrained(paths["vision"])
    text = DiffCLIPTextModel(tiny_config().text_config)
    paths["text"] = root / "text"
    text.save_pretrained(paths["text"])
    processor.save_pretrained(paths["text"])
    paths["image"] = root / "photo.png"
    photo().save(paths["image"])
    return paths


def cells(png, rows, columns, cell):
    array = np.asarray(png, dtype=np.float32)
    for r in range(rows):
        top = am.PAD + r * (cell + am.CAPTION_HEIGHT + am.PAD)
        yield [
            array[top : top + cell, am.PAD + c * (cell + am.PAD) : am.PAD + c * (cell + am.PAD) + cell]
            for c in range(columns)
        ]


def test_text_relevance_maps_from_a_saved_folder(folders):
    model, processor = am.load_attention_model_and_processor(str(folders["DiffCLIP-tiny"]))
    maps = am.text_relevance_maps(model, processor, folders["image"], ["a red square", "a photo of the sea at night"])
    assert [m.label for m in maps] == ["a red square", "a photo of the sea at night"]
    assert maps[0].patch_map.shape == (GRID, GRID) and maps[0].image_map.shape == (32, 32)
    first, second = (m.patch_map / m.patch_map.sum() for m in maps)
    assert (first - second).abs().max() > 1e-3
    tokens = processor.tokenizer(["a red square"], return_tensors="pt")
    pixel_values = processor.image_processor(images=Image.open(folders["image"]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = cosine_scores(model(input_ids=tokens["input_ids"], pixel_values=pixel_values))
    assert maps[0].score == pytest.approx(float(expected[0]), abs=1e-5)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("compare", [False, True])
def test_command_writes_the_grid(folders, tmp_path, capsys, compare):
    output = tmp_path / "maps" / "out.png"
    argv = ["attention-map", "--model", str(folders["DiffCLIP-tiny"]), "--image", str(folders["image"])]
    argv += ["--text", "a red square", "--text", "noise", "--output", str(output), "--cell-size", "48"]
    if compare:
        argv += ["--compare-model", str(folders["CLIP-tiny"]), "--class-token"]
    assert cli.main(argv) == 0
    rows, columns = (2, 4) if compare else (1, 3)
    png = Image.open(output)
    assert png.format == "PNG"
    assert png.size == (am.PAD + columns * (48 + am.PAD), am.PAD + rows * (48 + am.CAPTION_HEIGHT + am.PAD))
    for row in cells(png.convert("RGB"), rows, columns, 48):
        original = row[0]
        for overlay in row[1:]:
            assert overlay.std() > 5  # not a constant picture
            assert np.abs(overlay - original).mean() > 10  # a visible heat map over the crop
        assert np.abs(row[1] - row[2]).mean() > 1  # columns differ
    printed = capsys.readouterr().out
    assert "DiffCLIP-tiny: a red square  cos(image, text) = " in printed and "Wrote" in printed
    assert ("CLIP-tiny: class token (rollout)" in printed) == compare


def test_command_with_a_vision_tower_draws_the_class_token_map(folders, tmp_path):
    output = tmp_path / "vision.png"
    argv = ["attention-map", "--model", str(folders["vision"]), "--image", str(folders["image"])]
    assert cli.main(argv + ["--output", str(output), "--cell-size", "32", "--method", "layer"]) == 0
    png = Image.open(output)
    assert png.size == (am.PAD + 2 * (32 + am.PAD), am.PAD + (32 + am.CAPTION_HEIGHT + am.PAD))


def test_command_errors(folders, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\x00" * 64)
    base = ["attention-map", "--model", str(folders["DiffCLIP-tiny"]), "--output", str(tmp_path / "o.png")]
    assert cli.main(base + ["--image", str(broken), "--text", "a dog"]) == 2
    assert "diffclip attention-map: error: Cannot read image" in capsys.readouterr().err
    assert cli.main(base + ["--image", str(folders["image"]), "--text", ""]) == 2
    assert "non-empty string" in capsys.readouterr().err
    text_model = ["--model", str(folders["text"]), "--image", str(folders["image"])]
    assert cli.main(["attention-map", *text_model, "--output", str(tmp_path / "t.png")]) == 2
    assert "has no vision tower" in capsys.readouterr().err
    vision = ["--model", str(folders["vision"]), "--image", str(folders["image"]), "--text", "a dog"]
    assert cli.main(["attention-map", *vision, "--output", str(tmp_path / "v.png")]) == 2
    assert "has no text tower" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
