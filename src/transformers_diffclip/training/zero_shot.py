# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot accuracy on an ImageFolder tree at every evaluation during training ([`ZeroShotEvaluation`])."""

import dataclasses

import torch

from ..core.distributed import rank_world
from ..core.text_files import load_class_names, load_templates


class ZeroShotEvaluation:
    """Zero-shot top-1/top-5 accuracy on an ImageFolder tree, computed with the code of `diffclip eval zero-shot`
    ([`~transformers_diffclip.evaluation.evaluate_zero_shot`]), so the numbers logged during training are the
    numbers that command gives for the same model.

    The folder is scanned and the class names and templates are read once, here (a bad path fails before training
    starts). Every call rebuilds the classifier from the model's current text tower. With several processes the
    images are split between them and the hit counts summed.

    Args:
        data_dir: `DIR/<class folder>/**/<image>`.
        class_names: a class-name file (text, one per line; or JSON, see `key`), matched to the folders as
            `diffclip eval zero-shot --classnames` does; default: the folder names.
        templates: a template file with `{}` (text or JSON); default: the command's default template.
        key: the entry of JSON class-name/template files that hold several (e.g. `imagenet`).
        batch_size: images per batch.
        num_workers: DataLoader worker processes reading the images.
    """

    def __init__(self, data_dir, class_names=None, templates=None, key=None, batch_size: int = 64, num_workers=0):
        from ..evaluation import find_image_folder

        names = load_class_names(class_names, key) if class_names else None
        self.templates = load_templates(templates, key) if templates else None
        self.data = find_image_folder(data_dir, names, source=str(class_names or ""))
        self.batch_size, self.num_workers = batch_size, num_workers

    def __call__(self, model: torch.nn.Module, processor) -> dict[str, float]:
        """`{"zeroshot_top1": ..., "zeroshot_top5": ...}` (fractions) of `model` (unwrapped) now."""
        from ..evaluation import evaluate_zero_shot

        rank, world_size = rank_world()
        shard = dataclasses.replace(self.data, samples=self.data.samples[rank::world_size])
        device = next(model.parameters()).device
        counts = torch.zeros(3, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, images
        was_training = model.training
        model.eval()
        try:
            if shard.samples:
                kwargs = {} if self.templates is None else {"templates": self.templates}
                with torch.no_grad():
                    report = evaluate_zero_shot(
                        model,
                        processor,
                        shard,
                        batch_size=self.batch_size,
                        num_workers=self.num_workers,
                        processes=(0, 1),  # this process's share, encoded here
                        **kwargs,
                    )
                count = report["num_images"]
                top5 = 1.0 if report["acc5"] is None else report["acc5"]  # under 5 classes every image is a top-5 hit
                counts += torch.tensor([report["acc1"] * count, top5 * count, count], device=device)
        finally:
            model.train(was_training)
        if world_size > 1:
            torch.distributed.all_reduce(counts)
        top1, top5, count = counts.round().tolist()
        return {"zeroshot_top1": top1 / count, "zeroshot_top5": top5 / count}
