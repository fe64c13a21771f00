# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""The ranking rule behind every Recall@K and accuracy of the package (evaluation commands, Python API, training
metrics), in one place.

**Rule.** The rank of a query's match is the number of *wrong* candidates that score *at least as high* as the
query's best right candidate: `rank = #{c wrong : s_c >= max_{c right} s_c}`; a query is a hit at K when
`rank < K`. Ties therefore count against the model. Random tie-breaking would give a tied match a chance of
winning; this rule gives none, so no model gains from ties: a collapsed model (all embeddings equal, every score
tied) has rank = number of wrong candidates and scores R@K = 0 unless K exceeds that number, where every ranking
is a hit anyway, i.e. at most chance level. Several right candidates (an image with five captions) never compete
with each other.

**Non-finite scores** are an error, not a rank: a NaN compares false with everything, so it would rank first under
a strict rule and last under this one, both meaningless. [`check_finite`] names how many embeddings are NaN or
infinite; [`match_ranks`] refuses non-finite scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


RECALL_KS = (1, 5, 10)
TIE_RULE = (
    "ties count against the match: rank = number of wrong candidates scoring at least as high as the best right one"
)


def non_finite_error(count: int, total: int, what: str = "") -> ValueError:
    """The error for `count` of `total` embeddings that hold a NaN or an infinity."""
    kind = f"{what} " if what else ""
    return ValueError(
        f"{count} of the {total} {kind}embeddings are not finite (NaN or inf): the model is broken or overflowed in "
        "its dtype (try --dtype float32); no recall or accuracy is computed from them."
    )


def check_finite(embeddings: torch.Tensor, what: str = "") -> None:
    """Raise a `ValueError` naming how many rows (embeddings) of `embeddings` hold a NaN or an infinity."""
    if embeddings.numel() == 0:
        return
    bad = int((~torch.isfinite(embeddings)).reshape(embeddings.shape[0], -1).any(dim=1).sum())
    if bad:
        raise non_finite_error(bad, embeddings.shape[0], what)


def match_ranks(scores: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """The rank of every query's match under the package's tie rule (see the module docstring).

    Args:
        scores (`torch.Tensor` of shape `(num_queries, num_candidates)`): similarities or logits, higher is better.
        matches (`torch.Tensor`): the right candidate of each query, as indices of shape `(num_queries,)`, or a
            boolean mask of shape `(num_queries, num_candidates)` when a query has several.

    Returns:
        `torch.LongTensor` of shape `(num_queries,)`: 0 when the match beats every wrong candidate outright.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (num_queries, num_candidates), got {tuple(scores.shape)}.")
    finite = torch.isfinite(scores)
    if not bool(finite.all()):
        raise ValueError(
            f"{int((~finite).sum())} of the {scores.numel()} similarity scores are not finite (NaN or inf); "
            "no rank is computed from them."
        )
    if matches.dtype == torch.bool:
        if matches.shape != scores.shape:
            raise ValueError(
                f"A match mask must have the scores' shape {tuple(scores.shape)}, got {tuple(matches.shape)}."
            )
        right = matches.to(scores.device)
    else:
        if matches.shape != scores.shape[:1]:
            raise ValueError(
                f"Expected one match index per query ({scores.shape[0]}), got shape {tuple(matches.shape)}."
            )
        matches = matches.to(device=scores.device, dtype=torch.long)
        if bool(((matches < 0) | (matches >= scores.shape[1])).any()):
            raise ValueError(f"A match index lies outside the {scores.shape[1]} candidates.")
        right = F.one_hot(matches, scores.shape[1]).bool()
    if not bool(right.any(dim=1).all()):
        raise ValueError("Every query needs at least one right candidate.")
    best_right = scores.masked_fill(~right, float("-inf")).amax(dim=1, keepdim=True)
    return ((scores >= best_right) & ~right).sum(dim=1)


def recall_at_k(ranks: torch.Tensor, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """`{"R@k": fraction of ranks below k}` for every k."""
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"Recall cut-offs must be positive integers, got {list(ks)}.")
    if ranks.numel() == 0:
        raise ValueError("No ranks to average.")
    return {f"R@{k}": (ranks < k).double().mean().item() for k in ks}


def retrieval_ranks(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    caption_image: Sequence[int] | torch.Tensor,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of text→image retrieval (one per caption: its image among all images) and of image→text retrieval (one
    per image: its best caption among all captions), by cosine similarity, `chunk_size` queries at a time.

    `caption_image[j]` is the index of caption `j`'s image; every image needs at least one caption.
    """
    check_finite(image_embeds, "image")
    check_finite(text_embeds, "text")
    caption_image = torch.as_tensor(caption_image, dtype=torch.long)
    images = F.normalize(image_embeds.float(), dim=-1)
    texts = F.normalize(text_embeds.float(), dim=-1).to(images.device)
    caption_image = caption_image.to(images.device)
    num_images, num_texts = images.shape[0], texts.shape[0]
    if caption_image.shape != (num_texts,):
        raise ValueError(
            f"caption_image must have one entry per caption ({num_texts}), got shape {tuple(caption_image.shape)}."
        )
    if num_images == 0 or num_texts == 0:
        raise ValueError("Retrieval needs at least one image and one caption.")
    if bool((caption_image < 0).any()) or bool((caption_image >= num_images).any()):
        raise ValueError("caption_image holds an index outside the images.")
    if bool((torch.bincount(caption_image, minlength=num_images) == 0).any()):
        raise ValueError("Every image needs at least one caption.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")

    text_ranks = torch.cat(
        [
            match_ranks(texts[start : start + chunk_size] @ images.t(), caption_image[start : start + chunk_size])
            for start in range(0, num_texts, chunk_size)
        ]
    )
    image_ranks = []
    for start in range(0, num_images, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num_images), device=images.device)
        own = caption_image.unsqueeze(0) == rows.unsqueeze(1)
        image_ranks.append(match_ranks(images[start : start + chunk_size] @ texts.t(), own))
    return text_ranks, torch.cat(image_ranks)


def retrieval_metrics(
    text_ranks: torch.Tensor, image_ranks: torch.Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """CLIP_benchmark's retrieval metrics from the ranks of [`retrieval_ranks`]: `image_retrieval_recall@k`
    (text→image: the fraction of captions whose image ranks below k) and `text_retrieval_recall@k` (image→text: the
    fraction of images one of whose captions ranks below k)."""
    texts, images = recall_at_k(text_ranks, ks), recall_at_k(image_ranks, ks)
    metrics = {f"image_retrieval_recall@{k}": texts[f"R@{k}"] for k in ks}
    metrics.update({f"text_retrieval_recall@{k}": images[f"R@{k}"] for k in ks})
    return metrics


def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    caption_image: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = RECALL_KS,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k of text→image and image→text retrieval (the Karpathy-split protocol), with CLIP_benchmark's names
    ([`retrieval_metrics`]).

    Text→image (`image_retrieval_recall@k`): a caption is a hit when its image ranks in the top k of all images;
    averaged over captions. Image→text (`text_retrieval_recall@k`): an image is a hit when one of its captions ranks
    in the top k of all captions; averaged over images. Ties count against the match (see the module docstring);
    non-finite embeddings are an error.
    """
    recall_at_k(torch.zeros(1), ks)  # validates ks before any work
    text_ranks, image_ranks = retrieval_ranks(image_embeds, text_embeds, caption_image, chunk_size)
    return retrieval_metrics(text_ranks, image_ranks, ks)


def classification_report(
    ranks: torch.Tensor,
    targets: torch.Tensor,
    class_keys: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> dict[str, object]:
    """Accuracy from the ranks of the true classes (from [`match_ranks`] over the logits) and the true classes, with
    CLIP_benchmark's names.

    Returns `acc1`, `acc5` (rank below 1 and 5; `None` when `num_classes` is under 5, where CLIP_benchmark writes
    NaN), `mean_per_class_recall` (mean of the per-class top-1 accuracies, i.e. balanced accuracy) and `per_class`
    (`{class key: top-1 accuracy}` over the classes that have images; keys are `class_keys[c]`, default `str(c)`),
    all fractions in [0, 1], and `num_images`.
    """
    ranks, targets = torch.as_tensor(ranks), torch.as_tensor(targets)
    if ranks.dim() != 1 or ranks.shape != targets.shape or targets.numel() == 0:
        raise ValueError("ranks and targets must both have shape (num_images,), with num_images > 0.")
    top1 = (ranks < 1).double()
    per_class = {}
    for c in sorted(set(targets.tolist())):
        key = class_keys[c] if class_keys is not None else str(c)
        per_class[key] = top1[targets == c].mean().item()
    return {
        "acc1": top1.mean().item(),
        "acc5": None if num_classes is not None and num_classes < 5 else (ranks < 5).double().mean().item(),
        "mean_per_class_recall": sum(per_class.values()) / len(per_class),
        "per_class": per_class,
        "num_images": int(targets.numel()),
    }


__all__ = [
    "RECALL_KS",
    "TIE_RULE",
    "check_finite",
    "classification_report",
    "match_ranks",
    "non_finite_error",
    "recall_at_k",
    "retrieval_metrics",
    "retrieval_ranks",
    "retrieval_recall",
]
