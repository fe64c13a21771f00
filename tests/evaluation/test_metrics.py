"""The one ranking rule of every Recall@K and accuracy, against brute force written here.

The brute force breaks ties against the match by sorting: candidates by score, highest first, and among equal
scores the wrong ones before the right ones; a query is a hit at K when a right candidate is among the first K.
The code under test counts wrong candidates that score at least as high as the best right one instead.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from transformers_diffclip.evaluation import (
    check_finite,
    classification_report,
    match_ranks,
    recall_at_k,
    retrieval_ranks,
    retrieval_recall,
)


def brute_force_hit(scores: list[float], right: set[int], k: int) -> bool:
    order = sorted(range(len(scores)), key=lambda c: (-scores[c], c in right))
    return any(c in right for c in order[:k])


def brute_force_recall(image_embeds, text_embeds, caption_image, ks):
    similarity = (F.normalize(text_embeds.double(), dim=-1) @ F.normalize(image_embeds.double(), dim=-1).t()).tolist()
    result = {}  # CLIP_benchmark's names: image retrieval is text->image, text retrieval image->text
    for k in ks:
        hits = [brute_force_hit(row, {caption_image[j]}, k) for j, row in enumerate(similarity)]
        result[f"image_retrieval_recall@{k}"] = sum(hits) / len(hits)
        hits = []
        for i in range(len(image_embeds)):
            column = [row[i] for row in similarity]
            hits.append(brute_force_hit(column, {j for j, owner in enumerate(caption_image) if owner == i}, k))
        result[f"text_retrieval_recall@{k}"] = sum(hits) / len(hits)
    return result


def tied_embeddings(generator, rows, choices):
    """Rows drawn from a few fixed vectors, so that many similarities are exactly equal."""
    return choices[torch.randint(0, len(choices), (rows,), generator=generator)]


@pytest.mark.parametrize("tied", [False, True])
def test_retrieval_recall_matches_brute_force_with_several_captions_per_image(tied):
    generator = torch.Generator().manual_seed(0)
    num_images = 17
    captions_per_image = torch.randint(1, 6, (num_images,), generator=generator).tolist()  # 1 to 5 captions
    caption_image = [i for i, n in enumerate(captions_per_image) for _ in range(n)]
    permutation = torch.randperm(len(caption_image), generator=generator).tolist()
    caption_image = [caption_image[p] for p in permutation]
    if tied:  # three image vectors and three text vectors with small-integer entries: dot products tie exactly
        choices = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
        image_embeds = tied_embeddings(generator, num_images, choices)
        text_embeds = tied_embeddings(generator, len(caption_image), choices)
    else:
        image_embeds = torch.randn(num_images, 8, generator=generator)
        text_embeds = image_embeds[caption_image] + 0.9 * torch.randn(len(caption_image), 8, generator=generator)
    ks = (1, 2, 5, 10)
    got = retrieval_recall(image_embeds, text_embeds, caption_image, ks, chunk_size=4)
    expected = brute_force_recall(image_embeds, text_embeds, caption_image, ks)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got["image_retrieval_recall@5"] < 1


def test_ranks_count_ties_against_the_match():
    scores = torch.tensor([[0.5, 0.5, 0.1], [0.9, 0.5, 0.5], [0.2, 0.2, 0.2]])
    assert match_ranks(scores, torch.tensor([0, 0, 2])).tolist() == [1, 0, 2]
    # several right candidates never compete with each other; the best one counts
    mask = torch.tensor([[True, True, False], [False, True, True], [True, False, True]])
    assert match_ranks(scores, mask).tolist() == [0, 1, 1]
    # two classes with one name: identical logits, neither ranks first
    logits = torch.tensor([[3.0, 1.0, 3.0], [0.0, 2.0, 0.0]])
    assert match_ranks(logits, torch.tensor([0, 2])).tolist() == [1, 2]


def test_a_collapsed_model_scores_at_most_chance():
    """All embeddings equal: every score ties. Recall@K must not exceed what random ranking gives on average."""
    num_images, captions_per_image = 6, [1, 2, 3, 1, 2, 1]
    caption_image = [i for i, n in enumerate(captions_per_image) for _ in range(n)]
    num_texts = len(caption_image)
    same = torch.ones(1, 4)
    ks = (1, 2, 5, 6, 10)
    for image_embeds, text_embeds in (
        (same.expand(num_images, 4), same.expand(num_texts, 4)),
        (torch.zeros(num_images, 4), torch.zeros(num_texts, 4)),
    ):
        got = retrieval_recall(image_embeds, text_embeds, caption_image, ks)
        for k in ks:
            assert got[f"image_retrieval_recall@{k}"] <= min(k, num_images) / num_images
            chance = sum(1 - math.comb(num_texts - m, k) / math.comb(num_texts, k) for m in captions_per_image)
            assert got[f"text_retrieval_recall@{k}"] <= chance / num_images + 1e-12
        assert got["image_retrieval_recall@1"] == 0 and got["text_retrieval_recall@1"] == 0
    report = classification_report(match_ranks(torch.zeros(8, 4), torch.arange(8) % 4), torch.arange(8) % 4)
    assert report["acc1"] == 0 and report["mean_per_class_recall"] == 0


def test_non_finite_embeddings_are_an_error_that_counts_them():
    images, texts = torch.randn(5, 4), torch.randn(5, 4)
    images[1, 2] = float("nan")
    images[3] = float("inf")
    with pytest.raises(ValueError, match="2 of the 5 image embeddings are not finite"):
        retrieval_recall(images, texts, list(range(5)))
    texts[:] = float("nan")
    with pytest.raises(ValueError, match="5 of the 5 text embeddings are not finite"):
        retrieval_recall(torch.randn(5, 4), texts, list(range(5)))
    with pytest.raises(ValueError, match="1 of the 6 similarity scores are not finite"):
        match_ranks(torch.tensor([[0.1, float("nan"), 0.3], [0.0, 0.1, 0.2]]), torch.tensor([0, 1]))
    check_finite(torch.randn(3, 2), "image")  # finite: no error
    with pytest.raises(ValueError, match="at least one right candidate"):
        match_ranks(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive integers"):
        recall_at_k(torch.zeros(3), ks=(0, 1))


def test_in_batch_ranks_of_paired_embeddings():
    """The training metric's case (1:1 pairs, in-batch): `match_ranks` over the logits with the pair index as the
    match, in both directions, equals the brute force, also with duplicate captions (exact ties)."""
    generator = torch.Generator().manual_seed(3)
    image_embeds = F.normalize(torch.randn(12, 8, generator=generator), dim=-1)
    text_embeds = F.normalize(image_embeds + torch.randn(12, 8, generator=generator), dim=-1)
    text_embeds[5] = text_embeds[4]  # two pairs with one caption: neither image finds "its" caption first
    pairs = torch.arange(12)
    logits = 100.0 * image_embeds @ text_embeds.t()
    for scores in (logits, logits.t()):
        ranks = match_ranks(scores, pairs)
        for k in (1, 3):
            expected = [brute_force_hit(row, {q}, k) for q, row in enumerate(scores.tolist())]
            assert (ranks < k).tolist() == expected
    assert match_ranks(logits, pairs)[4] >= 1 and match_ranks(logits, pairs)[5] >= 1
    text_ranks, image_ranks = retrieval_ranks(image_embeds, text_embeds, pairs)
    assert torch.equal(image_ranks, match_ranks(logits, pairs)) and torch.equal(
        text_ranks, match_ranks(logits.t(), pairs)
    )


def test_training_metrics_follow_the_same_rule():
    """`training.in_batch_retrieval_ranks` (what `DiffCLIPTrainer.evaluate` reports) agrees with the brute force,
    counts a duplicate caption (an exact tie) as a miss, gives a collapsed model no hit, and refuses NaN embeddings."""
    from transformers import EvalPrediction

    from transformers_diffclip.training import compute_retrieval_metrics
    from transformers_diffclip.training import in_batch_retrieval_ranks as training_ranks

    generator = torch.Generator().manual_seed(5)
    image_embeds = F.normalize(torch.randn(10, 8, generator=generator), dim=-1)
    text_embeds = F.normalize(image_embeds + torch.randn(10, 8, generator=generator), dim=-1)
    text_embeds[7] = text_embeds[6]
    ranks = training_ranks(image_embeds, text_embeds)
    similarity = (image_embeds @ text_embeds.t()).tolist()
    for k in (1, 5):
        assert (ranks[:, 0] < k).tolist() == [brute_force_hit(row, {i}, k) for i, row in enumerate(similarity)]
        columns = [list(column) for column in zip(*similarity)]
        assert (ranks[:, 1] < k).tolist() == [brute_force_hit(col, {i}, k) for i, col in enumerate(columns)]
    assert ranks[6, 0] >= 1 and ranks[7, 0] >= 1
    collapsed = training_ranks(torch.ones(6, 4), torch.ones(6, 4))
    metrics = compute_retrieval_metrics(EvalPrediction(predictions=collapsed.numpy(), label_ids=None))
    assert metrics["i2t_accuracy"] == 0 and metrics["t2i_accuracy"] == 0 and metrics["i2t_recall@5"] == 0
    broken = image_embeds.clone()
    broken[2, 0] = float("nan")
    with pytest.raises(ValueError, match="1 of the 10 image embeddings are not finite"):
        training_ranks(broken, text_embeds)
