"""TransactionService: reading transactions and streaming events."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeAlias, cast

import grpc
from wallet.v1 import common_pb2
from wallet.v1 import transaction_service_pb2 as pb
from wallet.v1 import transaction_service_pb2_grpc as pb_grpc

from wallet_service.api import convert
from wallet_service.api.fields import Fields
from wallet_service.domain.money import TxStatus, TxType
from wallet_service.domain.records import RidePayment, Transaction
from wallet_service.flows.history import Event, History
from wallet_service.flows.onboarding import ACCOUNT_LINKED, KYC_UPGRADED
from wallet_service.flows.operations import Operations
from wallet_service.metrics import Metrics
from wallet_service.store.audit import ADMIN_ACTION, action_from_snapshot

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

_TYPES = {v: k for k, v in convert.TX_TYPES.items()}
_STATUSES = {v: k for k, v in convert.TX_STATUSES.items()}
_ACCOUNT_EVENTS = {
    ACCOUNT_LINKED: common_pb2.EVENT_TYPE_ACCOUNT_LINKED,
    KYC_UPGRADED: common_pb2.EVENT_TYPE_KYC_UPGRADED,
}


class TransactionServicer(pb_grpc.TransactionServiceServicer):
    def __init__(self, operations: Operations, history: History, metrics: Metrics) -> None:
        self._operations = operations
        self._history = history
        self._metrics = metrics

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
        page, more = await self._history.transactions(
            mobile,
            type_=type_,
            status=status,
            before=cursor,
            size=request.page_size or DEFAULT_PAGE_SIZE,
        )
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
        watchers, lag = self._metrics.event_watchers, self._metrics.event_lag
        watchers.inc()
        # Given back by grpc's done callback, which runs however the stream ends (the
        # edge's WatchStreams says why not a finally). (cast: see there.)
        context.add_done_callback(cast(Any, lambda _: watchers.dec()))
        engine = self._operations.engine
        async for event in self._history.events(request.after_sequence):
            yield pb.WatchEventsResponse(event=_event(event))
            # Back here once grpc took the message: it is on its way to the watcher.
            lag.observe(max(engine.now() - event.occurred_at, 0.0))


def _event(event: Event) -> common_pb2.Event:
    message = common_pb2.Event(
        sequence=event.sequence,
        event_id=event.event_id,
        occurred_at=convert.timestamp(event.occurred_at),
    )
    subject = event.subject
    if isinstance(subject, Transaction):
        message.type = common_pb2.EVENT_TYPE_TRANSACTION_UPDATED
        message.transaction.CopyFrom(convert.transaction(subject))
    elif isinstance(subject, RidePayment):
        message.type = common_pb2.EVENT_TYPE_RIDE_PAYMENT_UPDATED
        message.ride_payment.CopyFrom(convert.ride_payment(subject))
    elif event.type in _ACCOUNT_EVENTS:
        message.type = _ACCOUNT_EVENTS[event.type]
        message.account.CopyFrom(convert.account_event(subject))
    elif event.type == ADMIN_ACTION:
        message.type = common_pb2.EVENT_TYPE_ADMIN_ACTION
        message.admin_action.CopyFrom(convert.admin_action(action_from_snapshot(subject)))
    return message


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
