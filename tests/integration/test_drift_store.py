"""The drifts table's rules (store/drifts.py), on both engines: one open drift per
account and kind, renewed when seen again; an acknowledged difference not reopened until
it changes; cleared when the books agree again."""

from __future__ import annotations

import functools

import pytest

from wallet_service.store.drifts import (
    DriftKind,
    DriftStatus,
    acknowledge_drift,
    clear_drift,
    list_drifts,
    open_drifts,
    record_drift,
)

from .conftest import Harness

ACCOUNT = "subscriber:6281234567890"


async def test_a_drift_seen_again_is_renewed_not_duplicated(h: Harness) -> None:
    db = h.running.db
    first = await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 0, 5_000, 10.0))
    again = await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 0, 7_000, 20.0))
    assert first is not None
    assert again is not None
    assert again.id == first.id
    assert (again.theirs_idr, again.detected_at, again.last_seen_at) == (7_000, 10.0, 20.0)
    assert again.difference_idr == 7_000
    assert await open_drifts(db) == 1
    # Another kind on the same account is another drift.
    await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.HOLDS, 100, 0, 20.0))
    assert await open_drifts(db) == 2


async def test_an_acknowledged_difference_is_not_reopened_until_it_changes(h: Harness) -> None:
    db = h.running.db
    drift = await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 0, 5_000, 10.0))
    assert drift is not None
    done = await db.run(lambda tx: acknowledge_drift(tx, drift.id, "ops", "refund sent", 11.0))
    assert done is not None
    assert done.status == DriftStatus.ACKNOWLEDGED
    assert (done.closed_by, done.reason, done.closed_at) == ("ops", "refund sent", 11.0)
    # Acknowledging twice: nothing open to acknowledge.
    assert await db.run(lambda tx: acknowledge_drift(tx, drift.id, "ops", "again", 12.0)) is None
    # The same difference, with other figures: still the known one.
    same = await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 1_000, 6_000, 13.0))
    assert same is None
    assert await open_drifts(db) == 0
    # A new difference opens a new drift.
    new = await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 1_000, 9_000, 14.0))
    assert new is not None
    assert new.id != drift.id
    assert new.status == DriftStatus.OPEN


async def test_a_drift_whose_books_agree_again_is_cleared(h: Harness) -> None:
    db = h.running.db
    drift = await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 0, 5_000, 10.0))
    assert drift is not None
    cleared = await db.run(lambda tx: clear_drift(tx, ACCOUNT, DriftKind.BALANCE, 15.0))
    assert cleared is not None
    assert cleared.status == DriftStatus.CLEARED
    assert await db.run(lambda tx: clear_drift(tx, ACCOUNT, DriftKind.BALANCE, 16.0)) is None
    assert await open_drifts(db) == 0
    with pytest.raises(ValueError, match="two different figures"):
        await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 5, 5, 17.0))


async def test_drifts_are_listed_in_pages_and_filtered(h: Harness) -> None:
    db = h.running.db
    for n in range(5):
        account = f"subscriber:62812345678{n:02d}"
        await db.run(
            functools.partial(
                record_drift,
                account=account,
                kind=DriftKind.BALANCE,
                ours_idr=0,
                theirs_idr=n + 1,
                now=float(n),
            )
        )
    first = await list_drifts(db, limit=2)
    rest = await list_drifts(db, after_id=first[-1].id, limit=10)
    assert [d.theirs_idr for d in first + rest] == [1, 2, 3, 4, 5]
    await db.run(lambda tx: acknowledge_drift(tx, first[0].id, "ops", "known", 9.0))
    still_open = await list_drifts(db, status=DriftStatus.OPEN)
    assert [d.theirs_idr for d in still_open] == [2, 3, 4, 5]
    one = await list_drifts(db, account="subscriber:6281234567803")
    assert [d.theirs_idr for d in one] == [4]


async def test_an_acknowledged_difference_gone_and_back_is_a_new_drift(h: Harness) -> None:
    """A missed top-up of 50,000 acknowledged, then put right (the books agree); months
    later another 50,000 goes missing: a new drift, not the known one."""
    db = h.running.db
    drift = await db.run(lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 0, 50_000, 10.0))
    assert drift is not None
    await db.run(lambda tx: acknowledge_drift(tx, drift.id, "ops", "ticket 7", 11.0))
    cleared = await db.run(lambda tx: clear_drift(tx, ACCOUNT, DriftKind.BALANCE, 12.0))
    assert cleared is not None
    assert cleared.status == DriftStatus.CLEARED
    # Who acknowledged it, and why, stay.
    assert (cleared.closed_by, cleared.reason, cleared.closed_at) == ("ops", "ticket 7", 11.0)
    again = await db.run(
        lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 100_000, 150_000, 99.0)
    )
    assert again is not None
    assert again.id != drift.id
    assert again.status == DriftStatus.OPEN
    assert await open_drifts(db) == 1
