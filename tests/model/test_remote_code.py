"""Saved folders carry their code: they load with trust_remote_code=True where transformers_diffclip cannot be
imported, from a local folder and from a Hub id in a pre-seeded cache, offline."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _helpers import seed_hub_cache, text_batch, tiny_config, tiny_processor
from PIL import Image

from transformers_diffclip import DiffCLIPModel, DiffCLIPProcessor


LABELS = ["a photo of a cat", "a photo of a dog", "a red car"]


def make_image(seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("diffclip_tiny")
    torch.manual_seed(0)
    model = DiffCLIPModel(tiny_config()).eval()
    processor = tiny_processor()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    make_image().save(path / "test_image.png")
    return path


def expected_logits(folder):
    model = DiffCLIPModel.from_pretrained(folder).eval()
    processor = DiffCLIPProcessor.from_pretrained(folder)
    inputs = processor(text=LABELS, images=Image.open(folder / "test_image.png"), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**inputs).logits_per_image[0]


# Runs in a fresh interpreter where `import transformers_diffclip` fails.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["transformers_diffclip"] = None
    import torch
    from PIL import Image
    from transformers import (AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor,
                              pipeline)

    source, image_path, labels = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    config = AutoConfig.from_pretrained(source, trust_remote_code=True)
    model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
    zero_shot_model = AutoModelForZeroShotImageClassification.from_pretrained(source, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    image = Image.open(image_path)
    inputs = processor(text=labels, images=image, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image[0]
    classifier = pipeline("zero-shot-image-classification", model=source, trust_remote_code=True)
    ranked = classifier(image, candidate_labels=labels, hypothesis_template="{}")
    print(json.dumps({
        "config": type(config).__name__, "model": type(model).__name__,
        "zero_shot_model": type(zero_shot_model).__name__, "processor": type(processor).__name__,
        "tokenizer": type(processor.tokenizer).__name__, "image_processor": type(processor.image_processor).__name__,
        "module": type(model).__module__, "logits": logits.tolist(),
        "pipeline": {item["label"]: item["score"] for item in ranked},
    }))
    """
)


def run_remote(source, folder, env_extra):
    env = {**os.environ, **env_extra}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(source), str(folder / "test_image.png"), json.dumps(LABELS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not supported" not in result.stderr, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def check_remote_result(report, folder):
    assert report["config"] == "DiffCLIPConfig" and report["model"] == "DiffCLIPModel"
    assert report["zero_shot_model"] == "DiffCLIPModel" and report["processor"] == "DiffCLIPProcessor"
    assert report["tokenizer"] == "DiffCLIPTokenizer" and report["image_processor"] == "DiffCLIPImageProcessor"
    assert report["module"].startswith("transformers_modules."), report["module"]  # the folder's code, not ours
    logits = torch.tensor(report["logits"])
    torch.testing.assert_close(logits, expected_logits(folder), atol=1e-5, rtol=0)
    # the pipeline's scores are the softmax over the image's logits
    probabilities = logits.softmax(-1)
    for label, probability in zip(LABELS, probabilities.tolist()):
        assert abs(report["pipeline"][label] - probability) < 1e-5


def test_folder_has_code_and_auto_map(folder):
    for name in (
        "configuration_diffclip.py",
        "modeling_diffclip.py",
        "processing_diffclip.py",
        "image_processing_diffclip.py",
        "model.safetensors",
        "tokenizer.json",
    ):
        assert (folder / name).is_file(), name
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert (
        auto_map["AutoModel"]
        == auto_map["AutoModelForZeroShotImageClassification"]
        == "modeling_diffclip.DiffCLIPModel"
    )
    assert auto_map["AutoConfig"] == "configuration_diffclip.DiffCLIPConfig"


@pytest.mark.slow
def test_loads_from_a_local_folder_without_the_package(folder, tmp_path):
    report, _ = run_remote(folder, folder, {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    check_remote_result(report, folder)


@pytest.mark.slow
def test_loads_from_a_hub_id_in_a_preseeded_cache_offline(folder, tmp_path):
    seed_hub_cache(tmp_path / "hub", "diffclip-test/DiffCLIP_tiny", {".": folder})
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    report, _ = run_remote("diffclip-test/DiffCLIP_tiny", folder, env)
    check_remote_result(report, folder)


def test_save_load_round_trip_is_bit_exact(folder, tmp_path):
    model = DiffCLIPModel.from_pretrained(folder).eval()
    model.save_pretrained(tmp_path)
    again = DiffCLIPModel.from_pretrained(tmp_path).eval()
    original, reloaded = model.state_dict(), again.state_dict()
    assert original.keys() == reloaded.keys()
    for name in original:
        assert torch.equal(original[name], reloaded[name]), name
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = model(input_ids=text_batch(), pixel_values=pixel_values)
        b = again(input_ids=text_batch(), pixel_values=pixel_values)
    assert torch.equal(a.logits_per_image, b.logits_per_image)
