"""A saved folder loads back holding exactly its checkpoint, under the installed transformers.

A clean loading report proves nothing (transformers 5 builds on the meta device and then initialises whatever it
believes the checkpoint left empty), so every parameter is compared with the tensor in `model.safetensors` byte
for byte, and every buffer with its definition (tests/remote_code/integrity.py: DiffCLIP has no buffers, so any
buffer is reported). The remote-code suite runs the same checks on folders loaded without the package, once per
transformers version (.ci/version_matrix.sh).
"""

import sys
from pathlib import Path

import pytest
import torch
import transformers
from _helpers import tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModel


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote_code"))
import integrity  # noqa: E402

from transformers_diffclip import (  # noqa: E402
    DiffCLIPModel,
    DiffCLIPTextModel,
    DiffCLIPTextModelWithProjection,
    DiffCLIPVisionModel,
    DiffCLIPVisionModelWithProjection,
)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Values no initialiser produces (LayerNorm weights away from 1, biases away from 0), so that a load that
    re-initialises anything is visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05 + 0.3)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("integrity") / "diffclip"
    randomize(DiffCLIPModel(tiny_config())).save_pretrained(folder)
    return folder


CONFIGS = {
    "diffclip": lambda: tiny_config(),
    "baseline": lambda: tiny_config(diff_text=False, diff_vision=False),
    "depth_schedule_pre_layernorm_no_patch_bias": lambda: tiny_config(
        schedule="depth", use_pre_layernorm=True, patch_embedding_bias=False
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_parameter_equals_the_checkpoint(name, tmp_path):
    model = randomize(DiffCLIPModel(CONFIGS[name]()))
    model.save_pretrained(tmp_path)
    for loaded in (DiffCLIPModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is DiffCLIPModel
        integrity.assert_matches_checkpoint(loaded, tmp_path)
    assert not list(loaded.buffers()), "DiffCLIP is expected to hold no buffers; see integrity.KNOWN_BUFFERS"


@pytest.mark.parametrize(
    "model_class, tower",
    [
        (DiffCLIPTextModel, "text_config"),
        (DiffCLIPTextModelWithProjection, "text_config"),
        (DiffCLIPVisionModel, "vision_config"),
        (DiffCLIPVisionModelWithProjection, "vision_config"),
    ],
)
def test_tower_models_load_their_checkpoint(model_class, tower, tmp_path):
    model = randomize(model_class(getattr(tiny_config(), tower)))
    model.save_pretrained(tmp_path)
    integrity.assert_matches_checkpoint(model_class.from_pretrained(tmp_path), tmp_path)


def test_dtype_load_is_the_stored_values_cast(saved):
    for dtype in (torch.bfloat16, torch.float64):
        model = DiffCLIPModel.from_pretrained(saved, dtype=dtype)
        integrity.assert_matches_checkpoint(model, saved, dtype=dtype)


def test_missing_tensors_are_initialised_without_touching_loaded_ones(saved, tmp_path):
    """The hazard of transformers 5: `_init_weights` runs for modules the checkpoint did not fully fill - here the
    dual encoder itself - and must not overwrite their loaded children (`text_projection`)."""
    tensors = load_file(str(saved / "model.safetensors"))
    missing = ["logit_scale", "visual_projection.weight", "text_model.encoder.layers.0.self_attn.diff_norm.weight"]
    for name in missing:
        del tensors[name]
    for path in saved.iterdir():
        if path.name != "model.safetensors":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model = DiffCLIPModel.from_pretrained(tmp_path)
    problems = integrity.parameter_problems(model, tmp_path)
    assert sorted(problems) == sorted(f"parameter {name} is not in the checkpoint" for name in missing)
    assert model.logit_scale.item() == pytest.approx(model.config.logit_scale_init_value, abs=1e-6)
    assert torch.equal(model.text_model.encoder.layers[0].self_attn.diff_norm.weight, torch.ones(16))
    assert 0 < model.visual_projection.weight.std().item() < 1


@pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="transformers 4 writes the checkpoint after initialising, so this corruption cannot happen there",
)
def test_check_catches_an_init_that_overwrites_loaded_weights(saved, tmp_path):
    """The comparison is not vacuous under the installed transformers: an `_init_weights` that writes through
    `.data` (bypassing the guarded `nn.init` functions) into a loaded child is reported."""

    class CorruptingDiffCLIPModel(DiffCLIPModel):
        def _init_weights(self, module):
            super()._init_weights(module)
            if isinstance(module, DiffCLIPModel):
                module.text_projection.weight.data.normal_()

    tensors = load_file(str(saved / "model.safetensors"))
    del tensors["logit_scale"]  # leaves the dual encoder incompletely loaded, so its `_init_weights` runs
    for path in saved.iterdir():
        if path.name != "model.safetensors":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    problems = integrity.parameter_problems(CorruptingDiffCLIPModel.from_pretrained(tmp_path), tmp_path)
    assert any(p.startswith("parameter text_projection.weight differs from the checkpoint") for p in problems), (
        problems
    )
    assert DiffCLIPModel.from_pretrained(tmp_path).text_projection.weight.equal(tensors["text_projection.weight"])


def test_check_reports_a_buffer_it_does_not_know(saved):
    """A buffer that is not in the known-buffer table (e.g. a non-persistent `position_ids`, which transformers 5
    leaves uninitialised unless `_init_weights` rebuilds it) is reported."""

    class BufferedDiffCLIPModel(DiffCLIPModel):
        def __init__(self, config):
            super().__init__(config)
            self.register_buffer("position_ids", torch.arange(77).unsqueeze(0), persistent=False)

    model = BufferedDiffCLIPModel.from_pretrained(saved)
    assert integrity.parameter_problems(model, saved) == []
    problems = integrity.buffer_problems(model)
    assert len(problems) == 1 and problems[0].startswith("unknown buffer position_ids (1, 77)"), problems
