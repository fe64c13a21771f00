"""`core.embed_to_disk`: which rows go into which chunk, which items each process takes; the resumable encoders
that use it (feature cache, search index) are tested through their commands in tests/evaluation and tests/search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformers_diffclip.core.embed_to_disk import ChunkedRows, finish_on_rank_zero, rank_share


def _collect(chunk_size, batches, first_chunk=0, finish="flush"):
    written = []
    rows = ChunkedRows(lambda i, arrays, records: written.append((i, arrays, records)), chunk_size, first_chunk)
    for arrays, records in batches:
        rows.add(arrays, records)
    left = rows.take() if finish == "take" else rows.flush()
    return written, left, rows


def test_rows_are_written_in_order_chunk_size_at_a_time():
    batch_sizes = (3, 1, 5, 2, 4)  # 15 rows in batches that do not line up with chunks of 4
    vectors = torch.arange(15 * 2, dtype=torch.float32).reshape(15, 2)
    starts = np.cumsum((0,) + batch_sizes)
    batches = [({"v": vectors[a:b]}, list(range(a, b))) for a, b in zip(starts[:-1], starts[1:])]
    written, _, rows = _collect(4, batches, first_chunk=7)
    assert [index for index, _, _ in written] == [7, 8, 9, 10]  # numbered after an earlier run's chunks
    assert [records for _, _, records in written] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]]
    for _, arrays, records in written:
        assert torch.equal(arrays["v"], vectors[records[0] : records[-1] + 1])  # each row beside its record
    assert len(rows) == 0


def test_take_keeps_the_last_rows_unwritten_and_numpy_rows_work():
    vectors = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    batches = [({"v": vectors[:5]}, ["a", "b", "c", "d", "e"]), ({"v": vectors[5:]}, ["f", "g"])]
    written, (arrays, records), _ = _collect(3, batches, finish="take")
    assert [r for _, _, r in written] == [["a", "b", "c"], ["d", "e", "f"]]
    assert records == ["g"] and np.array_equal(arrays["v"], vectors[6:])


def test_rows_and_records_must_match():
    rows = ChunkedRows(lambda *a: None, 2)
    with pytest.raises(ValueError, match="one row per record"):
        rows.add({"v": torch.zeros(3, 2)}, [1, 2])
    with pytest.raises(ValueError, match="at least 1"):
        ChunkedRows(lambda *a: None, 0)


def test_rank_share_splits_items_round_robin_once():
    shares = [list(rank_share(11, rank, 3)) for rank in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert list(rank_share(5)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        rank_share(5, 3, 3)


def test_finish_runs_on_rank_zero_only():
    calls = []
    assert finish_on_rank_zero(lambda: calls.append("done") or 42, rank=0) == 42
    assert finish_on_rank_zero(lambda: calls.append("other"), rank=1) is None
    assert calls == ["done"]
