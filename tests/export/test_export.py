"""`diffclip export onnx`, its validation, the onnx backend of the commands and the torch-free reader.

References are the PyTorch models the graphs come from (`get_image_features`, `get_text_features`, the vision
tower's pooled output) and `diffclip zero-shot` on the torch backend; the graphs are run by ONNX Runtime. Tiny
random-weight models: a DiffCLIP (differential attention in both towers) and a CLIP baseline (standard attention),
both in the layout the conversion writes. Photographs: the export's own validation set (export/photos/).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


onnx = pytest.importorskip("onnx", reason="onnx is not installed (the `export` extra)")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the `export` extra)")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (the `export` extra)")

from _helpers import save_tiny_diffclip, tiny_config, tiny_processor  # noqa: E402

from transformers_diffclip import DiffCLIPModel, cli  # noqa: E402
from transformers_diffclip.export import export_onnx, graph_file  # noqa: E402
from transformers_diffclip.export.graphs import export_tower  # noqa: E402


PHOTOS = Path(__file__).resolve().parents[2] / "src" / "transformers_diffclip" / "export" / "photos"
READER = PHOTOS.parent / "standalone_reader.py"
LABELS = "person,temple,flower,car"
ENV = dict(os.environ, HF_HUB_OFFLINE="1")


def _command(*argv: str) -> subprocess.CompletedProcess:
    """The installed `diffclip` command (the venv's, beside this interpreter), as a process."""
    installed = Path(sys.executable).parent / "diffclip"
    prefix = [str(installed)] if installed.is_file() else [sys.executable, "-m", "transformers_diffclip.cli"]
    return subprocess.run(prefix + list(argv), capture_output=True, text=True, env=ENV, timeout=600)


def _photos() -> list[str]:
    return sorted(str(path) for path in PHOTOS.glob("*.jpg"))


def _zero_shot(model: str, *flags: str) -> list[dict]:
    done = _command("zero-shot", "--model", model, "--labels", LABELS, "--json", "--no-progress", "--device", "cpu",
                    *flags, *_photos())  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _scores(results: list[dict]) -> dict:
    return {(r["image"], p["label"]): p["score"] for r in results for p in r["predictions"]}


def _top1(results: list[dict]) -> list[str]:
    return [r["predictions"][0]["label"] for r in results]


@pytest.fixture(scope="module")
def diffclip_folder(tmp_path_factory):
    return save_tiny_diffclip(tmp_path_factory.mktemp("diffclip"), seed=3)


@pytest.fixture(scope="module")
def baseline_folder(tmp_path_factory):
    """A CLIP baseline in the converted layout: DiffCLIP's classes with standard attention in both towers."""
    folder = tmp_path_factory.mktemp("baseline")
    torch.manual_seed(4)
    DiffCLIPModel(tiny_config(diff_text=False, diff_vision=False)).eval().save_pretrained(folder)
    tiny_processor(image_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(diffclip_folder, tmp_path_factory):
    """The tiny DiffCLIP exported by the command, at all three precisions."""
    output = tmp_path_factory.mktemp("exports") / "diffclip-onnx"
    done = _command("export", "onnx", "--model", str(diffclip_folder), "--output", str(output), "--quantize", "int8",
                    "--fp16")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "fp32: image cosine" in done.stdout
    return output


def _torch_model(folder) -> DiffCLIPModel:
    return DiffCLIPModel.from_pretrained(folder, attn_implementation="eager").eval()


def _session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _text_batch(seed: int = 0, lengths=(4, 9, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids of three texts: start token, random tokens, end token (49407), zero padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, 0], input_ids[row, length - 1] = 49406, 49407
        input_ids[row, 1 : length - 1] = torch.randint(300, 40000, (length - 2,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


# --------------------------------------------------------------------------------------------------
# The folder and the graphs
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_writes_the_transformers_js_layout_and_a_passing_report(exported):
    for suffix in ("", "_quantized", "_fp16"):
        for name in ("vision_model", "text_model"):
            assert (exported / "onnx" / f"{name}{suffix}.onnx").is_file()
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json", "export_config.json"):
        assert (exported / name).is_file(), name
    assert not list(exported.parent.glob(".*partial*"))
    vision = onnx.load(str(exported / "onnx" / "vision_model.onnx"))
    text = onnx.load(str(exported / "onnx" / "text_model.onnx"))
    assert vision.opset_import[0].version == json.loads((exported / "export_config.json").read_text())["opset"]
    assert [i.name for i in vision.graph.input] == ["pixel_values"]
    assert [o.name for o in vision.graph.output] == ["image_embeds", "pooler_output"]
    assert [i.name for i in text.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in text.graph.output] == ["text_embeds"]
    # dynamic axes: a name, not a number, for the batch (and the text's sequence)
    assert vision.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert all(d.dim_param for d in text.graph.input[0].type.tensor_type.shape.dim)

    report = json.loads((exported / "export_report.json").read_text())
    assert report["passed"] is True
    assert set(report["results"]) == {"fp32", "int8", "fp16"}
    for precision, result in report["results"].items():
        assert result["passed"] is True
        for tower, key in (("vision", "image_embeds"), ("text", "text_embeds")):
            assert result[tower]["file_bytes"] == graph_file(exported, tower, precision).stat().st_size
            assert result[tower]["latency_ms_per_batch"] > 0
            assert 0.99 <= result[tower][key]["min_cosine"] <= 1 + 1e-6
    assert report["results"]["fp32"]["vision"]["image_embeds"]["max_abs_diff"] <= 1e-4
    assert report["results"]["fp32"]["vision"]["top1_agreement"] == 1.0
    assert len(report["photographs"]) == 6


@pytest.mark.slow
def test_graphs_match_the_torch_model_at_other_batch_and_sequence_sizes(exported, diffclip_folder):
    model = _torch_model(diffclip_folder)
    vision, text = _session(graph_file(exported, "vision")), _session(graph_file(exported, "text"))
    for batch in (1, 5):
        pixel_values = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        image_embeds, pooled = vision.run(None, {"pixel_values": pixel_values.numpy()})
        with torch.no_grad():
            want = model.get_image_features(pixel_values=pixel_values).pooler_output
            want_pooled = model.vision_model(pixel_values=pixel_values).pooler_output
        np.testing.assert_allclose(image_embeds, want.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(pooled, want_pooled.numpy(), atol=1e-4, rtol=0)
    for lengths in ((4, 9, 6), (2,), (77, 5)):
        input_ids, attention_mask = _text_batch(len(lengths), lengths)
        (text_embeds,) = text.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
        with torch.no_grad():
            want = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        np.testing.assert_allclose(text_embeds, want.numpy(), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_eager_and_sdpa_paths_export_the_same_differential_attention(diffclip_folder, tmp_path):
    model = _torch_model(diffclip_folder)
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    input_ids, attention_mask = _text_batch(7)
    with torch.no_grad():
        want_image = model.get_image_features(pixel_values=pixel_values).pooler_output.numpy()
        want_text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output.numpy()
    outputs = {}
    for path in ("eager", "sdpa"):
        vision = export_tower(model, "vision", tmp_path / path / "vision.onnx", attention=path)
        text = export_tower(model, "text", tmp_path / path / "text.onnx", attention=path)
        image = _session(vision).run(["image_embeds"], {"pixel_values": pixel_values.numpy()})[0]
        texts = _session(text).run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
        np.testing.assert_allclose(image, want_image, atol=1e-5, rtol=0)
        np.testing.assert_allclose(texts[0], want_text, atol=1e-5, rtol=0)
        outputs[path] = image
    np.testing.assert_allclose(outputs["eager"], outputs["sdpa"], atol=1e-5, rtol=0)
    # the eager graph computes both softmax maps of every layer: two Softmax nodes per layer of the vision tower
    softmaxes = [n for n in onnx.load(str(tmp_path / "eager" / "vision.onnx")).graph.node if n.op_type == "Softmax"]
    functions = onnx.load(str(tmp_path / "eager" / "vision.onnx")).functions
    softmaxes += [n for f in functions for n in f.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 2 * model.config.vision_config.num_hidden_layers
    assert model.config.vision_config._attn_implementation == "eager"  # the export puts the kernel back
    assert not any("cpu_combined_maps" in vars(m) for m in model.modules())


# --------------------------------------------------------------------------------------------------
# The onnx backend of the commands
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_zero_shot_backend_onnx_gives_the_torch_answers(exported, diffclip_folder):
    want = _zero_shot(str(diffclip_folder))
    fp32 = _zero_shot(str(exported), "--backend", "onnx")
    assert [r["image"] for r in fp32] == [r["image"] for r in want]
    assert [[p["label"] for p in r["predictions"]] for r in fp32] == [
        [p["label"] for p in r["predictions"]] for r in want
    ]
    got, expected = _scores(fp32), _scores(want)
    assert max(abs(got[key] - expected[key]) for key in expected) <= 1e-4
    # a tiny random model has near ties (0.38 against 0.38), which int8 may flip: its probabilities are compared
    for precision, tolerance in (("int8", 0.1), ("fp16", 0.01)):
        got = _scores(_zero_shot(str(exported), "--backend", "onnx", "--onnx-precision", precision))
        worst = max(abs(got[key] - expected[key]) for key in expected)
        assert 0 < worst <= tolerance, (precision, worst)


@pytest.mark.slow
def test_embed_backend_onnx_matches_torch_and_the_cache_refuses_a_mix(exported, diffclip_folder, tmp_path):
    from safetensors.torch import load_file

    data = tmp_path / "data"
    for index, photo in enumerate(_photos()):
        (data / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        (data / f"class{index % 2}" / Path(photo).name).write_bytes(Path(photo).read_bytes())
    common = ["--data", str(data), "--no-progress", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    done = _command("embed", "--model", str(diffclip_folder), *common, "--output", str(tmp_path / "torch.safetensors"))
    assert done.returncode == 0, done.stderr
    done = _command("embed", "--model", str(exported), "--backend", "onnx", *common, "--output",
                    str(tmp_path / "onnx.safetensors"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    want, got = load_file(tmp_path / "torch.safetensors"), load_file(tmp_path / "onnx.safetensors")
    for kind in ("pre_projection", "projected"):
        torch.testing.assert_close(got[kind], want[kind], atol=1e-4, rtol=0)
    assert not torch.allclose(got["pre_projection"][:, : got["projected"].shape[1]], got["projected"])
    done = _command("embed", "--model", str(exported), "--backend", "onnx", "--onnx-precision", "int8", *common)
    assert done.returncode == 2
    assert "computed for another backend" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_index_and_search_backend_onnx_match_torch_and_refuse_a_mix(exported, diffclip_folder, tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (the `search` extra)")
    results = {}
    for backend, model in (("torch", diffclip_folder), ("onnx", exported)):
        index = tmp_path / f"index-{backend}"
        flags = ["--backend", backend, "--device", "cpu"]
        done = _command("index", "--model", str(model), "--data", str(PHOTOS), "--output", str(index), "--no-progress",
                        *flags)  # fmt: skip
        assert done.returncode == 0, done.stderr
        done = _command("search", "--index", str(index), "--text", "a pink flower", "--top-k", "6", "--json", *flags)
        assert done.returncode == 0, done.stderr
        results[backend] = json.loads(done.stdout)
    assert [hit["path"] for hit in results["onnx"]] == [hit["path"] for hit in results["torch"]]
    for got, want in zip(results["onnx"], results["torch"]):
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
    mixed = [
        ["--index", str(tmp_path / "index-onnx"), "--backend", "onnx", "--onnx-precision", "int8"],
        ["--index", str(tmp_path / "index-onnx"), "--model", str(diffclip_folder), "--device", "cpu"],
    ]
    for flags in mixed:
        done = _command("search", *flags, "--text", "a flower")
        assert done.returncode == 2, done.stderr
        error = done.stderr.strip().splitlines()[-1]  # after the weights' loading bar
        assert error.startswith("diffclip search: error:") and "was made with the onnx fp32 backend" in error


# --------------------------------------------------------------------------------------------------
# Without torch
# --------------------------------------------------------------------------------------------------


def _torch_free_path(folder: Path) -> Path:
    """A folder holding only onnxruntime, numpy, tokenizers and Pillow (links to the installed packages and their
    bundled libraries): with `python -S` and PYTHONPATH set to it, nothing else can be imported."""
    folder.mkdir()
    for name in ("onnxruntime", "numpy", "tokenizers", "PIL"):
        package = Path(importlib.util.find_spec(name).origin).parent
        (folder / name).symlink_to(package)
        for libraries in glob.glob(str(package.parent / f"{'pillow' if name == 'PIL' else name}*.libs")):
            (folder / Path(libraries).name).symlink_to(libraries)
    return folder


def _reader(path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(path), "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-S", *argv], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_standalone_reader_without_torch_gives_the_torch_answers(exported, diffclip_folder, baseline_folder, tmp_path):
    path = _torch_free_path(tmp_path / "site")
    probe = (
        "import onnxruntime, numpy, tokenizers, PIL\nfor name in ('torch', 'transformers', 'transformers_diffclip'):\n"
    )
    probe += "    try:\n        __import__(name)\n    except ImportError:\n        print('absent', name)\n"
    done = _reader(path, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["absent", "torch", "absent", "transformers", "absent", "transformers_diffclip"]

    baseline_export = tmp_path / "baseline-onnx"
    export_onnx(baseline_folder, baseline_export)
    for torch_folder, folder in ((diffclip_folder, exported), (baseline_folder, baseline_export)):
        want = _zero_shot(str(torch_folder))
        done = _reader(path, str(READER), str(folder), "--labels", LABELS, *_photos())
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert _top1(got) == _top1(want)
        got_scores, want_scores = _scores(got), _scores(want)
        assert max(abs(got_scores[key] - want_scores[key]) for key in want_scores) <= 1e-4
    int8 = _reader(path, str(READER), str(exported), "--precision", "int8", "--labels", LABELS, *_photos())
    assert int8.returncode == 0, int8.stderr
    # dynamic int8 quantises activations per batch (the reader runs one image at a time, the command six): it is
    # held to the tolerance of the int8 backend against torch
    got_scores, want_scores = _scores(json.loads(int8.stdout)), _scores(_zero_shot(str(diffclip_folder)))
    assert 0 < max(abs(got_scores[key] - want_scores[key]) for key in want_scores) <= 0.1


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_export_below_its_threshold_fails_and_leaves_nothing(diffclip_folder, tmp_path, monkeypatch, capsys):
    from transformers_diffclip.export import validation

    strict = {precision: dict(limits) for precision, limits in validation.THRESHOLDS.items()}
    strict["fp32"]["min_cosine"] = 1.5  # no cosine reaches it
    output = tmp_path / "out" / "model-onnx"
    with pytest.raises(ValueError, match="fails its validation: fp32: vision cosine"):
        export_onnx(diffclip_folder, output, thresholds=strict)
    assert not (tmp_path / "out").exists()

    monkeypatch.setattr(validation, "THRESHOLDS", strict)
    capsys.readouterr()
    assert cli.main(["export", "onnx", "--model", str(diffclip_folder), "--output", str(output)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # the weights' loading bar, then the error
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert lines[-1].startswith("diffclip export onnx: error:") and "fails its validation" in lines[-1]
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_one_line_and_exit_code_2(diffclip_folder, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    photo = _photos()[0]
    cases = [
        (["export", "onnx", "--model", str(tmp_path / "missing"), "--output", str(tmp_path / "o")], "not found"),
        (["export", "onnx", "--model", str(diffclip_folder), "--output", str(busy)], "not empty"),
        (["export", "onnx", "--model", str(diffclip_folder), "--output", str(busy / "keep.txt")], "is a file"),
        (["zero-shot", "--model", str(diffclip_folder), "--backend", "onnx", "--labels", "a,b", photo],
         "not an ONNX export"),
        (["zero-shot", "--model", str(diffclip_folder), "--backend", "onnx", "--dtype", "bfloat16", "--labels", "a,b",
          photo], "--onnx-precision"),
    ]  # fmt: skip
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and message in error, (argv, error)
    assert (busy / "keep.txt").read_text() == "x" and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_precision_that_was_not_exported_is_refused(diffclip_folder, tmp_path, capsys):
    output = tmp_path / "fp32-only"
    export_onnx(diffclip_folder, output)
    assert sorted(p.name for p in (output / "onnx").iterdir()) == ["text_model.onnx", "vision_model.onnx"]
    argv = ["zero-shot", "--model", str(output), "--backend", "onnx", "--onnx-precision", "int8", "--labels", "a,b"]
    capsys.readouterr()  # the export's loading bar
    assert cli.main([*argv, _photos()[0]]) == 2
    error = capsys.readouterr().err.strip()
    assert "vision_model_quantized.onnx does not exist" in error and len(error.splitlines()) == 1
