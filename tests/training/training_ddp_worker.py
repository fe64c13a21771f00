"""Run by tests/training/test_training.py under `torchrun --nproc_per_node 2` (CPU, gloo); not a test module.

Each process takes one DiffCLIPTrainer step on its share of a 6-pair batch and records its loss, its inputs and
the gradients DDP leaves on the parameters. Then it runs the same share through the model wrapped in FSDP
(FULL_SHARD, parameters split between the two processes) with the loss hook the trainer uses, and records loss,
full gradients, and the state dict after a logit-scale clamp. Last, it calls the loss function alone on an
unequal share (2 and 3 rows) of fixed float64 embeddings. The test compares everything with one process on the
concatenated batch.

    torchrun --standalone --nproc_per_node 2 tests/training/training_ddp_worker.py MODEL_DIR TOY_DATA_DIR OUT_DIR
"""

import sys
from pathlib import Path

import datasets
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for _helpers
from _helpers import ONE_DDP_STEP, fsdp_full_shard  # noqa: E402
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from transformers import AutoModel, AutoProcessor, TrainerCallback, TrainingArguments

from transformers_diffclip import training
from transformers_diffclip.core.distributed import rank_world


class Recorder(training.DiffCLIPTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.recorded = {
            "loss": (loss[0] if return_outputs else loss).detach().clone(),
            "inputs": {k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)},
        }
        return loss


class GradCatcher(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def uneven_loss_check(rank: int) -> dict:
    generator = torch.Generator().manual_seed(7)
    image = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator, dtype=torch.float64), dim=-1)
    rows = slice(0, 2) if rank == 0 else slice(2, 5)
    local_image = image[rows].clone().requires_grad_(True)
    local_text = text[rows].clone().requires_grad_(True)
    logit_scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    loss = training.distributed_contrastive_loss(local_image, local_text, logit_scale)
    loss.backward()
    return {
        "image_embeds": local_image.detach(),
        "text_embeds": local_text.detach(),
        "logit_scale": logit_scale.detach(),
        "loss": loss.detach(),
        "image_grad": local_image.grad,
        "text_grad": local_text.grad,
        "scale_grad": logit_scale.grad,
    }


def fsdp_check(model_dir: str, inputs: dict) -> dict:
    model, wrapped = fsdp_full_shard(model_dir)
    with training.gathered_loss_hook(model):
        outputs = wrapped(**inputs, return_loss=True)
    outputs.loss.backward()
    with FSDP.summon_full_params(wrapped, with_grads=True):
        canonical = training.trainer._canonical_name
        grads = {canonical(name): p.grad.detach().clone() for name, p in model.named_parameters()}
    training.LogitScaleClampCallback(max_value=1.0).on_optimizer_step(None, None, None, model=wrapped)
    shards = [p.data.clone() for name, p in wrapped.named_parameters() if name.endswith("logit_scale")]
    with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, FullStateDictConfig()):
        state_dict = wrapped.state_dict()
    return {"loss": outputs.loss.detach(), "grads": grads, "logit_scale_shard": shards, "state_dict": state_dict}


def main(model_dir: str, data_dir: str, out_dir: str) -> None:
    data = Path(data_dir)
    names = ["red", "green", "blue", "yellow", "purple", "orange"]
    rows = {
        "image_path": [str(data / f"images/{name}_1.png") for name in names],
        "caption": [f"a photo of a {name} square" for name in names],
    }
    dataset, _ = training.prepare_image_caption_dataset(datasets.Dataset.from_dict(rows))
    processor = AutoProcessor.from_pretrained(model_dir)
    # Eager attention: the reference in the test runs eagerly too, so kernels cannot explain a difference.
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    args = TrainingArguments(
        output_dir=str(Path(out_dir) / "trainer"),
        **ONE_DDP_STEP,
    )
    catcher = GradCatcher()
    trainer = Recorder(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=training.DiffCLIPDataCollator(processor, padding="max_length", max_length=16),
        callbacks=[catcher],
    )
    trainer.train()
    rank, world_size = rank_world()
    record = {**trainer.recorded, "grads": catcher.grads, "world_size": world_size, "uneven": uneven_loss_check(rank)}
    record["fsdp"] = fsdp_check(
        model_dir, {k: record["inputs"][k] for k in ("input_ids", "attention_mask", "pixel_values")}
    )
    torch.save(record, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.barrier()
    if hasattr(trainer, "end"):  # not in transformers 4.57 and 5.0
        trainer.end()


if __name__ == "__main__":
    main(*sys.argv[1:4])
