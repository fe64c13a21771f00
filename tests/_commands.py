"""Running the installed commands (`diffclip`, `diffclip-finetune`, `diffclip-pretrain`) as a user does: alone, under
`torchrun --nproc_per_node N --no-python COMMAND`, and under `accelerate launch`; CPU, offline, one thread each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


BIN = Path(sys.executable).parent  # the environment's scripts: the installed commands of this checkout


def command_env(**extra: str) -> dict[str, str]:
    """The environment of a command: offline, one thread, this environment's scripts first on PATH."""
    return {
        **os.environ,
        "PATH": str(BIN) + os.pathsep + os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def installed(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"the command {name} is not installed (pip install -e .)")
        return found
    return str(path)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-6000:]}"


def run(argv: list[str], timeout: float = 600, cwd=None, **env: str) -> Done:
    """Run `argv`, ending it (and a launcher's workers) if it hangs."""
    process = subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(**env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 15)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"{argv[:8]} did not end in {timeout} s\n{stderr[-4000:]}")
    return Done(process.returncode, stdout, stderr)


def torchrun(command: str, args: list, processes: int = 2, **kwargs) -> Done:
    """`torchrun --standalone --nproc_per_node N --no-python COMMAND ARGS` (the venv's torch.distributed.run)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return run([*launcher, "--no-python", installed(command), *args], **kwargs)


def accelerate_launch(config_file, command: str, args: list, processes: int = 2, launcher_flags=(), **kwargs) -> Done:
    """`accelerate launch --config_file FILE` of the installed COMMAND on `processes` CPU processes: the file's GPU
    count and bf16 are overridden on the command line (not `--cpu`, which makes accelerate start one process);
    the command itself trains on the CPUs of a machine without GPUs."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    launcher += ["--num_processes", str(processes), "--mixed_precision", "no", "--main_process_port", "0"]
    launcher += list(launcher_flags)
    return run([*launcher, "--no_python", installed(command), *args], **kwargs)


def flags(**values) -> list[str]:
    """`name=value` as `--name value`."""
    return [part for key, value in values.items() for part in (f"--{key}", str(value))]
