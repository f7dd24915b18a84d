"""Operators' actions (AdminService): each idempotent by request_id, audited done or
refused, and acting only through the paths KasPro's own signals take.

An action runs once per idempotency key (``flows/idempotency.py``, as every mutating
RPC). Its audit row (``store/audit.py``) is attached to the key in the transaction that
writes it — the transaction of the action's effect where the effect is ours to write
(acknowledging a drift, resolving a frozen operation) — so a retry of the request
answers from the row, refusal included, and a request decides one row only. An
inquiry's and a callback retry's effects are the engine's and the receiver's own
transactions, as when the reconciler makes them; their row follows them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from wallet_service.domain.errors import Reason, WalletError
from wallet_service.flows.callbacks import CallbackReceiver
from wallet_service.flows.engine import (
    ANOTHER_CALL,
    NO_LONGER_OPEN,
    Engine,
    Resolution,
    State,
)
from wallet_service.flows.idempotency import Decision, Held, Idempotency, Request
from wallet_service.store.attempts import load_attempt
from wallet_service.store.audit import ActionType, AdminAction, Outcome, load_action, record_action
from wallet_service.store.callbacks import load_callback
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.drifts import DriftStatus, acknowledge_drift, load_drift

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


class Admin:
    def __init__(
        self, engine: Engine, idempotency: Idempotency, callbacks: CallbackReceiver
    ) -> None:
        self._engine = engine
        self._db = engine.db
        self._idempotency = idempotency
        self._callbacks = callbacks

    async def inquire_attempt(
        self, request: Request, reference: str, reason: str, *, timeout: float | None
    ) -> AdminAction:
        """Ask KasPro about open attempt ``reference`` now, through the reconciler's path
        (``Engine.inquire``: under the attempt's flight claim; while another replica holds
        it, KasPro is not asked and the action says so)."""
        target = attempt_target(reference)

        async def work(held: Held) -> int:
            attempt = await load_attempt(self._db, reference)
            if attempt is None:
                return await self._refuse(
                    held,
                    ActionType.INQUIRE_ATTEMPT,
                    target,
                    reason,
                    Reason.ATTEMPT_NOT_FOUND,
                    "no attempt with this reference",
                )
            if not attempt.status.is_open:
                return await self._refuse(
                    held,
                    ActionType.INQUIRE_ATTEMPT,
                    target,
                    reason,
                    Reason.INVALID_STATE,
                    f"attempt {reference} already {attempt.status.value}: nothing to ask",
                )
            result = await self._engine.inquire(attempt, timeout=timeout)
            asked = result.detail not in _NOT_ASKED
            said = result.detail or result.message
            after = await load_attempt(self._db, reference)
            assert after is not None
            detail = (
                f"KasPro said {result.state.value}" if asked else f"KasPro not asked: {said}"
            ) + f"; the attempt is {after.status.value}"

            async def write(tx: DbTx, now: float) -> AdminAction:
                return self._action(
                    held,
                    ActionType.INQUIRE_ATTEMPT,
                    target,
                    reason,
                    now,
                    detail=detail,
                    result={
                        "asked": asked,
                        "kaspro_state": result.state.value,
                        "kaspro_detail": said[:500],
                    },
                )

            return await self._record(held, write)

        return await self._act(request, work)

    async def resolve_frozen_operation(
        self, request: Request, transaction_id: str, state: State, reference: str, reason: str
    ) -> AdminAction:
        """Apply the outcome KasPro confirmed to a frozen operation (``Engine.resolve_frozen``),
        with its audit row in the same database transaction."""
        target = transaction_target(transaction_id)

        async def work(held: Held) -> int:
            async def record(tx: DbTx, resolution: Resolution, now: float) -> int:
                if resolution.refusal is not None:
                    action = self._refused(
                        held,
                        ActionType.RESOLVE_FROZEN_OPERATION,
                        target,
                        reason,
                        now,
                        resolution.refusal,
                    )
                else:
                    action = self._action(
                        held,
                        ActionType.RESOLVE_FROZEN_OPERATION,
                        target,
                        reason,
                        now,
                        detail=_resolved(state, resolution),
                        result={
                            "outcome": state.value,
                            "applied": list(resolution.applied),
                            "confirmed": list(resolution.confirmed),
                        },
                    )
                return await self._attach(tx, held, action)

            return await self._engine.resolve_frozen(transaction_id, state, reference, record)

        return await self._act(request, work)

    async def retry_parked_callback(
        self, request: Request, callback_id: int, reason: str
    ) -> AdminAction:
        """Handle a parked callback now, as the reconciler's retry would
        (``CallbackReceiver.retry_now``)."""
        target = callback_target(callback_id)

        async def work(held: Held) -> int:
            row = await load_callback(self._db, callback_id)
            if row is None:
                return await self._refuse(
                    held,
                    ActionType.RETRY_PARKED_CALLBACK,
                    target,
                    reason,
                    Reason.CALLBACK_NOT_FOUND,
                    "no stored callback with this id",
                )
            verdict = None
            if row["status"] == "parked":
                verdict = await self._callbacks.retry_now(callback_id, row["next_try_at"])
            if verdict is None:
                status = row["status"] if row["status"] != "parked" else "taken by a pass"
                return await self._refuse(
                    held,
                    ActionType.RETRY_PARKED_CALLBACK,
                    target,
                    reason,
                    Reason.INVALID_STATE,
                    f"callback {callback_id} is not parked ({status})",
                )

            async def write(tx: DbTx, now: float) -> AdminAction:
                return self._action(
                    held,
                    ActionType.RETRY_PARKED_CALLBACK,
                    target,
                    reason,
                    now,
                    detail=f"handled again: {verdict}",
                    result={"verdict": verdict},
                )

            return await self._record(held, write)

        return await self._act(request, work)

    async def acknowledge_drift(self, request: Request, drift_id: int, reason: str) -> AdminAction:
        """Acknowledge open drift ``drift_id`` (``store.drifts.acknowledge_drift``), with its
        audit row in the same database transaction."""
        target = drift_target(drift_id)

        async def work(held: Held) -> int:
            async def write(tx: DbTx, now: float) -> AdminAction:
                drift = await load_drift(tx, drift_id)
                if drift is None:
                    error = WalletError(Reason.DRIFT_NOT_FOUND, "no drift with this id")
                    return self._refused(
                        held, ActionType.ACKNOWLEDGE_DRIFT, target, reason, now, error
                    )
                if drift.status is not DriftStatus.OPEN:
                    error = WalletError(
                        Reason.INVALID_STATE,
                        f"drift {drift_id} is {drift.status.value}, not open",
                    )
                    return self._refused(
                        held, ActionType.ACKNOWLEDGE_DRIFT, target, reason, now, error
                    )
                done = await acknowledge_drift(tx, drift_id, held.request.caller, reason, now)
                assert done is not None  # it was open in this transaction
                return self._action(
                    held,
                    ActionType.ACKNOWLEDGE_DRIFT,
                    target,
                    reason,
                    now,
                    detail=f"acknowledged: {done.account} ({done.kind.value}), ours "
                    f"{done.ours_idr} IDR, theirs {done.theirs_idr} IDR",
                )

            return await self._record(held, write)

        return await self._act(request, work)

    # The machinery every action shares.

    async def _act(self, request: Request, work: Callable[[Held], Awaitable[int]]) -> AdminAction:
        """Run ``work`` once per key; the audit row it decided (a refusal is raised, the
        first time as on every retry)."""
        action_id = await self._idempotency.run(request, work, keep=_nothing, replay=_action_id)
        action = await load_action(self._db, action_id)
        assert action is not None
        if action.outcome is Outcome.REFUSED:
            raise refusal(action)
        return action

    async def _record(
        self, held: Held, write: Callable[[DbTx, float], Awaitable[AdminAction]]
    ) -> int:
        """``write`` decides an action in a database transaction of its own; its row is
        stored and attached to the key there."""

        async def body(tx: DbTx) -> int:
            return await self._attach(tx, held, await write(tx, self._engine.now()))

        return await self._db.run(body)

    async def _attach(self, tx: DbTx, held: Held, action: AdminAction) -> int:
        stored = await record_action(tx, action)
        await self._idempotency.attach(tx, held, f"{_KEY_PREFIX}{stored.id}")
        return stored.id

    async def _refuse(
        self, held: Held, kind: ActionType, target: str, reason: str, why: Reason, message: str
    ) -> int:
        """Record a refusal decided before any effect (the target is missing or its state
        does not allow the action)."""

        async def write(tx: DbTx, now: float) -> AdminAction:
            return self._refused(held, kind, target, reason, now, WalletError(why, message))

        return await self._record(held, write)

    def _action(
        self,
        held: Held,
        kind: ActionType,
        target: str,
        reason: str,
        now: float,
        *,
        detail: str,
        result: dict[str, object] | None = None,
    ) -> AdminAction:
        return AdminAction(
            caller=held.request.caller,
            action=kind,
            target=target,
            reason=reason,
            request_id=held.request.request_id,
            outcome=Outcome.DONE,
            occurred_at=now,
            detail=detail,
            result=result or {},
        )

    def _refused(
        self,
        held: Held,
        kind: ActionType,
        target: str,
        reason: str,
        now: float,
        error: WalletError,
    ) -> AdminAction:
        return AdminAction(
            caller=held.request.caller,
            action=kind,
            target=target,
            reason=reason,
            request_id=held.request.request_id,
            outcome=Outcome.REFUSED,
            occurred_at=now,
            detail=error.message,
            error_reason=error.reason.value,
        )


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
