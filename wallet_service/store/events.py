"""The event outbox (rule 9): one row per state change, a full snapshot of its subject,
written in the same transaction as the change."""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from typing import Any

from wallet_service.domain.money import RideStatus, TxStatus, TxType
from wallet_service.domain.records import RidePayment, Transaction
from wallet_service.store.database import Database, Row
from wallet_service.store.database import Transaction as DbTx


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
