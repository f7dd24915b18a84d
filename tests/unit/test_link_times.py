"""Link times: the first one is kept, and read back."""

from __future__ import annotations

from pathlib import Path

from wallet_service.domain.phone import parse_mobile_number
from wallet_service.store import onboarding as rows
from wallet_service.store.sqlite import SqliteDatabase

BUDI = parse_mobile_number("081234567890")
SITI = parse_mobile_number("085712345678")


async def test_the_first_link_time_is_kept_and_read(tmp_path: Path) -> None:
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
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
