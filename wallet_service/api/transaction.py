"""TransactionService: reading transactions and streaming events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from wallet.v1 import common_pb2
from wallet.v1 import transaction_service_pb2 as pb
from wallet.v1 import transaction_service_pb2_grpc as pb_grpc

from wallet_service.api import convert
from wallet_service.api.fields import Fields
from wallet_service.domain.money import TxStatus, TxType
from wallet_service.flows.engine import RIDE_PAYMENT_UPDATED, TRANSACTION_UPDATED
from wallet_service.flows.onboarding import ACCOUNT_LINKED, KYC_UPGRADED
from wallet_service.flows.operations import Operations
from wallet_service.store.database import Database, Row
from wallet_service.store.events import events_after, ride_from_snapshot, transaction_from_snapshot
from wallet_service.store.transactions import list_transactions

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# How long a quiet stream waits before looking again (a safety net: new events wake it).
_IDLE_POLL_SECONDS = 1.0

_TYPES = {v: k for k, v in convert.TX_TYPES.items()}
_STATUSES = {v: k for k, v in convert.TX_STATUSES.items()}


class TransactionServicer(pb_grpc.TransactionServiceServicer):
    def __init__(self, db: Database, operations: Operations) -> None:
        self._db = db
        self._operations = operations

    async def GetTransaction(
        self, request: pb.GetTransactionRequest, context: ServicerContext
    ) -> pb.GetTransactionResponse:
        f = Fields()
        if not request.transaction_id or len(request.transaction_id) > 64:
            f.bad("transaction_id", "transaction_id is required (at most 64 characters)")
        f.done()
        found = await self._operations.transaction(request.transaction_id)
        return pb.GetTransactionResponse(transaction=convert.transaction(found))

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: ServicerContext
    ) -> pb.ListTransactionsResponse:
        f = Fields()
        mobile = f.mobile("mobile_number", request.mobile_number)
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            f.bad("page_size", f"page_size must be 0-{MAX_PAGE_SIZE}")
        type_: TxType | None = None
        if request.type != common_pb2.TRANSACTION_TYPE_UNSPECIFIED:
            type_ = _TYPES.get(request.type)
            if type_ is None:
                f.bad("type", "type is not a known TransactionType")
        status: TxStatus | None = None
        if request.status != common_pb2.TRANSACTION_STATUS_UNSPECIFIED:
            status = _STATUSES.get(request.status)
            if status is None:
                f.bad("status", "status is not a known TransactionStatus")
        scope = _scope(mobile.canonical, type_, status)
        cursor = None
        if request.page_token:
            cursor = _decode_token(request.page_token, scope)
            if cursor is None:
                f.bad("page_token", "page_token was not issued for this request")
        f.done()
        size = request.page_size or DEFAULT_PAGE_SIZE
        found = await list_transactions(
            self._db,
            mobile.canonical,
            type_=type_,
            status=status,
            before=cursor,
            limit=size + 1,
        )
        page, more = found[:size], len(found) > size
        token = _encode_token(page[-1].create_time, page[-1].id, scope) if more else ""
        return pb.ListTransactionsResponse(
            transactions=[convert.transaction(t) for t in page], next_page_token=token
        )

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: ServicerContext
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        f = Fields()
        if request.after_sequence < 0:
            f.bad("after_sequence", "after_sequence must not be negative")
        f.done()
        sequence = request.after_sequence
        while True:
            # Take the signal before reading, so an event committed in between wakes us.
            signal = self._db.events_written
            batch = await events_after(self._db, sequence, 200)
            for row in batch:
                sequence = row["sequence"]
                yield pb.WatchEventsResponse(event=_event(row))
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(signal.wait(), _IDLE_POLL_SECONDS)


def _event(row: Row) -> common_pb2.Event:
    data = json.loads(row["snapshot"])
    event = common_pb2.Event(
        sequence=row["sequence"],
        event_id=row["event_id"],
        occurred_at=convert.timestamp(row["occurred_at"]),
    )
    if row["type"] == TRANSACTION_UPDATED:
        event.type = common_pb2.EVENT_TYPE_TRANSACTION_UPDATED
        event.transaction.CopyFrom(convert.transaction(transaction_from_snapshot(data)))
    elif row["type"] == RIDE_PAYMENT_UPDATED:
        event.type = common_pb2.EVENT_TYPE_RIDE_PAYMENT_UPDATED
        event.ride_payment.CopyFrom(convert.ride_payment(ride_from_snapshot(data)))
    elif row["type"] in (ACCOUNT_LINKED, KYC_UPGRADED):
        event.type = (
            common_pb2.EVENT_TYPE_ACCOUNT_LINKED
            if row["type"] == ACCOUNT_LINKED
            else common_pb2.EVENT_TYPE_KYC_UPGRADED
        )
        event.account.CopyFrom(convert.account_event(data))
    return event


def _scope(mobile: str, type_: TxType | None, status: TxStatus | None) -> str:
    """What a page token belongs to: a token is refused for any other listing."""
    text = f"{mobile}|{type_.value if type_ else ''}|{status.value if status else ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_token(create_time: float, transaction_id: str, scope: str) -> str:
    raw = json.dumps([create_time, transaction_id, scope]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_MAX_TOKEN_CHARS = 256


def _decode_token(token: str, scope: str) -> tuple[float, str] | None:
    if len(token) > _MAX_TOKEN_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        create_time, transaction_id, token_scope = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None
    if token_scope != scope or not isinstance(transaction_id, str):
        return None
    if not isinstance(create_time, int | float):
        return None
    return float(create_time), transaction_id
