"""Reads of what happened: a wallet's transactions page by page, and the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from wallet_service.domain.money import TxStatus, TxType
from wallet_service.domain.phone import MobileNumber
from wallet_service.domain.records import RidePayment, Transaction
from wallet_service.flows.engine import RIDE_PAYMENT_UPDATED, TRANSACTION_UPDATED
from wallet_service.store.database import Database, Row
from wallet_service.store.events import events_after, ride_from_snapshot, transaction_from_snapshot
from wallet_service.store.transactions import list_transactions

EVENTS_PER_READ = 200
# How long a quiet stream waits before looking again (a safety net: new events wake it).
IDLE_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Event:
    """One state change from the outbox; ``subject`` is the transaction or ride payment as
    it became, or an account event's snapshot as written."""

    sequence: int
    event_id: str
    type: str
    occurred_at: float
    subject: Transaction | RidePayment | dict[str, Any]


class History:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def transactions(
        self,
        mobile: MobileNumber,
        *,
        type_: TxType | None,
        status: TxStatus | None,
        before: tuple[float, str] | None,
        size: int,
    ) -> tuple[list[Transaction], bool]:
        """A page of the wallet's transactions, newest first, after the cursor ``before``
        (create_time, id); and whether more follow."""
        found = await list_transactions(
            self._db, mobile.canonical, type_=type_, status=status, before=before, limit=size + 1
        )
        return found[:size], len(found) > size

    async def events(self, after: int) -> AsyncIterator[Event]:
        """Every event after sequence ``after``, in order, then each new one as it is
        committed; it never ends."""
        while True:
            # Take the signal before reading, so an event committed in between wakes us.
            signal = self._db.events_written
            batch = await events_after(self._db, after, EVENTS_PER_READ)
            for row in batch:
                after = row["sequence"]
                yield _event(row)
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(signal.wait(), IDLE_POLL_SECONDS)


def _event(row: Row) -> Event:
    subject = json.loads(row["snapshot"])
    if row["type"] == TRANSACTION_UPDATED:
        subject = transaction_from_snapshot(subject)
    elif row["type"] == RIDE_PAYMENT_UPDATED:
        subject = ride_from_snapshot(subject)
    return Event(row["sequence"], row["event_id"], row["type"], row["occurred_at"], subject)
