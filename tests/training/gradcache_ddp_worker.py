"""Run by tests/training/test_gradcache.py under `torchrun --nproc_per_node 2` (CPU, gloo); not a test module.

1. A DiffCLIPTrainer step under DDP on 3 pairs per process, without and with `contrastive_chunk_size=2`: the loss,
   the batch, and the gradients DDP leaves on the parameters.
2. `chunked_contrastive_backward` alone on a DDP-wrapped model with unequal shares (rank 0 the first 4 pairs of
   `random_batch(7)`, rank 1 the last 3), chunks of 2: loss, gradients, the batch size of every vision forward.
3. The same under FSDP (FULL_SHARD, each encoder layer its own unit, the logit scale sharded): loss and the full
   gradients.
4. `ZeroShotEvaluation` of the model on OUT_DIR/zero_shot (written by the test), its images split between the two
   processes.

    torchrun --standalone --nproc_per_node 2 tests/training/gradcache_ddp_worker.py MODEL_DIR OUT_DIR
"""

import sys
from pathlib import Path

import torch
from transformers import AutoModel, TrainerCallback, default_data_collator


HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # tests/ (_helpers) and tests/training/ (test_gradcache)
from _helpers import ONE_DDP_STEP, fsdp_full_shard, tiny_processor  # noqa: E402
from test_gradcache import gradients, random_batch  # noqa: E402

from transformers_diffclip import training  # noqa: E402


class GradCatcher(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {
            training.trainer._canonical_name(name): p.grad.detach().clone() for name, p in model.named_parameters()
        }

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]


class RecordingCollator:
    def __call__(self, features):
        self.batch = default_data_collator(features)
        return self.batch


class Recorder(training.DiffCLIPTrainer):
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.step_loss = loss.detach().clone()
        return loss


def trainer_step(model_dir: str, out_dir: str, chunk_size) -> dict:
    batch = random_batch(6, seed=3)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(6)]
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    args = training.DiffCLIPTrainingArguments(
        output_dir=str(Path(out_dir) / "trainer"),
        **ONE_DDP_STEP,
        contrastive_chunk_size=chunk_size,
    )
    catcher, collator = GradCatcher(), RecordingCollator()
    trainer = Recorder(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[catcher])
    trainer.train()
    batch = {k: v for k, v in collator.batch.items() if torch.is_tensor(v)}
    return {"loss": trainer.step_loss, "grads": catcher.grads, "batch": batch}


def uneven_check(model_dir: str, rank: int) -> dict:
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    sizes = []
    model.vision_model.register_forward_hook(lambda module, args, output: sizes.append(output[0].shape[0]))
    wrapped = torch.nn.parallel.DistributedDataParallel(model)
    rows = slice(0, 4) if rank == 0 else slice(4, 7)
    batch = {k: v[rows] for k, v in random_batch(7).items()}
    loss = training.chunked_contrastive_backward(wrapped, batch, 2, hooked_module=model, no_sync=wrapped.no_sync)
    return {"loss": loss, "grads": gradients(model), "forward_sizes": sizes}


def fsdp_check(model_dir: str, rank: int) -> dict:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model, wrapped = fsdp_full_shard(model_dir)
    rows = slice(0, 4) if rank == 0 else slice(4, 7)
    batch = {k: v[rows] for k, v in random_batch(7).items()}
    loss = training.chunked_contrastive_backward(wrapped, batch, 2, hooked_module=model)
    shards = [p.numel() for name, p in wrapped.named_parameters() if name.endswith("logit_scale")]
    with FSDP.summon_full_params(wrapped, with_grads=True):
        grads = {
            training.trainer._canonical_name(name): p.grad.detach().clone().reshape(p.shape)
            for name, p in model.named_parameters()
        }
    grads["logit_scale"] = grads["logit_scale"].reshape(())
    return {"loss": loss, "grads": grads, "logit_scale_shard": shards}


def processor():
    return tiny_processor(32)


def main(model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    whole = trainer_step(model_dir, out_dir, None)
    chunked = trainer_step(model_dir, out_dir, 2)
    torch.testing.assert_close(chunked["batch"]["pixel_values"], whole["batch"]["pixel_values"])
    rank = torch.distributed.get_rank()
    record = {"trainer": {"whole": whole, "chunked": chunked, "batch": whole["batch"]}}
    record["uneven"] = uneven_check(model_dir, rank)
    record["fsdp"] = fsdp_check(model_dir, rank)
    model = AutoModel.from_pretrained(model_dir)
    images = []
    model.vision_model.register_forward_hook(lambda module, args, output: images.append(output[0].shape[0]))
    record["zero_shot"] = training.ZeroShotEvaluation(Path(out_dir) / "zero_shot", batch_size=2)(model, processor())
    record["zero_shot_images"] = sum(images)
    torch.save(record, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:3])
