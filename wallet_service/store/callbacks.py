"""Callbacks: verified ones, raw, before they are applied (rule 5), and those to try
again; a bounded sample of unverified ones; and the top-ups these named, to confirm with
KasPro."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wallet_service.store.database import Database, Row
from wallet_service.store.database import Transaction as DbTx


async def store_callback(
    db: Database, raw: bytes, timestamp: str, signature: str, now: float
) -> int:
    row = await db.run(
        lambda tx: tx.fetch_one(
            """INSERT INTO callbacks (received_at, raw, timestamp, signature, status)
               VALUES (?, ?, ?, ?, 'received') RETURNING id""",
            (now, raw, timestamp, signature),
        )
    )
    assert row is not None
    return int(row["id"])


async def mark_callback(
    tx: DbTx,
    callback_id: int,
    status: str,
    *,
    reference: str = "",
    detail: str = "",
    next_try_at: float | None = None,
) -> None:
    await tx.execute(
        """UPDATE callbacks SET status = ?, reference = ?, detail = ?, next_try_at = ?,
               tries = tries + 1 WHERE id = ?""",
        (status, reference, detail, next_try_at, callback_id),
    )


# In arrival order, from the index of the parked ones: ``+id`` is id to PostgreSQL, and
# to SQLite says "not the table's own order" (ORDER BY id alone makes SQLite walk the
# whole table by id, every reconciler pass).
PARKED_CALLBACKS_SQL = (
    "SELECT id, raw, tries FROM callbacks "
    "WHERE status = 'parked' AND next_try_at <= ? ORDER BY +id LIMIT ?"
)


async def parked_callbacks(db: Database, now: float, limit: int) -> list[Row]:
    """Callbacks to try again: parked because their reference was not known yet."""
    return await db.fetch_all(PARKED_CALLBACKS_SQL, (now, limit))


async def claim_parked_callback(db: Database, callback_id: int, now: float, until: float) -> bool:
    """Claim a due parked callback for this process's retry, by putting its next try off
    to ``until``; False when another process claimed it first (or it is no longer due)."""
    return bool(
        await db.run(
            lambda tx: tx.execute(
                "UPDATE callbacks SET next_try_at = ? "
                "WHERE id = ? AND status = 'parked' AND next_try_at <= ?",
                (until, callback_id, now),
            )
        )
    )


@dataclass(frozen=True)
class StoredCallback:
    """A stored callback's state, without its raw body (the operators' view)."""

    id: int
    status: str
    reference: str
    tries: int
    received_at: float
    next_try_at: float | None


_STORED_COLUMNS = "id, status, reference, tries, received_at, next_try_at"


def _stored(row: Row) -> StoredCallback:
    return StoredCallback(**row)


async def load_callback(db: Database, callback_id: int) -> StoredCallback | None:
    row = await db.fetch_one(
        f"SELECT {_STORED_COLUMNS} FROM callbacks WHERE id = ?", (callback_id,)
    )
    return None if row is None else _stored(row)


async def list_parked_callbacks(
    db: Database, *, reference: str, after_id: int, limit: int
) -> list[StoredCallback]:
    """Parked callbacks in arrival order after ``after_id`` (a page token), optionally only
    those naming ``reference``."""
    where = "status = 'parked' AND id > ?"
    params: list[object] = [after_id]
    if reference:
        where += " AND reference = ?"
        params.append(reference)
    rows = await db.fetch_all(
        f"SELECT {_STORED_COLUMNS} FROM callbacks WHERE {where} ORDER BY id LIMIT ?",
        (*params, limit),
    )
    return [_stored(row) for row in rows]


async def claim_parked_callback_now(
    db: Database, callback_id: int, next_try_at: float, until: float
) -> Row | None:
    """Claim parked callback ``callback_id`` for a retry out of its turn (an operator's),
    as a reconciler pass claims a due one: its next try put off to ``until``, if it is
    still parked with the ``next_try_at`` the operator's read found (else None: a pass
    took it, or it was handled meanwhile). Its raw body and tries, claimed."""
    return await db.run(
        lambda tx: tx.fetch_one(
            "UPDATE callbacks SET next_try_at = ? "
            "WHERE id = ? AND status = 'parked' AND next_try_at = ? RETURNING raw, tries",
            (until, callback_id, next_try_at),
        )
    )


# Stored but never applied (still 'received'): its receiver failed after storing it. From
# their partial index, in arrival order (``+id`` as above).
UNAPPLIED_CALLBACKS_SQL = (
    "SELECT id, raw, tries FROM callbacks WHERE status = 'received' AND received_at <= ? "
    "AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY +id LIMIT ?"
)


async def unapplied_callbacks(
    db: Database, now: float, stored_before: float, limit: int
) -> list[Row]:
    """Callbacks stored before ``stored_before`` and never applied, that no process claimed
    (or whose claim lapsed by ``now``)."""
    return await db.fetch_all(UNAPPLIED_CALLBACKS_SQL, (stored_before, now, limit))


async def claim_unapplied_callback(
    db: Database, callback_id: int, now: float, stored_before: float, until: float
) -> bool:
    """Claim a callback never applied for this process's retry, as a parked one is: its
    next try put off to ``until``; False when another process claimed it first (or it was
    applied meanwhile)."""
    return bool(
        await db.run(
            lambda tx: tx.execute(
                "UPDATE callbacks SET next_try_at = ? WHERE id = ? AND status = 'received' "
                "AND received_at <= ? AND (next_try_at IS NULL OR next_try_at <= ?)",
                (until, callback_id, stored_before, now),
            )
        )
    )


# Unverified callbacks: a bounded sample of them, and the top-ups to confirm with KasPro.


async def keep_unverified_sample(
    db: Database, head: bytes, size: int, reason: str, now: float, keep: int
) -> int:
    """Keep this unverified callback among the newest ``keep``; how many were let go."""

    async def keep_newest(tx: DbTx) -> int:
        row = await tx.fetch_one(
            "INSERT INTO unverified_callbacks (received_at, size, head, reason) "
            "VALUES (?, ?, ?, ?) RETURNING id",
            (now, size, head, reason),
        )
        assert row is not None
        # Ids only grow (only the oldest rows are ever deleted), so the newest are the
        # highest.
        return await tx.execute(
            "DELETE FROM unverified_callbacks WHERE id <= ?", (int(row["id"]) - keep,)
        )

    return await db.run(keep_newest)


async def forget_unverified_samples(db: Database, received_before: float) -> int:
    """Delete the kept unverified callbacks received before ``received_before``."""
    return await db.run(
        lambda tx: tx.execute(
            "DELETE FROM unverified_callbacks WHERE received_at < ?", (received_before,)
        )
    )


@dataclass(frozen=True)
class TopUpCheck:
    """A KasPro requestId named by an unverified top-up callback, to ask KasPro about."""

    reference: str
    channel: str
    va_number: str
    payment_code: str
    tries: int = 0


async def queue_top_up_check(
    db: Database, check: TopUpCheck, now: float, limit: int
) -> Literal["queued", "known", "full"]:
    """Queue ``check`` unless its reference is on record already or ``limit`` are."""

    async def queue(tx: DbTx) -> Literal["queued", "known", "full"]:
        if await tx.fetch_one(
            "SELECT 1 FROM top_up_checks WHERE reference = ?", (check.reference,)
        ):
            return "known"
        count = await tx.fetch_one("SELECT COUNT(*) AS n FROM top_up_checks")
        assert count is not None
        if int(count["n"]) >= limit:
            return "full"
        await tx.execute(
            "INSERT INTO top_up_checks (reference, channel, va_number, payment_code, status, "
            "next_try_at, create_time, update_time) VALUES (?, ?, ?, ?, 'waiting', ?, ?, ?)",
            (check.reference, check.channel, check.va_number, check.payment_code, now, now, now),
        )
        return "queued"

    return await db.run(queue)


async def due_top_up_checks(db: Database, now: float, limit: int) -> list[TopUpCheck]:
    rows = await db.fetch_all(
        "SELECT reference, channel, va_number, payment_code, tries FROM top_up_checks "
        "WHERE status = 'waiting' AND next_try_at <= ? ORDER BY next_try_at, reference LIMIT ?",
        (now, limit),
    )
    return [
        TopUpCheck(
            str(r["reference"]),
            str(r["channel"]),
            str(r["va_number"]),
            str(r["payment_code"]),
            int(r["tries"]),
        )
        for r in rows
    ]


async def claim_top_up_check(db: Database, reference: str, now: float, until: float) -> bool:
    """Claim a due check for this process's KasPro status inquiry, by putting its next try
    off to ``until``; False when another process claimed it first (or it is not due)."""
    return bool(
        await db.run(
            lambda tx: tx.execute(
                "UPDATE top_up_checks SET next_try_at = ? "
                "WHERE reference = ? AND status = 'waiting' AND next_try_at <= ?",
                (until, reference, now),
            )
        )
    )


async def mark_top_up_check(
    db: Database,
    reference: str,
    status: str,
    now: float,
    *,
    detail: str = "",
    next_try_at: float | None = None,
) -> None:
    """Record a check's answer: still ``waiting`` (asked again at ``next_try_at``), or
    settled (``applied``, ``duplicate``, ``rejected``)."""
    await db.run(
        lambda tx: tx.execute(
            "UPDATE top_up_checks SET status = ?, detail = ?, tries = tries + 1, "
            "next_try_at = COALESCE(?, next_try_at), update_time = ? WHERE reference = ?",
            (status, detail, next_try_at, now, reference),
        )
    )


async def forget_top_up_checks(db: Database, settled_before: float) -> int:
    """Forget settled checks last asked before ``settled_before``: their reference may be
    asked about again."""
    return await db.run(
        lambda tx: tx.execute(
            "DELETE FROM top_up_checks WHERE status <> 'waiting' AND update_time < ?",
            (settled_before,),
        )
    )
