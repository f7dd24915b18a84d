"""Operators' lists and actions (AdminService): each action idempotent by request_id,
audited done or refused, and acting only through the paths KasPro's own signals take.

An action runs once per idempotency key (``flows/idempotency.py``, as every mutating
RPC). Its audit row (``store/audit.py``) is attached to the key in the transaction that
writes it — the transaction of the action's effect where the effect is ours to write
(acknowledging a drift, resolving a frozen operation) — so a retry of the request
answers from the row, refusal included, and a request decides one row only. An
inquiry's and a callback retry's effects are the engine's and the receiver's own
transactions, as when the reconciler makes them; their row follows them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import TxType
from wallet_service.domain.records import Attempt, AttemptStatus, Transaction
from wallet_service.flows.callbacks import CallbackReceiver
from wallet_service.flows.engine import (
    ANOTHER_CALL,
    NO_LONGER_OPEN,
    Engine,
    Resolution,
    State,
)
from wallet_service.flows.idempotency import Decision, Held, Idempotency, Request
from wallet_service.store.attempts import attempts_of, list_open_attempts, load_attempt
from wallet_service.store.audit import ActionType, AdminAction, Outcome, load_action, record_action
from wallet_service.store.callbacks import StoredCallback, list_parked_callbacks, load_callback
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.drifts import (
    Drift,
    DriftStatus,
    acknowledge_drift,
    list_drifts,
    load_drift,
)
from wallet_service.store.transactions import list_frozen, load_transaction

# The idempotency key of an action names its audit row so.
_KEY_PREFIX = "admin:"
# What the engine answers when KasPro was not asked (another call is about the attempt).
_NOT_ASKED = frozenset({ANOTHER_CALL, NO_LONGER_OPEN})


def attempt_target(reference: str) -> str:
    return f"attempt:{reference}"


def transaction_target(transaction_id: str) -> str:
    return f"transaction:{transaction_id}"


def callback_target(callback_id: int) -> str:
    return f"callback:{callback_id}"


def drift_target(drift_id: int) -> str:
    return f"drift:{drift_id}"


def refusal(action: AdminAction) -> WalletError:
    """The error a refused action answers with, first time and on every retry."""
    return WalletError(
        Reason(action.error_reason), action.detail, metadata={"action_id": str(action.id)}
    )


@dataclass(frozen=True)
class _Asked:
    """One action as asked: the request holding its key, what, on which target, why."""

    held: Held
    kind: ActionType
    target: str
    reason: str

    def done(
        self, now: float, detail: str, result: Mapping[str, object] | None = None
    ) -> AdminAction:
        return self._row(now, Outcome.DONE, detail, result=dict(result or {}))

    def refused(self, now: float, error: WalletError) -> AdminAction:
        return self._row(now, Outcome.REFUSED, error.message, error_reason=error.reason.value)

    def _row(self, now: float, outcome: Outcome, detail: str, **more: Any) -> AdminAction:
        return AdminAction(
            caller=self.held.request.caller,
            action=self.kind,
            target=self.target,
            reason=self.reason,
            request_id=self.held.request.request_id,
            outcome=outcome,
            occurred_at=now,
            detail=detail,
            **more,
        )


class Admin:
    def __init__(
        self, engine: Engine, idempotency: Idempotency, callbacks: CallbackReceiver
    ) -> None:
        self._engine = engine
        self._db = engine.db
        self._idempotency = idempotency
        self._callbacks = callbacks

    # Reads: a page (one more is fetched to tell whether another page follows).

    async def unresolved_attempts(
        self,
        *,
        status: AttemptStatus | None,
        transaction_id: str,
        after: tuple[float, str] | None,
        size: int,
    ) -> tuple[list[Attempt], bool]:
        found = await list_open_attempts(
            self._db, status=status, transaction_id=transaction_id, after=after, limit=size + 1
        )
        return found[:size], len(found) > size

    async def frozen_operations(
        self, *, type_: TxType | None, after: tuple[float, str] | None, size: int
    ) -> tuple[list[tuple[Transaction, list[Attempt]]], bool]:
        found = await list_frozen(self._db, type_=type_, after=after, limit=size + 1)
        page = [(t, await attempts_of(self._db, t.id)) for t in found[:size]]
        return page, len(found) > size

    async def drifts(
        self, *, status: DriftStatus | None, account: str, after_id: int, size: int
    ) -> tuple[list[Drift], bool]:
        found = await list_drifts(
            self._db, status=status, account=account, after_id=after_id, limit=size + 1
        )
        return found[:size], len(found) > size

    async def parked_callbacks(
        self, *, reference: str, after_id: int, size: int
    ) -> tuple[list[StoredCallback], bool]:
        found = await list_parked_callbacks(
            self._db, reference=reference, after_id=after_id, limit=size + 1
        )
        return found[:size], len(found) > size

    async def attempt(self, reference: str) -> Attempt | None:
        return await load_attempt(self._db, reference)

    async def operation(self, transaction_id: str) -> tuple[Transaction, list[Attempt]] | None:
        transaction = await load_transaction(self._db, transaction_id)
        if transaction is None:
            return None
        return transaction, await attempts_of(self._db, transaction_id)

    async def drift(self, drift_id: int) -> Drift | None:
        return await load_drift(self._db, drift_id)

    # Actions.

    async def inquire_attempt(
        self, request: Request, reference: str, reason: str, *, timeout: float | None
    ) -> AdminAction:
        """Ask KasPro about open attempt ``reference`` now, through the reconciler's path
        (``Engine.inquire``: under the attempt's flight claim; while another replica holds
        it, KasPro is not asked and the action says so)."""

        async def work(asked: _Asked) -> int:
            attempt = await load_attempt(self._db, reference)
            if attempt is None:
                return await self._refuse(
                    asked, Reason.ATTEMPT_NOT_FOUND, "no attempt with this reference"
                )
            if not attempt.status.is_open:
                return await self._refuse(
                    asked,
                    Reason.INVALID_STATE,
                    f"attempt {reference} already {attempt.status.value}: nothing to ask",
                )
            result = await self._engine.inquire(attempt, timeout=timeout)
            kaspro_asked = result.detail not in _NOT_ASKED
            said = result.detail or result.message
            after = await load_attempt(self._db, reference)
            assert after is not None
            detail = (
                f"KasPro said {result.state.value}" if kaspro_asked else f"KasPro not asked: {said}"
            ) + f"; the attempt is {after.status.value}"
            found = {
                "asked": kaspro_asked,
                "kaspro_state": result.state.value,
                "kaspro_detail": said[:500],
            }
            return await self._record(asked, lambda now: asked.done(now, detail, found))

        return await self._act(
            request, ActionType.INQUIRE_ATTEMPT, attempt_target(reference), reason, work
        )

    async def resolve_frozen_operation(
        self, request: Request, transaction_id: str, state: State, reference: str, reason: str
    ) -> AdminAction:
        """Apply the outcome KasPro confirmed to a frozen operation (``Engine.resolve_frozen``),
        with its audit row in the same database transaction."""

        async def work(asked: _Asked) -> int:
            async def record(tx: DbTx, resolution: Resolution, now: float) -> int:
                if resolution.refusal is not None:
                    return await self._attach(tx, asked, asked.refused(now, resolution.refusal))
                found = {
                    "outcome": state.value,
                    "applied": list(resolution.applied),
                    "confirmed": list(resolution.confirmed),
                }
                return await self._attach(
                    tx, asked, asked.done(now, _resolved(state, resolution), found)
                )

            return await self._engine.resolve_frozen(transaction_id, state, reference, record)

        return await self._act(
            request,
            ActionType.RESOLVE_FROZEN_OPERATION,
            transaction_target(transaction_id),
            reason,
            work,
        )

    async def retry_parked_callback(
        self, request: Request, callback_id: int, reason: str
    ) -> AdminAction:
        """Handle a parked callback now, as the reconciler's retry would
        (``CallbackReceiver.retry_now``)."""

        async def work(asked: _Asked) -> int:
            row = await load_callback(self._db, callback_id)
            if row is None:
                return await self._refuse(
                    asked, Reason.CALLBACK_NOT_FOUND, "no stored callback with this id"
                )
            verdict = None
            if row.status == "parked" and row.next_try_at is not None:
                verdict = await self._callbacks.retry_now(callback_id, row.next_try_at)
            if verdict is None:
                status = row.status if row.status != "parked" else "taken by a pass"
                return await self._refuse(
                    asked,
                    Reason.INVALID_STATE,
                    f"callback {callback_id} is not parked ({status})",
                )
            return await self._record(
                asked,
                lambda now: asked.done(now, f"handled again: {verdict}", {"verdict": verdict}),
            )

        return await self._act(
            request, ActionType.RETRY_PARKED_CALLBACK, callback_target(callback_id), reason, work
        )

    async def acknowledge_drift(self, request: Request, drift_id: int, reason: str) -> AdminAction:
        """Acknowledge open drift ``drift_id`` (``store.drifts.acknowledge_drift``), with its
        audit row in the same database transaction."""

        async def work(asked: _Asked) -> int:
            async def decide(tx: DbTx) -> int:
                return await self._attach(tx, asked, await acknowledged(tx, asked))

            return await self._db.run(decide)

        async def acknowledged(tx: DbTx, asked: _Asked) -> AdminAction:
            now = self._engine.now()
            drift = await load_drift(tx, drift_id)
            if drift is None:
                return asked.refused(
                    now, WalletError(Reason.DRIFT_NOT_FOUND, "no drift with this id")
                )
            if drift.status is not DriftStatus.OPEN:
                return asked.refused(
                    now,
                    WalletError(
                        Reason.INVALID_STATE, f"drift {drift_id} is {drift.status.value}, not open"
                    ),
                )
            done = await acknowledge_drift(tx, drift_id, asked.held.request.caller, reason, now)
            assert done is not None  # it was open in this transaction
            return asked.done(
                now,
                f"acknowledged: {done.account} ({done.kind.value}), ours {done.ours_idr} IDR, "
                f"theirs {done.theirs_idr} IDR",
            )

        return await self._act(
            request, ActionType.ACKNOWLEDGE_DRIFT, drift_target(drift_id), reason, work
        )

    # The machinery every action shares.

    async def _act(
        self,
        request: Request,
        kind: ActionType,
        target: str,
        reason: str,
        work: Callable[[_Asked], Awaitable[int]],
    ) -> AdminAction:
        """Run ``work`` once per key; the audit row it decided (a refusal is raised, the
        first time as on every retry)."""
        action_id = await self._idempotency.run(
            request,
            lambda held: work(_Asked(held, kind, target, reason)),
            keep=_nothing,
            replay=_action_id,
        )
        action = await load_action(self._db, action_id)
        assert action is not None
        if action.outcome is Outcome.REFUSED:
            raise refusal(action)
        return action

    async def _record(self, asked: _Asked, row: Callable[[float], AdminAction]) -> int:
        """Store the ``row`` of an action decided outside the database (at the time of the
        write) in a transaction of its own, attached to the key there."""
        return await self._db.run(lambda tx: self._attach(tx, asked, row(self._engine.now())))

    async def _attach(self, tx: DbTx, asked: _Asked, action: AdminAction) -> int:
        stored = await record_action(tx, action)
        await self._idempotency.attach(tx, asked.held, f"{_KEY_PREFIX}{stored.id}")
        return stored.id

    async def _refuse(self, asked: _Asked, why: Reason, message: str) -> int:
        """Record a refusal decided before any effect (the target is missing or its state
        does not allow the action)."""
        return await self._record(asked, lambda now: asked.refused(now, WalletError(why, message)))


def _resolved(state: State, resolution: Resolution) -> str:
    parts = [f"stated {state.value}"]
    if resolution.applied:
        parts.append(f"applied to {', '.join(resolution.applied)}")
    if resolution.confirmed:
        parts.append(f"already so: {', '.join(resolution.confirmed)}")
    return "; ".join(parts) + "; no longer frozen"


def _nothing(action_id: int) -> None:
    """An action keeps no answer: the audit row attached to its key is the answer."""


def _action_id(decision: Decision) -> int:
    return int(decision.operation_id.removeprefix(_KEY_PREFIX))
