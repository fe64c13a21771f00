"""Tests of conversion/convert_diffclip_original_to_hf.py: original checkpoints → Hub-ready folders.

Synthetic checkpoints in the exact original container (random weights under `module.`, an `args` Namespace,
optimizer and scaler entries) are converted and compared with `conversion/reference_original.py`, an independent
loop-based implementation of the ORIGINAL model that shares no code with the package or the converter.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SHARED = TESTS.parents[1] / "shared"
BPE_PATH = SHARED / "data" / "bpe_simple_vocab_16e6.txt.gz"
LAYOUT_PATH = SHARED / "reference" / "original_layout.json"
PAPER_RESULTS = SHARED / "reference" / "paper_results.md"
for folder in (TESTS, ROOT / "conversion"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import convert_diffclip_original_to_hf as converter  # noqa: E402
import reference_original as ref  # noqa: E402
from _helpers import TINY, go_offline, seed_hub_cache, seed_tiny_clip_tokenizer  # noqa: E402

from transformers_diffclip.original import ConversionError, build_model, key_map  # noqa: E402
from transformers_diffclip.original import checkpoint as original_format  # noqa: E402
from transformers_diffclip.original.architecture import detect_architecture  # noqa: E402


needs_bpe = pytest.mark.skipif(not BPE_PATH.is_file(), reason=f"CLIP BPE file not found at {BPE_PATH}")
needs_layout = pytest.mark.skipif(not LAYOUT_PATH.is_file(), reason=f"original layout not found at {LAYOUT_PATH}")

TEXTS = ["a photo of a dog.", "a diagram", "two cats sleeping on a red sofa &amp; a blanket"]
# variant → (differential vision, differential text, λ_init schedule)
VARIANTS = {
    "DiffCLIP": (True, True, "constant"),
    "DiffCLIP†": (True, False, "constant"),
    "DiffCLIP*": (True, True, "depth"),
    "CLIP": (False, False, "constant"),
}


def _quiet(*args, **kwargs):
    pass


def tiny_state_dict(variant: str, seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    diff_vision, diff_text, _ = VARIANTS[variant]
    return ref.make_original_state_dict(
        diff_vision=diff_vision, diff_text=diff_text, seed=seed, **{**TINY, **overrides}
    )


def original_container(state_dict, args=None) -> dict:
    """The training container of the released files: weights, optimizer (AdamW moments), scaler, args."""
    moments = {
        index: {"step": torch.tensor(100.0), "exp_avg": torch.zeros(t.shape), "exp_avg_sq": torch.ones(t.shape)}
        for index, t in enumerate(state_dict.values())
    }
    if args is None:
        args = argparse.Namespace(
            model="DiffCLIP_VITB16", dataset="cc3m", epochs=40, lr=5e-4, wd=0.5, betas=(0.9, 0.98), disable_amp=False
        )
    return {
        "epoch": 40,
        "state_dict": state_dict,
        "optimizer": {"state": moments, "param_groups": [{"lr": 1e-6, "params": list(moments)}]},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "best_acc1": 14.4,
        "args": args,
    }


def save_checkpoint(path: Path, state_dict, args=None) -> Path:
    torch.save(original_container(state_dict, args), path)
    return path


def write_card(path: Path) -> str:
    path.write_text("---\nlicense: other\nlibrary_name: transformers\n---\n# test card for __REPO_ID__\n")
    return str(path)


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch) -> Path:
    """Every test: the Hub offline, its cache at tmp_path/hub holding the tiny vocabulary as CLIP's tokenizer files
    (what a conversion without --bpe-path reads)."""
    go_offline(monkeypatch, tmp_path / "hub")
    seed_tiny_clip_tokenizer(tmp_path / "hub")
    return tmp_path / "hub"


def convert(tmp_path: Path, checkpoint, name="out", **kwargs):
    kwargs.setdefault("bpe_path", None)
    kwargs.setdefault("log", _quiet)
    return converter.convert(str(checkpoint), tmp_path / name, **kwargs)


def placeholder_bpe(tmp_path: Path) -> Path:
    """For conversions that must fail before the tokenizer is built: the BPE path only has to exist."""
    path = tmp_path / "placeholder_bpe.txt.gz"
    path.touch()
    return path


def assert_nothing_written(tmp_path: Path, name: str = "out"):
    assert not (tmp_path / name).exists()
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# --------------------------------------------------------------------------------------------------
# The key map
# --------------------------------------------------------------------------------------------------


@needs_layout
@pytest.mark.parametrize("kind", ["DiffCLIP_VITB16", "CLIP_VITB16"])
def test_key_map_matches_every_released_tensor_once_and_inverts(kind):
    names = ref.load_layout(kind, LAYOUT_PATH)["tensors"]
    targets = []
    for name in names:
        found = key_map.find_rule(name)  # raises if two rules match
        assert found is not None, name
        rule, groups = found
        converted = rule.converted_names(groups)
        targets += converted
        # the inverse used in error messages leads back to the same original tensor
        differential = {"vision": kind.startswith("Diff"), "text": kind.startswith("Diff")}
        assert {key_map.original_name_of(t, differential).split(" ")[0] for t in converted} == {name}
    assert len(targets) == len(set(targets))


# --------------------------------------------------------------------------------------------------
# Conversion of every variant against the independent reference
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def original_tokenizer():
    if not BPE_PATH.is_file():
        pytest.skip(f"CLIP BPE file not found at {BPE_PATH}")
    return ref.OriginalTokenizer(BPE_PATH)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_variant_matches_the_original_forward(variant, tmp_path):
    from transformers_diffclip import DiffCLIPModel, DiffCLIPProcessor

    diff_vision, diff_text, schedule = VARIANTS[variant]
    state_dict = tiny_state_dict(variant, seed=len(variant))
    checkpoint = save_checkpoint(tmp_path / "checkpoint_best.pt", state_dict)
    kwargs = {"lambda_init_schedule": schedule, "repo_id": "acme/tiny"}
    if variant == "DiffCLIP":
        # through the Hub path: a repo id served from a pre-seeded cache, offline; its card is picked by the repo
        seed_hub_cache(tmp_path / "hub", "hammh0a/DiffCLIP_ViTB16_CC3M", {"checkpoint_best.pt": checkpoint})
        checkpoint = "hammh0a/DiffCLIP_ViTB16_CC3M"
        card = "DiffCLIP_ViTB16_CC3M"
    elif variant == "CLIP":  # the card comes from args.dataset; standard attention needs its head counts
        kwargs.update(vision_heads=4, text_heads=4)
        card = "ViTB16_CC3M"
    else:  # no released card for DiffCLIP† / DiffCLIP*
        kwargs["model_card"] = write_card(tmp_path / "card.md")
        kwargs["text_heads"] = None if diff_text else 4
        card = None
    result = convert(tmp_path, checkpoint, verify=True, **kwargs)
    folder = tmp_path / "out"
    assert result.variant == variant
    assert max(result.verification.values()) <= 1e-4

    readme = (folder / "README.md").read_text()
    expected_card = (ROOT / "model_cards" / f"{card}.md").read_text() if card else (tmp_path / "card.md").read_text()
    assert readme == expected_card.replace("__REPO_ID__", "acme/tiny")

    model = DiffCLIPModel.from_pretrained(folder).eval()
    processor = DiffCLIPProcessor.from_pretrained(folder)
    config = model.config
    assert config.vision_config.use_differential_attention is diff_vision
    assert config.text_config.use_differential_attention is diff_text
    assert config.vision_config.layer_norm_eps == (1e-5 if diff_vision else 1e-6)
    assert config.vision_config.lambda_init_schedule == schedule

    inputs = processor(text=TEXTS, padding="max_length", max_length=77, return_tensors="pt")
    # the original pads with 0 (the ids themselves are compared with the original tokenizer in test_processing)
    original_ids = inputs["input_ids"] * inputs["attention_mask"]
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))

    lambda_init = ref.lambda_init_schedule(2, depth_scheduled=schedule == "depth")
    expected = ref.original_forward(
        state_dict,
        original_ids,
        pixel_values,
        vision_heads=4,
        text_heads=4,
        diff_vision=diff_vision,
        diff_text=diff_text,
        lambda_init=lambda_init,
    )
    with torch.no_grad():
        out = model(**inputs, pixel_values=pixel_values)
        image_embeds = model.get_image_features(pixel_values=pixel_values)
        text_embeds = model.get_text_features(**inputs)
    image_embeds = getattr(image_embeds, "pooler_output", image_embeds)
    text_embeds = getattr(text_embeds, "pooler_output", text_embeds)
    assert (image_embeds - expected["image_embeds"]).abs().max() <= 1e-5
    assert (text_embeds - expected["text_embeds"]).abs().max() <= 1e-5
    assert (out.logits_per_image - expected["logits_per_image"]).abs().max() <= 1e-4
    assert (out.logits_per_text - expected["logits_per_text"]).abs().max() <= 1e-4

    if schedule == "depth":  # the schedule matters: the constant-λ_init reference is far from the converted model
        constant = ref.original_forward(
            state_dict, original_ids, None, vision_heads=4, text_heads=4, diff_vision=True, diff_text=diff_text
        )
        assert (text_embeds - constant["text_embeds"]).abs().max() > 1e-3


def test_output_folder_is_hub_ready(tmp_path):
    from safetensors.torch import load_file

    state_dict = tiny_state_dict("DiffCLIP", seed=3)
    convert(tmp_path, save_checkpoint(tmp_path / "c.pt", state_dict), model_card="DiffCLIP_ViTB16_CC12M")
    folder = tmp_path / "out"
    names = {p.name for p in folder.iterdir()}
    code = {
        "configuration_diffclip.py",
        "modeling_diffclip.py",
        "image_processing_diffclip.py",
        "processing_diffclip.py",
    }
    assert code | {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {"processor_config.json", "README.md"} <= names
    assert_nothing_written(tmp_path, name="no-such-folder")  # and no temporary sibling left behind

    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_diffclip.DiffCLIPModel"
    assert config["auto_map"]["AutoModelForZeroShotImageClassification"] == "modeling_diffclip.DiffCLIPModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_diffclip.DiffCLIPConfig"
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0] == "processing_diffclip.DiffCLIPTokenizer"
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_diffclip.DiffCLIPProcessor"
    image_config = processor_config["image_processor"]
    assert image_config["crop_size"] == {"height": 32, "width": 32} and image_config["size"] == {"shortest_edge": 32}
    assert image_config["image_mean"] == [0.485, 0.456, 0.406]

    # the weights, checked tensor by tensor against the original layout (not through the key map)
    weights = load_file(folder / "model.safetensors")
    original = ref.strip_prefix(state_dict)
    assert torch.equal(weights["visual_projection.weight"], original["image_projection"].T)
    assert torch.equal(weights["text_projection.weight"], original["text_projection"].T)
    assert torch.equal(weights["vision_model.embeddings.class_embedding"], original["visual.cls_token"].flatten())
    assert torch.equal(weights["vision_model.embeddings.position_embedding.weight"], original["visual.pos_embed"][0])
    assert torch.equal(
        weights["text_model.encoder.layers.1.self_attn.lambda_k2"], original["transformer.resblocks.1.attn.lambda_k2"]
    )
    assert torch.equal(weights["logit_scale"], original["logit_scale"])
    assert len(weights) == len(original)  # differential layers: one tensor each way


def test_fused_qkv_is_split_in_q_k_v_order(tmp_path):
    from safetensors.torch import load_file

    state_dict = tiny_state_dict("CLIP", seed=4)
    checkpoint = save_checkpoint(tmp_path / "c.pt", state_dict)
    convert(tmp_path, checkpoint, vision_heads=4, text_heads=4, model_card="ViTB16_CC3M")
    weights, original = load_file(tmp_path / "out" / "model.safetensors"), ref.strip_prefix(state_dict)
    for tower, fused, layer in (
        ("vision", "visual.blocks.1.attn.qkv", 1),
        ("text", "transformer.resblocks.0.attn.in_proj", 0),
    ):
        fused_weight = original[f"{fused}.weight" if tower == "vision" else f"{fused}_weight"]
        for index, proj in enumerate("qkv"):
            converted = weights[f"{tower}_model.encoder.layers.{layer}.self_attn.{proj}_proj.weight"]
            assert torch.equal(converted, fused_weight[32 * index : 32 * (index + 1)])
    assert len(weights) == len(original) + 2 * (2 + 2) * 2  # each fused weight and bias became three tensors


# --------------------------------------------------------------------------------------------------
# The full ViT-B/16 key sets
# --------------------------------------------------------------------------------------------------


@needs_layout
@pytest.mark.parametrize(
    "kind, diff, parameters", [("DiffCLIP_VITB16", True, 149_629_185), ("CLIP_VITB16", False, 149_619_969)]
)
def test_full_vitb16_key_set_converts_strictly(kind, diff, parameters, tmp_path):
    layout = ref.load_layout(kind, LAYOUT_PATH)
    # zeros are enough here (names and shapes are what is tested) and much faster to write than random numbers
    state_dict = {
        name: torch.zeros(shape) for name, shape in ref.original_shapes(diff_vision=diff, diff_text=diff).items()
    }
    state_dict = {"module." + name: tensor for name, tensor in state_dict.items()}
    assert ref.layout_matches(state_dict, kind, LAYOUT_PATH) == []
    path = tmp_path / "checkpoint_best.pt"
    torch.save({"epoch": 40, "state_dict": state_dict, "args": argparse.Namespace(dataset="cc12m")}, path)
    del state_dict

    original = original_format.load_original_checkpoint(path)
    assert len(original.state_dict) == layout["num_tensors"] and original.args == {"dataset": "cc12m"}
    architecture = detect_architecture(original.state_dict)
    vision, text = architecture.config_kwargs["vision_config"], architecture.config_kwargs["text_config"]
    assert (vision["num_attention_heads"], text["num_attention_heads"]) == (12, 8)
    assert (vision["image_size"], vision["patch_size"], vision["hidden_size"], vision["num_hidden_layers"]) == (
        224,
        16,
        768,
        12,
    )
    assert (text["vocab_size"], text["max_position_embeddings"], text["hidden_size"]) == (49408, 77, 512)
    assert architecture.variant == ("DiffCLIP" if diff else "CLIP")
    model, converted = build_model(architecture, original.state_dict)
    assert set(converted) == set(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == parameters == layout["num_parameters"]


# --------------------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------------------


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsShell, _RunsPython])
@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_would_run_code_is_refused_unrun(payload, zip_format, tmp_path):
    marker = tmp_path / "MARKER"
    container = original_container(tiny_state_dict("DiffCLIP"), args=payload(marker))
    path = tmp_path / "evil.pt"
    torch.save(container, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ConversionError) as error:
        convert(tmp_path, path, model_card="DiffCLIP_ViTB16_CC3M", bpe_path=placeholder_bpe(tmp_path))
    message = str(error.value)
    assert "--allow-unsafe-pickle" in message and "arbitrary code" in message
    refused = {_RunsShell: ("posix.system", "os.system"), _RunsPython: ("builtins.exec",)}[payload]
    assert any(f"`{name}`" in message for name in refused), message
    assert not marker.exists()
    assert_nothing_written(tmp_path)


def test_unlisted_global_needs_the_explicit_opt_in(tmp_path):
    from fractions import Fraction

    path = save_checkpoint(
        tmp_path / "c.pt", tiny_state_dict("DiffCLIP"), args=argparse.Namespace(ratio=Fraction(1, 3))
    )
    with pytest.raises(ConversionError, match=r"`fractions\.Fraction`.*--allow-unsafe-pickle"):
        original_format.load_original_checkpoint(path)
    loaded = original_format.load_original_checkpoint(path, allow_unsafe_pickle=True)
    assert loaded.args == {"ratio": Fraction(1, 3)}
    assert set(loaded.state_dict) == set(ref.strip_prefix(tiny_state_dict("DiffCLIP")))


def test_loader_memory_maps_and_drops_everything_but_the_weights(tmp_path):
    state_dict = tiny_state_dict("DiffCLIP")
    loaded = original_format.load_original_checkpoint(save_checkpoint(tmp_path / "c.pt", state_dict))
    assert loaded.epoch == 40 and loaded.args["dataset"] == "cc3m"
    assert not any(name.startswith("module.") for name in loaded.state_dict)
    for name, tensor in ref.strip_prefix(state_dict).items():
        assert torch.equal(loaded.state_dict[name], tensor)
    # the weights are views of the memory-mapped file: the optimizer state is never read into RAM
    maps = Path("/proc/self/maps")
    if maps.is_file():
        assert str(tmp_path / "c.pt") in maps.read_text()


# --------------------------------------------------------------------------------------------------
# Broken inputs: clear messages, no output folder
# --------------------------------------------------------------------------------------------------


def test_truncated_file_fails_clearly_from_the_command_line(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "c.pt", tiny_state_dict("DiffCLIP"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    args = [
        "--checkpoint",
        str(path),
        "--output-dir",
        str(tmp_path / "out"),
        "--bpe-path",
        str(placeholder_bpe(tmp_path)),
    ]
    assert converter.main(args) == 2
    assert re.search(r"error: Cannot read .*truncated", capsys.readouterr().err)
    assert_nothing_written(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    state_dict = tiny_state_dict("DiffCLIP")
    del state_dict["module.transformer.resblocks.1.attn.q_proj.weight"]
    del state_dict["module.visual.blocks.0.attn.diff_norm.weight"]
    with pytest.raises(ConversionError) as error:
        convert(tmp_path, save_checkpoint(tmp_path / "c.pt", state_dict), bpe_path=placeholder_bpe(tmp_path))
    message = str(error.value)
    assert "missing original tensors (2)" in message
    assert (
        "transformer.resblocks.1.attn.q_proj.weight" in message and "visual.blocks.0.attn.diff_norm.weight" in message
    )
    assert "unexpected" not in message
    assert_nothing_written(tmp_path)


def test_extra_and_misshaped_tensors_are_named(tmp_path):
    state_dict = tiny_state_dict("DiffCLIP")
    state_dict["module.image_mlp.layers.0.weight"] = torch.zeros(8, 32)  # SLIP's SSL head: another model
    state_dict["module.transformer.resblocks.0.ln_2.bias"] = torch.zeros(31)
    with pytest.raises(ConversionError) as error:
        convert(tmp_path, save_checkpoint(tmp_path / "c.pt", state_dict), bpe_path=placeholder_bpe(tmp_path))
    message = str(error.value)
    assert "unexpected original tensors (1): image_mlp.layers.0.weight (8, 32)" in message
    assert "shape mismatches (1): transformer.resblocks.0.ln_2.bias (31,)" in message
    assert "missing" not in message
    assert_nothing_written(tmp_path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    # a timm ViT classifier: image tower only, no `visual.` prefix, a classification head
    vit = {
        "cls_token": torch.zeros(1, 1, 32),
        "pos_embed": torch.zeros(1, 17, 32),
        "patch_embed.proj.weight": torch.zeros(32, 3, 8, 8),
        "blocks.0.attn.qkv.weight": torch.zeros(96, 32),
        "head.weight": torch.zeros(10, 32),
    }
    with pytest.raises(ConversionError, match="not a DiffCLIP or CLIP checkpoint") as error:
        convert(tmp_path, save_checkpoint(tmp_path / "vit.pt", vit), bpe_path=placeholder_bpe(tmp_path))
    assert "visual.cls_token" in str(error.value) and "head.weight" in str(error.value)
    assert_nothing_written(tmp_path)


def test_model_card_of_the_other_architecture_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", tiny_state_dict("CLIP"))
    with pytest.raises(ConversionError, match="describes DiffCLIP, but the checkpoint is CLIP"):
        convert(tmp_path, path, vision_heads=4, text_heads=4, model_card="DiffCLIP_ViTB16_CC3M")
    with pytest.raises(
        ConversionError, match=r"selects DiffCLIP\*, but this checkpoint has no differential attention"
    ):
        convert(tmp_path, path, vision_heads=4, text_heads=4, lambda_init_schedule="depth")
    assert_nothing_written(tmp_path)


def test_failures_while_writing_or_verifying_leave_no_folder(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", tiny_state_dict("DiffCLIP"))
    real_forward = converter.original_forward

    def off_by_2e_4(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        out["logits_per_image"] = out["logits_per_image"] + 2e-4
        return out

    monkeypatch.setattr(converter, "original_forward", off_by_2e_4)
    with pytest.raises(ConversionError, match=r"Verification failed.*logits_per_image 2\.0\de-04"):
        convert(tmp_path, path, verify=True)
    assert_nothing_written(tmp_path)

    def disk_full(folder, *args):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(converter, "save_converted", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert(tmp_path, path)
    assert_nothing_written(tmp_path)


def test_existing_output_needs_overwrite(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", tiny_state_dict("DiffCLIP"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):
        convert(tmp_path, path)
    assert (tmp_path / "out" / "old.txt").exists()
    convert(tmp_path, path, overwrite=True)
    assert not (tmp_path / "out" / "old.txt").exists() and (tmp_path / "out" / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------------------------------
# The Hub
# --------------------------------------------------------------------------------------------------


def test_repo_id_offline_without_cache_says_the_hub_is_unreachable(tmp_path, capsys):
    args = ["--checkpoint", "hammh0a/DiffCLIP_ViTB16_CC12M", "--output-dir", str(tmp_path / "out")]
    assert converter.main(args) == 2
    message = capsys.readouterr().err
    assert "Hub is unreachable (HF_HUB_OFFLINE is set)" in message
    assert "hammh0a/DiffCLIP_ViTB16_CC12M/checkpoint_best.pt" in message
    assert "hf download hammh0a/DiffCLIP_ViTB16_CC12M checkpoint_best.pt" in message
    assert_nothing_written(tmp_path)


def test_tokenizer_comes_from_the_hub_unless_a_bpe_file_is_given(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", tiny_state_dict("DiffCLIP"))
    with pytest.raises(FileNotFoundError, match=r"--bpe-path .*: no such file.*open_clip"):
        convert(tmp_path, path, bpe_path=tmp_path / "bpe_simple_vocab_16e6.txt.gz", model_card="DiffCLIP_ViTB16_CC3M")
    assert_nothing_written(tmp_path)
    # without --bpe-path: CLIP's vocab.json and merges.txt from the Hub cache; missing there, the error names them
    go_offline(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(ConversionError, match=r"openai/clip-vit-base-patch16/vocab\.json.*not in the local cache"):
        convert(tmp_path, path, model_card="DiffCLIP_ViTB16_CC3M")
    assert_nothing_written(tmp_path)
    go_offline(monkeypatch, tmp_path / "hub")
    convert(tmp_path, path, model_card="DiffCLIP_ViTB16_CC3M")
    (vocab_file,) = (tmp_path / "hub" / "models--openai--clip-vit-base-patch16").glob("snapshots/*/vocab.json")
    vocab = json.loads(vocab_file.read_text())
    tokenizer = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    assert tokenizer["model"]["vocab"] == vocab  # the Hub files' vocabulary, unchanged
    image_config = json.loads((tmp_path / "out" / "processor_config.json").read_text())["image_processor"]
    assert image_config["image_std"] == [0.229, 0.224, 0.225]  # ImageNet statistics, not CLIP's


def test_missing_local_file_that_is_no_repo_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file, and it is not a Hub repo id"):
        convert(tmp_path, tmp_path / "nope" / "checkpoint_best.pt")


# --------------------------------------------------------------------------------------------------
# Remote code: the folder works where the package cannot be imported
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_folder_loads_and_classifies_without_the_package(tmp_path):
    from transformers_diffclip import DiffCLIPModel, DiffCLIPProcessor

    state_dict = tiny_state_dict("DiffCLIP", seed=11)
    convert(tmp_path, save_checkpoint(tmp_path / "c.pt", state_dict), model_card="DiffCLIP_ViTB16_CC3M")
    folder = tmp_path / "out"
    image_path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (45, 37, 3), dtype=np.uint8)).save(image_path)
    labels = ["dog", "cat", "red car"]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    result_path = tmp_path / "result.json"
    command = [sys.executable, str(TESTS / "_conversion_remote_check.py"), str(folder), str(image_path)]
    completed = subprocess.run(
        command + [str(result_path), *labels], env=env, capture_output=True, text=True, timeout=240
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    remote = json.loads(result_path.read_text())
    assert remote["package_importable"] is False
    for key in ("model_module", "processor_module", "pipeline_model_module"):
        assert remote[key].startswith("transformers_modules."), remote[key]

    prompts = [f"This is a photo of {label}." for label in labels]
    image = Image.open(image_path)
    # the in-process package model
    model, processor = DiffCLIPModel.from_pretrained(folder).eval(), DiffCLIPProcessor.from_pretrained(folder)
    inputs = processor(text=prompts, images=image, return_tensors="pt", padding=True)
    with torch.no_grad():
        local_logits = model(**inputs).logits_per_image[0]
    assert torch.allclose(torch.tensor(remote["logits"]), local_logits, atol=1e-5, rtol=0)
    # the original model, preprocessing included
    expected = ref.original_forward(
        state_dict,
        inputs["input_ids"] * inputs["attention_mask"],  # the original pads with 0
        ref.original_image_transform(image, size=32)[None],
        vision_heads=4,
        text_heads=4,
        diff_vision=True,
        diff_text=True,
    )["logits_per_image"][0]
    assert torch.allclose(torch.tensor(remote["logits"]), expected, atol=1e-4, rtol=0)
    assert torch.allclose(torch.tensor(remote["scores"]), expected.softmax(-1), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------
# Model cards and the command's help
# --------------------------------------------------------------------------------------------------


def _paper_table() -> dict[tuple[str, str], list[str]]:
    """(pretraining, model) → the Table 2 cells of paper_results.md, parsed from its Markdown."""
    rows = {}
    for line in PAPER_RESULTS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] in ("CC3M", "CC12M"):
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.skipif(not PAPER_RESULTS.is_file(), reason=f"paper results not found at {PAPER_RESULTS}")
@pytest.mark.parametrize("name", list(converter.MODEL_CARD_VARIANTS))
def test_model_card_metadata_and_paper_numbers(name):
    from huggingface_hub import ModelCard

    text = (ROOT / "model_cards" / f"{name}.md").read_text()
    card = ModelCard(text)
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.license and card.data.datasets
    assert "arxiv:2503.06626" in card.data.tags and "custom_code" in card.data.tags
    assert "__REPO_ID__" in text and "trust_remote_code=True" in text
    pretraining = name.rsplit("_", 1)[1]
    table = _paper_table()
    clip, diffclip = table[(pretraining, "CLIP")], table[(pretraining, "DiffCLIP")]
    # ImageNet zero-shot (last column of Table 2) and Flickr30k image R@5 (first), CLIP beside DiffCLIP
    assert f"| ImageNet zero-shot top-1 | {clip[6]} | {diffclip[6]} |" in text
    assert f"| Flickr30k image retrieval R@5 | {clip[0]} | {diffclip[0]} |" in text
    this = "DiffCLIP (this model)" if name.startswith("DiffCLIP") else "CLIP (this model)"
    assert this in text
    assert ("149,629,185" if name.startswith("DiffCLIP") else "149,619,969") in text


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        converter.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in (
        "--checkpoint",
        "--output-dir",
        "--bpe-path",
        "--verify",
        "--push-to-hub",
        "--lambda-init-schedule",
        "--model-card",
        "--allow-unsafe-pickle",
        "--vision-heads",
        "--text-heads",
        "--overwrite",
    ):
        assert option in help_text
    assert "DiffCLIP*" in help_text and "DANGEROUS" in help_text and "open_clip" in help_text


def test_package_never_imports_conversion():
    package = ROOT / "src" / "transformers_diffclip"
    for path in package.rglob("*.py"):
        assert not re.search(
            r"^\s*(from|import)\s+(conversion|convert_diffclip|diffclip_original)", path.read_text(), re.M
        )
