"""Rows of money: transactions, attempts, ride payments, ledger lines, events, callbacks
(and what is kept of unverified ones).

Every status change is a conditional UPDATE (``… WHERE status IN (<allowed sources>)``):
a change that would move a status backwards or out of a terminal state changes nothing
and returns False (MONEY-RULES rule 4).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from wallet_service.domain.money import (
    Line,
    RideStatus,
    TxStatus,
    TxType,
    balanced,
    ride_sources,
    tx_sources,
)
from wallet_service.domain.records import Attempt, AttemptStatus, RidePayment, Transaction
from wallet_service.store.database import Database, Row
from wallet_service.store.database import Transaction as DbTx

# Reads work inside a transaction or on their own.
Source = Database | DbTx

# Transactions.

_TX_COLUMNS = (
    "id, type, status, amount_idr, fee_idr, mobile_number, counterparty, ride_id, note, "
    "details, withdrawal_code, kaspro_reference, failure_reason, failure_message, frozen, "
    "create_time, update_time"
)


def _transaction(row: Row) -> Transaction:
    return Transaction(
        id=row["id"],
        type=TxType(row["type"]),
        status=TxStatus(row["status"]),
        amount_idr=row["amount_idr"],
        fee_idr=row["fee_idr"],
        mobile_number=row["mobile_number"],
        counterparty=row["counterparty"],
        ride_id=row["ride_id"],
        note=row["note"],
        details=json.loads(row["details"]),
        withdrawal_code=row["withdrawal_code"],
        kaspro_reference=row["kaspro_reference"],
        failure_reason=row["failure_reason"],
        failure_message=row["failure_message"],
        frozen=row["frozen"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


async def insert_transaction(tx: DbTx, t: Transaction) -> None:
    await tx.execute(
        f"INSERT INTO transactions ({_TX_COLUMNS}) VALUES ({', '.join('?' * 17)})",
        (
            t.id,
            t.type.value,
            t.status.value,
            t.amount_idr,
            t.fee_idr,
            t.mobile_number,
            t.counterparty,
            t.ride_id,
            t.note,
            json.dumps(t.details),
            t.withdrawal_code,
            t.kaspro_reference,
            t.failure_reason,
            t.failure_message,
            t.frozen,
            t.create_time,
            t.update_time,
        ),
    )


async def load_transaction(source: Source, transaction_id: str) -> Transaction | None:
    row = await source.fetch_one(
        f"SELECT {_TX_COLUMNS} FROM transactions WHERE id = ?", (transaction_id,)
    )
    return None if row is None else _transaction(row)


async def move_transaction(
    tx: DbTx, transaction_id: str, to: TxStatus, now: float, **fields: Any
) -> Transaction | None:
    """Move to ``to`` if the table allows it from the current status; the new row or None."""
    sources = tuple(s.value for s in tx_sources(to))
    assignments = "".join(f", {name} = ?" for name in fields)
    changed = await tx.execute(
        f"UPDATE transactions SET status = ?, update_time = ?{assignments} "
        f"WHERE id = ? AND status IN ({', '.join('?' * len(sources))})",
        (to.value, now, *fields.values(), transaction_id, *sources),
    )
    if not changed:
        return None
    return await load_transaction(tx, transaction_id)


async def set_transaction_fields(tx: DbTx, transaction_id: str, now: float, **fields: Any) -> None:
    """Fields that are not the status (e.g. the KasPro reference once known)."""
    assignments = ", ".join(f"{name} = ?" for name in fields)
    await tx.execute(
        f"UPDATE transactions SET {assignments}, update_time = ? WHERE id = ?",
        (*fields.values(), now, transaction_id),
    )


async def list_transactions(
    db: Database,
    mobile_number: str,
    *,
    type_: TxType | None,
    status: TxStatus | None,
    before: tuple[float, str] | None,
    limit: int,
) -> list[Transaction]:
    """A wallet's transactions (as payer or counterparty), newest first, after a cursor."""
    clauses = ["(mobile_number = ? OR counterparty = ?)"]
    params: list[Any] = [mobile_number, mobile_number]
    if type_ is not None:
        clauses.append("type = ?")
        params.append(type_.value)
    if status is not None:
        clauses.append("status = ?")
        params.append(status.value)
    if before is not None:
        clauses.append("(create_time < ? OR (create_time = ? AND id < ?))")
        params += [before[0], before[0], before[1]]
    rows = await db.fetch_all(
        f"SELECT {_TX_COLUMNS} FROM transactions WHERE {' AND '.join(clauses)} "
        "ORDER BY create_time DESC, id DESC LIMIT ?",
        (*params, limit),
    )
    return [_transaction(row) for row in rows]


async def topup_exists(tx: DbTx, kaspro_reference: str) -> Transaction | None:
    row = await tx.fetch_one(
        f"SELECT {_TX_COLUMNS} FROM transactions "
        "WHERE kaspro_reference = ? AND type IN ('TOP_UP', 'DRIVER_DEPOSIT')",
        (kaspro_reference,),
    )
    return None if row is None else _transaction(row)


# Attempts.


def _attempt(row: Row) -> Attempt:
    return Attempt(
        reference=row["reference"],
        transaction_id=row["transaction_id"],
        leg=row["leg"],
        call=json.loads(row["call"]),
        amount_idr=row["amount_idr"],
        status=AttemptStatus(row["status"]),
        kaspro_reff_id=row["kaspro_reff_id"],
        fee_idr=row["fee_idr"],
        checks=row["checks"],
        next_check_at=row["next_check_at"],
        last_detail=row["last_detail"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        last_sent_at=row["last_sent_at"],
    )


_ATTEMPT_COLUMNS = (
    "reference, transaction_id, leg, call, amount_idr, status, kaspro_reff_id, fee_idr, "
    "checks, next_check_at, last_detail, create_time, update_time, last_sent_at"
)


async def insert_attempt(tx: DbTx, a: Attempt) -> None:
    await tx.execute(
        f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES ({', '.join('?' * 14)})",
        (
            a.reference,
            a.transaction_id,
            a.leg,
            json.dumps(a.call),
            a.amount_idr,
            a.status.value,
            a.kaspro_reff_id,
            a.fee_idr,
            a.checks,
            a.next_check_at,
            a.last_detail,
            a.create_time,
            a.update_time,
            a.last_sent_at,
        ),
    )


async def load_attempt(source: Source, reference: str) -> Attempt | None:
    row = await source.fetch_one(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE reference = ?", (reference,)
    )
    return None if row is None else _attempt(row)


async def sendable(source: Source, reference: str) -> str | None:
    """None when attempt ``reference`` may be sent to KasPro now; else why not: only an
    attempt KasPro never answered, of an operation that is not frozen, is sent."""
    row = await source.fetch_one(
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
    return None


async def attempts_of(tx: DbTx, transaction_id: str) -> list[Attempt]:
    rows = await tx.fetch_all(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE transaction_id = ? "
        "ORDER BY create_time, leg",
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
        "UPDATE attempts SET next_check_at = MAX(?, update_time + ?) WHERE reference = ? "
        "AND status IN ('pending', 'processing') AND next_check_at > MAX(?, update_time + ?) "
        "AND NOT EXISTS (SELECT 1 FROM transactions WHERE transactions.id = "
        "attempts.transaction_id AND transactions.frozen != '')",
        (when, gap, reference, when, gap),
    )


async def mark_resent(tx: DbTx, reference: str, now: float) -> None:
    """Record that a pending attempt's step is being sent again now (before the call)."""
    await tx.execute(
        "UPDATE attempts SET last_sent_at = ? WHERE reference = ? AND status = 'pending'",
        (now, reference),
    )


async def due_attempts(db: Database, now: float, limit: int) -> list[Attempt]:
    rows = await db.fetch_all(
        f"SELECT {_ATTEMPT_COLUMNS} FROM attempts "
        "WHERE status IN ('pending', 'processing') AND next_check_at <= ? "
        "ORDER BY next_check_at LIMIT ?",
        (now, limit),
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


async def frozen_count(db: Database) -> int:
    """How many operations are frozen for review (an alert: each needs a person)."""
    row = await db.fetch_one(FROZEN_COUNT_SQL)
    assert row is not None
    return int(row["n"])


# Read from the partial index transactions_frozen alone (migration 0006).
FROZEN_COUNT_SQL = "SELECT COUNT(*) AS n FROM transactions WHERE frozen != ''"


# Ride payments.

_RIDE_COLUMNS = (
    "ride_id, status, passenger, driver, held_amount_idr, final_fare_idr, platform_fee_idr, "
    "driver_payout_idr, refund_idr, expire_time, reason, hold_transaction, "
    "settle_transaction, create_time, update_time"
)


def _ride(row: Row) -> RidePayment:
    return RidePayment(
        ride_id=row["ride_id"],
        status=RideStatus(row["status"]),
        passenger=row["passenger"],
        driver=row["driver"],
        held_amount_idr=row["held_amount_idr"],
        final_fare_idr=row["final_fare_idr"],
        platform_fee_idr=row["platform_fee_idr"],
        driver_payout_idr=row["driver_payout_idr"],
        refund_idr=row["refund_idr"],
        expire_time=row["expire_time"],
        reason=row["reason"],
        hold_transaction=row["hold_transaction"],
        settle_transaction=row["settle_transaction"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def insert_ride(tx: DbTx, r: RidePayment) -> None:
    await tx.execute(
        f"INSERT INTO ride_payments ({_RIDE_COLUMNS}) VALUES ({', '.join('?' * 15)})",
        (
            r.ride_id,
            r.status.value,
            r.passenger,
            r.driver,
            r.held_amount_idr,
            r.final_fare_idr,
            r.platform_fee_idr,
            r.driver_payout_idr,
            r.refund_idr,
            r.expire_time,
            r.reason,
            r.hold_transaction,
            r.settle_transaction,
            r.create_time,
            r.update_time,
        ),
    )


async def load_ride(source: Source, ride_id: str) -> RidePayment | None:
    row = await source.fetch_one(
        f"SELECT {_RIDE_COLUMNS} FROM ride_payments WHERE ride_id = ?", (ride_id,)
    )
    return None if row is None else _ride(row)


# The transaction types that are a ride payment's hold or settlement.
_RIDE_TYPES = frozenset({TxType.RIDE_HOLD, TxType.RIDE_CAPTURE, TxType.RIDE_VOID})


async def ride_of_transaction(tx: DbTx, transaction: Transaction) -> RidePayment | None:
    """The ride payment whose hold or settlement ``transaction`` is, if any.

    Read by the ride's primary key (a transaction names its ride): this runs on every
    answer applied, and a search by the ride's transaction columns would scan the table.
    """
    if transaction.type not in _RIDE_TYPES or not transaction.ride_id:
        return None
    ride = await load_ride(tx, transaction.ride_id)
    if ride is None or transaction.id not in (ride.hold_transaction, ride.settle_transaction):
        return None
    return ride


async def move_ride(
    tx: DbTx, ride_id: str, to: RideStatus, now: float, **fields: Any
) -> RidePayment | None:
    """Move to ``to`` if the table allows it; the new row or None."""
    sources = tuple(s.value for s in ride_sources(to))
    assignments = "".join(f", {name} = ?" for name in fields)
    changed = await tx.execute(
        f"UPDATE ride_payments SET status = ?, update_time = ?{assignments} "
        f"WHERE ride_id = ? AND status IN ({', '.join('?' * len(sources))})",
        (to.value, now, *fields.values(), ride_id, *sources),
    )
    if not changed:
        return None
    return await load_ride(tx, ride_id)


def ride_operation(ride_id: str) -> str:
    """A ride payment as an operation: what its idempotency keys name."""
    return f"ride:{ride_id}"


async def expired_holds(db: Database, now: float, limit: int) -> list[RidePayment]:
    rows = await db.fetch_all(
        f"SELECT {_RIDE_COLUMNS} FROM ride_payments "
        "WHERE status = 'AUTHORIZED' AND expire_time <= ? ORDER BY expire_time LIMIT ?",
        (now, limit),
    )
    return [_ride(row) for row in rows]


# Ledger.


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


async def ledger_balances(db: Database) -> dict[str, int]:
    rows = await db.fetch_all(
        "SELECT account, SUM(amount_idr) AS total FROM ledger_lines GROUP BY account"
    )
    return {row["account"]: int(row["total"]) for row in rows}


async def unbalanced_transactions(db: Database) -> list[str]:
    rows = await db.fetch_all(
        "SELECT transaction_id FROM ledger_lines GROUP BY transaction_id "
        "HAVING SUM(amount_idr) != 0"
    )
    return [row["transaction_id"] for row in rows]


# Read from the index ledger_by_account_volume alone (migration 0004).
VOLUME_SQL = (
    "SELECT COALESCE(SUM(ABS(amount_idr)), 0) AS total FROM ledger_lines "
    "WHERE account = ? AND create_time >= ?"
)


async def volume_since(db: Database, account: str, since: float) -> int:
    """Money moved in and out of ``account`` since ``since`` (for the monthly cap)."""
    row = await db.fetch_one(VOLUME_SQL, (account, since))
    assert row is not None
    return int(row["total"])


# Events (the outbox).


async def append_event(
    tx: DbTx, type_: str, subject_id: str, snapshot: dict[str, Any], now: float
) -> None:
    await tx.execute(
        """INSERT INTO events (event_id, type, subject_id, snapshot, occurred_at)
           VALUES (?, ?, ?, ?, ?)""",
        (uuid.uuid4().hex, type_, subject_id, json.dumps(snapshot, default=str), now),
    )
    tx.wrote_events = True


async def events_after(db: Database, sequence: int, limit: int) -> list[Row]:
    return await db.fetch_all(
        "SELECT sequence, event_id, type, subject_id, snapshot, occurred_at FROM events "
        "WHERE sequence > ? ORDER BY sequence LIMIT ?",
        (sequence, limit),
    )


_FIELD_NAMES = {kind: tuple(f.name for f in fields(kind)) for kind in (Transaction, RidePayment)}


def snapshot(record: Transaction | RidePayment) -> dict[str, Any]:
    """A JSON-able full copy of a record, for an event (serialized at once: the values
    are the record's own, not copies)."""
    data = {name: getattr(record, name) for name in _FIELD_NAMES[type(record)]}
    data["status"] = record.status.value
    if isinstance(record, Transaction):
        data["type"] = record.type.value
    return data


def transaction_from_snapshot(data: dict[str, Any]) -> Transaction:
    values = dict(data)
    values["type"] = TxType(values["type"])
    values["status"] = TxStatus(values["status"])
    return Transaction(**values)


def ride_from_snapshot(data: dict[str, Any]) -> RidePayment:
    values = dict(data)
    values["status"] = RideStatus(values["status"])
    return RidePayment(**values)


# Callbacks.


async def store_callback(
    db: Database, raw: bytes, timestamp: str, signature: str, now: float
) -> int:
    async with db.transaction() as tx:
        await tx.execute(
            """INSERT INTO callbacks (received_at, raw, timestamp, signature, status)
               VALUES (?, ?, ?, ?, 'received')""",
            (now, raw, timestamp, signature),
        )
        row = await tx.fetch_one("SELECT last_insert_rowid() AS id")
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


# In arrival order; the index keeps it to the parked ones (ORDER BY id alone would make
# SQLite walk the whole table by id, every reconciler pass).
PARKED_CALLBACKS_SQL = (
    "SELECT id, raw, tries FROM callbacks INDEXED BY callbacks_parked "
    "WHERE status = 'parked' AND next_try_at <= ? ORDER BY id LIMIT ?"
)


async def parked_callbacks(db: Database, now: float, limit: int) -> list[Row]:
    """Callbacks to try again: parked because their reference was not known yet."""
    return await db.fetch_all(
        PARKED_CALLBACKS_SQL,
        (now, limit),
    )


# Unverified callbacks: a bounded sample of them, and the top-ups to confirm with KasPro.


async def keep_unverified_sample(
    db: Database, head: bytes, size: int, reason: str, now: float, keep: int
) -> int:
    """Keep this unverified callback among the newest ``keep``; how many were let go."""
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO unverified_callbacks (received_at, size, head, reason) "
            "VALUES (?, ?, ?, ?)",
            (now, size, head, reason),
        )
        row = await tx.fetch_one("SELECT last_insert_rowid() AS id")
        assert row is not None
        # Ids only grow (only the oldest rows are ever deleted), so the newest are the
        # highest.
        return await tx.execute(
            "DELETE FROM unverified_callbacks WHERE id <= ?", (int(row["id"]) - keep,)
        )


async def forget_unverified_samples(db: Database, received_before: float) -> int:
    """Delete the kept unverified callbacks received before ``received_before``."""
    async with db.transaction() as tx:
        return await tx.execute(
            "DELETE FROM unverified_callbacks WHERE received_at < ?", (received_before,)
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
    async with db.transaction() as tx:
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


async def due_top_up_checks(db: Database, now: float, limit: int) -> list[TopUpCheck]:
    rows = await db.fetch_all(
        "SELECT reference, channel, va_number, payment_code, tries FROM top_up_checks "
        "INDEXED BY top_up_checks_due WHERE status = 'waiting' AND next_try_at <= ? "
        "ORDER BY next_try_at LIMIT ?",
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
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE top_up_checks SET status = ?, detail = ?, tries = tries + 1, "
            "next_try_at = COALESCE(?, next_try_at), update_time = ? WHERE reference = ?",
            (status, detail, next_try_at, now, reference),
        )


async def forget_top_up_checks(db: Database, settled_before: float) -> int:
    """Forget settled checks last asked before ``settled_before``: their reference may be
    asked about again."""
    async with db.transaction() as tx:
        return await tx.execute(
            "DELETE FROM top_up_checks WHERE status <> 'waiting' AND update_time < ?",
            (settled_before,),
        )
