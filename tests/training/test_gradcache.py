"""Contrastive batches larger than memory (`--contrastive_chunk_size`, GradCache): the loss and the gradients of a
chunked step equal those of one forward and backward of the whole batch, on one process, through Trainer (also with
gradient accumulation) and over two processes under torchrun (DDP through Trainer, DDP and FSDP around the function).

The reference is written out here from the definition of the loss (symmetric cross-entropy over
`exp(logit_scale) · cos(image, text)` of the whole batch), on the plain model's embeddings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import (  # noqa: F401 (one_thread: autouse)
    COLOURS,
    assert_gradients_close,
    colour_image,
    one_thread,
    tiny_config,
    tiny_processor,
)
from transformers import TrainerCallback

import transformers_diffclip as td
from transformers_diffclip import training


WORKER = Path(__file__).resolve().parent / "gradcache_ddp_worker.py"
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def tiny_model(seed: int = 0) -> td.DiffCLIPModel:
    torch.manual_seed(seed)
    return td.DiffCLIPModel(tiny_config()).eval()  # eval or train: the model has no dropout


def random_batch(size: int, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 300, (size, 12), generator=generator)
    lengths = torch.randint(3, 12, (size,), generator=generator)
    attention_mask = (torch.arange(12) < lengths[:, None]).long()
    input_ids[torch.arange(size), lengths - 1] = 49407  # end-of-text, where the text tower pools
    pixel_values = torch.randn(size, 3, 32, 32, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def reference_loss(model, batch) -> torch.Tensor:
    """The CLIP loss of the whole batch, written out: mean over pairs of ½ (CE image→texts + CE text→images)."""
    outputs = model(**batch)
    image = F.normalize(outputs.image_embeds, dim=-1)
    text = F.normalize(outputs.text_embeds, dim=-1)
    logits = model.logit_scale.exp() * image @ text.t()
    targets = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 10])
def test_chunked_loss_and_gradients_equal_the_whole_batch(chunk_size):
    batch = random_batch(7)
    expected_model = tiny_model()
    expected = reference_loss(expected_model, batch)
    expected.backward()
    expected_grads = gradients(expected_model)

    model = tiny_model()
    seen = []
    model.vision_model.register_forward_hook(lambda module, args, output: seen.append(output[0].shape[0]))
    loss = training.chunked_contrastive_backward(model, batch, chunk_size)
    torch.testing.assert_close(loss, expected.detach(), atol=1e-5, rtol=1e-5)
    for name, grad in gradients(model).items():
        assert_gradients_close(grad, expected_grads[name], name)
    assert model.logit_scale.grad.abs() > 0
    # Activations of at most `chunk_size` pairs at a time; two passes over the chunks; every pair once per pass.
    chunks = -(-7 // chunk_size)
    assert len(seen) == 2 * chunks and max(seen) <= chunk_size and sum(seen) == 14


def test_split_batch_and_bad_chunk_sizes():
    batch = {**random_batch(5), "return_loss": True}
    chunks = training.split_batch(batch, 2)
    assert [c["input_ids"].shape[0] for c in chunks] == [2, 2, 1]
    assert all(set(c) == {"input_ids", "attention_mask", "pixel_values"} for c in chunks)
    torch.testing.assert_close(torch.cat([c["pixel_values"] for c in chunks]), batch["pixel_values"])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="contrastive_chunk_size must be a positive integer"):
            training.split_batch(batch, bad)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        training.split_batch({"input_ids": torch.zeros(3, 4), "pixel_values": torch.zeros(2, 3)}, 2)
    with pytest.raises(ValueError, match="--contrastive_chunk_size must be a positive integer"):
        training.DiffCLIPTrainingArguments(output_dir="unused", contrastive_chunk_size=0, use_cpu=True)


# --------------------------------------------------------------------------------------------------
# Through Trainer
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """12 image–caption pairs (two jittered squares of each of six colours) as a prepared dataset."""
    import datasets

    folder = tmp_path_factory.mktemp("pairs")
    rows = {"image_path": [], "caption": []}
    for index, (name, rgb) in enumerate(list(COLOURS.items())[:6]):
        for copy in range(2):
            path = folder / f"{name}_{copy}.png"
            colour_image(rgb, seed=10 * index + copy).save(path)
            rows["image_path"].append(str(path))
            rows["caption"].append(f"a photo of a {name} square")
    dataset, _ = training.prepare_image_caption_dataset(datasets.Dataset.from_dict(rows))
    return dataset


class Recorder(TrainerCallback):
    def __init__(self):
        self.grads, self.losses = [], []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append(gradients(model))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def trainer_step(model, dataset, tmp_path, **args) -> Recorder:
    recorder = Recorder()
    arguments = training.DiffCLIPTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=6,
        max_steps=1,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        **args,
    )
    trainer = training.DiffCLIPTrainer(
        model=model,
        args=arguments,
        train_dataset=dataset,
        data_collator=training.DiffCLIPDataCollator(tiny_processor(32)),
        callbacks=[recorder],
    )
    trainer.train()
    return recorder


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_step_with_chunks_equals_the_step_without(pairs, tmp_path, accumulation):
    whole = trainer_step(tiny_model(), pairs, tmp_path / "whole", gradient_accumulation_steps=accumulation)
    chunked = trainer_step(
        tiny_model(), pairs, tmp_path / "chunked", gradient_accumulation_steps=accumulation, contrastive_chunk_size=4
    )
    assert chunked.losses == pytest.approx(whole.losses, abs=1e-5) and len(chunked.losses) == 1
    assert len(chunked.grads) == len(whole.grads) == 1
    for name, grad in chunked.grads[0].items():
        assert_gradients_close(grad, whole.grads[0][name], name)


# --------------------------------------------------------------------------------------------------
# Two processes (torchrun, gloo): gathered negatives and chunks together
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_chunked_equal_one_process_unchunked(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    out = tmp_path / "out"
    for index, (name, rgb) in enumerate(list(COLOURS.items())[:4]):  # 4 classes, 2, 1, 1, 1 images: 5 in all
        (out / "zero_shot" / name).mkdir(parents=True)
        for copy in range(2 if index == 0 else 1):
            colour_image(rgb, seed=100 + 10 * index + copy).save(out / "zero_shot" / name / f"{copy}.png")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(WORKER), str(model_dir), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=240)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]

    # Trainer under DDP, 3 pairs per process, chunks of 2: one process on the 6 pairs, the loss written out.
    batch = {k: torch.cat([r["trainer"]["batch"][k] for r in ranks]) for k in ranks[0]["trainer"]["batch"]}
    assert len({tuple(row) for row in batch["pixel_values"].flatten(1).tolist()}) == 6
    model = tiny_model()
    expected = reference_loss(model, batch)
    expected.backward()
    expected_grads = gradients(model)
    for record in ranks:
        whole, chunked = record["trainer"]["whole"], record["trainer"]["chunked"]
        torch.testing.assert_close(chunked["loss"], whole["loss"], atol=1e-5, rtol=1e-5)
        for name, grad in expected_grads.items():  # DDP's averaged gradients: the one-process gradients
            assert_gradients_close(whole["grads"][name], grad, name)
            assert_gradients_close(chunked["grads"][name], grad, name)
    losses = [r["trainer"]["chunked"]["loss"] for r in ranks]
    torch.testing.assert_close(sum(losses) / 2, expected.detach(), atol=1e-5, rtol=1e-5)

    # The function alone under DDP with unequal shares (4 and 3 of the 7 pairs of `random_batch(7)`), chunks of 2.
    batch = random_batch(7)
    model = tiny_model()
    expected = reference_loss(model, batch)
    expected.backward()
    expected_grads = gradients(model)
    uneven = [r["uneven"] for r in ranks]
    torch.testing.assert_close(sum(u["loss"] for u in uneven) / 2, expected.detach(), atol=1e-5, rtol=1e-5)
    for record in uneven:
        for name, grad in expected_grads.items():
            assert_gradients_close(record["grads"][name], grad, name)
    # Rank 0 (4 pairs) needs 2 chunks of 2; rank 1 (3 pairs) runs as many (2 and 1): FSDP gathers in lockstep.
    assert uneven[0]["forward_sizes"] == [2, 2, 2, 2]
    assert uneven[1]["forward_sizes"] == [2, 1, 2, 1]

    # The same under FSDP FULL_SHARD: the logit scale lives on one process only, the gradients are reduce-scattered
    # after every chunk (no no_sync), summed in the shards, averaged over the processes.
    fsdp = [r["fsdp"] for r in ranks]
    assert sorted(f["logit_scale_shard"][0] for f in fsdp) == [0, 1]
    torch.testing.assert_close(sum(f["loss"] for f in fsdp) / 2, expected.detach(), atol=1e-5, rtol=1e-5)
    for record in fsdp:
        for name, grad in expected_grads.items():
            assert_gradients_close(record["grads"][name], grad, f"fsdp {name}")

    # Zero-shot accuracy with the images split between the processes (3 and 2): the one-process figures.
    single = training.ZeroShotEvaluation(out / "zero_shot", batch_size=2)(tiny_model(), tiny_processor(32))
    assert ranks[0]["zero_shot"] == ranks[1]["zero_shot"] == pytest.approx(single)
    assert [r["zero_shot_images"] for r in ranks] == [3, 2]  # each image encoded once, by one process
    assert single["zeroshot_top1"] * 5 == pytest.approx(round(single["zeroshot_top1"] * 5))  # whole images of 5
