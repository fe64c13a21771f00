"""The one model loader of every command runs no code from a model folder unless asked, and loads transformers'
own dual encoders (CLIP, SigLIP) so that DiffCLIP and CLIP are evaluated by the same command.

Tampered folders get Python files that write a marker file when imported: the marker must not appear."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import tiny_config, tiny_processor, tiny_tokenizer
from PIL import Image

from transformers_diffclip import DiffCLIPModel, cli
from transformers_diffclip.core.loading import inspect_model, load_model_and_processor
from transformers_diffclip.evaluation import ZeroShotClassifier


TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _image(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(path)
    return path


def _marker_code(marker) -> str:
    return f"import pathlib as _p\n_p.Path({str(marker)!r}).write_text('ran')\n"


def _run(argv, capsys):
    code = cli.main([*argv, "--device", "cpu"] + ([] if argv[0] == "attention-map" else ["--no-progress"]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Images in an ImageFolder tree, a retrieval file over them, and one image."""
    root = tmp_path_factory.mktemp("data")
    for seed, name in enumerate(("cat", "dog")):
        (root / "tree" / name).mkdir(parents=True)
        _image(root / "tree" / name / "a.png", seed)
    lines = [{"image": f"tree/{name}/a.png", "caption": f"a {name}"} for name in ("cat", "dog")]
    (root / "set.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    return root


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    """A converted DiffCLIP folder whose every .py file (the code `trust_remote_code` would run) writes a marker."""
    folder = tmp_path_factory.mktemp("tampered")
    torch.manual_seed(0)
    DiffCLIPModel(tiny_config()).eval().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    marker = folder.parent / f"{folder.name}_MARKER"
    python_files = sorted(folder.glob("*.py"))
    assert {p.name for p in python_files} >= {"modeling_diffclip.py", "configuration_diffclip.py"}
    for path in python_files:
        path.write_text(_marker_code(marker) + path.read_text())
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    return folder, marker


@pytest.mark.slow
def test_a_tampered_converted_folder_runs_no_code_under_any_command(tampered, data, tmp_path, capsys):
    folder, marker = tampered
    image = str(data / "tree" / "cat" / "a.png")
    commands = [
        ["zero-shot", "--model", str(folder), "--labels", "cat,dog", image],
        ["zero-shot", "--model", str(folder), "--labels", "cat,dog", "--trust-remote-code", image],
        ["eval", "zero-shot", "--model", str(folder), "--data", str(data / "tree")],
        ["eval", "retrieval", "--model", str(folder), "--data", str(data / "set.jsonl")],
        ["attention-map", "--model", str(folder), "--image", image, "--output", str(tmp_path / "m.png")],
        [
            "attention-map",
            "--model",
            str(folder),
            "--image",
            image,
            "--text",
            "a cat",
            "--output",
            str(tmp_path / "t.png"),
        ],
    ]
    for argv in commands:
        code, out, err = _run(argv, capsys)
        assert code == 0, (argv, err)
        assert out, argv
        assert not marker.exists(), f"{argv} ran the folder's code"
    model, processor = load_model_and_processor(folder, device="cpu", trust_remote_code=True)
    assert type(model) is DiffCLIPModel and type(processor).__module__.startswith("transformers_diffclip.")
    assert not marker.exists()


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A CLIP-like model of a type neither transformers nor this package provides: its config and model classes are
    in the folder's .py files (which also write a marker), named by `auto_map`."""
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("foreign")
    marker = folder.parent / f"{folder.name}_MARKER"
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=TOWER, vision_config=dict(TOWER, image_size=32, patch_size=8))).save_pretrained(
        folder
    )
    tiny_processor().save_pretrained(folder)
    (folder / "configuration_foreign.py").write_text(
        _marker_code(marker)
        + "from transformers import CLIPConfig\n\n\n"
        + "class ForeignConfig(CLIPConfig):\n    model_type = 'foreign_clip'\n"
    )
    (folder / "modeling_foreign.py").write_text(
        "from transformers import CLIPModel\n\nfrom .configuration_foreign import ForeignConfig\n\n\n"
        "class ForeignModel(CLIPModel):\n    config_class = ForeignConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="foreign_clip",
        architectures=["ForeignModel"],
        auto_map={"AutoConfig": "configuration_foreign.ForeignConfig", "AutoModel": "modeling_foreign.ForeignModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_an_unknown_architecture_with_remote_code_needs_the_flag(foreign, data, capsys, tmp_path):
    folder, marker = foreign
    image = str(data / "tree" / "cat" / "a.png")
    for argv in (
        ["zero-shot", "--model", str(folder), "--labels", "cat,dog", image],
        ["eval", "retrieval", "--model", str(folder), "--data", str(data / "set.jsonl")],
        ["attention-map", "--model", str(folder), "--image", image, "--output", str(tmp_path / "m.png")],
    ):
        code, out, err = _run(argv, capsys)
        assert code == 2 and out == ""
        assert "'foreign_clip'" in err and "--trust-remote-code" in err and "run the Python code" in err, err
        assert not marker.exists()
    code, out, err = _run(["zero-shot", "--model", str(folder), "--labels", "cat,dog", "--json", image], capsys)
    assert code == 2 and not marker.exists()
    code, out, err = _run(
        ["zero-shot", "--model", str(folder), "--labels", "cat,dog", "--json", "--trust-remote-code", image], capsys
    )
    assert code == 0, err
    assert marker.exists()  # with the flag, the folder's code ran (and the marker proves the fixture works)
    assert sorted(p["label"] for p in json.loads(out)[0]["predictions"]) == ["cat", "dog"]


def test_an_unknown_type_without_code_and_a_file_are_refused(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"model_type": "no_such_type"}))
    with pytest.raises(ValueError, match="'no_such_type'.*names no code"):
        inspect_model(tmp_path / "odd", trust_remote_code=True)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a model folder"):
        inspect_model(tmp_path / "weights.bin")
    with pytest.raises(FileNotFoundError, match="Model folder not found"):
        inspect_model(tmp_path / "missing" / "folder")


def test_a_local_file_reaches_resolve_pretrained(monkeypatch, tmp_path, tampered):
    """An original checkpoint file is `original.resolve_pretrained`'s to convert: the loader asks it first."""
    from transformers_diffclip.core import loading

    checkpoint = tmp_path / "checkpoint_best.pt"
    checkpoint.write_bytes(b"")
    calls = []

    def resolve(name, revision=None, **kwargs):
        calls.append((name, revision))
        return str(tampered[0])

    monkeypatch.setattr(loading, "resolve_pretrained", resolve)
    source = inspect_model(checkpoint, revision="v1")
    assert calls == [(str(checkpoint), "v1")] and source.path == str(tampered[0])
    assert source.model_type == "diffclip" and not source.trust_remote_code


def test_a_command_resolves_the_model_name_once(monkeypatch, tampered, data, capsys):
    """`diffclip zero-shot --model FOLDER` resolves the name once (the core loader), and the model's and the
    processor's `from_pretrained` hooks, handed that resolved folder, do not resolve it again."""
    from transformers_diffclip.core import loading
    from transformers_diffclip.original import cache

    real, calls = cache.resolve_pretrained, []

    def counting(name, *args, **kwargs):
        calls.append(str(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cache, "resolve_pretrained", counting)
    monkeypatch.setattr(loading, "resolve_pretrained", counting)
    folder, _ = tampered
    code, out, err = _run(
        ["zero-shot", "--model", str(folder), "--labels", "cat,dog", str(data / "tree/cat/a.png")], capsys
    )
    assert code == 0, err
    assert calls == [str(folder)]


def _clip_folder(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(1)
    model = CLIPModel(CLIPConfig(text_config=TOWER, vision_config=dict(TOWER, image_size=32, patch_size=8))).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer())
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    return tmp_path / "clip", model, processor


def test_transformers_clip_runs_through_the_same_command(tmp_path, data, capsys):
    """A plain CLIPModel folder: no remote code; the command's probabilities are CLIPModel's forward's. Its config
    also names code of the folder (`auto_map`) that writes a marker: a registered type never runs it."""
    folder, model, processor = _clip_folder(tmp_path)
    marker = tmp_path / "CLIP_MARKER"
    (folder / "modeling_evil.py").write_text(
        _marker_code(marker) + "from transformers import CLIPModel as EvilModel\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    image = data / "tree" / "dog" / "a.png"
    labels = ["cat", "dog", "red car"]
    code, out, err = _run(
        ["zero-shot", "--model", str(folder), "--labels", ",".join(labels), "--template", "{}", "--json", str(image)],
        capsys,
    )
    assert code == 0, err
    inputs = processor(text=labels, images=Image.open(image).convert("RGB"), return_tensors="pt", padding=True)
    with torch.no_grad():
        probabilities = model(**inputs).logits_per_image[0].softmax(-1)
    got = {p["label"]: p["score"] for p in json.loads(out)[0]["predictions"]}
    assert got == pytest.approx(dict(zip(labels, probabilities.tolist())), abs=1e-5)
    output = tmp_path / "report.json"
    argv = ["eval", "zero-shot", "--model", str(folder), "--data", str(data / "tree"), "--output", str(output)]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    metadata = json.loads(output.read_text())["metadata"]
    assert metadata["model_type"] == "clip" and metadata["model_class"] == "CLIPModel"
    code, _, err = _run([*argv, "--trust-remote-code"], capsys)
    assert code == 0, err
    assert not marker.exists()


def test_siglip_texts_are_padded_to_its_fixed_length(tmp_path):
    """SigLIP pools the last position and was trained on max-length padding without a mask: class embeddings must
    be those of `padding="max_length"` (what transformers' zero-shot pipeline does for SigLIP)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    text = dict(TOWER, vocab_size=49408, max_position_embeddings=16)
    config = SiglipConfig(text_config=text, vision_config=dict(TOWER, image_size=32, patch_size=8))
    torch.manual_seed(2)
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    SiglipModel(config).save_pretrained(tmp_path / "siglip")
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path / "siglip")
    model, processor = load_model_and_processor(tmp_path / "siglip", device="cpu")
    assert type(model).__name__ == "SiglipModel"
    labels = ["cat", "a red car", "dog"]
    classifier = ZeroShotClassifier.from_model(model, processor, labels, ["{}"])
    tokens = processor.tokenizer(labels, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        output = model.get_text_features(input_ids=tokens["input_ids"])
    expected = F.normalize(getattr(output, "pooler_output", output).float(), dim=-1)
    torch.testing.assert_close(classifier.weights, expected, atol=1e-6, rtol=0)
    assert classifier.logit_scale == pytest.approx(float(model.logit_scale.detach()), abs=1e-6)
    assert math.isfinite(classifier.logit_scale)


def test_hub_id_refusal_reads_only_the_config(tmp_path, monkeypatch, foreign):
    """A Hub id goes through the same decision: with the repo's files in the cache (offline), the foreign
    architecture is refused without the flag before any of its code is fetched or run."""
    from huggingface_hub import constants

    folder, marker = foreign
    cache = tmp_path / "hub"
    repo = cache / "models--someone--foreign" / "snapshots" / ("0" * 40)
    shutil.copytree(folder, repo)
    (cache / "models--someone--foreign" / "refs").mkdir(parents=True)
    (cache / "models--someone--foreign" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    marker.unlink(missing_ok=True)
    with pytest.raises(ValueError, match="'someone/foreign'.*--trust-remote-code"):
        inspect_model("someone/foreign")
    assert not marker.exists()
