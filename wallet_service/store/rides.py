"""Ride payments: a ride's hold in escrow and how it resolved (rule 7).

A status change is a conditional UPDATE, as for transactions (rule 4).
"""

from __future__ import annotations

from typing import Any

from wallet_service.domain.money import RideStatus, TxType, ride_sources
from wallet_service.domain.records import RidePayment, Transaction
from wallet_service.store.database import Database, Row, Source, columns, insert, move
from wallet_service.store.database import Transaction as DbTx

_RIDE_COLUMNS = columns(RidePayment)


def _ride(row: Row) -> RidePayment:
    return RidePayment(**{**row, "status": RideStatus(row["status"])})


async def insert_ride(tx: DbTx, r: RidePayment) -> None:
    await insert(tx, "ride_payments", r)


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
    row = await move(
        tx, "ride_payments", ("ride_id", ride_id), to, ride_sources(to), now, fields, _RIDE_COLUMNS
    )
    return None if row is None else _ride(row)


def ride_operation(ride_id: str) -> str:
    """A ride payment as an operation: what its idempotency keys name."""
    return f"ride:{ride_id}"


async def expired_holds(db: Database, now: float, limit: int) -> list[RidePayment]:
    rows = await db.fetch_all(
        f"SELECT {_RIDE_COLUMNS} FROM ride_payments "
        "WHERE status = 'AUTHORIZED' AND expire_time <= ? ORDER BY expire_time, ride_id LIMIT ?",
        (now, limit),
    )
    return [_ride(row) for row in rows]


# The statuses whose hold is still in escrow, whole or in part (rule 7).
_HOLDING = (RideStatus.AUTHORIZED, RideStatus.CAPTURING, RideStatus.VOIDING)


async def open_holds(source: Source) -> tuple[int, int]:
    """(how many ride payments hold money in escrow, the rupiah they were authorized for)."""
    row = await source.fetch_one(
        "SELECT COUNT(*) AS n, COALESCE(SUM(held_amount_idr), 0) AS idr FROM ride_payments "
        f"WHERE status IN ({', '.join('?' * len(_HOLDING))})",
        [status.value for status in _HOLDING],
    )
    return (0, 0) if row is None else (int(row["n"]), int(row["idr"]))
