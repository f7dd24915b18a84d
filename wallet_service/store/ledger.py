"""The double-entry ledger (rule 8): lines booked once per leg, never edited."""

from __future__ import annotations

from collections.abc import Sequence

from wallet_service.domain.money import Line, balanced
from wallet_service.store.database import Database
from wallet_service.store.database import Transaction as DbTx


async def book(
    tx: DbTx, transaction_id: str, reference: str, lines: Sequence[Line], now: float
) -> bool:
    """Book the lines of one leg once; False when that leg was booked before."""
    if not balanced(lines):
        raise ValueError("unbalanced ledger lines")
    existing = await tx.fetch_one(
        "SELECT 1 FROM ledger_lines WHERE reference = ? LIMIT 1", (reference,)
    )
    if existing is not None:
        return False
    for line in lines:
        await tx.execute(
            """INSERT INTO ledger_lines (transaction_id, reference, account, amount_idr,
                                         create_time) VALUES (?, ?, ?, ?, ?)""",
            (transaction_id, reference, line.account, line.amount_idr, now),
        )
    return True


# Read from the index ledger_by_account_volume alone (migration 0004).
VOLUME_SQL = (
    "SELECT CAST(COALESCE(SUM(ABS(amount_idr)), 0) AS BIGINT) AS total FROM ledger_lines "
    "WHERE account = ? AND create_time >= ?"
)


async def volume_since(db: Database, account: str, since: float) -> int:
    """Money moved in and out of ``account`` since ``since`` (for the monthly cap)."""
    row = await db.fetch_one(VOLUME_SQL, (account, since))
    assert row is not None
    return int(row["total"])
