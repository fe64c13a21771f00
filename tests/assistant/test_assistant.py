"""The assistant (transformers' LLaVA with a DiffCLIP vision tower): which hidden states the projector reads, the
processor's image tokens, save and reload, LLaVA's templates and their loss masks, bad rows."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from _tiny import COLOURS, colour_image, tiny_config, tiny_language_model, write_toy_data

from transformers_diffclip import DiffCLIPModel, DiffCLIPVisionModel
from transformers_diffclip.assistant import (
    IGNORE_INDEX,
    assemble_assistant,
    encode_conversation,
    prepare_conversations,
    vision_tower_of,
)
from transformers_diffclip.image_processing_diffclip import DiffCLIPImageProcessor


PATCHES = 16  # 32 px images, patch 8


def _diffclip(seed=1, **overrides):
    torch.manual_seed(seed)
    return DiffCLIPModel(tiny_config(**overrides)).eval()


def _image_processor(size=32):
    return DiffCLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _assistant(layer=-2, strategy="default", diffclip=None):
    diffclip = diffclip if diffclip is not None else _diffclip()
    lm, tokenizer = tiny_language_model()
    model, processor = assemble_assistant(
        vision_tower_of(diffclip), _image_processor(), lm, tokenizer, layer, strategy
    )
    return model.eval(), processor, diffclip


def _pixels(count=2):
    images = [colour_image(rgb, seed=i) for i, rgb in enumerate(list(COLOURS.values())[:count])]
    return _image_processor()(images, return_tensors="pt")["pixel_values"]


def _projector_by_hand(projector, features):
    """LLaVA-1.5's mlp2x_gelu written out: linear, exact GELU, linear."""
    hidden = F.linear(features, projector.linear_1.weight, projector.linear_1.bias)
    return F.linear(F.gelu(hidden), projector.linear_2.weight, projector.linear_2.bias)


@pytest.mark.parametrize(
    "layer, strategy, differential",
    [
        (-2, "default", True),
        (-2, "default", False),  # the CLIP baseline (standard attention) in DiffCLIP's layout
        (-1, "full", True),
        (0, "full", True),
        (1, "default", True),
        ([0, -2], "default", True),
    ],
)
def test_projected_features_are_the_projector_on_the_selected_hidden_states(layer, strategy, differential):
    """LLaVA's image features == the projector applied to what a separately built DiffCLIPVisionModel returns
    (`hidden_states[layer]`, the class token dropped by 'default'); layer 0 failed before the encoder fix."""
    model, _, diffclip = _assistant(layer, strategy, _diffclip(diff_vision=differential))
    assert diffclip.config.vision_config.use_differential_attention is differential
    reference = DiffCLIPVisionModel(diffclip.config.vision_config).eval()
    reference.vision_model.load_state_dict(diffclip.vision_model.state_dict())
    pixels = _pixels()
    with torch.no_grad():
        states = reference(pixel_values=pixels, output_hidden_states=True).hidden_states
        layers = [layer] if isinstance(layer, int) else layer
        selected = [states[index][:, 1:] if strategy == "default" else states[index] for index in layers]
        expected = _projector_by_hand(model.model.multi_modal_projector, torch.cat(selected, dim=-1))
        got = torch.stack(model.get_image_features(pixel_values=pixels).pooler_output)
    assert got.shape == (2, PATCHES + (strategy == "full"), 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_penultimate_layer_is_not_the_last():
    """The selection matters: -2 and -1 give different features (so the test above can tell them apart)."""
    model, _, _ = _assistant()
    pixels = _pixels()
    with torch.no_grad():
        penultimate = torch.stack(model.get_image_features(pixel_values=pixels).pooler_output)
        last = torch.stack(model.get_image_features(pixel_values=pixels, vision_feature_layer=-1).pooler_output)
    assert not torch.allclose(penultimate, last)


def test_image_features_replace_the_image_tokens_in_forward():
    """forward puts the projected features where the processor put the image tokens: the language model sees them
    as its input embeddings at those positions."""
    model, processor, _ = _assistant()
    image = colour_image(COLOURS["red"])
    inputs = processor(images=[image], text=["<image> is there a red square ?"], return_tensors="pt")
    image_id = model.config.image_token_id
    assert int((inputs["input_ids"] == image_id).sum()) == PATCHES
    seen = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
        features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
    hook.remove()
    positions = inputs["input_ids"][0] == image_id
    torch.testing.assert_close(seen["inputs_embeds"][0, positions], features)


@pytest.mark.parametrize("strategy, tokens", [("default", 196), ("full", 197)])
def test_processor_gives_196_patch_tokens_at_224_px(strategy, tokens):
    """DiffCLIP's released towers: 224 px, patch 16 → 14 × 14 = 196 image tokens (+1 class token with 'full')."""
    diffclip = _diffclip(image_size=224, patch_size=16)
    model, processor, _ = _assistant(strategy=strategy, diffclip=diffclip)
    processor.image_processor = DiffCLIPImageProcessor()  # the released preprocessing: 224 px
    inputs = processor(images=[colour_image(COLOURS["blue"])], text=["<image> a"], return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (224, 224)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == tokens == model.config.image_seq_length


def test_saved_assistant_reloads_with_the_auto_classes_and_generates_the_same(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

    model, processor, _ = _assistant()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    reprocessor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, LlavaForConditionalGeneration)
    assert isinstance(reloaded.model.vision_tower, DiffCLIPVisionModel)
    assert reprocessor.tokenizer.chat_template == processor.tokenizer.chat_template
    original, loaded = model.state_dict(), reloaded.state_dict()
    assert sorted(original) == sorted(loaded)
    assert all(torch.equal(original[name], loaded[name]) for name in original)
    text = reprocessor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>\nis there a red square ?"}], tokenize=False, add_generation_prompt=True
    )
    image = colour_image(COLOURS["red"])
    inputs = reprocessor(images=[image], text=[text], return_tensors="pt", add_special_tokens=False)
    assert (
        inputs["input_ids"].tolist() == processor(images=[image], text=[text], add_special_tokens=False)["input_ids"]
    )
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        got = reloaded.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert got.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(got, expected)


def test_clip_baseline_tower_from_transformers_clip():
    """The comparison tower: transformers' CLIP gives a CLIPVisionModel with the same weights."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    clip = CLIPModel(CLIPConfig(text_config=tower, vision_config={**tower, "image_size": 32, "patch_size": 8}))
    vision = vision_tower_of(clip)
    assert isinstance(vision, CLIPVisionModel)
    assert vision.vision_model is clip.vision_model


def _tokens(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_chat_template_loss_is_on_the_assistant_turns_only():
    _, processor, _ = _assistant()
    tokenizer = processor.tokenizer
    row = {
        "image": "x.png",
        "conversations": [
            {"from": "human", "value": "<image>\nis there a red square ?"},
            {"from": "gpt", "value": "yes"},
            {"from": "human", "value": "what colour ?"},
            {"from": "gpt", "value": "red , not blue"},
        ],
    }
    input_ids, labels = encode_conversation(row, tokenizer, "chat", PATCHES)
    image = tokenizer.convert_tokens_to_ids("<image>")
    # the template written out: USER : <image>×16 is there a red square ? ASSISTANT : yes </s> USER : ...
    expected = (
        _tokens(tokenizer, "USER :")
        + [image] * PATCHES
        + _tokens(tokenizer, "is there a red square ? ASSISTANT : yes </s> USER : what colour ? ASSISTANT :")
        + _tokens(tokenizer, "red , not blue </s>")
    )
    assert input_ids == expected
    learned = [token for token, label in zip(input_ids, labels) if label != IGNORE_INDEX]
    assert learned == _tokens(tokenizer, "yes </s> red , not blue </s>")
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(input_ids, labels))


def test_plain_template_is_the_image_then_the_caption_with_the_loss_on_the_caption():
    _, processor, _ = _assistant()
    tokenizer = processor.tokenizer
    row = {
        "image": "x.png",
        "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a red square"}],
    }
    input_ids, labels = encode_conversation(row, tokenizer, "plain", PATCHES)
    caption = _tokens(tokenizer, "a red square")
    assert input_ids == [tokenizer.convert_tokens_to_ids("<image>")] * PATCHES + caption
    assert labels == [IGNORE_INDEX] * PATCHES + caption


def test_bad_rows_are_listed_or_skipped_and_counted(tmp_path):
    files = write_toy_data(tmp_path)
    rows = json.loads(files["tune"].read_text())
    bad = [
        {**rows[0], "image": "missing.png"},
        {"id": "x", "conversations": [{"from": "human", "value": "hi"}]},
        {**rows[1], "conversations": [{"from": "robot", "value": "?"}, {"from": "gpt", "value": "no"}]},
        {"id": "y", "conversations": [{"from": "human", "value": "<image> what ?"}, {"from": "gpt", "value": "a"}]},
    ]
    (files["images"] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    bad.append({**rows[2], "image": "broken.png"})
    with pytest.raises(ValueError, match=r"(?s)5 of 22 rows .*row 17: .*missing\.png.*row 21: .*broken\.png"):
        prepare_conversations(rows + bad, files["images"], "chat")
    kept, skipped = prepare_conversations(rows + bad, files["images"], "chat", skip_bad_rows=True)
    assert skipped == 5 and kept == rows
    # the plain template needs an image: the text-only row is bad there
    with pytest.raises(ValueError, match="plain template pairs an image"):
        prepare_conversations(rows, files["images"], "plain")
