"""The one backoff: doubling per try, capped, with equal jitter."""

from __future__ import annotations

import random

import pytest

from wallet_service.flows.backoff import backoff_seconds


@pytest.mark.parametrize(
    ("tries", "step"), [(0, 2.0), (1, 4.0), (4, 32.0), (8, 300.0), (10**6, 300.0)]
)
def test_the_wait_is_between_half_and_all_of_the_doubled_step(tries: int, step: float) -> None:
    assert backoff_seconds(tries, 2.0, 300.0, lambda: 0.0) == step / 2
    assert backoff_seconds(tries, 2.0, 300.0, lambda: 0.5) == step * 3 / 4
    assert backoff_seconds(tries, 2.0, 300.0, lambda: 1.0) == step


def test_items_that_failed_together_spread_out() -> None:
    rng = random.Random(7)
    waits = [backoff_seconds(3, 5.0, 600.0, rng.random) for _ in range(100)]
    assert all(20.0 <= wait < 40.0 for wait in waits)
    assert len(set(waits)) == 100
