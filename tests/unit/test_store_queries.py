"""Queries on every money call read indexes, not tables: they stay cheap as data grows."""

from __future__ import annotations

from pathlib import Path

from wallet_service.store import money
from wallet_service.store.database import Database


async def test_the_monthly_volume_is_summed_from_an_index_alone(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        plan = await db.fetch_all(f"EXPLAIN QUERY PLAN {money.VOLUME_SQL}", ("acct", 0.0))
        details = " ".join(row["detail"] for row in plan)
        assert "COVERING INDEX ledger_by_account_volume" in details

        async with db.transaction() as tx:
            for n, amount in enumerate([5_000, -2_000, 700]):
                await tx.execute(
                    "INSERT INTO transactions (id, type, status, amount_idr, mobile_number, "
                    "create_time, update_time) VALUES (?, 'TRANSFER', 'SUCCEEDED', 1, 'm', 1, 1)",
                    (f"t{n}",),
                )
                await tx.execute(
                    "INSERT INTO ledger_lines (transaction_id, reference, account, amount_idr, "
                    "create_time) VALUES (?, ?, 'acct', ?, ?)",
                    (f"t{n}", f"r{n}", amount, 100.0 + n),
                )
        assert await money.volume_since(db, "acct", 0.0) == 7_700
        assert await money.volume_since(db, "acct", 101.0) == 2_700
        assert await money.volume_since(db, "other", 0.0) == 0
    finally:
        await db.close()
