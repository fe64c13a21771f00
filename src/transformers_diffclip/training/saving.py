# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The final save of `diffclip-finetune` and `diffclip-pretrain` ([`save_final_model`]), on one process or many
(torchrun, accelerate: DDP, FSDP), and the rescue of the trained weights when it fails.

The model is written into `output_dir/.diffclip-saving` and moved into `output_dir` with `config.json` last
([`publish_into`]), so the folder never loads as a mix of two models. Every process takes part: the staging folder
exists on every process before any of them writes (whichever reaches `Trainer.save_model` first, and whatever the
transformers release does on the processes that do not write), and FSDP gathers the full state dict on all of them.

The steps are collective: after each one the processes agree whether any of them failed, so that one process's
error never leaves the others waiting in a collective. When anything fails after the last training step (a full
disk, a permission error, a crash in a callback at the end of `Trainer.train`), the weights are gathered (FSDP) and
process 0 writes them, with safetensors, into a rescue folder ([`rescue_weights`]): `output_dir/rescued-model-TIME`,
else beside `output_dir`, else in the temporary folder. Every process then ends with a [`FinalSaveError`] (exit code
2) whose one line names that folder.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.utils import logging

from ..core.files import atomic_directory, publish_into


logger = logging.get_logger(__name__)

SAVING = ".diffclip-saving"
RESCUE_PREFIX = "rescued-model"
# Weights files of an earlier save that a new save (in another format or sharding) would leave behind.
STALE_WEIGHTS = (
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)


class FinalSaveError(OSError):
    """The trained model could not be saved into `--output_dir`; the message names where its weights were rescued
    (bad input for the command: exit code 2)."""


def finished_training(trainer) -> bool:
    """Whether `trainer` took its last optimizer step (an error now comes after the training, not during it)."""
    state = trainer.state
    return state.max_steps > 0 and state.global_step >= state.max_steps


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _attempt(step: Callable[[], object]) -> BaseException | None:
    try:
        step()
    except Exception as error:  # every failure is reported, after the rescue
        return error
    return None


def _distributed(trainer) -> bool:
    return trainer.accelerator.num_processes > 1 and torch.distributed.is_initialized()


def _any_failed(trainer, error: BaseException | None) -> bool:
    """Whether `error` is set on any process. Collective (every process calls it at the same point): it is also the
    barrier between two steps of the save."""
    if not _distributed(trainer):
        return error is not None
    flag = torch.tensor([0.0 if error is None else 1.0], device=trainer.args.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def _clear_staging(trainer, saving: Path) -> None:
    if trainer.is_world_process_zero() and (saving.exists() or saving.is_symlink()):
        shutil.rmtree(saving)  # what a killed save left


def _publish(trainer, output: Path, saving: Path) -> None:
    if trainer.is_world_process_zero():
        publish_into(output, saving, "config.json", STALE_WEIGHTS)


def save_final_model(trainer, output_dir: str, failure: BaseException | None = None) -> None:
    """Save the trained model, its remote code and the processor (loads with `trust_remote_code=True`) into
    `output_dir`; call it on every process. A model already in `output_dir` (a rerun) stays intact until the new one
    is complete. `failure`: the error that ended `Trainer.train` after its last step on this process, if any.

    If anything fails, on any process, the weights are rescued ([`rescue_weights`]) and every process raises a
    [`FinalSaveError`] naming the rescue folder."""
    output = Path(output_dir)
    saving = output / SAVING
    error = failure
    steps = (
        lambda: _clear_staging(trainer, saving),
        # Every process: the staging folder exists before any process writes into it or lists it.
        lambda: saving.mkdir(parents=True, exist_ok=True),
        lambda: trainer.save_model(str(saving)),
        lambda: _publish(trainer, output, saving),
    )
    failed = _any_failed(trainer, error)
    for step in steps:
        if failed:
            break
        error = _attempt(step)
        failed = _any_failed(trainer, error)
    if not failed:
        if not trainer.is_world_process_zero():
            shutil.rmtree(saving, ignore_errors=True)  # an output folder that is not shared between machines
        return

    where = "training ended with an error after its last step" if failure is not None else "the final save failed"
    cause = f" ({_describe(error)})" if error is not None else " (on another process; see its message)"
    rescued, problems = rescue_weights(trainer, output, saving)
    if rescued is not None:
        message = (
            f"{where}{cause}, so {output} holds no new model; the trained weights were saved to {rescued} "
            "(it loads with from_pretrained)."
        )
    else:
        message = f"{where}{cause}, and the trained weights could not be rescued either: {problems}."
    raise FinalSaveError(message) from error


def _rescue_candidates(output: Path) -> list[Path]:
    name = f"{RESCUE_PREFIX}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidates = [output / name, output.parent / f"{output.name}-{name}", Path(tempfile.gettempdir()) / name]
    unique = []
    for candidate in candidates:
        path, number = candidate, 1
        while path.exists():
            path, number = candidate.with_name(f"{candidate.name}-{number}"), number + 1
        unique.append(path.absolute())
    return unique


def _write_weights(model, processor, state_dict: dict, folder: Path) -> None:
    """The model folder `save_pretrained` writes; where that fails, the bare weights (`model.safetensors`) and
    `config.json`, which load with `DiffCLIPModel.from_pretrained`."""
    try:
        model.save_pretrained(folder, state_dict=state_dict)
    except Exception as error:
        logger.warning(f"save_pretrained into {folder} failed ({_describe(error)}); writing the bare weights.")
        from safetensors.torch import save_file

        for entry in folder.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        tensors = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in state_dict.items()}
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        model.config.to_json_file(str(folder / "config.json"))
    if processor is not None and hasattr(processor, "save_pretrained"):
        try:
            processor.save_pretrained(str(folder))
        except Exception as error:  # the weights matter; the processor is the base model's
            logger.warning(f"The processor could not be saved into {folder}: {_describe(error)}")


def rescue_weights(trainer, output: Path, saving: Path) -> tuple[Path | None, str]:
    """Write the trained weights where they can be loaded after a failed final save; call it on every process.
    FSDP gathers the full state dict first; process 0 removes the failed save's staging folder (it may hold the
    space a full disk lacks) and writes the first of `output/rescued-model-TIME`, `output-rescued-model-TIME`
    beside it, and `TMPDIR/rescued-model-TIME` that it can. Returns `(folder or None, what went wrong)`, the same on
    every process."""
    result: list = [None, ""]
    state_dict, gather_error = None, None
    try:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    except Exception as error:
        gather_error = error
    if trainer.is_world_process_zero():
        if state_dict is None:
            result = [None, f"the weights could not be gathered ({_describe(gather_error)})"]
        else:
            shutil.rmtree(saving, ignore_errors=True)
            model = trainer.accelerator.unwrap_model(trainer.model)
            problems = []
            for folder in _rescue_candidates(output):
                try:
                    atomic_directory(folder, lambda f: _write_weights(model, trainer.processing_class, state_dict, f))
                except Exception as error:
                    problems.append(f"{folder}: {_describe(error)}")
                    continue
                result = [str(folder), ""]
                break
            else:
                result = [None, "; ".join(problems)]
    if _distributed(trainer):
        torch.distributed.broadcast_object_list(result, src=0, device=trainer.args.device)
    return (Path(result[0]) if result[0] else None), result[1]


__all__ = ["FinalSaveError", "finished_training", "rescue_weights", "save_final_model"]
