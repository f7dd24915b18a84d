"""AdminService: operators' lists and audited actions, translated to and from protobuf."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc
from wallet.v1 import admin_service_pb2 as pb
from wallet.v1 import admin_service_pb2_grpc as pb_grpc
from wallet.v1 import common_pb2

from wallet_service.api import convert
from wallet_service.api.account import time_left
from wallet_service.api.fields import Fields
from wallet_service.api.idempotent import keyed
from wallet_service.domain.customer import text_problem
from wallet_service.domain.money import TxType
from wallet_service.domain.records import Attempt, AttemptStatus
from wallet_service.flows.admin import Admin
from wallet_service.flows.engine import State
from wallet_service.store.callbacks import StoredCallback
from wallet_service.store.drifts import Drift, DriftKind, DriftStatus

ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_REASON_CHARS = 500
_MAX_TOKEN_CHARS = 256

ATTEMPT_STATUSES = {
    AttemptStatus.PENDING: pb.ATTEMPT_STATUS_PENDING,
    AttemptStatus.PROCESSING: pb.ATTEMPT_STATUS_PROCESSING,
    AttemptStatus.SUCCEEDED: pb.ATTEMPT_STATUS_SUCCEEDED,
    AttemptStatus.FAILED: pb.ATTEMPT_STATUS_FAILED,
}
DRIFT_KINDS = {DriftKind.BALANCE: pb.DRIFT_KIND_BALANCE, DriftKind.HOLDS: pb.DRIFT_KIND_HOLDS}
DRIFT_STATUSES = {
    DriftStatus.OPEN: pb.DRIFT_STATUS_OPEN,
    DriftStatus.ACKNOWLEDGED: pb.DRIFT_STATUS_ACKNOWLEDGED,
    DriftStatus.CLEARED: pb.DRIFT_STATUS_CLEARED,
}
KASPRO_STATES = {state.value: getattr(pb, f"KASPRO_STATE_{state.name}") for state in State}
OUTCOMES = {
    pb.CONFIRMED_OUTCOME_SUCCEEDED: State.SUCCEEDED,
    pb.CONFIRMED_OUTCOME_FAILED: State.FAILED,
}
_TX_TYPES = {v: k for k, v in convert.TX_TYPES.items()}


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin, clock: Callable[[], float]) -> None:
        self._admin = admin
        self._clock = clock

    # Reads.

    async def ListUnresolvedAttempts(
        self, request: pb.ListUnresolvedAttemptsRequest, context: ServicerContext
    ) -> pb.ListUnresolvedAttemptsResponse:
        f = Fields()
        size = _page_size(f, request.page_size)
        status: AttemptStatus | None = None
        if request.status != pb.ATTEMPT_STATUS_UNSPECIFIED:
            status = {
                pb.ATTEMPT_STATUS_PENDING: AttemptStatus.PENDING,
                pb.ATTEMPT_STATUS_PROCESSING: AttemptStatus.PROCESSING,
            }.get(request.status)
            if status is None:
                f.bad("status", "status must be PENDING or PROCESSING (or unspecified: both)")
        _identifier(f, "transaction_id", request.transaction_id, required=False)
        scope = _scope("attempts", request.status, request.transaction_id)
        after = _cursor(f, request.page_token, scope, (float, str))
        f.done()
        page, more = await self._admin.unresolved_attempts(
            status=status,
            transaction_id=request.transaction_id,
            after=None if after is None else (float(after[0]), str(after[1])),
            size=size,
        )
        token = _token([page[-1].create_time, page[-1].reference], scope) if more else ""
        return pb.ListUnresolvedAttemptsResponse(
            attempts=[self._attempt(a) for a in page], next_page_token=token
        )

    async def ListFrozenOperations(
        self, request: pb.ListFrozenOperationsRequest, context: ServicerContext
    ) -> pb.ListFrozenOperationsResponse:
        f = Fields()
        size = _page_size(f, request.page_size)
        type_: TxType | None = None
        if request.type != common_pb2.TRANSACTION_TYPE_UNSPECIFIED:
            type_ = _TX_TYPES.get(request.type)
            if type_ is None:
                f.bad("type", "type is not a known TransactionType")
        scope = _scope("frozen", request.type)
        after = _cursor(f, request.page_token, scope, (float, str))
        f.done()
        page, more = await self._admin.frozen_operations(
            type_=type_,
            after=None if after is None else (float(after[0]), str(after[1])),
            size=size,
        )
        operations = [
            pb.FrozenOperation(
                transaction=convert.transaction(t),
                frozen_reason=t.frozen,
                attempts=[self._attempt(a) for a in attempts],
            )
            for t, attempts in page
        ]
        token = _token([page[-1][0].create_time, page[-1][0].id], scope) if more else ""
        return pb.ListFrozenOperationsResponse(operations=operations, next_page_token=token)

    async def ListDrifts(
        self, request: pb.ListDriftsRequest, context: ServicerContext
    ) -> pb.ListDriftsResponse:
        f = Fields()
        size = _page_size(f, request.page_size)
        status: DriftStatus | None = None
        if request.status != pb.DRIFT_STATUS_UNSPECIFIED:
            status = {v: k for k, v in DRIFT_STATUSES.items()}.get(request.status)
            if status is None:
                f.bad("status", "status is not a known DriftStatus")
        f.check("account", text_problem(request.account, max_length=100))
        scope = _scope("drifts", request.status, request.account)
        after = _cursor(f, request.page_token, scope, (int,))
        f.done()
        page, more = await self._admin.drifts(
            status=status,
            account=request.account,
            after_id=0 if after is None else int(after[0]),
            size=size,
        )
        token = _token([page[-1].id], scope) if more else ""
        return pb.ListDriftsResponse(drifts=[_drift(d) for d in page], next_page_token=token)

    async def ListParkedCallbacks(
        self, request: pb.ListParkedCallbacksRequest, context: ServicerContext
    ) -> pb.ListParkedCallbacksResponse:
        f = Fields()
        size = _page_size(f, request.page_size)
        _identifier(f, "reference", request.reference, required=False)
        scope = _scope("callbacks", request.reference)
        after = _cursor(f, request.page_token, scope, (int,))
        f.done()
        page, more = await self._admin.parked_callbacks(
            reference=request.reference,
            after_id=0 if after is None else int(after[0]),
            size=size,
        )
        token = _token([page[-1].id], scope) if more else ""
        return pb.ListParkedCallbacksResponse(
            callbacks=[_parked(c) for c in page], next_page_token=token
        )

    # Actions.

    async def InquireAttempt(
        self, request: pb.InquireAttemptRequest, context: ServicerContext
    ) -> pb.InquireAttemptResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        _identifier(f, "reference", request.reference, required=True)
        _reason(f, request.reason)
        f.done()
        action = await self._admin.inquire_attempt(
            keyed("InquireAttempt", request, request_id),
            request.reference,
            request.reason,
            timeout=time_left(context),
        )
        attempt = await self._admin.attempt(request.reference)
        assert attempt is not None
        return pb.InquireAttemptResponse(
            action=convert.admin_action(action),
            kaspro_asked=bool(action.result["asked"]),
            kaspro_state=KASPRO_STATES[action.result["kaspro_state"]],
            kaspro_detail=str(action.result["kaspro_detail"]),
            attempt=self._attempt(attempt),
        )

    async def ResolveFrozenOperation(
        self, request: pb.ResolveFrozenOperationRequest, context: ServicerContext
    ) -> pb.ResolveFrozenOperationResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        _identifier(f, "transaction_id", request.transaction_id, required=True)
        state = OUTCOMES.get(request.outcome)
        if state is None:
            f.bad("outcome", "outcome is required: SUCCEEDED or FAILED, as KasPro confirms it")
        _identifier(f, "reference", request.reference, required=False)
        _reason(f, request.reason)
        f.done()
        assert state is not None
        action = await self._admin.resolve_frozen_operation(
            keyed("ResolveFrozenOperation", request, request_id),
            request.transaction_id,
            state,
            request.reference,
            request.reason,
        )
        operation = await self._admin.operation(request.transaction_id)
        assert operation is not None
        transaction, attempts = operation
        return pb.ResolveFrozenOperationResponse(
            action=convert.admin_action(action),
            transaction=convert.transaction(transaction),
            attempts=[self._attempt(a) for a in attempts],
        )

    async def RetryParkedCallback(
        self, request: pb.RetryParkedCallbackRequest, context: ServicerContext
    ) -> pb.RetryParkedCallbackResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        if request.callback_id <= 0:
            f.bad("callback_id", "callback_id is required: a stored callback's id, 1 or more")
        _reason(f, request.reason)
        f.done()
        action = await self._admin.retry_parked_callback(
            keyed("RetryParkedCallback", request, request_id), request.callback_id, request.reason
        )
        return pb.RetryParkedCallbackResponse(
            action=convert.admin_action(action), verdict=str(action.result["verdict"])
        )

    async def AcknowledgeDrift(
        self, request: pb.AcknowledgeDriftRequest, context: ServicerContext
    ) -> pb.AcknowledgeDriftResponse:
        f = Fields()
        request_id = f.request_id(request.request_id)
        if request.drift_id <= 0:
            f.bad("drift_id", "drift_id is required: a drift's id, 1 or more")
        _reason(f, request.reason)
        f.done()
        action = await self._admin.acknowledge_drift(
            keyed("AcknowledgeDrift", request, request_id), request.drift_id, request.reason
        )
        drift = await self._admin.drift(request.drift_id)
        assert drift is not None
        return pb.AcknowledgeDriftResponse(action=convert.admin_action(action), drift=_drift(drift))

    def _attempt(self, a: Attempt) -> pb.Attempt:
        message = pb.Attempt(
            reference=a.reference,
            transaction_id=a.transaction_id,
            leg=a.leg,
            status=ATTEMPT_STATUSES[a.status],
            amount_idr=a.amount_idr,
            fee_idr=a.fee_idr,
            kaspro_reference=a.kaspro_reff_id or "",
            checks=a.checks,
            last_detail=a.last_detail,
            in_flight=a.flight_until is not None and a.flight_until > self._clock(),
            create_time=convert.timestamp(a.create_time),
            update_time=convert.timestamp(a.update_time),
        )
        if a.status.is_open:
            message.next_check_time.CopyFrom(convert.timestamp(a.next_check_at))
        if a.last_sent_at is not None:
            message.last_sent_time.CopyFrom(convert.timestamp(a.last_sent_at))
        return message


def _drift(d: Drift) -> pb.Drift:
    message = pb.Drift(
        drift_id=d.id,
        account=d.account,
        kind=DRIFT_KINDS[d.kind],
        ours_idr=d.ours_idr,
        theirs_idr=d.theirs_idr,
        difference_idr=d.difference_idr,
        status=DRIFT_STATUSES[d.status],
        detect_time=convert.timestamp(d.detected_at),
        last_seen_time=convert.timestamp(d.last_seen_at),
        closed_by=d.closed_by,
        reason=d.reason,
    )
    if d.closed_at is not None:
        message.close_time.CopyFrom(convert.timestamp(d.closed_at))
    return message


def _parked(callback: StoredCallback) -> pb.ParkedCallback:
    message = pb.ParkedCallback(
        callback_id=callback.id,
        reference=callback.reference,
        receive_time=convert.timestamp(callback.received_at),
        tries=callback.tries,
    )
    if callback.next_try_at is not None:
        message.next_try_time.CopyFrom(convert.timestamp(callback.next_try_at))
    return message


# Validation.


def _reason(f: Fields, text: str) -> None:
    """An action's reason: required, for the audit."""
    if not text.strip():
        f.bad("reason", f"reason is required: 1-{MAX_REASON_CHARS} printable characters")
    else:
        f.check("reason", text_problem(text, max_length=MAX_REASON_CHARS))


def _identifier(f: Fields, field: str, text: str, *, required: bool) -> None:
    """A transaction id or an attempt reference: ASCII, at most 64 characters."""
    if text or required:
        f.ride_id(field, text)  # the request_id rule: [A-Za-z0-9._:-]{1,64}


def _page_size(f: Fields, size: int) -> int:
    if not 0 <= size <= MAX_PAGE_SIZE:
        f.bad("page_size", f"page_size must be 0-{MAX_PAGE_SIZE}")
    return size or DEFAULT_PAGE_SIZE


# Page tokens: opaque to callers; each names the listing (its filters) it was issued for.


def _scope(*filters: object) -> str:
    return hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]


def _token(position: list[Any], scope: str) -> str:
    raw = json.dumps([position, scope]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(f: Fields, token: str, scope: str, shape: tuple[type, ...]) -> list[Any] | None:
    """The position a page token holds (values of the types of ``shape``, a number as
    ``float`` or ``int``); None for the first page (or a bad token, named)."""
    if not token:
        return None
    position = _decode(token, scope, shape)
    if position is None:
        f.bad("page_token", "page_token was not issued for this request")
    return position


def _decode(token: str, scope: str, shape: tuple[type, ...]) -> list[Any] | None:
    if len(token) > _MAX_TOKEN_CHARS:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position, token_scope = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None
    if token_scope != scope or not isinstance(position, list) or len(position) != len(shape):
        return None
    for value, kind in zip(position, shape, strict=True):
        allowed = (int, float) if kind is float else (kind,)
        if isinstance(value, bool) or not isinstance(value, allowed):
            return None
    return position
