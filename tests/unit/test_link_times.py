"""Link times: read from the database, remembered once committed (they never change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wallet_service.domain.phone import parse_mobile_number
from wallet_service.store import onboarding as rows
from wallet_service.store.database import Database

BUDI = parse_mobile_number("081234567890")
SITI = parse_mobile_number("085712345678")


async def test_the_first_link_time_is_kept_and_read(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        assert await rows.linked_at(db, BUDI) is None
        async with db.transaction() as tx:
            assert await rows.mark_linked(tx, BUDI, 1000.0) == 1000.0
        async with db.transaction() as tx:
            assert await rows.mark_linked(tx, BUDI, 2000.0) == 1000.0  # linked once

        assert await rows.linked_at(db, BUDI) == 1000.0
        assert await rows.linked_at(db, SITI) is None
    finally:
        await db.close()


async def test_a_link_that_is_rolled_back_is_not_remembered(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    seen: list[float | None] = []

    async def link_then_fail() -> None:
        async with db.transaction() as tx:
            await rows.mark_linked(tx, BUDI, 1000.0)
            # Another request reads while this transaction is open (its coroutine
            # suspended here): it sees the uncommitted link, and must not keep it.
            seen.append(await rows.linked_at(db, BUDI))
            raise RuntimeError("the flow failed after marking the link")

    try:
        with pytest.raises(RuntimeError):
            await link_then_fail()

        assert seen == [1000.0]
        assert await rows.linked_at(db, BUDI) is None
    finally:
        await db.close()


async def test_link_times_are_remembered_per_database(tmp_path: Path) -> None:
    first = await Database.open(str(tmp_path / "a.db"))
    second = await Database.open(str(tmp_path / "b.db"))
    try:
        async with first.transaction() as tx:
            await rows.mark_linked(tx, BUDI, 1000.0)
        assert await rows.linked_at(first, BUDI) == 1000.0

        assert await rows.linked_at(second, BUDI) is None
    finally:
        await first.close()
        await second.close()


async def test_the_memory_of_link_times_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows, "LINK_TIMES_REMEMBERED", 2)
    db = await Database.open(str(tmp_path / "w.db"))
    numbers = [parse_mobile_number(f"08123456789{n}") for n in range(4)]
    try:
        async with db.transaction() as tx:
            for n, mobile in enumerate(numbers):
                await rows.mark_linked(tx, mobile, 1000.0 + n)

        assert [await rows.linked_at(db, m) for m in numbers] == [1000.0, 1001.0, 1002.0, 1003.0]
        assert [await rows.linked_at(db, m) for m in numbers] == [1000.0, 1001.0, 1002.0, 1003.0]
        assert len(rows._link_times[db]) == 2
    finally:
        await db.close()
