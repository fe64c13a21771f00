"""The authors' Hub checkpoints (training format) load directly: `resolve_pretrained`, `from_pretrained` and the
`diffclip` commands convert them on first use, once, into a cache.

A Hugging Face cache is seeded, offline, with a tiny original-format checkpoint under
`hammh0a/DiffCLIP_ViTB16_CC12M` (the exact training container: `module.` weights, optimizer, scaler, args) and the
tiny vocabulary as CLIP's tokenizer files under `openai/clip-vit-base-patch16`. Expected numbers come from
`conversion/reference_original.py` (the original model written out from the facts) on the ORIGINAL weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import reference_original as ref
import torch
from _helpers import (
    HUB_REVISION,
    TINY,
    go_offline,
    seed_hub_cache,
    seed_tiny_clip_tokenizer,
    write_tiny_tokenizer_files,
)
from PIL import Image

from transformers_diffclip import (
    DEFAULT_MODEL_ID,
    DiffCLIPModel,
    DiffCLIPProcessor,
    DiffCLIPVisionModelWithProjection,
    resolve_pretrained,
)
from transformers_diffclip.cli import main as diffclip


ROOT = Path(__file__).resolve().parents[2]
LABELS = ["two cats", "a dog", "a remote control"]
CONVERTING = f"converting {DEFAULT_MODEL_ID} once, cached at "


def original_container(state_dict: dict) -> dict:
    """The released files' container: weights under `module.`, AdamW moments, scaler, args."""
    moments = {
        i: {"exp_avg": torch.zeros(t.shape), "exp_avg_sq": torch.ones(t.shape)}
        for i, t in enumerate(state_dict.values())
    }
    return {
        "epoch": 39,
        "state_dict": state_dict,
        "optimizer": {"state": moments, "param_groups": [{"lr": 1e-6, "params": list(moments)}]},
        "scaler": {"scale": 65536.0},
        "best_acc1": 33.8,
        "args": argparse.Namespace(model="DiffCLIP_VITB16", dataset="cc12m"),
    }


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """`(state dict with module. prefix, checkpoint file)` of a tiny DiffCLIP in the original container."""
    state_dict = ref.make_original_state_dict(diff_vision=True, diff_text=True, seed=12, **TINY)
    path = tmp_path_factory.mktemp("original") / "checkpoint_best.pt"
    torch.save(original_container(state_dict), path)
    return state_dict, path


@pytest.fixture
def hub(tmp_path, monkeypatch, original) -> Path:
    """An offline Hub cache holding the original checkpoint and CLIP's tokenizer files; converted folders go to
    tmp_path/diffclip."""
    cache = tmp_path / "hub"
    seed_hub_cache(cache, DEFAULT_MODEL_ID, {"checkpoint_best.pt": original[1]})
    seed_tiny_clip_tokenizer(cache)
    go_offline(monkeypatch, cache, tmp_path / "diffclip")
    return cache


def converted_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "converted").rglob("*") if p.is_file()) if root.exists() else []


def expected_forward(state_dict, texts, images):
    """The original forward: ids from transformers' plain CLIPTokenizer over the same vocabulary files (padded with
    0 as the original), pixels from the original transform."""
    from transformers import CLIPTokenizer

    folder = write_tiny_tokenizer_files(Path(os.environ["DIFFCLIP_CACHE"]).parent / "plain-tokenizer")
    encoded = CLIPTokenizer.from_pretrained(folder)(texts, padding="max_length", max_length=77, return_tensors="pt")
    pixels = torch.stack([ref.original_image_transform(image, size=32) for image in images])
    return ref.original_forward(
        state_dict,
        encoded["input_ids"] * encoded["attention_mask"],
        pixels,
        vision_heads=4,
        text_heads=4,
        diff_vision=True,
        diff_text=True,
    )


def image_file(folder: Path, seed: int = 0) -> Path:
    path = folder / f"image{seed}.png"
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (45, 37, 3), dtype=np.uint8)).save(path)
    return path


def snapshot(*roots: Path) -> dict:
    """Every file under `roots` with its inode, size and modification time."""
    return {
        p: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in root.rglob("*")
        if p.is_file()
    }


def test_default_zero_shot_converts_once_and_matches_the_original(hub, original, tmp_path, capsys):
    image = image_file(tmp_path)
    argv = ["zero-shot", "--labels", ",".join(LABELS), str(image), "--json", "--no-progress"]
    assert diffclip(argv) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("converting ")]
    assert lines == [
        CONVERTING + str(tmp_path / "diffclip" / "converted" / "hammh0a--DiffCLIP_ViTB16_CC12M" / HUB_REVISION)
    ]
    scores = {p["label"]: p["score"] for p in json.loads(captured.out)[0]["predictions"]}

    prompts = [f"a photo of a {label}." for label in LABELS]  # the default template
    expected = expected_forward(original[0], prompts, [Image.open(image)])["logits_per_image"][0].softmax(-1)
    assert sorted(scores) == sorted(LABELS)
    got = torch.tensor([scores[label] for label in LABELS], dtype=torch.float64)
    assert (got - expected.double()).abs().max() <= 1e-4

    # a second run converts nothing and rewrites nothing (neither the converted folder nor the Hub cache)
    before = snapshot(tmp_path / "diffclip", hub)
    assert diffclip(argv) == 0
    again = capsys.readouterr()
    assert "converting" not in again.err
    assert json.loads(again.out) == json.loads(captured.out)
    assert snapshot(tmp_path / "diffclip", hub) == before


def test_from_pretrained_takes_the_original_repo_id(hub, original, tmp_path):
    model = DiffCLIPModel.from_pretrained(DEFAULT_MODEL_ID).eval()
    processor = DiffCLIPProcessor.from_pretrained(DEFAULT_MODEL_ID)
    # the image processor is DiffCLIP's (ImageNet statistics at the checkpoint's size), not CLIP's Hub settings
    assert list(processor.image_processor.image_mean) == list(ref.IMAGENET_MEAN)
    assert processor.image_processor.crop_size == {"height": 32, "width": 32}
    texts, image = ["a photo of a cat.", "a red car"], Image.open(image_file(tmp_path, 1))
    inputs = processor(text=texts, images=image, return_tensors="pt", padding=True)
    with torch.no_grad():
        image_embeds = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_embeds = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    expected = expected_forward(original[0], texts, [image])
    assert (getattr(image_embeds, "pooler_output", image_embeds) - expected["image_embeds"]).abs().max() <= 1e-5
    assert (getattr(text_embeds, "pooler_output", text_embeds) - expected["text_embeds"]).abs().max() <= 1e-5

    # the tower classes load from the same converted folder
    vision = DiffCLIPVisionModelWithProjection.from_pretrained(DEFAULT_MODEL_ID).eval()
    with torch.no_grad():
        embeds = vision(pixel_values=inputs["pixel_values"]).image_embeds
    assert (embeds - expected["image_embeds"]).abs().max() <= 1e-5
    assert len(list((tmp_path / "diffclip" / "converted").glob("*/*"))) == 1  # converted once for all of them


def test_local_original_checkpoint_file_and_folder(hub, original, tmp_path, capsys):
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "checkpoint_best.pt").write_bytes(original[1].read_bytes())
    for name in (folder / "checkpoint_best.pt", folder):  # the file, or a folder holding only it
        resolved = Path(resolve_pretrained(name))
        assert resolved.parent == tmp_path / "diffclip" / "converted" / "local"
    assert capsys.readouterr().err.count("converting ") == 1  # the same file: converted once
    model = DiffCLIPModel.from_pretrained(folder / "checkpoint_best.pt")
    assert torch.equal(model.logit_scale, ref.strip_prefix(original[0])["logit_scale"])
    # a converted folder and any other name come back unchanged
    assert resolve_pretrained(resolved) == str(resolved)
    assert resolve_pretrained("acme/some-converted-diffclip") == "acme/some-converted-diffclip"


def test_attention_map_defaults_to_the_original_checkpoint(hub, tmp_path, capsys):
    output = tmp_path / "map.png"
    argv = ["attention-map", "--image", str(image_file(tmp_path)), "--text", "a dog", "--output", str(output)]
    assert diffclip(argv) == 0
    assert CONVERTING in capsys.readouterr().err and output.is_file()


def test_eval_retrieval_takes_the_original_repo_id(hub, original, tmp_path, capsys):
    images = [Image.open(image_file(tmp_path, seed)) for seed in range(4)]
    captions = ["a cat on a red sofa", "two dogs", "a remote control", "a car in the rain"]
    lines = [json.dumps({"image": f"image{i}.png", "caption": caption}) for i, caption in enumerate(captions)]
    (tmp_path / "set.jsonl").write_text("\n".join(lines))
    output = tmp_path / "retrieval.json"
    argv = ["eval", "retrieval", "--model", DEFAULT_MODEL_ID, "--data", str(tmp_path / "set.jsonl")]
    assert diffclip([*argv, "--output", str(output), "--no-progress"]) == 0
    report = json.loads(output.read_text())
    # one caption per image: R@1 is the share of rows (columns) whose best match is their own pair
    expected = expected_forward(original[0], captions, images)["logits_per_image"]
    own = torch.arange(4)
    # image -> text is CLIP_benchmark's text retrieval, text -> image its image retrieval
    assert report["text_retrieval_recall@1"] == pytest.approx((expected.argmax(1) == own).double().mean().item())
    assert report["image_retrieval_recall@1"] == pytest.approx((expected.argmax(0) == own).double().mean().item())


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    barrier, me = Path(sys.argv[1]), sys.argv[2]
    import torch
    from transformers_diffclip import DiffCLIPModel, resolve_pretrained

    (barrier / me).touch()
    while len(list(barrier.iterdir())) < 2:  # both processes start converting at the same moment
        time.sleep(0.01)
    folder = resolve_pretrained("hammh0a/DiffCLIP_ViTB16_CC12M")
    model = DiffCLIPModel.from_pretrained("hammh0a/DiffCLIP_ViTB16_CC12M").eval()
    with torch.no_grad():
        embeds = model.get_image_features(pixel_values=torch.ones(1, 3, 32, 32))
    embeds = getattr(embeds, "pooler_output", embeds)
    print(json.dumps({"folder": folder, "embeds": embeds[0].tolist()}))
    """
)


@pytest.mark.slow
def test_two_concurrent_first_runs_convert_once_and_agree(hub, original, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(hub),
        "DIFFCLIP_CACHE": str(tmp_path / "diffclip"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-c", CONCURRENT_SCRIPT, str(barrier)]
    runs = [
        subprocess.Popen(command + [name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in "ab"
    ]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, results):
        assert run.returncode == 0, err[-3000:]
    outputs = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert sum(err.count(CONVERTING) for _, err in results) == 1
    assert outputs[0]["folder"] == outputs[1]["folder"]
    assert outputs[0]["embeds"] == outputs[1]["embeds"]
    leftovers = [p.name for p in Path(outputs[0]["folder"]).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary folder left behind
    pixels = torch.ones(1, 3, 32, 32)
    expected = ref.original_forward(
        original[0], None, pixels, vision_heads=4, text_heads=4, diff_vision=True, diff_text=True
    )
    assert (torch.tensor(outputs[0]["embeds"]) - expected["image_embeds"][0]).abs().max() <= 1e-5


# --------------------------------------------------------------------------------------------------
# Bad input: a clear error (exit code 2), nothing cached
# --------------------------------------------------------------------------------------------------


def run_failing(argv, capsys) -> str:
    assert diffclip(argv) == 2
    return capsys.readouterr().err


def test_offline_without_the_checkpoint_names_the_file_and_how_to_get_it(tmp_path, monkeypatch, capsys):
    go_offline(monkeypatch, tmp_path / "empty-hub", tmp_path / "diffclip")
    err = run_failing(["zero-shot", "--labels", "a,b", str(image_file(tmp_path))], capsys)
    assert "HF_HUB_OFFLINE is set" in err and f"{DEFAULT_MODEL_ID}/checkpoint_best.pt" in err
    assert f"hf download {DEFAULT_MODEL_ID} checkpoint_best.pt" in err
    assert converted_files(tmp_path / "diffclip") == []


def test_offline_without_the_tokenizer_files_names_them(tmp_path, monkeypatch, original, capsys):
    seed_hub_cache(tmp_path / "hub", DEFAULT_MODEL_ID, {"checkpoint_best.pt": original[1]})
    go_offline(monkeypatch, tmp_path / "hub", tmp_path / "diffclip")
    err = run_failing(["zero-shot", "--labels", "a,b", str(image_file(tmp_path))], capsys)
    assert "openai/clip-vit-base-patch16/vocab.json" in err and "hf download openai/clip-vit-base-patch16" in err
    assert converted_files(tmp_path / "diffclip") == []


def test_unknown_revision(hub, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"revision 'v9'.*not in the local cache.*--revision v9"):
        resolve_pretrained(DEFAULT_MODEL_ID, revision="v9")
    # online, the Hub answers that the revision does not exist
    import huggingface_hub
    from huggingface_hub.errors import RevisionNotFoundError

    def no_such_revision(*args, **kwargs):
        error = RevisionNotFoundError.__new__(RevisionNotFoundError)  # as raised for the Hub's 404 answer
        Exception.__init__(error, "404 Client Error: Revision Not Found")
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_such_revision)
    with pytest.raises(ValueError, match=f"Hub repo {DEFAULT_MODEL_ID} has no revision 'v9'"):
        resolve_pretrained(DEFAULT_MODEL_ID, revision="v9")


def test_unknown_model_id(hub, tmp_path, capsys):
    err = run_failing(
        ["zero-shot", "--model", "acme/no-such-model", "--labels", "a,b", str(image_file(tmp_path))], capsys
    )
    assert "acme/no-such-model" in err and DEFAULT_MODEL_ID in err  # says which ids load
    assert converted_files(tmp_path / "diffclip") == []


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_truncated_or_foreign_checkpoint(damage, tmp_path, monkeypatch, original, capsys):
    bad = tmp_path / "checkpoint_best.pt"
    if damage == "truncated":
        data = original[1].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        message = "truncated"
    else:
        torch.save(
            {"state_dict": {"module.conv1.weight": torch.zeros(8, 3, 3, 3), "module.fc.weight": torch.zeros(10, 8)}},
            bad,
        )
        message = "not a DiffCLIP or CLIP checkpoint"
    seed_hub_cache(tmp_path / "hub", DEFAULT_MODEL_ID, {"checkpoint_best.pt": bad})
    seed_tiny_clip_tokenizer(tmp_path / "hub")
    go_offline(monkeypatch, tmp_path / "hub", tmp_path / "diffclip")
    err = run_failing(["zero-shot", "--labels", "a,b", str(image_file(tmp_path))], capsys)
    assert message in err
    assert converted_files(tmp_path / "diffclip") == []
    # the local file in place of the id: the same error
    with pytest.raises(ValueError, match=message):
        DiffCLIPModel.from_pretrained(bad)
    assert converted_files(tmp_path / "diffclip") == []


def test_finetune_takes_the_original_repo_id(hub, original, tmp_path):
    """`diffclip-finetune --model_name_or_path hammh0a/...` converts and evaluates: the in-batch loss is the CLIP loss
    of the original forward's logits."""
    from transformers_diffclip.training.cli import main as finetune

    images = [Image.open(image_file(tmp_path, seed)) for seed in range(4)]
    captions = ["a cat on a red sofa", "two dogs", "a remote control", "a car in the rain"]
    rows = "".join(f"image{i}.png,{caption}\n" for i, caption in enumerate(captions))
    (tmp_path / "pairs.csv").write_text("image_path,caption\n" + rows)
    output = tmp_path / "run"
    argv = ["--model_name_or_path", DEFAULT_MODEL_ID, "--validation_file", str(tmp_path / "pairs.csv"), "--do_eval"]
    argv += ["--output_dir", str(output), "--per_device_eval_batch_size", "4", "--report_to", "none", "--use_cpu"]
    assert finetune(argv) == 0
    logits = expected_forward(original[0], captions, images)["logits_per_image"].double()
    pairs = torch.arange(4)
    cross_entropy = torch.nn.functional.cross_entropy
    loss = (cross_entropy(logits, pairs) + cross_entropy(logits.t(), pairs)) / 2
    metrics = json.loads((output / "eval_results.json").read_text())
    assert metrics["eval_loss"] == pytest.approx(loss.item(), abs=1e-4)


def test_converted_folder_serves_offline_after_the_checkpoint_is_deleted(hub, original, tmp_path):
    """The training checkpoint (three times the weights) may be removed from the Hub cache once converted: an offline
    start finds the converted folder through the commit recorded at conversion, and so does an explicit commit."""
    import shutil

    folder = resolve_pretrained(DEFAULT_MODEL_ID)
    shutil.rmtree(hub / f"models--{DEFAULT_MODEL_ID.replace('/', '--')}")
    before = snapshot(tmp_path / "diffclip")
    assert resolve_pretrained(DEFAULT_MODEL_ID) == folder
    assert resolve_pretrained(DEFAULT_MODEL_ID, revision=HUB_REVISION) == folder
    model = DiffCLIPModel.from_pretrained(DEFAULT_MODEL_ID).eval()
    with torch.no_grad():
        embeds = model.get_image_features(pixel_values=torch.ones(1, 3, 32, 32))
    embeds = getattr(embeds, "pooler_output", embeds)
    expected = ref.original_forward(
        original[0], torch.full((1, 77), 0), torch.ones(1, 3, 32, 32), vision_heads=4, text_heads=4,
        diff_vision=True, diff_text=True,
    )["image_embeds"]  # fmt: skip
    assert (embeds - expected).abs().max() <= 1e-5
    assert snapshot(tmp_path / "diffclip") == before  # nothing written
    with pytest.raises(Exception, match="checkpoint_best.pt"):  # another revision still needs its checkpoint
        resolve_pretrained(DEFAULT_MODEL_ID, revision="v2")


# --------------------------------------------------------------------------------------------------
# from_pretrained's Hub arguments reach the checkpoint's download
# --------------------------------------------------------------------------------------------------


class _Downloaded(Exception):
    """Raised by the download spy once it has seen the call: nothing is converted."""


HUB_ARGUMENT_VALUES = {
    "revision": "v1.0",
    "cache_dir": "elsewhere",  # under tmp_path
    "token": "hf_not_a_real_token",
    "force_download": True,
    "local_files_only": True,
    "subfolder": "weights",
    "proxies": {"https": "http://proxy.invalid:3128"},
}


@pytest.mark.parametrize("loader", [DiffCLIPModel, DiffCLIPVisionModelWithProjection, DiffCLIPProcessor])
@pytest.mark.parametrize("argument", list(HUB_ARGUMENT_VALUES))
def test_every_hub_argument_of_from_pretrained_reaches_the_download(hub, monkeypatch, tmp_path, argument, loader):
    import huggingface_hub

    calls = []

    def spy(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        raise _Downloaded

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    value = HUB_ARGUMENT_VALUES[argument]
    if argument == "cache_dir":
        value = str(tmp_path / value)
    with pytest.raises(_Downloaded):
        loader.from_pretrained(DEFAULT_MODEL_ID, **{argument: value})
    [(repo_id, filename, received)] = calls
    assert (repo_id, filename) == (DEFAULT_MODEL_ID, "checkpoint_best.pt")
    assert received[argument] == value
    # and nothing else is invented: the other Hub arguments keep huggingface_hub's defaults
    assert set(received) - {"revision", "cache_dir", "local_files_only"} <= {argument}


def test_a_converted_folder_loads_as_a_local_folder(monkeypatch, tmp_path):
    """Once the checkpoint is converted, the Hub arguments were spent on its download: `subfolder` (where it lay)
    is not looked for inside the converted folder; every other argument of the call is passed on unchanged."""
    from transformers_diffclip.original import cache

    converted = str(tmp_path / "converted")
    monkeypatch.setattr(cache, "resolve_pretrained", lambda name, **hub: converted if name == "org/original" else name)
    kwargs = {"subfolder": "weights", "revision": "v1", "torch_dtype": torch.float16}
    assert cache.resolve_from_pretrained("org/original", kwargs) == (
        converted,
        {"revision": "v1", "torch_dtype": torch.float16},
    )
    assert cache.resolve_from_pretrained("org/transformers-folder", kwargs) == ("org/transformers-folder", kwargs)
