"""`diffclip-finetune` and `diffclip-pretrain` through their installed commands on two CPU processes, end to end, as
a user launches them: `torchrun --nproc_per_node 2 --no-python diffclip-finetune ...` (without --use_cpu, as in
issue 26) and `accelerate launch --config_file examples/accelerate_*.yaml`. The saved folders are loaded and
compared; a final save that fails leaves the weights in a rescue folder that the error names.

Data: 6 image-caption pairs and a global batch of 6, so every step trains on the whole set in either layout (one
process × 6 or two × 3): the data order is the same both ways, and two processes must give the model one process
gives (the contrastive loss takes its negatives from both processes).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
import torch
from _commands import accelerate_launch, flags, installed, run, torchrun
from _helpers import COLOURS, colour_image, save_tiny_diffclip
from safetensors.torch import load_file


pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NAMES = list(COLOURS)[:6]
RUN = {
    "report_to": "none",
    "disable_tqdm": "true",
    "seed": "0",
    # plain SGD: Adam's first steps divide each gradient by its own size, which turns the float noise on gradients
    # that are zero in exact arithmetic (the key biases') into full-size steps; SGD keeps equal gradients equal
    "optim": "sgd",
    "learning_rate": "0.1",
    "logging_strategy": "no",
    "dataloader_num_workers": "0",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny DiffCLIP in `model/`, and `train.jsonl`: 6 colour squares with captions, paths relative to it."""
    root = tmp_path_factory.mktemp("torchrun_data")
    save_tiny_diffclip(root / "model")
    (root / "images").mkdir()
    rows = []
    for index, name in enumerate(NAMES):
        colour_image(COLOURS[name], seed=index).save(root / "images" / f"{name}.png")
        rows.append({"image": f"images/{name}.png", "caption": f"a photo of a {name} square"})
    (root / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def finetune_args(data: Path, output: Path, per_device: int, **extra) -> list[str]:
    values = {
        "model_name_or_path": data / "model",
        "train_file": data / "train.jsonl",
        "image_column": "image",
        "caption_column": "caption",
        "per_device_train_batch_size": per_device,
        "max_steps": 3,
        "save_strategy": "no",
        **RUN,
        "output_dir": output,
        **extra,
    }
    return ["--do_train", *flags(**values)]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(got: dict, expected: dict, atol=2e-5) -> None:
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=atol, rtol=1e-4, msg=name)


def assert_trained(folder: Path, data: Path) -> None:
    """The folder holds a model that loads with trust_remote_code and moved away from the starting weights."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    start = weights(data / "model")
    state = {k: v for k, v in model.state_dict().items() if k in start}
    assert set(state) == set(start)
    moved = [name for name, tensor in start.items() if not torch.equal(state[name].reshape(tensor.shape), tensor)]
    assert len(moved) > len(start) // 2, moved
    assert not (folder / ".diffclip-saving").exists()


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory) -> Path:
    """`diffclip-finetune` alone, batch 6: the reference."""
    output = tmp_path_factory.mktemp("one") / "out"
    done = run([installed("diffclip-finetune"), *finetune_args(data, output, 6, use_cpu="true")])
    assert done.returncode == 0, done.explain()
    return output


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory) -> Path:
    """The command of issue 26: `torchrun --nproc_per_node 2 --no-python diffclip-finetune ...`, batch 3 each, no
    --use_cpu."""
    output = tmp_path_factory.mktemp("two") / "out2"
    done = torchrun("diffclip-finetune", finetune_args(data, output, 3))
    assert done.returncode == 0, done.explain()
    return output


def test_torchrun_finetune_saves_the_model_one_process_trains(one_process, two_processes, data):
    """Two processes × 3 pairs save the model one process saves from the 6 pairs (same loss, same gradients)."""
    assert_trained(two_processes, data)
    assert_same_weights(weights(two_processes), weights(one_process))
    state = json.loads((two_processes / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["epoch"] == 3.0  # 6 pairs per step over both processes: 1 per epoch
    assert json.loads((two_processes / "train_results.json").read_text())["train_skipped_rows"] == 0


def test_torchrun_finetune_checkpoints_and_resumes(data, tmp_path):
    """--save_strategy steps: checkpoints of a two-process run hold both processes' RNG states; resuming from one
    under torchrun ends with the model of the uninterrupted run."""
    straight = tmp_path / "straight"
    every = {"save_strategy": "steps", "save_steps": 2, "max_steps": 4, "optim": "adamw_torch", "learning_rate": 1e-3}
    done = torchrun("diffclip-finetune", finetune_args(data, straight, 3, **every))
    assert done.returncode == 0, done.explain()
    checkpoint = straight / "checkpoint-2"
    assert {p.name for p in straight.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert (checkpoint / "optimizer.pt").is_file()  # AdamW's moments: resuming must restore them
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2
    assert_trained(straight, data)
    resumed = tmp_path / "resumed"
    done = torchrun("diffclip-finetune", finetune_args(data, resumed, 3, **every, resume_from_checkpoint=checkpoint))
    assert done.returncode == 0, done.explain()
    assert json.loads((resumed / "trainer_state.json").read_text())["global_step"] == 4
    assert_same_weights(weights(resumed), weights(straight), atol=1e-6)
    midway = weights(checkpoint)
    assert sum(not torch.equal(tensor, midway[name]) for name, tensor in weights(resumed).items()) > len(midway) // 2


def test_torchrun_pretrain_on_webdataset_shards(data, tmp_path):
    """`diffclip-pretrain` (the recipe's defaults) streaming img2dataset-style shards over two processes: every
    sample of the epoch is read once across them, and the model is saved."""
    wds = pytest.importorskip("webdataset")
    from PIL import Image

    shards = tmp_path / "shards"
    shards.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(shards / f"cc-{shard:05d}.tar")) as sink:
            for index, name in enumerate(NAMES):
                image = Image.open(data / "images" / f"{name}.png")
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                sink.write({"__key__": f"{shard}{index:04d}", "png": buffer.getvalue(), "txt": f"a {name} square"})
    output = tmp_path / "out"
    values = {
        "model_name_or_path": data / "model",
        "train_shards": shards / "cc-{00000..00001}.tar",
        "train_num_samples": 12,
        "global_batch_size": 6,
        "max_steps": 2,
        "bf16": "false",
        "save_strategy": "no",
        **RUN,
        "output_dir": output,
    }
    done = torchrun("diffclip-pretrain", flags(**values))
    assert done.returncode == 0, done.explain()
    assert_trained(output, data)
    results = json.loads((output / "train_results.json").read_text())
    assert results["train_stream_samples"] == 12 and results["train_skipped_samples"] == 0  # both processes
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 2


# --------------------------------------------------------------------------------------------------
# A failed final save: the weights are rescued and the error names where
# --------------------------------------------------------------------------------------------------

# Put on PYTHONPATH, this makes every process of the command fail as DIFFCLIP_TEST_FAILURE says:
# "disk": the final save (into .diffclip-saving) hits a full disk; "everywhere": every save_pretrained fails;
# "callback": a callback crashes at the end of training (after the last step).
FAILURE_HOOK = """
import errno, os
mode = os.environ.get("DIFFCLIP_TEST_FAILURE")
if mode:
    import transformers
    from transformers import trainer_callback

    original = transformers.PreTrainedModel.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        if mode == "everywhere" or (mode == "disk" and ".diffclip-saving" in str(save_directory)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(save_directory))
        return original(self, save_directory, *args, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        raise RuntimeError("the end-of-training callback crashed")

    transformers.PreTrainedModel.save_pretrained = save_pretrained
    if mode == "callback":
        trainer_callback.CallbackHandler.on_train_end = on_train_end
"""

RESCUE_LINE = re.compile(r"diffclip-finetune: error: (.*) the trained weights were saved to (\S+) \(")


@pytest.fixture
def failure_hook(tmp_path) -> dict:
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(FAILURE_HOOK)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def rescue_lines(done) -> list[tuple[str, Path]]:
    lines = [line for line in done.stderr.splitlines() if line.startswith("diffclip-finetune: error:")]
    matches = [RESCUE_LINE.match(line) for line in lines]
    assert lines and all(matches), done.explain()
    return [(m.group(1), Path(m.group(2))) for m in matches]


def test_torchrun_final_save_on_a_full_disk_rescues_the_weights(two_processes, data, tmp_path, failure_hook):
    output = tmp_path / "out"
    done = torchrun("diffclip-finetune", finetune_args(data, output, 3), DIFFCLIP_TEST_FAILURE="disk", **failure_hook)
    assert done.returncode != 0
    assert "exitcode: 2" in done.stderr and "exitcode: 1" not in done.stderr, done.explain()
    found = rescue_lines(done)
    assert len(found) == 2 and found[0][1] == found[1][1]  # every process names the same folder
    assert any("No space left on device" in cause for cause, _ in found)
    rescued = found[0][1]
    assert rescued.parent == output.absolute() and rescued.name.startswith("rescued-model-")
    assert not (output / "config.json").exists() and not (output / ".diffclip-saving").exists()
    assert_trained(rescued, data)
    assert_same_weights(weights(rescued), weights(two_processes), atol=1e-6)  # the model the save would have written


def test_a_callback_crash_after_the_last_step_rescues_the_weights(one_process, data, tmp_path, failure_hook):
    output = tmp_path / "out"
    args = finetune_args(data, output, 6, use_cpu="true")
    done = run([installed("diffclip-finetune"), *args], DIFFCLIP_TEST_FAILURE="callback", **failure_hook)
    assert done.returncode == 2, done.explain()
    [(cause, rescued)] = rescue_lines(done)
    assert "after its last step (RuntimeError: the end-of-training callback crashed)" in cause
    assert "Traceback" not in done.stderr
    assert_trained(rescued, data)
    assert_same_weights(weights(rescued), weights(one_process), atol=1e-6)


def test_where_every_save_pretrained_fails_the_bare_weights_are_rescued(one_process, data, tmp_path, failure_hook):
    from transformers_diffclip import DiffCLIPModel

    output = tmp_path / "out"
    args = finetune_args(data, output, 6, use_cpu="true")
    done = run([installed("diffclip-finetune"), *args], DIFFCLIP_TEST_FAILURE="everywhere", **failure_hook)
    assert done.returncode == 2, done.explain()
    [(cause, rescued)] = rescue_lines(done)
    assert "the final save failed (OSError: [Errno 28]" in cause
    assert {"model.safetensors", "config.json"} <= {p.name for p in rescued.iterdir()}
    model = DiffCLIPModel.from_pretrained(rescued)
    assert_same_weights({k: v for k, v in model.state_dict().items()}, weights(one_process), atol=1e-6)


# --------------------------------------------------------------------------------------------------
# accelerate launch with the example configurations
# --------------------------------------------------------------------------------------------------


# FSDP on CPUs: parameters cannot be initialised on rank 0 and broadcast there (the file's settings for GPUs)
CPU_FLAGS = {
    "accelerate_ddp.yaml": [],
    "accelerate_fsdp.yaml": ["--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"],
}


@pytest.mark.parametrize("config", sorted(CPU_FLAGS))
def test_accelerate_launch_with_the_example_config(config, one_process, data, tmp_path):
    """Two processes under `accelerate launch` (DDP; FSDP FULL_SHARD with its full state dict save) save the model
    one process saves from the whole batch; FSDP's vector logit scale is saved as the scalar."""
    output = tmp_path / "out"
    args = finetune_args(data, output, 3)
    done = accelerate_launch(ROOT / "examples" / config, "diffclip-finetune", args, launcher_flags=CPU_FLAGS[config])
    assert done.returncode == 0, done.explain()
    assert_trained(output, data)
    assert_same_weights(weights(output), weights(one_process))
    assert weights(output)["logit_scale"].shape == ()
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["epoch"] == 3.0  # two processes: the 6 pairs are one step


def test_fsdp_final_save_on_a_full_disk_rescues_the_gathered_weights(one_process, data, tmp_path, failure_hook):
    """Under FSDP the rescue gathers the sharded parameters first: the rescued folder holds the whole model, with
    the scalar logit scale, equal to one process's."""
    output = tmp_path / "out"
    config = "accelerate_fsdp.yaml"
    done = accelerate_launch(
        ROOT / "examples" / config,
        "diffclip-finetune",
        finetune_args(data, output, 3),
        launcher_flags=CPU_FLAGS[config],
        DIFFCLIP_TEST_FAILURE="disk",
        **failure_hook,
    )
    assert done.returncode != 0
    found = rescue_lines(done)
    assert len(found) == 2 and found[0][1] == found[1][1]
    rescued = found[0][1]
    assert_trained(rescued, data)
    assert weights(rescued)["logit_scale"].shape == ()
    assert_same_weights(weights(rescued), weights(one_process))
