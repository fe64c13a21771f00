# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The contrastive loss of training, with negatives gathered from every process; the same loss over a batch
larger than memory, computed in chunks (GradCache); and the in-batch retrieval ranks that evaluation during
training reports."""

import contextlib
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction

from ..core.distributed import rank_world
from ..evaluation import check_finite, match_ranks


# --------------------------------------------------------------------------------------------------
# Contrastive loss with negatives from every process
# --------------------------------------------------------------------------------------------------


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of `tensor` from every process, concatenated in rank order, and the index of this process's first
    row in the result.

    The gather is autograd-aware (`torch.distributed.nn.functional.all_gather`): in backward, each process receives
    the sum over all processes of the gradients that flowed into its rows. Processes may hold different numbers of
    rows (a skipped bad image, a short last batch); rows are padded for the collective and the padding dropped.
    Without torch.distributed (or with one process) this returns `(tensor, 0)`.
    """
    rank, world_size = rank_world()
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
    _, world_size = rank_world()
    per_row = F.cross_entropy(logits_i2t, targets, reduction="sum") + F.cross_entropy(
        logits_t2i, targets, reduction="sum"
    )
    return per_row * (world_size / (2 * global_batch))


# --------------------------------------------------------------------------------------------------
# Retrieval metrics
# --------------------------------------------------------------------------------------------------


def in_batch_retrieval_ranks(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """For each of this process's pairs, the rank (0 = retrieved first) of its caption among the captions of the
    global batch (image→text) and of its image among the images (text→image): shape `(local_batch_size, 2)`.

    The package's one ranking rule ([`~evaluation.metrics.match_ranks`]): ties count against the match, so a
    collapsed model that gives every pair the same score ranks last, not first (duplicate captions in one batch
    count as misses), and non-finite embeddings are an error that says how many there are.
    """
    check_finite(image_embeds, "image")
    check_finite(text_embeds, "text")
    logits_i2t, logits_t2i, targets, _ = _local_logits(image_embeds, text_embeds, image_embeds.new_zeros(()))
    return torch.stack([match_ranks(logits_i2t, targets), match_ranks(logits_t2i, targets)], dim=1)


def compute_retrieval_metrics(eval_prediction: EvalPrediction, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """In-batch retrieval metrics from the ranks of [`in_batch_retrieval_ranks`] (the predictions of
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


# --------------------------------------------------------------------------------------------------
# Contrastive batches larger than memory: the loss in chunks (GradCache)
# --------------------------------------------------------------------------------------------------


def split_batch(inputs: dict, chunk_size: int) -> list[dict]:
    """`inputs` (a model batch: tensors whose first dimension is the batch) cut into consecutive chunks of at most
    `chunk_size` rows. Entries that are not batch tensors (`return_loss`, ...) are left out.

    Every process gets the same number of chunks (the most any process needs; FSDP gathers parameters in every
    forward, so all processes must run as many), as near-equal as the rows allow."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"contrastive_chunk_size must be a positive integer, got {chunk_size!r}.")
    tensors = {key: value for key, value in inputs.items() if torch.is_tensor(value) and value.dim() > 0}
    sizes = {value.shape[0] for value in tensors.values()}
    if len(sizes) != 1:
        shapes = {key: tuple(value.shape) for key, value in tensors.items()}
        raise ValueError(f"Cannot chunk a batch whose tensors disagree on the batch size: {shapes}.")
    batch_size = sizes.pop()
    num_chunks = torch.tensor([-(-batch_size // chunk_size)], device=next(iter(tensors.values())).device)
    if rank_world()[1] > 1:
        torch.distributed.all_reduce(num_chunks, op=torch.distributed.ReduceOp.MAX)
    num_chunks = int(num_chunks.item())
    if batch_size < num_chunks:
        raise ValueError(
            f"This process has {batch_size} pairs but another needs {num_chunks} chunks of at most {chunk_size}: "
            "every process runs as many chunks. Use equal local batches (--dataloader_drop_last) or a larger "
            "--contrastive_chunk_size."
        )
    pieces = {key: torch.tensor_split(value, num_chunks) for key, value in tensors.items()}
    return [{key: pieces[key][index] for key in tensors} for index in range(num_chunks)]


class _RandomState:
    """The CPU and CUDA random states at construction, put back by `restore()`: the recomputed forward of a chunk
    draws the same random numbers (dropout, stochastic depth) as its first forward did."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.cuda = torch.cuda.get_rng_state_all() if cuda else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class _EmbeddingGradientHook:
    """Forward hook that sets a forward's `loss` to Σ(image_embeds · image_grad) + Σ(text_embeds · text_grad)
    (+ logit_scale · scale_grad when given): its backward puts exactly those gradients on the embeddings (and the
    logit scale), and from there on the parameters. Computed inside the forward, where FSDP holds the parameters
    whole."""

    def __init__(self, image_grad, text_grad, scale_grad=None):
        self.image_grad, self.text_grad, self.scale_grad = image_grad, text_grad, scale_grad

    def __call__(self, module, args, output):
        surrogate = (output.image_embeds * self.image_grad.to(output.image_embeds.dtype)).sum()
        surrogate = surrogate + (output.text_embeds * self.text_grad.to(output.text_embeds.dtype)).sum()
        if self.scale_grad is not None:
            surrogate = surrogate + (module.logit_scale * self.scale_grad.to(module.logit_scale.dtype)).sum()
        output["loss"] = surrogate
        return output


def chunked_contrastive_backward(
    model: torch.nn.Module,
    inputs: dict,
    chunk_size: int,
    *,
    hooked_module: torch.nn.Module | None = None,
    backward=None,
    no_sync=None,
    forward_context=None,
    loss_divisor: float = 1.0,
) -> torch.Tensor:
    r"""Forward and backward of [`distributed_contrastive_loss`] over the whole batch `inputs` while holding the
    activations of only `chunk_size` pairs at a time (GradCache, Gao et al. 2021, arXiv:2101.06983).

    1. Every chunk goes through `model` without gradients; only its image and text embeddings are kept.
    2. The loss of the whole batch (negatives gathered from every process) and its gradients with respect to the
       embeddings and the logit scale are computed from those embeddings alone.
    3. Every chunk goes through `model` again, with gradients, and backward starts from its embedding gradients
       (a forward hook on `hooked_module` turns them into a scalar whose gradient they are).

    Parameter gradients are then those of one forward and backward of the whole batch, up to floating-point
    rounding, also across processes: step 2's gather passes each process the gradients of its rows from every
    process's loss. The price is a second forward of every chunk. Random numbers drawn in the forward (dropout) are
    replayed in step 3.

    Args:
        model: what to call for a forward (the model, or its DDP/FSDP wrapper), on `(**chunk, return_loss=True,
            return_dict=True)`; its output needs `image_embeds` and `text_embeds` (L2-normalised).
        inputs (`dict`): the batch; tensors are cut along their first dimension (see [`split_batch`]).
        chunk_size (`int`): pairs per chunk.
        hooked_module: the module whose forward returns the embeddings and holds `logit_scale` (the unwrapped
            model); defaults to `model`.
        backward: `backward(loss)` (default `loss.backward()`); a Trainer passes `accelerator.backward`.
        no_sync: a context manager factory under which the backward of every chunk but the last runs, so that
            DDP reduces gradients once (default: none).
        forward_context: a context manager factory for every forward (autocast; default: none).
        loss_divisor (`float`): the backward sees the loss divided by this (gradient accumulation steps).

    Returns:
        the loss of this process (detached, not divided by `loss_divisor`), as [`distributed_contrastive_loss`]
        returns it.
    """
    hooked_module = model if hooked_module is None else hooked_module
    backward = backward or (lambda loss: loss.backward())
    no_sync = no_sync or contextlib.nullcontext
    forward_context = forward_context or contextlib.nullcontext
    chunks = split_batch(inputs, chunk_size)

    states, image_embeds, text_embeds, scales = [], [], [], []
    # The logit scale is read inside the forward: outside it, FSDP holds only this process's shard of it.
    handle = hooked_module.register_forward_hook(lambda module, args, output: scales.append(module.logit_scale * 1))
    try:
        with torch.no_grad():
            for chunk in chunks:
                states.append(_RandomState())
                with forward_context():
                    outputs = model(**chunk, return_loss=True, return_dict=True)
                image_embeds.append(outputs.image_embeds.detach())
                text_embeds.append(outputs.text_embeds.detach())
                del outputs
    finally:
        handle.remove()

    image_embeds = torch.cat(image_embeds).requires_grad_(True)
    text_embeds = torch.cat(text_embeds).requires_grad_(True)
    logit_scale = scales[0].detach().requires_grad_(hooked_module.logit_scale.requires_grad)
    leaves = [image_embeds, text_embeds] + ([logit_scale] if logit_scale.requires_grad else [])
    loss = distributed_contrastive_loss(image_embeds, text_embeds, logit_scale)
    grads = torch.autograd.grad(loss / loss_divisor, leaves)
    scale_grad = grads[2] if logit_scale.requires_grad else None

    final_state = _RandomState()
    start = 0
    for index, (chunk, state) in enumerate(zip(chunks, states)):
        rows = slice(start, start + next(iter(chunk.values())).shape[0])
        start = rows.stop
        last = index == len(chunks) - 1
        # The logit scale's gradient goes in once, with the last chunk, whose backward DDP reduces.
        hook = _EmbeddingGradientHook(grads[0][rows], grads[1][rows], scale_grad if last else None)
        handle = hooked_module.register_forward_hook(hook)
        state.restore()
        try:
            with contextlib.nullcontext() if last else no_sync():
                with forward_context():
                    outputs = model(**chunk, return_loss=True, return_dict=True)
                backward(outputs.loss)
        finally:
            handle.remove()
        del outputs
    final_state.restore()
    return loss.detach()
