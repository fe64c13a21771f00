"""A model built from a config, and every weight a checkpoint lacks, is initialised as the authors' code
initialises that variant (tests/remote_code/init_facts.py, written from ORIGINAL_MODEL.md); loaded weights are never
touched. The remote-code suite runs the same statistics under every transformers release of the matrix."""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote_code"))
import init_facts  # noqa: E402
import integrity  # noqa: E402

from transformers_diffclip import (  # noqa: E402
    DiffCLIPConfig,
    DiffCLIPModel,
    DiffCLIPTextModel,
    DiffCLIPTextModelWithProjection,
    DiffCLIPVisionModel,
    DiffCLIPVisionModelWithProjection,
)


# (differential text, differential vision): DiffCLIP, the CLIP baseline, DiffCLIP†
VARIANTS = {"diffclip": (True, True), "clip_baseline": (False, False), "diffclip_dagger": (False, True)}


def stats_config(diff_text=True, diff_vision=True, **top) -> DiffCLIPConfig:
    return DiffCLIPConfig(**init_facts.stats_config_kwargs(diff_text, diff_vision), **top)


def problems_of(model, config, names=None):
    return init_facts.statistics_problems(model, config.text_config, config.vision_config, names)


def randomize(model):
    """Values no initialiser produces, so that a load that re-initialises anything is visible."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05 + 0.3)
    return model


def test_facts_flag_a_wrong_initialisation():
    """The statistics check is not vacuous: PyTorch's default init of the text tower's matrices, a zeroed λ and a
    token embedding at std 1 are all reported."""
    torch.manual_seed(0)
    config = stats_config()
    model = DiffCLIPModel(config)
    with torch.no_grad():
        torch.nn.init.normal_(model.text_model.embeddings.token_embedding.weight, std=1.0)
        for layer in model.text_model.encoder.layers:
            torch.nn.init.kaiming_uniform_(layer.self_attn.q_proj.weight, a=5**0.5)
        for layer in model.vision_model.encoder.layers:
            for vector in (layer.self_attn.lambda_q1, layer.self_attn.lambda_k1, layer.self_attn.lambda_q2):
                torch.nn.init.zeros_(vector)
    problems = problems_of(model, config)
    assert any("('normal', 0.02)" in p for p in problems), problems
    assert any(f"('normal', {128**-0.5})" in p for p in problems), problems
    assert any("('normal', 0.1)" in p for p in problems), problems


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fresh_dual_encoder_is_initialised_as_the_original(variant):
    torch.manual_seed(0)
    config = stats_config(*VARIANTS[variant])
    model = DiffCLIPModel(config)
    assert problems_of(model, config) == []
    assert model.logit_scale.item() == pytest.approx(init_facts.LOGIT_SCALE_INIT)


@pytest.mark.parametrize(
    "model_class",
    [DiffCLIPTextModel, DiffCLIPTextModelWithProjection, DiffCLIPVisionModel, DiffCLIPVisionModelWithProjection],
)
@pytest.mark.parametrize("variant", ["diffclip", "clip_baseline"])
def test_fresh_tower_models_are_initialised_as_the_original(model_class, variant):
    torch.manual_seed(0)
    config = stats_config(*VARIANTS[variant])
    tower = config.text_config if "Text" in model_class.__name__ else config.vision_config
    model = model_class(tower)
    assert problems_of(model, config) == []


@pytest.mark.parametrize("variant", ["diffclip", "clip_baseline"])
def test_from_pretrained_without_weights_initialises_everything(variant):
    """No checkpoint at all: every tensor comes from `_init_weights` (leftover memory, seen as -1.9e9 biases and NaN
    before, would fail the statistics)."""
    torch.manual_seed(0)
    config = stats_config(*VARIANTS[variant])
    model = DiffCLIPModel.from_pretrained(None, config=config, state_dict={})
    assert not any(p.is_meta for p in model.parameters())  # every tensor materialised
    assert problems_of(model, config) == []


def test_projection_head_missing_from_a_tower_checkpoint_is_initialised(tmp_path):
    """A `DiffCLIPVisionModelWithProjection` loaded from a saved `DiffCLIPVisionModel`: the projection (absent from the
    file) is drawn as the original draws it, everything else equals the file."""
    config = stats_config()
    randomize(DiffCLIPVisionModel(config.vision_config)).save_pretrained(tmp_path)
    model = DiffCLIPVisionModelWithProjection.from_pretrained(tmp_path)
    assert integrity.parameter_problems(model, tmp_path) == [
        "parameter visual_projection.weight is not in the checkpoint"
    ]
    assert problems_of(model, config, {"visual_projection.weight"}) == []


@pytest.mark.parametrize("variant", ["diffclip", "clip_baseline"])
def test_missing_weights_are_initialised_and_loaded_ones_kept(tmp_path, variant):
    """Parameters of every kind dropped from a checkpoint (a bias whose weight is loaded, a weight whose bias is
    loaded, λ, the class token, an embedding, a norm, a projection) follow the facts; the rest equals the file."""
    config = stats_config(*VARIANTS[variant])
    randomize(DiffCLIPModel(config)).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    missing = [
        "text_model.encoder.layers.0.self_attn.q_proj.bias",
        "text_model.encoder.layers.1.mlp.fc1.weight",
        "text_model.embeddings.token_embedding.weight",
        "text_model.final_layer_norm.weight",
        "vision_model.encoder.layers.2.self_attn.out_proj.weight",
        "vision_model.encoder.layers.0.mlp.fc2.bias",
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.position_embedding.weight",
        "text_projection.weight",
        "logit_scale",
    ]
    if variant == "diffclip":
        missing += [
            "vision_model.encoder.layers.1.self_attn.lambda_k2",
            "text_model.encoder.layers.0.self_attn.lambda_q1",
        ]
    for name in missing:
        del tensors[name]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model = DiffCLIPModel.from_pretrained(tmp_path)
    problems = integrity.parameter_problems(model, tmp_path)
    assert sorted(problems) == sorted(f"parameter {name} is not in the checkpoint" for name in missing)
    # the λ vectors of one layer are single 32-value draws: check them pooled with the facts' tolerance
    assert problems_of(model, config, set(missing)) == []


def test_initializer_factor_scales_every_random_draw():
    """`initializer_factor` (1 for the original) multiplies every random draw's scale, as transformers' CLIP does for
    its tests; norms and the temperature are unchanged."""
    torch.manual_seed(0)
    config = stats_config(initializer_factor=0.5)
    for tower in (config.text_config, config.vision_config):
        tower.initializer_factor = 0.5
    model, reference = DiffCLIPModel(config), DiffCLIPModel(stats_config())
    for (name, got), (_, want) in zip(model.named_parameters(), reference.named_parameters()):
        kind = init_facts.expected_init(name, config.text_config, config.vision_config)[0]
        if kind in ("zeros", "ones", "constant"):
            torch.testing.assert_close(got, want, msg=name)
        else:
            if got.numel() >= 1000:  # (the smaller λ vectors are covered by the statistics tests)
                assert got.std().item() / want.std().item() == pytest.approx(0.5, rel=0.1), name
