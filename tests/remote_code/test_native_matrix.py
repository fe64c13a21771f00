"""Initialisation, kernel selection and the feature methods of the remote code, under every transformers release of
the matrix (4.57.6, 5.0.0, 5.24.0): a fresh model and every weight a checkpoint lacks follow the authors'
initialisation (init_facts.py); `attn_implementation` and `set_attn_implementation` reach both towers."""

from __future__ import annotations

import shutil
import sys

import init_facts
import integrity
import pytest
import remote_env
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModel


sys.path.insert(0, str(remote_env.TESTS_DIR))
from _helpers import record_kernel_calls  # noqa: E402  (imports nothing from the package)


VARIANTS = {"diffclip": (True, True), "baseline": (False, False), "dagger": (False, True)}
FEATURES_AS_OUTPUT = int(transformers.__version__.split(".")[0]) >= 5


def folder_of(fixture_dir, fixture_info, variant):
    return fixture_dir / fixture_info["variants"][variant]["folder"]


@pytest.fixture(scope="module")
def remote(models):
    """The remote-code module of the `diffclip` folder (its model and config classes)."""
    return sys.modules[type(models("diffclip")).__module__]


def stats_config(remote, variant, **top):
    return remote.DiffCLIPConfig(**init_facts.stats_config_kwargs(*VARIANTS[variant]), **top)


def problems_of(model, config, names=None):
    return init_facts.statistics_problems(model, config.text_config, config.vision_config, names)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fresh_model_is_initialised_as_the_original(remote, variant):
    torch.manual_seed(0)
    config = stats_config(remote, variant)
    assert problems_of(remote.DiffCLIPModel(config), config) == []


@pytest.mark.parametrize(
    "class_name", ["DiffCLIPTextModelWithProjection", "DiffCLIPVisionModel", "DiffCLIPVisionModelWithProjection"]
)
def test_fresh_tower_model_is_initialised_as_the_original(remote, class_name):
    torch.manual_seed(0)
    config = stats_config(remote, "diffclip")
    tower = config.text_config if "Text" in class_name else config.vision_config
    assert problems_of(getattr(remote, class_name)(tower), config) == []


def test_from_pretrained_without_weights_initialises_everything(remote):
    torch.manual_seed(0)
    config = stats_config(remote, "diffclip")
    model = remote.DiffCLIPModel.from_pretrained(None, config=config, state_dict={})
    assert problems_of(model, config) == []


def test_missing_weights_follow_the_facts_and_loaded_ones_stay(remote, tmp_path):
    config = stats_config(remote, "baseline")
    model = remote.DiffCLIPModel(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3)  # values no initialiser produces
    model.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    missing = [
        "text_model.encoder.layers.0.self_attn.k_proj.bias",
        "text_model.encoder.layers.1.mlp.fc2.weight",
        "vision_model.encoder.layers.1.self_attn.v_proj.weight",
        "vision_model.embeddings.position_embedding.weight",
        "visual_projection.weight",
    ]
    for name in missing:
        del tensors[name]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = remote.DiffCLIPModel.from_pretrained(tmp_path)
    problems = integrity.parameter_problems(loaded, tmp_path)
    assert sorted(problems) == sorted(f"parameter {name} is not in the checkpoint" for name in missing)
    assert problems_of(loaded, config, set(missing)) == []


def _tower_implementations(model):
    return [config._attn_implementation for config in (model.config.text_config, model.config.vision_config)]


def test_attn_implementation_reaches_both_towers(remote, fixture_dir, fixture_info):
    config = remote.DiffCLIPConfig(attn_implementation="sdpa")
    assert _tower_implementations(type("M", (), {"config": config})) == ["sdpa", "sdpa"]
    folder = folder_of(fixture_dir, fixture_info, "baseline")
    for implementation in ("eager", "sdpa"):
        model = AutoModel.from_pretrained(folder, trust_remote_code=True, attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        assert _tower_implementations(model) == [implementation, implementation]


def test_set_attn_implementation_switches_a_loaded_model(fixture_dir, fixture_info, inputs, monkeypatch):
    """The registry's sdpa kernel runs after switching to sdpa, and stops running after switching back."""
    folder = folder_of(fixture_dir, fixture_info, "baseline")  # standard attention: every layer calls the registry
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
    calls = record_kernel_calls(monkeypatch, "sdpa")
    batch = dict(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    with torch.no_grad():
        want = model(**batch).logits_per_image
        assert calls == []
        model.set_attn_implementation("sdpa")
        assert model.config._attn_implementation == "sdpa" and _tower_implementations(model) == ["sdpa", "sdpa"]
        got = model(**batch).logits_per_image
        layers = model.config.text_config.num_hidden_layers + model.config.vision_config.num_hidden_layers
        assert len(calls) == layers
        model.set_attn_implementation("eager")
        assert _tower_implementations(model) == ["eager", "eager"]
        model(**batch)
        assert len(calls) == layers
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_feature_methods_honour_the_config(fixture_dir, fixture_info, inputs):
    folder = folder_of(fixture_dir, fixture_info, "diffclip")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
    model.config.output_hidden_states = True
    with torch.no_grad():
        image = model.get_image_features(pixel_values=inputs["pixel_values"])
        text = model.get_text_features(input_ids=inputs["input_ids"])
        if not FEATURES_AS_OUTPUT:  # 4.x: CLIP returns the projected tensor, whatever the config says
            assert isinstance(image, torch.Tensor) and isinstance(text, torch.Tensor)
            return
        layers = model.config.vision_config.num_hidden_layers
        assert len(image.hidden_states) == layers + 1
        assert len(text.hidden_states) == model.config.text_config.num_hidden_layers + 1
        model.config.return_dict = False
        as_tuple = model.get_image_features(pixel_values=inputs["pixel_values"])
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[1], image.pooler_output)
    assert len(as_tuple[2]) == layers + 1


def test_differential_maps_carry_gradients(fixture_dir, fixture_info, inputs, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(folder_of(fixture_dir, fixture_info, "diffclip"), folder)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager")
    out = model.vision_model(pixel_values=inputs["pixel_values"], output_attentions=True)
    maps = out.attentions[0]
    maps.retain_grad()
    out.pooler_output.sum().backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
