"""Run by tests/training/test_shards.py under `torchrun --nproc_per_node 2` (CPU, gloo); not a test module.

First, each process iterates its `ShardLoader` (2 data-loader workers) over the numbered shards for epochs 0 and 1 and
records the captions of its batches. Then both run `diffclip-finetune` on the colour shards for 2 epochs with
validation shards. Rank 0 writes what it gathered to OUT_DIR/record.json.

    torchrun --standalone --nproc_per_node 2 tests/training/training_shards_worker.py
        MODEL_DIR NUMBERED TRAIN VALID OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoProcessor

from transformers_diffclip.training import cli as training_cli
from transformers_diffclip.training.data import DiffCLIPDataCollator
from transformers_diffclip.training.shards import ImageTextShards, ShardLoader, expand_shards


def main(model_dir: str, numbered: str, train: str, validation: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    processor = AutoProcessor.from_pretrained(model_dir)
    dataset = ImageTextShards(
        expand_shards(numbered), collator=DiffCLIPDataCollator(processor), batch_size=3, num_samples=48, seed=1
    )
    loader = ShardLoader(dataset, num_workers=2)
    epochs = {}
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        mine = [processor.tokenizer.batch_decode(b["input_ids"], skip_special_tokens=True) for b in loader]
        gathered = [None, None]
        torch.distributed.all_gather_object(gathered, mine)
        epochs[str(epoch)] = gathered

    output_dir = Path(out_dir) / "run"
    flags = {
        "model_name_or_path": model_dir,
        "train_shards": train,
        "validation_shards": validation,
        "train_num_samples": "48",
        "max_bad_sample_fraction": "0.1",
        "output_dir": str(output_dir),
        "per_device_train_batch_size": "6",
        "per_device_eval_batch_size": "4",
        "num_train_epochs": "2",
        "logging_steps": "2",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": "true",
        "use_cpu": "true",
        "dataloader_num_workers": "2",
        "ddp_backend": "gloo",
        "seed": "0",
    }
    argv = ["--do_train", "--do_eval"] + [part for key, value in flags.items() for part in (f"--{key}", value)]
    assert training_cli.main(argv) == 0
    if rank == 0:
        results = json.loads((output_dir / "all_results.json").read_text())
        (Path(out_dir) / "record.json").write_text(json.dumps({"epochs": epochs, "results": results}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
