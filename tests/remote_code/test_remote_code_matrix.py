"""The remote code of a converted folder, loaded without transformers_diffclip, under the installed transformers.

Each check compares against something independent of the code under test: the original model computed from the
ORIGINAL-layout tensors by conversion/reference_original.py, the original image transform and tokenizer, the bytes of
`model.safetensors`, embeddings recorded under another transformers version (tests/golden/), or what the installed
transformers' own CLIP does.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys

import integrity
import numpy as np
import pytest
import remote_env
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
    pipeline,
)


VARIANTS = ("diffclip", "baseline")
TRANSFORMERS_VERSION = tuple(int(part) for part in transformers.__version__.split(".")[:2])


# ------------------------------------------------------------------------------------------------ helpers


def folder_of(fixture_dir, fixture_info, variant):
    return fixture_dir / fixture_info["variants"][variant]["folder"]


def load_model(folder, **kwargs):
    return AutoModel.from_pretrained(folder, trust_remote_code=True, **kwargs).eval()


def is_remote(obj) -> bool:
    module = obj.__module__ if isinstance(obj, type) else type(obj).__module__
    return module.startswith("transformers_modules.")


def normalized(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def assert_close(actual, expected, atol, what=""):
    actual = torch.as_tensor(actual).double()
    expected = torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    error = (actual - expected).abs().max().item()
    assert error <= atol, f"{what}: max abs error {error:.3g} > {atol:g}"


def sample_images():
    """RGB noise images whose resize/crop margins are odd, so a floored crop offset would differ from the original
    (torchvision rounds the offset half to even), plus a grayscale one."""
    rng = np.random.RandomState(0)
    sizes = [(35, 32), (32, 39), (45, 50), (32, 32), (77, 40)]  # (width, height)
    images = [Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8), "RGB") for w, h in sizes]
    images.append(Image.fromarray((rng.rand(41, 36) * 255).astype(np.uint8), "L"))
    return images


def original_ids(ref, fixture_info, texts):
    if not fixture_info["real_bpe"]:
        pytest.skip("the fixture was written without shared/data/bpe_simple_vocab_16e6.txt.gz")
    bpe_path = remote_env.TESTS_DIR.parents[1] / "shared" / "data" / "bpe_simple_vocab_16e6.txt.gz"
    if not bpe_path.is_file():
        pytest.skip(f"the original tokenizer needs {bpe_path}")
    return ref.OriginalTokenizer(bpe_path)(texts, context_length=fixture_info["tiny"]["context_length"])


def auto_image_processor():
    """`AutoImageProcessor`. transformers 5.4 to 5.17 export a placeholder under `transformers.AutoImageProcessor`
    when torchvision is not installed (it asks for torchvision whatever the folder's processor needs); the class
    itself, which the zero-shot pipeline and AutoProcessor use, is importable from its module. Anywhere else the
    placeholder is a failure."""
    top_level = transformers.AutoImageProcessor
    if type(top_level).__name__ != "DummyObject":
        return top_level
    assert (5, 4) <= TRANSFORMERS_VERSION < (5, 18), f"transformers.AutoImageProcessor is a placeholder: {top_level}"
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    return AutoImageProcessor


# ------------------------------------------------------------------------------------------------ loading


def test_package_is_blocked():
    with pytest.raises(ImportError):
        import transformers_diffclip  # noqa: F401


@pytest.mark.parametrize("variant", VARIANTS)
def test_auto_config(fixture_dir, fixture_info, variant):
    folder = folder_of(fixture_dir, fixture_info, variant)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    info, tiny = fixture_info["variants"][variant], fixture_info["tiny"]
    assert type(config).__name__ == "DiffCLIPConfig" and is_remote(config)
    assert type(config.text_config).__name__ == "DiffCLIPTextConfig" and is_remote(config.text_config)
    assert config.projection_dim == tiny["embed_dim"]
    assert config.text_config.hidden_size == tiny["text_width"] and config.vision_config.image_size == 32
    assert config.text_config.use_differential_attention is info["diff_text"]
    assert config.vision_config.use_differential_attention is info["diff_vision"]
    assert config.vision_config.layer_norm_eps == info["vision_eps"]
    assert config.auto_map["AutoModelForZeroShotImageClassification"].endswith(".DiffCLIPModel")
    # a config survives to_dict → from_dict under this version
    again = type(config).from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_model_matches_reference(inputs, models, expected, variant, attn_implementation):
    model = models(variant, attn_implementation=attn_implementation)
    assert type(model).__name__ == "DiffCLIPModel" and is_remote(model)
    assert model.config._attn_implementation == attn_implementation
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True)
    expected = expected(variant)
    atol = 2e-5
    assert_close(output.image_embeds, normalized(expected["image_embeds"]), atol, "image_embeds")
    assert_close(output.text_embeds, normalized(expected["text_embeds"]), atol, "text_embeds")
    assert_close(output.logits_per_image, expected["logits_per_image"], 1e-4, "logits_per_image")
    for ours, theirs in zip(output.vision_model_output.hidden_states, expected["vision_hidden_states"], strict=True):
        assert_close(ours, theirs, atol, "vision hidden state")
    # text hidden states: only the positions up to each row's end-of-text token are defined by the original (it
    # padded with 0, the tokenizer here pads with the end-of-text id; the causal mask keeps them independent)
    for ours, theirs in zip(output.text_model_output.hidden_states, expected["text_hidden_states"], strict=True):
        for row, end in enumerate(expected["eot_positions"].tolist()):
            assert_close(ours[row, : end + 1], theirs[row, : end + 1], atol, "text hidden state")


@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_load(fixture_dir, fixture_info, inputs, models, expected, variant):
    """`dtype=` (transformers 4.56+; `torch_dtype` before) loads every parameter as float64, exactly the stored
    float32 values. (The model computes its norms and softmax in float32 - like the original, whose text tower
    runs them in float32 - so float64 does not buy more accuracy than float32.)"""
    folder = folder_of(fixture_dir, fixture_info, variant)
    model = models(variant, dtype=torch.float64, attn_implementation="eager")
    assert all(p.dtype == torch.float64 for p in model.parameters())
    integrity.assert_matches_checkpoint(model, folder, dtype=torch.float64)
    with torch.no_grad():
        output = model(**inputs)
    assert output.logits_per_image.dtype == torch.float64
    assert_close(output.logits_per_image, expected(variant)["logits_per_image"], 2e-5, "float64 logits_per_image")


def test_bfloat16_load(fixture_dir, fixture_info, inputs, models, expected):
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    model = models("diffclip", dtype=torch.bfloat16)
    integrity.assert_matches_checkpoint(model, folder, dtype=torch.bfloat16)
    with torch.no_grad():
        output = model(**inputs)
    cosine = (output.image_embeds.double() * normalized(expected("diffclip")["image_embeds"])).sum(-1)
    assert output.image_embeds.dtype == torch.bfloat16 and bool((cosine > 0.99).all()), cosine


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_attention_maps_match_reference(fixture_info, inputs, models, expected, variant, attn_implementation):
    """`output_attentions=True` gives the original's maps (A1 - lambda*A2 per effective head for differential
    layers) whichever kernel the model was loaded with."""
    model = models(variant, attn_implementation=attn_implementation)
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
    expected = expected(variant)
    heads = fixture_info["tiny"]["vision_heads"]
    vision_maps = output.vision_model_output.attentions
    assert len(vision_maps) == len(expected["vision_attentions"]) == fixture_info["tiny"]["vision_layers"]
    for ours, theirs in zip(vision_maps, expected["vision_attentions"]):
        assert ours.shape[1] == (heads // 2 if fixture_info["variants"][variant]["diff_vision"] else heads)
        assert_close(ours, theirs, 2e-5, "vision attention map")
    for ours, theirs in zip(output.text_model_output.attentions, expected["text_attentions"], strict=True):
        for row, end in enumerate(expected["eot_positions"].tolist()):
            assert_close(ours[row, :, : end + 1, : end + 1], theirs[row, :, : end + 1, : end + 1], 2e-5, "text map")


def test_zero_shot_auto_class(fixture_dir, fixture_info, inputs, models):
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    model = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == "DiffCLIPModel" and is_remote(model)
    integrity.assert_matches_checkpoint(model, folder)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_image, models("diffclip")(**inputs).logits_per_image)


def test_tuple_outputs(inputs, models):
    model = models("diffclip")
    with torch.no_grad():
        as_output, as_tuple = model(**inputs), model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_output.logits_per_image)


def test_loads_from_an_offline_hub_cache(fixture_dir, fixture_info, inputs, models, tmp_path):
    """A Hub id resolved from a pre-seeded cache, offline: the remote code is then imported under the repository
    and revision (another code path of the dynamic-module loader than a local folder)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repository = tmp_path / "models--diffclip-test--tiny"
    shutil.copytree(folder_of(fixture_dir, fixture_info, "diffclip"), repository / "snapshots" / revision)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(revision)
    model = AutoModel.from_pretrained("diffclip-test/tiny", trust_remote_code=True, cache_dir=tmp_path).eval()
    processor = AutoProcessor.from_pretrained("diffclip-test/tiny", trust_remote_code=True, cache_dir=tmp_path)
    assert is_remote(model) and is_remote(processor) and f".tiny.{revision}." in type(model).__module__
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_image, models("diffclip")(**inputs).logits_per_image)


def test_get_features_return_type_follows_clip(inputs, models, expected):
    """`get_*_features` return what the installed transformers' CLIPModel returns (a tensor on 4.x, an output
    with the projected embedding in `pooler_output` on 5.x), with the original's projected embeddings."""
    clip_config = transformers.CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    clip = transformers.CLIPModel(clip_config).eval()
    model, expected = models("diffclip"), expected("diffclip")
    with torch.no_grad():
        pairs = [
            (clip.get_text_features(input_ids=inputs["input_ids"] % 99), model.get_text_features(inputs["input_ids"])),
            (
                clip.get_image_features(pixel_values=inputs["pixel_values"]),
                model.get_image_features(inputs["pixel_values"]),
            ),
        ]
    for (clip_out, ours), key in zip(pairs, ("text_embeds", "image_embeds")):
        if isinstance(clip_out, torch.Tensor):
            assert isinstance(ours, torch.Tensor), f"CLIP returns a tensor here, DiffCLIP {type(ours).__name__}"
        else:
            assert isinstance(ours, type(clip_out)), f"CLIP returns {type(clip_out).__name__}, DiffCLIP {type(ours)}"
            assert clip_out.pooler_output.shape[-1] == clip_config.projection_dim  # CLIP's pooler_output: projected
        assert_close(remote_env.as_embedding(ours), expected[key], 2e-5, key)


# ------------------------------------------------------------------------------------------------ weights


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_parameters_equal_checkpoint_and_no_unknown_buffers(
    fixture_dir, fixture_info, models, variant, attn_implementation
):
    folder = folder_of(fixture_dir, fixture_info, variant)
    integrity.assert_matches_checkpoint(models(variant, attn_implementation=attn_implementation), folder)


def test_integrity_check_catches_a_changed_weight(fixture_dir, fixture_info):
    """The byte comparison is not vacuous: one ulp in one tensor is reported."""
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    model = load_model(folder)
    with torch.no_grad():
        weight = model.text_model.encoder.layers[1].mlp.fc2.weight
        weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(math.inf))
    problems = integrity.parameter_problems(model, folder)
    assert len(problems) == 1, problems
    assert problems[0].startswith("parameter text_model.encoder.layers.1.mlp.fc2.weight differs from the checkpoint")
    model.register_buffer("position_ids", torch.arange(4), persistent=False)
    assert any("unknown buffer position_ids" in p for p in integrity.buffer_problems(model))


def test_partial_checkpoint_keeps_every_loaded_tensor(fixture_dir, fixture_info, tmp_path):
    """A checkpoint that lacks some tensors: the missing ones are initialised, every loaded one stays equal to the
    file (an `_init_weights` of a parent module must not overwrite its loaded children)."""
    source = folder_of(fixture_dir, fixture_info, "diffclip")
    folder = tmp_path / "partial"
    shutil.copytree(source, folder)
    tensors = load_file(str(source / "model.safetensors"))
    missing = ["logit_scale", "visual_projection.weight", "text_model.encoder.layers.1.self_attn.lambda_q1"]
    for name in missing:
        del tensors[name]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model = load_model(folder)
    problems = integrity.parameter_problems(model, folder)
    assert sorted(problems) == sorted(f"parameter {name} is not in the checkpoint" for name in missing)
    assert model.logit_scale.item() == pytest.approx(model.config.logit_scale_init_value, abs=1e-6)
    for name in missing:
        value = model.get_parameter(name)
        assert value.device.type != "meta" and bool(torch.isfinite(value).all()), name
    assert model.visual_projection.weight.std().item() > 0


def test_modules_build_on_the_meta_device(models):
    """No data-dependent code in `__init__` (no `.item()`, no tensor reads): every class builds on the meta device,
    which is how transformers 5 builds a model before loading."""
    model = models("diffclip")
    module = sys.modules[type(model).__module__]
    config = copy.deepcopy(model.config)  # building a model adjusts its config's attention settings
    builds = [
        (module.DiffCLIPModel, config),
        (module.DiffCLIPTextModel, config.text_config),
        (module.DiffCLIPVisionModel, config.vision_config),
        (module.DiffCLIPTextModelWithProjection, config.text_config),
        (module.DiffCLIPVisionModelWithProjection, config.vision_config),
    ]
    for model_class, model_config in builds:
        with torch.device("meta"):
            built = model_class(model_config)
        assert all(p.device.type == "meta" for p in built.parameters()), model_class.__name__


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_round_trip_is_bit_exact(inputs, models, variant, tmp_path):
    model = models(variant)
    target = tmp_path / f"round_trip_{variant}"
    model.save_pretrained(target)
    assert (target / "configuration_diffclip.py").is_file() and (target / "modeling_diffclip.py").is_file()
    again = load_model(target)
    assert is_remote(again)
    before, after = model.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert integrity.same_bytes(before[name], after[name]), name
    integrity.assert_matches_checkpoint(again, target)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_image, again(**inputs).logits_per_image)
    ignore = {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}
    assert {k: v for k, v in again.config.to_dict().items() if k not in ignore} == {
        k: v for k, v in model.config.to_dict().items() if k not in ignore
    }


def test_folders_saved_under_other_versions(fixture_dir, inputs, models, processor):
    """Folders that earlier runs of the matrix saved under other transformers versions (model and processor, with
    their copied code) load here with the fixture's exact weights, outputs and preprocessing; then this version
    saves its own for the runs after it. (The fixture folders themselves were saved by the package's environment.)"""
    saved_root = fixture_dir / "saved_by"
    reference_model = models("diffclip")
    reference_state = reference_model.state_dict()
    images = sample_images()[:2]
    reference_batch = processor(text=TEXTS, images=images, padding=True, return_tensors="pt")
    others = (
        [f for f in sorted(saved_root.glob("*")) if f.name != transformers.__version__] if saved_root.is_dir() else []
    )
    for folder in others:
        model = load_model(folder)
        integrity.assert_matches_checkpoint(model, folder)
        state = model.state_dict()
        assert state.keys() == reference_state.keys()
        assert all(integrity.same_bytes(state[k], reference_state[k]) for k in state), folder.name
        batch = AutoProcessor.from_pretrained(folder, trust_remote_code=True)(
            text=TEXTS, images=images, padding=True, return_tensors="pt"
        )
        for key in reference_batch:
            assert torch.equal(batch[key], reference_batch[key]), f"{key} of the processor saved by {folder.name}"
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits_per_image, reference_model(**inputs).logits_per_image)
    target = saved_root / transformers.__version__
    if target.exists():
        shutil.rmtree(target)
    reference_model.save_pretrained(target)
    processor.save_pretrained(target)


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_embeddings(fixture_info, inputs, models, variant):
    golden = json.loads(remote_env.GOLDEN_PATH.read_text())
    assert golden["fixture_fingerprint"] == fixture_info["fingerprint"], (
        "the fixture's weights or inputs changed since the golden file was written (under transformers "
        f"{golden['written_with_transformers']}); if that is intended, regenerate it with "
        "tests/remote_code/write_golden.py"
    )
    values = remote_env.golden_values(models(variant), inputs)
    for key, expected in golden["variants"][variant].items():
        assert_close(
            values[key], expected, golden["tolerance"], f"{key} vs golden ({golden['written_with_transformers']})"
        )


def test_gradient_checkpointing_gives_the_same_gradients(fixture_dir, fixture_info, inputs):
    """The encoder layers recompute their forward in the backward pass under this version's checkpointing API
    (`activation_checkpointing_enable` from 5.24, `gradient_checkpointing_enable` before), with equal gradients."""
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    batch = {
        "input_ids": inputs["input_ids"][:2],
        "attention_mask": inputs["attention_mask"][:2],
        "pixel_values": inputs["pixel_values"],
    }
    gradients, layer_calls = [], []
    for checkpointing in (False, True):
        model = load_model(folder, attn_implementation="eager").train()
        if checkpointing and hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        calls = []
        model.vision_model.encoder.layers[0].layer_norm1.register_forward_pre_hook(
            lambda *_, calls=calls: calls.append(1)
        )
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        layer_calls.append(len(calls))
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert layer_calls == [1, 2], f"layer forward calls without / with checkpointing: {layer_calls}"
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 0
    for name in gradients[0]:
        assert_close(gradients[1][name], gradients[0][name], 1e-6, f"gradient of {name}")


def test_version_guard(fixture_dir, fixture_info):
    config = AutoConfig.from_pretrained(folder_of(fixture_dir, fixture_info, "diffclip"), trust_remote_code=True)
    module = sys.modules[type(config).__module__]
    module._check_transformers_version(transformers.__version__)
    for ok in ("4.57.0", "4.57.6", "5.0.0", "5.99.1.dev0"):
        module._check_transformers_version(ok)
    for bad in ("4.56.2", "4.0.0", "6.0.0", "6.1.0.dev0"):
        with pytest.raises(ImportError, match=r"transformers >= 4\.57 and < 6"):
            module._check_transformers_version(bad)


def test_unsupported_version_fails_early_with_a_clear_message(fixture_dir, fixture_info, tmp_path, monkeypatch):
    """A user on an unsupported transformers gets the version message from `from_pretrained`, not an
    AttributeError from deep inside the model code later."""
    # a copy under a new name, so that its code is imported afresh (as it would be in a new environment)
    folder = tmp_path / "diffclip_version_probe"
    shutil.copytree(folder_of(fixture_dir, fixture_info, "diffclip"), folder)
    # the module object the remote code imports (importing transformers.pipeline replaces sys.modules' entry)
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.40.0")
    with pytest.raises(ImportError, match=r"supports transformers >= 4\.57 and < 6, but transformers 4\.40\.0"):
        AutoModel.from_pretrained(folder, trust_remote_code=True)


# ------------------------------------------------------------------------------------------------ processing


def test_processor_classes(fixture_dir, fixture_info, processor):
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    assert type(processor).__name__ == "DiffCLIPProcessor" and is_remote(processor)
    assert type(processor.tokenizer).__name__ == "DiffCLIPTokenizer" and is_remote(processor.tokenizer)
    assert type(processor.image_processor).__name__ == "DiffCLIPImageProcessor" and is_remote(
        processor.image_processor
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    image_processor = auto_image_processor().from_pretrained(folder, trust_remote_code=True)
    assert type(tokenizer).__name__ == "DiffCLIPTokenizer" and is_remote(tokenizer)
    assert type(image_processor).__name__ == "DiffCLIPImageProcessor" and is_remote(image_processor)


def test_image_processor_matches_original_transform(fixture_dir, fixture_info, ref, processor):
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    size = fixture_info["tiny"]["image_size"]
    images = sample_images()
    expected = torch.stack([ref.original_image_transform(image, size=size) for image in images])
    for image_processor in (
        auto_image_processor().from_pretrained(folder, trust_remote_code=True),
        processor.image_processor,
    ):
        pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape == expected.shape
        # one pixel of crop offset would change values by O(1); float32 normalisation order differs by ~1e-7
        for index, (ours, theirs) in enumerate(zip(pixel_values, expected)):
            assert_close(ours, theirs, 1e-5, f"image {index} ({images[index].size}, {images[index].mode})")


TEXTS = [
    "a photo of a cat.",
    # with a "<" in the text ftfy leaves entities alone and the two html.unescape calls peel two levels: cleaned
    # once this is "a < b &amp; c", cleaned twice "a < b & c" - so double cleaning changes the ids
    "A < B &amp;amp;amp; C",
    "Caf\u00c3\u00a9 au lait",  # mojibake that ftfy repairs
    "  Mixed CASE\tand\nwhite   space ",
    "emoji \U0001f642 and \u4e2d\u6587",
]


def test_tokenizer_matches_original(fixture_info, ref, processor):
    expected = original_ids(ref, fixture_info, TEXTS)
    tokenizer = processor.tokenizer
    single = [tokenizer(text)["input_ids"] for text in TEXTS]
    batch = tokenizer(TEXTS, padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    for row, text in enumerate(TEXTS):
        length = int((expected[row] != 0).sum())
        assert single[row] == expected[row, :length].tolist(), text
        assert batch[row, :length].tolist() == expected[row, :length].tolist(), text
        assert bool((batch[row, length:] == fixture_info["eot_id"]).all())  # padded with the end-of-text id


def test_text_cleaning_runs_exactly_once_per_text(processor, monkeypatch):
    tokenizer = processor.tokenizer
    module = sys.modules[type(tokenizer).__module__]
    calls = []
    original = module.clean_text

    def counting(text):
        calls.append(text)
        return original(text)

    monkeypatch.setattr(module, "clean_text", counting)
    cases = [
        (lambda: tokenizer("A < B &amp;amp;amp; C"), ["A < B &amp;amp;amp; C"]),
        (lambda: tokenizer(TEXTS[:3], padding=True), TEXTS[:3]),
        (lambda: tokenizer.encode("A B"), ["A B"]),
        (lambda: tokenizer.tokenize("Some Text"), ["Some Text"]),
        (lambda: tokenizer("first", "second"), ["first", "second"]),
        (lambda: tokenizer(["x"], ["y"]), ["x", "y"]),
        (lambda: processor(text=["one", "two"], padding=True), ["one", "two"]),
    ]
    for call, texts in cases:
        calls.clear()
        call()
        assert sorted(calls) == sorted(texts), f"cleaned {calls}, expected each of {texts} once"


def test_zero_shot_pipeline_matches_reference(fixture_dir, fixture_info, ref):
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    classifier = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)
    assert type(classifier.model).__name__ == "DiffCLIPModel" and is_remote(classifier.model)
    labels = ["cat", "x < y &amp;amp;amp; z", "a   Dog"]
    images = sample_images()[:2]
    results = classifier(images, candidate_labels=labels)
    texts = [f"This is a photo of {label}." for label in labels]
    if fixture_info["real_bpe"]:
        input_ids = original_ids(ref, fixture_info, texts)
    else:  # no original tokenizer without the BPE file: the model side is still compared
        input_ids = classifier.tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
    size = fixture_info["tiny"]["image_size"]
    pixel_values = torch.stack([ref.original_image_transform(image, size=size) for image in images])
    expected = remote_env.original_forward(ref, fixture_dir, fixture_info, "diffclip", input_ids, pixel_values)
    probabilities = expected["logits_per_image"].softmax(dim=-1)
    for row, result in enumerate(results):
        scores = {entry["label"]: entry["score"] for entry in result}
        assert sorted(scores) == sorted(labels)
        assert_close([scores[label] for label in labels], probabilities[row], 2e-5, f"pipeline scores, image {row}")


def test_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path / "processor")
    for name in ("processing_diffclip.py", "image_processing_diffclip.py"):
        assert (tmp_path / "processor" / name).is_file(), name
    again = AutoProcessor.from_pretrained(tmp_path / "processor", trust_remote_code=True)
    images = sample_images()[:3]
    first = processor(text=TEXTS, images=images, padding=True, return_tensors="pt")
    second = again(text=TEXTS, images=images, padding=True, return_tensors="pt")
    assert first.keys() == second.keys() == {"input_ids", "attention_mask", "pixel_values"}
    for key in first:
        assert torch.equal(first[key], second[key]), key
