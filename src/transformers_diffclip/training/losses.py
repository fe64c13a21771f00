# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The contrastive loss of training, with negatives gathered from every process, and the in-batch retrieval ranks
that evaluation during training reports."""

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction


# --------------------------------------------------------------------------------------------------
# Contrastive loss with negatives from every process
# --------------------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    """(world size, rank) of the default process group; (1, 0) when torch.distributed is not running."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of `tensor` from every process, concatenated in rank order, and the index of this process's first
    row in the result.

    The gather is autograd-aware (`torch.distributed.nn.functional.all_gather`): in backward, each process receives
    the sum over all processes of the gradients that flowed into its rows. Processes may hold different numbers of
    rows (a skipped bad image, a short last batch); rows are padded for the collective and the padding dropped.
    Without torch.distributed (or with one process) this returns `(tensor, 0)`.
    """
    world_size, rank = _world()
    if world_size == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    local = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, local)
    sizes = [int(size.item()) for size in sizes]
    longest = max(sizes)
    padded = F.pad(tensor, (0, 0, 0, longest - tensor.shape[0])) if tensor.shape[0] < longest else tensor
    with warnings.catch_warnings():
        # torch 2.13 deprecates it in favour of a functional collective whose backward needs reduce-scatter, which
        # gloo (CPU) lacks; this autograd-aware gather works on every backend and torch >= 2.4.
        warnings.filterwarnings(
            "ignore", message=r".*nn\.functional\.all_gather is deprecated", category=FutureWarning
        )
        pieces = all_gather(padded.contiguous())
    gathered = torch.cat([piece[:size] for piece, size in zip(pieces, sizes)], dim=0)
    return gathered, sum(sizes[:rank])


def _local_logits(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """This process's rows against the columns of every process: (image→text logits, text→image logits, the
    column of each row's match, the global number of pairs)."""
    if image_embeds.shape != text_embeds.shape or image_embeds.dim() != 2:
        raise ValueError(
            "image_embeds and text_embeds must both have shape (batch_size, projection_dim) with one caption per "
            f"image, got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}."
        )
    # The logits and the softmax in at least float32, whatever the autocast dtype of the embeddings.
    dtype = torch.promote_types(image_embeds.dtype, torch.float32)
    image_embeds, text_embeds = image_embeds.to(dtype), text_embeds.to(dtype)
    all_image_embeds, offset = gather_with_grad(image_embeds)
    all_text_embeds, _ = gather_with_grad(text_embeds)
    scale = logit_scale.to(dtype).exp().reshape(())  # a scalar, or a 1-element vector under FSDP
    logits_image_to_text = scale * image_embeds @ all_text_embeds.t()
    logits_text_to_image = scale * text_embeds @ all_image_embeds.t()
    targets = torch.arange(image_embeds.shape[0], device=image_embeds.device) + offset
    return logits_image_to_text, logits_text_to_image, targets, all_image_embeds.shape[0]


def distributed_contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    r"""The symmetric contrastive loss of CLIP over the global batch, computed on each process for its own rows.

    Args:
        image_embeds, text_embeds (`torch.Tensor` of shape `(local_batch_size, projection_dim)`): L2-normalised
            embeddings of this process's pairs (row i of each is a matching pair).
        logit_scale (`torch.Tensor`, scalar): the *log* of the temperature scale, as the model stores it.

    With B pairs on all processes together, b of them here, this process returns

        (world_size / B) · Σ_{its b rows} ½ [CE(image_i → all B texts) + CE(text_i → all B images)]

    Averaged over processes (what DDP and FSDP do with gradients, and what Trainer logs), that is the loss of one
    process on the whole batch, and because the gather passes gradients back to the process that owns each row, the
    averaged gradients are that process's gradients too. With equal local batches the factor `world_size / B` is
    `1 / b`: each process's loss is the mean over its rows. With one process this is `contrastive_loss` of the
    model.
    """
    logits_i2t, logits_t2i, targets, global_batch = _local_logits(image_embeds, text_embeds, logit_scale)
    world_size, _ = _world()
    per_row = F.cross_entropy(logits_i2t, targets, reduction="sum") + F.cross_entropy(
        logits_t2i, targets, reduction="sum"
    )
    return per_row * (world_size / (2 * global_batch))


# --------------------------------------------------------------------------------------------------
# Retrieval metrics
# --------------------------------------------------------------------------------------------------


def retrieval_ranks(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """For each of this process's pairs, the rank (0 = retrieved first) of its caption among the captions of the
    global batch (image→text) and of its image among the images (text→image): shape `(local_batch_size, 2)`.

    Ties count against the match, so a collapsed model that gives every pair the same score ranks last, not first;
    duplicate captions in one batch therefore count as misses.
    """
    logits_i2t, logits_t2i, targets, _ = _local_logits(image_embeds, text_embeds, image_embeds.new_zeros(()))
    rows = torch.arange(targets.shape[0], device=targets.device)
    ranks = [(logits >= logits[rows, targets].unsqueeze(1)).sum(dim=1) - 1 for logits in (logits_i2t, logits_t2i)]
    return torch.stack(ranks, dim=1)


def compute_retrieval_metrics(eval_prediction: EvalPrediction, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """In-batch retrieval metrics from the ranks of [`retrieval_ranks`] (the predictions of
    [`DiffCLIPTrainer.prediction_step`]): `i2t_accuracy` / `t2i_accuracy` (recall@1, image→text and
    text→image) and `i2t_recall@k` / `t2i_recall@k` for the other `ks`. In-batch means that each pair competes
    with the other pairs of its global evaluation batch (`per_device_eval_batch_size` × number of processes)."""
    ranks = eval_prediction.predictions
    ranks = ranks[0] if isinstance(ranks, (tuple, list)) else ranks
    ranks = np.asarray(ranks).reshape(-1, 2)
    metrics = {}
    for column, direction in enumerate(("i2t", "t2i")):
        for k in ks:
            name = f"{direction}_accuracy" if k == 1 else f"{direction}_recall@{k}"
            metrics[name] = float((ranks[:, column] < k).mean()) if len(ranks) else float("nan")
    return metrics
