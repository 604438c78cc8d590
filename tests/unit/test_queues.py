"""SQS's batch limits, as the queue vocabulary applies them."""

from __future__ import annotations

from cloudworker.queues import body_batches


def test_bodies_go_in_batches_of_ten_and_of_at_most_256_kib() -> None:
    small = [f"m{i}" for i in range(23)]
    assert [len(b) for b in body_batches(small)] == [10, 10, 3]
    big = ["x" * (100 * 1024)] * 5  # two fit under 256 KiB, not three
    assert [len(b) for b in body_batches(big)] == [2, 2, 1]
    assert list(body_batches([])) == []
