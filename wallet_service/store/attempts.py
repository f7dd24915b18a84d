"""Attempts: one KasPro money call each, saved with our reference before it is sent
(rule 2). Only an open attempt (pending, processing) changes.

A KasPro call about an attempt (its send, or a status inquiry) is made by the process
that claimed the attempt's *flight*: ``flight_holder`` (its incarnation) and
``flight_until`` (when the claim lapses). A claim is a compare-and-set, so one process
at a time calls KasPro about an attempt, whatever the isolation level. Each send is
recorded (``last_sent_at``) and the claim renewed by one more, right before the call."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from wallet_service.domain.records import Attempt, AttemptStatus
from wallet_service.store.database import Database, Row, Source, columns, insert
from wallet_service.store.database import Transaction as DbTx

_ATTEMPT_COLUMNS = columns(Attempt)


def _attempt(row: Row) -> Attempt:
    return Attempt(
        **{**row, "call": json.loads(row["call"]), "status": AttemptStatus(row["status"])}
    )


async def insert_attempt(tx: DbTx, a: Attempt) -> None:
    await insert(tx, "attempts", a)


async def load_attempt(source: Source, reference: str) -> Attempt | None:
    row = await source.fetch_one(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE reference = ?", (reference,)
    )
    return None if row is None else _attempt(row)


async def attempt_trace_id(source: Source, reference: str) -> str:
    """The trace id attempt ``reference`` was created under ("" when unknown or none)."""
    row = await source.fetch_one("SELECT trace_id FROM attempts WHERE reference = ?", (reference,))
    return "" if row is None else str(row["trace_id"])


async def record_send(
    db: Database, reference: str, holder: str, clock: Callable[[], float], lease_seconds: float
) -> str | None:
    """Record that attempt ``reference`` is sent to KasPro now, right before the call, and
    renew ``holder``'s flight claim for ``lease_seconds`` from now: None when done; else
    why it must not be sent (nothing written). Only an attempt KasPro never answered, of an
    operation that is not frozen, whose flight ``holder`` has claimed and still holds, is
    sent.

    One compare-and-set, whatever the isolation level, for every send (the first or
    again): ``last_sent_at`` is when the last send went out, which "not found" waits a
    grace after (docs/kaspro.md, "When a step is sent again"), and the claim counts from
    the send, so it cannot lapse while the call is in flight. ``now`` is read in the
    body, which may run again after a conflict: the time recorded is the commit's."""

    def record(tx: DbTx) -> Awaitable[int]:
        now = clock()
        return tx.execute(
            "UPDATE attempts SET last_sent_at = ?, flight_until = ? "
            "WHERE reference = ? AND status = 'pending' AND flight_holder = ? "
            "AND flight_until > ? AND NOT EXISTS (SELECT 1 FROM transactions "
            "WHERE transactions.id = attempts.transaction_id AND transactions.frozen != '')",
            (now, now + lease_seconds, reference, holder, now),
        )

    changed = await db.run(record)
    if changed:
        return None
    # Why not, for the log line only: the decision was the compare-and-set's.
    row = await db.fetch_one(
        "SELECT attempts.status, transactions.frozen FROM attempts "
        "JOIN transactions ON transactions.id = attempts.transaction_id "
        "WHERE attempts.reference = ?",
        (reference,),
    )
    if row is None:
        return "no such attempt"
    if row["frozen"]:
        return "its operation is frozen for review"
    if row["status"] != AttemptStatus.PENDING.value:
        return f"it is already {row['status']}"
    return "its claim to call KasPro lapsed"


async def attempts_of(source: Source, transaction_id: str) -> list[Attempt]:
    rows = await source.fetch_all(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE transaction_id = ? "
        "ORDER BY create_time, leg, reference",
        (transaction_id,),
    )
    return [_attempt(row) for row in rows]


async def has_unanswered_attempt(db: Database, transaction_id: str) -> bool:
    """Whether a KasPro call of this transaction has no usable answer yet."""
    row = await db.fetch_one(
        "SELECT 1 FROM attempts WHERE transaction_id = ? AND status = 'pending' LIMIT 1",
        (transaction_id,),
    )
    return row is not None


async def save_attempt(tx: DbTx, a: Attempt) -> bool:
    """Write an open attempt's new state; False when it was already final."""
    changed = await tx.execute(
        """UPDATE attempts SET status = ?, kaspro_reff_id = ?, fee_idr = ?, checks = ?,
               next_check_at = ?, last_detail = ?, update_time = ?
           WHERE reference = ? AND status IN ('pending', 'processing')""",
        (
            a.status.value,
            a.kaspro_reff_id,
            a.fee_idr,
            a.checks,
            a.next_check_at,
            a.last_detail,
            a.update_time,
            a.reference,
        ),
    )
    return changed > 0


async def check_attempt_at(tx: DbTx, reference: str, when: float, *, gap: float = 0.0) -> None:
    """Have the reconciler ask KasPro about an open attempt at ``when`` if that is sooner
    than planned, but not sooner than ``gap`` seconds after the attempt last changed (its
    last answer or inquiry). An attempt of a frozen operation keeps its slow schedule."""
    await tx.execute(
        "UPDATE attempts SET next_check_at = GREATEST(?, update_time + ?) WHERE reference = ? "
        "AND status IN ('pending', 'processing') "
        "AND next_check_at > GREATEST(?, update_time + ?) "
        "AND NOT EXISTS (SELECT 1 FROM transactions WHERE transactions.id = "
        "attempts.transaction_id AND transactions.frozen != '')",
        (when, gap, reference, when, gap),
    )


def _flight_free(db: Database, now: float) -> tuple[str, tuple[str | float, ...]]:
    """The condition (and its parameters) that no call about an attempt is in flight: no
    claim, or one that lapsed. With one process on the database (SQLite), a claim of
    another incarnation is free too: that process is gone."""
    if db.sole_process:
        return (
            "(flight_until IS NULL OR flight_until <= ? OR flight_holder <> ?)",
            (now, db.incarnation),
        )
    return "(flight_until IS NULL OR flight_until <= ?)", (now,)


async def claim_flight(db: Database, reference: str, now: float, until: float) -> bool:
    """Claim an open attempt's flight for this process until ``until``, before a KasPro
    call about it; False when another process's claim holds it (or it is final)."""
    free, params = _flight_free(db, now)
    return bool(
        await db.run(
            lambda tx: tx.execute(
                "UPDATE attempts SET flight_holder = ?, flight_until = ? "
                f"WHERE reference = ? AND status IN ('pending', 'processing') AND {free}",
                (db.incarnation, until, reference, *params),
            )
        )
    )


async def end_flight(tx: DbTx, reference: str, holder: str) -> None:
    """End ``holder``'s flight claim on an attempt (a claim taken over meanwhile stays)."""
    await tx.execute(
        "UPDATE attempts SET flight_holder = NULL, flight_until = NULL "
        "WHERE reference = ? AND flight_holder = ?",
        (reference, holder),
    )


async def due_attempts(db: Database, now: float, limit: int) -> list[Attempt]:
    """Open attempts due for a status inquiry, but for those another call is about."""
    free, params = _flight_free(db, now)
    rows = await db.fetch_all(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts "
        f"WHERE status IN ('pending', 'processing') AND next_check_at <= ? AND {free} "
        "ORDER BY next_check_at, reference LIMIT ?",
        (now, *params, limit),
    )
    return [_attempt(row) for row in rows]


async def open_attempt_stats(db: Database) -> tuple[int, float | None]:
    """How many attempts are unresolved, and when the oldest was created."""
    row = await db.fetch_one(
        "SELECT COUNT(*) AS n, MIN(create_time) AS oldest FROM attempts "
        "WHERE status IN ('pending', 'processing')"
    )
    assert row is not None
    return int(row["n"]), row["oldest"]


async def list_open_attempts(
    db: Database,
    *,
    status: AttemptStatus | None,
    transaction_id: str,
    after: tuple[float, str] | None,
    limit: int,
) -> list[Attempt]:
    """Open attempts, oldest first, after the cursor ``after`` (create_time, reference);
    only those in ``status`` and of ``transaction_id`` when given (the operators' list)."""
    clauses = ["status IN ('pending', 'processing')"]
    params: list[object] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(status.value)
    if transaction_id:
        clauses.append("transaction_id = ?")
        params.append(transaction_id)
    if after is not None:
        clauses.append("(create_time > ? OR (create_time = ? AND reference > ?))")
        params += [after[0], after[0], after[1]]
    rows = await db.fetch_all(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE {' AND '.join(clauses)} "
        "ORDER BY create_time, reference LIMIT ?",
        (*params, limit),
    )
    return [_attempt(row) for row in rows]
