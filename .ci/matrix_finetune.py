"""The version matrix's two-process fine-tune: `diffclip-finetune` (`python -m transformers_diffclip.training`, the
command's module form: the package is not installed in a matrix venv, it runs from src/) under
`torchrun --nproc_per_node 2` on CPUs, in one release's hermetic venv, then once alone; both save the model (the
final save changed across transformers 4.57 -> 5.x), which loads with `trust_remote_code`, and two processes × 3
pairs give the weights one process gives from the 6 pairs.

    python .ci/matrix_finetune.py FIXTURE_DIR WORK_DIR       # run by .ci/matrix.py with the venv's python

Data: 6 image-caption pairs in img2dataset's webdataset layout (KEY.png + KEY.txt), two shards written here with
`tarfile`, streamed with --train_shards (webdataset, in the matrix lock; `datasets` is not needed).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 40, 220)}


def write_shards(folder: Path) -> str:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(2):
        with tarfile.open(folder / f"pairs-{shard:05d}.tar", "w") as tar:
            for index, (name, rgb) in enumerate(COLOURS.items()):
                key = f"{shard}{index:04d}"
                buffer = io.BytesIO()
                Image.new("RGB", (36, 36), tuple(max(c - 40 * shard, 0) for c in rgb)).save(buffer, format="PNG")
                for suffix, data in (("png", buffer.getvalue()), ("txt", f"a {name} square".encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / "pairs-{00000..00001}.tar")


def finetune(model: Path, shards: str, output: Path, processes: int) -> subprocess.CompletedProcess:
    values = {
        "model_name_or_path": model,
        "train_shards": shards,
        "train_num_samples": 6,
        "image_augmentation": "none",
        "shuffle_buffer": 0,
        "per_device_train_batch_size": 6 // processes,
        "max_steps": 2,
        "optim": "sgd",
        "learning_rate": 0.1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": "true",
        "logging_strategy": "no",
        "dataloader_num_workers": 0,
        "seed": 0,
        "output_dir": output,
    }
    flags = ["--do_train"] + [part for key, value in values.items() for part in (f"--{key}", str(value))]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    else:
        flags += ["--use_cpu", "true"]
    command = [*launcher, "-m", "transformers_diffclip.training", *flags]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def main(fixture: str, work: str) -> int:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    model, work = Path(fixture) / "diffclip", Path(work)
    shards = write_shards(work / "shards")
    t0 = time.time()
    outputs = {}
    for processes in (2, 1):
        outputs[processes] = work / f"out-{processes}"
        done = finetune(model, shards, outputs[processes], processes)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-8000:], sep="\n", file=sys.stderr)
            print(f"FAILED: the {processes}-process fine-tune exited with {done.returncode}")
            return 1
    start = load_file(str(model / "model.safetensors"))
    two, one = (load_file(str(outputs[n] / "model.safetensors")) for n in (2, 1))
    loaded = AutoModel.from_pretrained(outputs[2], trust_remote_code=True)
    assert "transformers_diffclip" not in sys.modules, "the package must not be imported here"
    state = loaded.state_dict()
    problems = [f"{name} not in the loaded model" for name in two if name not in state]
    moved = sum(not torch.equal(two[name], start[name]) for name in start)
    if moved < len(start) // 2:
        problems.append(f"only {moved} of {len(start)} tensors moved")
    for name, tensor in one.items():
        if not torch.allclose(two[name], tensor, atol=2e-5, rtol=1e-4):
            problems.append(f"{name}: two processes differ from one by {(two[name] - tensor).abs().max():.2e}")
    steps = json.loads((outputs[2] / "trainer_state.json").read_text())["global_step"]
    if steps != 2:
        problems.append(f"global_step {steps}, expected 2")
    if problems:
        print("FAILED: " + "; ".join(problems[:5]))
        return 1
    seconds = time.time() - t0
    print(f"2 processes = 1 process, saved and loaded ({moved} of {len(start)} tensors trained) [{seconds:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
