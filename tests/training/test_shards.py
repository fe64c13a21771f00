"""Streamed webdataset shards for training: the augmentation against its definition, shard lists, every sample once
per epoch across processes and workers, bad samples skipped and counted, resuming mid-epoch, and `diffclip-finetune`
learning from shards (one process here; two under torchrun in `training_shards_worker.py`).

Shards are written here in img2dataset's layout (`KEY.png` + `KEY.txt`) with webdataset's own `TarWriter`.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


wds = pytest.importorskip("webdataset")

from _helpers import COLOURS, tiny_config, tiny_processor  # noqa: E402

import transformers_diffclip as td  # noqa: E402
from transformers_diffclip import training  # noqa: E402
from transformers_diffclip.training import cli as training_cli  # noqa: E402
from transformers_diffclip.training.data import (  # noqa: E402
    DiffCLIPDataCollator,
    RandomResizedCropTransform,
    random_resized_crop_box,
)
from transformers_diffclip.training.shards import ImageTextShards, ShardLoader, expand_shards  # noqa: E402


WORKER = Path(__file__).resolve().parent / "training_shards_worker.py"
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def png(rgb, size=(36, 36), seed: int | None = None) -> bytes:
    pixels = np.empty((size[1], size[0], 3), dtype=np.float32)
    pixels[:] = rgb
    if seed is not None:
        rng = np.random.default_rng(seed)
        pixels += rng.uniform(-25, 25, size=3) + rng.normal(0, 6, size=pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_shards(folder: Path, shards: list[list[dict]], prefix: str = "data") -> str:
    """One tar per list of samples; returns the brace pattern naming them all."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, samples in enumerate(shards):
        with wds.TarWriter(str(folder / f"{prefix}-{index:05d}.tar")) as writer:
            for sample in samples:
                writer.write(sample)
    return str(folder / f"{prefix}-{{00000..{len(shards) - 1:05d}}}.tar")


def numbered_shards(folder: Path, num_shards: int, per_shard: int) -> str:
    """Samples whose captions say which they are: 'sample S I' (shard S, index I)."""
    shards = [
        [
            {"__key__": f"{s:05d}{i:04d}", "png": png((8 * s, 8 * i, 90)), "txt": f"sample {s} {i}"}
            for i in range(per_shard)
        ]
        for s in range(num_shards)
    ]
    return write_shards(folder, shards)


def captions(processor, batch) -> list[str]:
    return processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def stream(processor, pattern, augment=True, **kwargs) -> ImageTextShards:
    transform = RandomResizedCropTransform.from_image_processor(processor.image_processor) if augment else None
    collator = DiffCLIPDataCollator(processor, image_transform=transform)
    kwargs = {"batch_size": 3, "seed": 5, "shuffle_buffer": 4, **kwargs}
    return ImageTextShards(expand_shards(pattern), collator=collator, **kwargs)


# --------------------------------------------------------------------------------------------------
# The training augmentation against its definition (torchvision's RandomResizedCrop, ImageNet normalisation)
# --------------------------------------------------------------------------------------------------


def reference_get_params(width, height, scale, ratio, rng):
    """torchvision.transforms.RandomResizedCrop.get_params, written out from its documentation and source, with
    Python's generator drawing in the same order (uniform area, log-uniform ratio, then top and left)."""
    area = height * width
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("size", [(224, 224), (640, 480), (50, 300), (1000, 10), (7, 5)])
def test_random_resized_crop_box_is_torchvisions(size):
    width, height = size
    scale, ratio = (0.5, 1.0), (3 / 4, 4 / 3)
    ours, theirs = random.Random(11), random.Random(11)
    for _ in range(300):
        box = random_resized_crop_box(width, height, ours, scale, ratio)
        assert box == reference_get_params(width, height, scale, ratio, theirs)
        top, left, h, w = box
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width


def test_random_resized_crop_box_ranges_on_a_large_image():
    rng = random.Random(3)
    boxes = [random_resized_crop_box(1000, 1000, rng) for _ in range(2000)]
    fractions = [h * w / 1e6 for _, _, h, w in boxes]
    aspects = [w / h for _, _, h, w in boxes]
    assert 0.5 - 2e-3 <= min(fractions) < 0.52 and 0.98 < max(fractions) <= 1.0
    assert 0.75 - 2e-3 <= min(aspects) < 0.77 and 1.30 < max(aspects) <= 4 / 3 + 2e-3
    assert len({(top, left) for top, left, _, _ in boxes}) > 1500  # placed at random, not centred


def test_augmentation_is_crop_resize_and_imagenet_normalisation():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8))
    transform = RandomResizedCropTransform(24, IMAGENET_MEAN, IMAGENET_STD, seed="s")
    draws = random.Random("s")
    for _ in range(5):
        out = transform(image)
        top, left, h, w = reference_get_params(60, 40, (0.5, 1.0), (3 / 4, 4 / 3), draws)
        crop = image.crop((left, top, left + w, top + h)).resize((24, 24), Image.BILINEAR)
        expected = (np.asarray(crop, dtype=np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32
        torch.testing.assert_close(out, torch.from_numpy(expected.transpose(2, 0, 1)).float(), atol=1e-5, rtol=0)
    flat = RandomResizedCropTransform(8, IMAGENET_MEAN, IMAGENET_STD)(Image.new("RGB", (30, 20), (255, 0, 51)))
    for channel, value in enumerate((255, 0, 51)):
        expected = (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        torch.testing.assert_close(flat[channel], torch.full((8, 8), expected), atol=1e-6, rtol=0)


def test_augmentation_takes_size_and_statistics_from_the_processor(processor):
    transform = RandomResizedCropTransform.from_image_processor(processor.image_processor)
    assert transform.size == 32
    torch.testing.assert_close(transform.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(transform.std.flatten(), torch.tensor(IMAGENET_STD))


def test_files_get_the_augmentation_when_asked_for(processor, tmp_path):
    """Rows of a file or `datasets` split are cropped when read (seeded from torch's generator); the collator stacks
    the crops."""
    import datasets

    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    raw = datasets.Dataset.from_dict({"image_path": ["a.png", "b.png"], "caption": ["cat", "dog"]})
    transform = RandomResizedCropTransform.from_image_processor(processor.image_processor)
    dataset, _ = training.prepare_image_caption_dataset(raw, image_root=tmp_path, image_transform=transform)
    torch.manual_seed(0)
    first = dataset[0]["image"]
    second = dataset[0]["image"]
    torch.manual_seed(0)
    assert first.shape == (3, 32, 32) and not torch.equal(first, second)
    assert torch.equal(dataset[0]["image"], first)  # reproducible from torch's seed
    batch = DiffCLIPDataCollator(processor)([dataset[0], dataset[1]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["input_ids"].shape[0] == 2


# --------------------------------------------------------------------------------------------------
# Shard lists
# --------------------------------------------------------------------------------------------------


def test_expand_shards_patterns_lists_and_urls(tmp_path):
    for name in ("a-0.tar", "a-1.tar", "a-2.tar", "b.tar"):
        (tmp_path / name).write_bytes(b"")
    assert expand_shards(f"{tmp_path}/a-{{0..2}}.tar::{tmp_path}/b.tar") == [
        str(tmp_path / n) for n in ("a-0.tar", "a-1.tar", "a-2.tar", "b.tar")
    ]
    assert expand_shards("https://example.org/cc3m-{00..02}.tar") == [
        f"https://example.org/cc3m-0{i}.tar" for i in range(3)
    ]
    with pytest.raises(FileNotFoundError, match=r"3 of 6 shards do not exist: .*a-3\.tar"):
        expand_shards(f"{tmp_path}/a-{{0..5}}.tar")
    with pytest.raises(ValueError, match="empty"):
        expand_shards("  ")


def test_a_stream_needs_a_length_and_enough_shards(processor, tmp_path):
    pattern = numbered_shards(tmp_path, 2, 6)
    with pytest.raises(ValueError, match="--train_num_samples"):
        stream(processor, pattern, num_samples=None)
    with pytest.raises(ValueError, match="less than one optimizer step"):
        stream(processor, pattern, num_samples=5, batch_size=3, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="every worker needs a shard"):
        ShardLoader(stream(processor, numbered_shards(tmp_path / "one", 1, 6), num_samples=6), num_workers=2)


# --------------------------------------------------------------------------------------------------
# Every sample once per epoch, reproducibly, across processes and workers
# --------------------------------------------------------------------------------------------------


def epoch_captions(processor, pattern, epoch, rank, world, num_workers, monkeypatch, **kwargs) -> list[list[str]]:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    loader = ShardLoader(stream(processor, pattern, **kwargs), num_workers=num_workers)
    loader.set_epoch(epoch)
    batches = [captions(processor, batch) for batch in loader]
    assert len(batches) == len(loader)
    return batches


def test_every_sample_once_per_epoch_across_processes_and_workers(processor, tmp_path, monkeypatch):
    pattern = numbered_shards(tmp_path, 8, 6)  # 48 samples: 2 processes × 2 workers × 2 shards
    everything = sorted(f"sample {s} {i}" for s in range(8) for i in range(6))
    orders = []
    for epoch in (0, 1):
        per_rank = [epoch_captions(processor, pattern, epoch, r, 2, 2, monkeypatch, num_samples=48) for r in (0, 1)]
        assert [len(batches) for batches in per_rank] == [8, 8]  # 24 samples per process in batches of 3
        used = [c for batches in per_rank for batch in batches for c in batch]
        assert sorted(used) == everything
        orders.append(used)
    assert orders[0] != orders[1]  # a new shard and sample order every epoch
    again = [epoch_captions(processor, pattern, 1, r, 2, 2, monkeypatch, num_samples=48) for r in (0, 1)]
    assert [c for batches in again for batch in batches for c in batch] == orders[1]  # seeded: reproducible
    # The sample shuffle mixes the shards a worker reads: a batch is not one shard's run in order.
    first = epoch_captions(processor, pattern, 0, 0, 1, 0, monkeypatch, num_samples=48, shuffle_buffer=12)
    assert any(len({c.split()[1] for c in batch}) > 1 for batch in first)


def test_a_worker_with_too_few_samples_goes_through_them_again(processor, tmp_path, monkeypatch):
    pattern = numbered_shards(tmp_path, 2, 4)  # 8 samples, but an epoch of 12
    batches = epoch_captions(processor, pattern, 0, 0, 1, 0, monkeypatch, num_samples=12)
    used = [c for batch in batches for c in batch]
    assert len(used) == 12 and set(used) == {f"sample {s} {i}" for s in range(2) for i in range(4)}


# --------------------------------------------------------------------------------------------------
# Dirty web data
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def dirty_shards(tmp_path) -> tuple[str, list[str]]:
    good = [{"__key__": f"g{i:03d}", "png": png((10 * i, 50, 50)), "txt": f"good {i}"} for i in range(9)]
    corrupt = {"__key__": "x000", "jpg": b"this is not a jpeg", "txt": "broken image"}
    no_caption = {"__key__": "x001", "png": png((1, 2, 3))}
    no_image = {"__key__": "x002", "txt": "caption without image", "json": b"{}"}
    pattern = write_shards(tmp_path, [good[:4] + [corrupt], good[4:] + [no_caption, no_image]])
    return pattern, sorted(f"good {i}" for i in range(9))


def test_bad_samples_are_skipped_and_counted(processor, dirty_shards):
    pattern, good = dirty_shards
    loader = ShardLoader(stream(processor, pattern, num_samples=12, max_bad_sample_fraction=0.3))
    used = [c for batch in loader for c in captions(processor, batch)]
    assert sorted(used) == good
    assert loader.counts.samples == 12 and loader.counts.bad == 3
    shards = {Path(url).name: count for url, count in loader.counts.bad_per_shard.items()}
    assert shards == {"data-00000.tar": 1, "data-00001.tar": 2}
    assert loader.log_metrics()["train_skipped_samples"] == 3


def test_too_many_bad_samples_stop_the_run_naming_shards(processor, dirty_shards):
    pattern, _ = dirty_shards
    loader = ShardLoader(stream(processor, pattern, num_samples=12))  # default limit: 1 %
    with pytest.raises(ValueError, match=r"3 of the 12 .*data-00001\.tar \(2\), .*data-00000\.tar \(1\)"):
        list(loader)


def test_a_shard_that_cannot_be_read_is_skipped_and_named(processor, tmp_path):
    pattern = numbered_shards(tmp_path, 2, 6)
    broken = tmp_path / "data-00001.tar"
    broken.write_bytes(b"not a tar archive at all" * 40)
    loader = ShardLoader(stream(processor, pattern, num_samples=6, shuffle_buffer=0, max_bad_sample_fraction=0.2))
    used = [c for batch in loader for c in captions(processor, batch)]
    assert sorted(used) == [f"sample 0 {i}" for i in range(6)]
    assert dict(loader.counts.bad_per_shard) == {str(broken): 1}


def test_a_shard_that_fails_after_the_first_batch_is_counted_too(processor, tmp_path):
    """A shard error met in a later batch lands in the counts the loader reports (the stream's error handler and the
    per-batch counts are the same object)."""
    pattern = numbered_shards(tmp_path, 3, 6)
    broken = tmp_path / "data-00001.tar"
    broken.write_bytes(b"not a tar archive at all" * 40)
    order = sorted(str(p) for p in tmp_path.glob("data-*.tar"))
    seed = next(  # a seed whose epoch-0 shard order reads the broken shard second, after a full batch
        seed for seed in range(50) if _shuffled(order, f"diffclip-shards/{seed}/0")[1] == str(broken)
    )
    loader = ShardLoader(
        stream(processor, pattern, num_samples=12, shuffle_buffer=0, seed=seed, max_bad_sample_fraction=0.5)
    )
    used = [c for batch in loader for c in captions(processor, batch)]
    assert len(used) == 12
    assert dict(loader.counts.bad_per_shard) == {str(broken): 1}
    assert loader.log_metrics()["train_skipped_samples"] == 1


def _shuffled(items: list[str], name: str) -> list[str]:
    items = list(items)
    random.Random(name).shuffle(items)
    return items


# --------------------------------------------------------------------------------------------------
# Resuming mid-epoch
# --------------------------------------------------------------------------------------------------


def test_resumed_stream_continues_with_the_same_batches_without_decoding_the_skipped(processor, tmp_path):
    pattern = numbered_shards(tmp_path, 4, 6)
    full_loader = ShardLoader(stream(processor, pattern, num_samples=24), num_workers=2)
    full_loader.set_epoch(1)
    full = list(full_loader)
    resumed = stream(processor, pattern, num_samples=24)
    resumed.resume_at(1, 3)
    loader = ShardLoader(resumed, num_workers=2)
    rest = list(loader)
    assert len(full) == 8 and len(rest) == 5
    for expected, got in zip(full[3:], rest):
        assert torch.equal(expected["input_ids"], got["input_ids"])
        assert torch.equal(expected["pixel_values"], got["pixel_values"])  # the same crops, too
    assert loader.counts.samples == 15  # only the samples of the 5 remaining batches were decoded
    loader.set_epoch(2)  # the next epoch is whole again
    assert len(list(loader)) == 8


# --------------------------------------------------------------------------------------------------
# diffclip-finetune on shards: learning, logging, resuming
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colour_shards(tmp_path_factory) -> tuple[str, str]:
    """48 jittered colour squares in 4 training shards (one corrupt image among them), 8 clean ones for validation."""
    root = tmp_path_factory.mktemp("colour_shards")
    train = [
        {"__key__": f"{name}{copy}", "png": png(rgb, seed=10 * index + copy), "txt": f"a photo of a {name} square"}
        for index, (name, rgb) in enumerate(COLOURS.items())
        for copy in range(6)
    ]
    random.Random(0).shuffle(train)
    train[5] = {"__key__": "corrupt", "jpg": b"\xff\xd8 truncated", "txt": "a photo of a broken square"}
    validation = [
        {"__key__": name, "png": png(rgb), "txt": f"a photo of a {name} square"} for name, rgb in COLOURS.items()
    ]
    return (
        write_shards(root / "train", [train[i : i + 12] for i in range(0, 48, 12)]),
        write_shards(root / "validation", [validation], prefix="val"),
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fresh_model")
    torch.manual_seed(0)
    td.DiffCLIPModel(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


def shard_argv(model_dir, shards, output_dir, **extra) -> list[str]:
    train, validation = shards
    flags = {
        "model_name_or_path": str(model_dir),
        "train_shards": train,
        "validation_shards": validation,
        "train_num_samples": "48",
        "max_bad_sample_fraction": "0.05",
        "shuffle_buffer": "16",
        "output_dir": str(output_dir),
        "per_device_train_batch_size": "8",
        "per_device_eval_batch_size": "8",
        "num_train_epochs": "6",
        "learning_rate": "3e-3",
        "weight_decay": "0.0",
        "warmup_steps": "3",
        "logging_steps": "6",
        "save_strategy": "steps",
        "save_steps": "15",
        "report_to": "none",
        "disable_tqdm": "true",
        "use_cpu": "true",
        "dataloader_num_workers": "0",
        "seed": "0",
        **extra,
    }
    return ["--do_train"] + [part for key, value in flags.items() for part in (f"--{key}", value)]


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory, model_dir, colour_shards):
    output_dir = tmp_path_factory.mktemp("streamed")
    assert training_cli.main(shard_argv(model_dir, colour_shards, output_dir) + ["--do_eval"]) == 0
    return output_dir


def test_training_on_shards_learns_and_logs_skipped_samples(streamed_run):
    state = json.loads((streamed_run / "trainer_state.json").read_text())
    logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logs) == 6 and state["global_step"] == 36  # 6 epochs of 6 steps
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    # One corrupt image per epoch, counted as read: 1 after the first epoch, 6 at the end.
    assert [entry["train_skipped_samples"] for entry in logs] == [1, 2, 3, 4, 5, 6]
    assert all(entry["train_stream_samples"] == 48 * (n + 1) for n, entry in enumerate(logs))
    results = json.loads((streamed_run / "all_results.json").read_text())
    assert results["train_skipped_samples"] == 6
    assert results["eval_i2t_accuracy"] >= 0.5 and results["eval_t2i_accuracy"] >= 0.5  # chance: 1/8


def test_global_batch_size_and_zero_shot_only_evaluation_with_shards(model_dir, colour_shards, tmp_path):
    """--global_batch_size sets the streamed batches (one process: 16 pairs per step), and --zero_shot_eval_dir is
    the whole evaluation data: no validation split is needed."""
    zero_shot = tmp_path / "zero_shot"
    for name, rgb in list(COLOURS.items())[:3]:
        (zero_shot / name).mkdir(parents=True)
        Image.open(io.BytesIO(png(rgb))).save(zero_shot / name / "0.png")
    output_dir = tmp_path / "run"
    train, _ = colour_shards
    argv = shard_argv(model_dir, (train, None), output_dir, num_train_epochs="1", save_strategy="no")
    at = argv.index("--validation_shards")
    del argv[at : at + 2]
    sizes = []
    collate = training.DiffCLIPDataCollator.__call__

    def recording(self, features):
        batch = collate(self, features)
        sizes.append(int(batch["input_ids"].shape[0]))
        return batch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.DiffCLIPDataCollator, "__call__", recording)
        flags = ["--global_batch_size", "16", "--zero_shot_eval_dir", str(zero_shot), "--do_eval"]
        assert training_cli.main(argv + flags) == 0
    state = json.loads((output_dir / "trainer_state.json").read_text())
    # 48 samples in batches of 16 (the corrupt one dropped from its batch), 3 steps
    assert state["global_step"] == 3 and sorted(sizes) == [15, 16, 16]
    results = json.loads((output_dir / "all_results.json").read_text())
    assert 0.0 <= results["eval_zeroshot_top1"] <= 1.0 and "eval_zeroshot_top5" in results


def test_resumed_run_ends_where_the_uninterrupted_run_ends(streamed_run, model_dir, colour_shards, tmp_path):
    """Resuming at step 15 (epoch 2, batch 3) reads on where the run stopped: same batches, same weights."""
    output_dir = tmp_path / "resumed"
    shutil.copytree(streamed_run / "checkpoint-15", output_dir / "checkpoint-15")
    argv = shard_argv(model_dir, colour_shards, output_dir, resume_from_checkpoint=str(output_dir / "checkpoint-15"))
    assert training_cli.main(argv) == 0
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 36
    uninterrupted = json.loads((streamed_run / "trainer_state.json").read_text())
    uninterrupted_logs = {e["step"]: e for e in uninterrupted["log_history"] if "loss" in e}
    resumed_logs = [e for e in state["log_history"] if "loss" in e and e["step"] > 15]
    assert [e["step"] for e in resumed_logs] == [18, 24, 30, 36]
    for entry in resumed_logs:
        expected = uninterrupted_logs[entry["step"]]
        if entry["step"] > 18:  # the first log after resuming averages only the steps since
            assert entry["loss"] == pytest.approx(expected["loss"], rel=1e-4)
        for name in ("train_skipped_samples", "train_stream_samples", "train_repeated_samples"):
            assert entry[name] == expected[name], name  # the counts continue from the checkpoint's
    from safetensors.torch import load_file

    expected, got = load_file(streamed_run / "model.safetensors"), load_file(output_dir / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-5, rtol=1e-4, msg=name)


def test_shard_arguments_are_checked(model_dir, colour_shards, tmp_path, capsys):
    argv = shard_argv(model_dir, colour_shards, tmp_path / "x")
    without_length = argv[: argv.index("--train_num_samples")] + argv[argv.index("--train_num_samples") + 2 :]
    assert training_cli.main(without_length) == 2
    assert "--train_num_samples" in capsys.readouterr().err
    assert training_cli.main(argv + ["--train_file", str(tmp_path / "t.csv")]) == 2
    assert "not both" in capsys.readouterr().err
    missing = argv[:]
    missing[missing.index("--train_shards") + 1] = str(tmp_path / "none-{0..3}.tar")
    assert training_cli.main(missing) == 2
    assert "4 of 4 shards do not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Two processes under torchrun (gloo)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_share_the_shards_and_count_together(model_dir, colour_shards, tmp_path):
    """2 processes × 2 workers: each epoch uses every sample once across all four; a streamed run over both counts
    the corrupt sample once per epoch in all, and evaluates on the validation shards."""
    out = tmp_path / "ddp"
    pattern = numbered_shards(tmp_path / "numbered", 8, 6)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER)]
    command += [str(model_dir), pattern, *colour_shards, str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    record = json.loads((out / "record.json").read_text())
    everything = sorted(f"sample {s} {i}" for s in range(8) for i in range(6))
    for epoch in ("0", "1"):
        per_rank = record["epochs"][epoch]
        assert [len(batches) for batches in per_rank] == [8, 8]
        assert sorted(c for batches in per_rank for batch in batches for c in batch) == everything
    assert record["epochs"]["0"] != record["epochs"]["1"]
    results = record["results"]
    assert results["train_skipped_samples"] == 2 and results["train_stream_samples"] == 96  # 2 epochs
    assert math.isfinite(results["eval_loss"]) and results["train_loss"] > 0
