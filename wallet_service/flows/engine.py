"""The money engine: sends KasPro attempts and applies every answer through one function.

Whatever tells us how a KasPro call ended — its own answer, a status inquiry by the
reconciler, or a callback — goes through ``Engine.apply``. It moves the attempt, books
the leg in the ledger, moves the transaction and the ride payment along their tables,
and writes the events, all in one database transaction. A late or repeated signal finds
the attempt already final and changes nothing (MONEY-RULES rules 3-9).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import (
    KASPRO_FEES,
    Line,
    RideStatus,
    TxStatus,
    TxType,
)
from wallet_service.domain.phone import MobileNumber, parse_mobile_number
from wallet_service.domain.records import Attempt, AttemptStatus, RidePayment, Transaction
from wallet_service.flows.backoff import backoff_seconds
from wallet_service.kaspro import (
    KasProClient,
    MoneyReply,
    Outcome,
    Party,
    Rejection,
    StatusReply,
    TransferState,
)
from wallet_service.logs import current_trace_id
from wallet_service.metrics import Metrics
from wallet_service.store.attempts import (
    attempts_of,
    check_attempt_at,
    claim_flight,
    end_flight,
    load_attempt,
    record_send,
    save_attempt,
)
from wallet_service.store.database import Database, Isolation
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.events import append_event, snapshot
from wallet_service.store.ledger import book
from wallet_service.store.rides import move_ride, ride_of_transaction
from wallet_service.store.transactions import (
    load_transaction,
    lock_operation,
    lock_transaction,
    move_transaction,
    set_transaction_fields,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

TRANSACTION_UPDATED = "TRANSACTION_UPDATED"
RIDE_PAYMENT_UPDATED = "RIDE_PAYMENT_UPDATED"

# Legs of the ride payment flows.
HOLD, PAYOUT, FEE, REFUND, VOID = "hold", "payout", "fee", "refund", "void"


class State(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PROCESSING = "processing"  # KasPro: in process; a final status will come
    UNKNOWN = "unknown"  # no usable answer: ask KasPro later
    NOT_FOUND = "not_found"  # KasPro never executed this reference


_REJECTION_REASONS = {
    Rejection.INSUFFICIENT_FUNDS: Reason.INSUFFICIENT_FUNDS,
    Rejection.LIMIT_EXCEEDED: Reason.LIMIT_EXCEEDED,
    Rejection.CUSTOMER_NOT_FOUND: Reason.CUSTOMER_NOT_FOUND,
}


class Applied(enum.Enum):
    """What ``Engine.apply`` did with a signal."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the attempt already ended this way
    IGNORED = "ignored"  # the attempt already ended otherwise, or is frozen
    FROZEN = "frozen"  # the signal contradicts what we asked: frozen for review
    UNKNOWN_REFERENCE = "unknown_reference"


@dataclass(frozen=True)
class Result:
    """How one attempt ended, whoever said so."""

    state: State
    amount_idr: int | None = None
    # The subscriber KasPro says paid, when the signal names one (callbacks do).
    mobile_number: MobileNumber | None = None
    fee_idr: int = 0
    reff_id: str | None = None
    message: str = ""
    reason: Reason | None = None
    withdrawal_code: str | None = None
    merchant_name: str | None = None
    detail: str = ""

    @classmethod
    def of_reply(cls, reply: MoneyReply) -> Result:
        state = {
            Outcome.SUCCEEDED: State.SUCCEEDED,
            Outcome.IN_PROCESS: State.PROCESSING,
            Outcome.REJECTED: State.FAILED,
            Outcome.UNKNOWN: State.UNKNOWN,
        }[reply.outcome]
        reason = None
        if state is State.FAILED:
            assert reply.rejection is not None
            reason = _REJECTION_REASONS.get(reply.rejection, Reason.PROVIDER_REJECTED)
        return cls(
            state=state,
            amount_idr=reply.amount_idr,
            fee_idr=reply.fee_idr,
            reff_id=reply.reff_id,
            message=reply.message,
            reason=reason,
            withdrawal_code=reply.withdrawal_code,
            merchant_name=reply.merchant_name,
            detail=reply.detail,
        )

    @classmethod
    def of_status(cls, status: StatusReply) -> Result:
        state = {
            TransferState.SUCCEEDED: State.SUCCEEDED,
            TransferState.FAILED: State.FAILED,
            TransferState.PENDING: State.PROCESSING,
            TransferState.NOT_FOUND: State.NOT_FOUND,
            TransferState.UNKNOWN: State.UNKNOWN,
        }[status.state]
        return cls(
            state=state,
            amount_idr=status.amount_idr,
            fee_idr=status.fee_idr,
            reff_id=status.reff_id,
            message=status.message,
            reason=(
                _REJECTION_REASONS.get(status.rejection, Reason.PROVIDER_REJECTED)
                if status.rejection is not None
                else Reason.PROVIDER_REJECTED
            )
            if state is State.FAILED
            else None,
            detail=status.detail,
        )


# What a flight claim holds beyond the KasPro call it covers: the reads before the call
# and the apply after it (a few ms; up to LOCK_WAIT_SECONDS, 5 s, behind another
# process's lock on SQLite), and the clocks of replicas that differ by a little.
FLIGHT_MARGIN_SECONDS = 10.0

ANOTHER_CALL = "another replica is calling KasPro about this attempt"
NO_LONGER_OPEN = "the attempt is no longer open"
# What the transition function is told of an outcome an operator states (AdminService).
STATED_BY_OPERATOR = "stated by an operator: KasPro confirmed it"


@dataclass(frozen=True)
class Timing:
    """When the reconciler looks at open attempts."""

    # A saved attempt whose answer never came is asked about after this long (longer
    # than any KasPro call may take, so the inquiry cannot overtake the call).
    unanswered_grace_seconds: float = 30.0
    first_poll_seconds: float = 2.0
    max_poll_seconds: float = 300.0
    # An open attempt of a frozen operation is only asked about, for the record of the
    # person who reviews it, this rarely; it is never sent again.
    frozen_poll_seconds: float = 3600.0

    def backoff(self, checks: int) -> float:
        return backoff_seconds(checks, self.first_poll_seconds, self.max_poll_seconds)

    @property
    def flight_lease_seconds(self) -> float:
        """How long a claim to call KasPro about an attempt holds (see Engine._one_flight),
        from when it was taken or renewed by the record of a send: the call ends within
        ``unanswered_grace_seconds``, longer than any KasPro call may take (config.load
        refuses a WALLET_KASPRO_TIMEOUT_SECONDS that is not below it), and
        FLIGHT_MARGIN_SECONDS covers the database work around it."""
        return self.unanswered_grace_seconds + FLIGHT_MARGIN_SECONDS


def subscriber_party(mobile: MobileNumber) -> str:
    return f"mobile:{mobile.canonical}"


def account_party(account: str) -> str:
    return f"account:{account}"


def _party(text: str) -> Party:
    kind, _, value = text.partition(":")
    return parse_mobile_number(value) if kind == "mobile" else value


@dataclass(frozen=True)
class Resolution:
    """What an operator's statement of a frozen operation's outcome did: the attempts it
    applied the outcome to and those already ended so; or why it was refused (nothing
    changed)."""

    refusal: WalletError | None = None
    applied: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()


class Notes:
    """The log lines a transaction body decided on, and the operations it ended. A body
    may run more than once (on PostgreSQL a conflict runs it again), so it only collects
    them; they are logged and counted from its result, once it committed."""

    def __init__(self) -> None:
        self._lines: list[tuple[int, str, tuple[object, ...]]] = []
        self.ended: list[Transaction] = []

    def add(self, level: int, message: str, *args: object) -> None:
        self._lines.append((level, message, args))

    def emit(self) -> None:
        for level, message, args in self._lines:
            log.log(level, message, *args)


class _Flight:
    """A claim of this process on an attempt's KasPro call, ended by the apply of its answer
    or, failing that, when the call is over."""

    def __init__(self) -> None:
        self.ended = False


class Engine:
    def __init__(
        self,
        db: Database,
        kaspro: KasProClient,
        clock: Clock,
        timing: Timing,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self._kaspro = kaspro
        self._clock = clock
        self.timing = timing
        # An engine of its own (tests) counts into a registry nobody serves.
        self._metrics = metrics or Metrics()
        # The send or inquiry of each attempt running in this process (see _one_flight).
        self._flights: dict[str, asyncio.Future[Result]] = {}

    def now(self) -> float:
        return self._clock()

    def operation_ended(self, transaction: Transaction) -> None:
        """Count an operation that reached its final status; after its commit."""
        self._metrics.operations.labels(transaction.type.value, transaction.status.value).inc()

    def new_attempt(
        self,
        reference: str,
        transaction: Transaction,
        leg: str,
        endpoint: str,
        args: dict[str, Any],
        lines: list[Line],
    ) -> Attempt:
        now = self.now()
        amount = max(line.amount_idr for line in lines)
        return Attempt(
            reference=reference,
            transaction_id=transaction.id,
            leg=leg,
            call={
                "endpoint": endpoint,
                "args": args,
                "lines": [[line.account, line.amount_idr] for line in lines],
            },
            amount_idr=amount,
            status=AttemptStatus.PENDING,
            next_check_at=now + self.timing.unanswered_grace_seconds,
            create_time=now,
            update_time=now,
            # Created claimed by the request creating it: its first send needs no claim.
            flight_holder=self.db.incarnation,
            flight_until=now + self.timing.flight_lease_seconds,
            trace_id=current_trace_id(),
        )

    async def send(self, attempt: Attempt, *, timeout: float | None) -> Result:
        """Send the attempt's call (again, with the same reference) and apply the answer."""
        return await self._one_flight(
            attempt, lambda flight: self._send(attempt, flight, timeout), timeout
        )

    async def inquire(self, attempt: Attempt, *, timeout: float | None) -> Result:
        """Ask KasPro how the attempt ended and apply it; send it again if KasPro never saw it."""
        return await self._one_flight(
            attempt, lambda flight: self._inquire(attempt, flight, timeout), timeout
        )

    async def _one_flight(
        self,
        attempt: Attempt,
        start: Callable[[_Flight], Awaitable[Result]],
        timeout: float | None,
    ) -> Result:
        """Run ``start`` unless a send or inquiry of ``attempt`` is already running here,
        or in another process.

        A second caller here (the reconciler while the request path still waits for
        KasPro, or two inquiries that both hear "not found") waits for the running one and
        shares its result instead of calling KasPro again. The caller that started the
        call owns it (cancelling it cuts the call off, as before); a waiter that gives up,
        or whose call was cut off, gets UNKNOWN and the reconciler asks again later.

        Across processes the attempt's row is the guard: the call is made only under this
        process's flight claim (``store.attempts.claim_flight``); while another process
        holds one, the answer is UNKNOWN without a call. One attempt never has two KasPro
        calls in flight, whichever replicas ask.
        """
        reference = attempt.reference
        flight = self._flights.get(reference)
        if flight is None:
            flight = asyncio.ensure_future(self._claimed(attempt, start))
            self._flights[reference] = flight
            flight.add_done_callback(lambda done: self._landed(reference, done))
            return await flight
        try:
            return await asyncio.wait_for(asyncio.shield(flight), timeout)
        except TimeoutError:
            return Result(State.UNKNOWN, detail="an earlier call of this attempt is running")
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if flight.cancelled() and (current is None or not current.cancelling()):
                return Result(State.UNKNOWN, detail="an earlier call of this attempt was cut off")
            raise

    def _landed(self, reference: str, flight: asyncio.Future[Result]) -> None:
        if self._flights.get(reference) is flight:
            del self._flights[reference]

    async def _claimed(
        self, attempt: Attempt, start: Callable[[_Flight], Awaitable[Result]]
    ) -> Result:
        """``start`` under this process's flight claim on ``attempt``; the claim ends with
        the apply of the answer, or here when there was none (the call raised, was cut
        off, or was not made)."""
        now = self.now()
        created_claimed = (
            attempt.flight_holder == self.db.incarnation
            and attempt.flight_until is not None
            and now < attempt.flight_until
        )
        if not created_claimed and not await claim_flight(
            self.db, attempt.reference, now, now + self.timing.flight_lease_seconds
        ):
            return Result(State.UNKNOWN, detail=ANOTHER_CALL)
        flight = _Flight()
        try:
            return await start(flight)
        finally:
            if not flight.ended:
                try:
                    await self.db.run(
                        lambda tx: end_flight(tx, attempt.reference, self.db.incarnation)
                    )
                except Exception:
                    # Harmless: the claim lapses at its flight_until.
                    log.warning("could not end the flight claim of %s", attempt.reference)

    async def _send(self, attempt: Attempt, flight: _Flight, timeout: float | None) -> Result:
        # Recorded right before the call, whoever sends, first time or again: a leg of an
        # operation frozen meanwhile (an earlier leg's answer, a callback), an attempt
        # already answered, or one whose claim lapsed, is never sent (MONEY-RULES rules 1,
        # 2 and 6); the send's time starts the grace before "not found" may send it again,
        # and the renewed claim outlasts the call (Timing.flight_lease_seconds).
        refused = await record_send(
            self.db,
            attempt.reference,
            self.db.incarnation,
            self._clock,
            self.timing.flight_lease_seconds,
        )
        if refused is not None:
            log.warning("attempt %s not sent: %s", attempt.reference, refused)
            return Result(State.UNKNOWN, detail=f"not sent: {refused}")
        reply = await self._dispatch(attempt, timeout)
        result = Result.of_reply(reply)
        await self.apply(attempt.reference, result, flight=flight)
        return result

    async def _inquire(self, attempt: Attempt, flight: _Flight, timeout: float | None) -> Result:
        before = await load_attempt(self.db, attempt.reference)
        if before is None or not before.status.is_open:
            return Result(State.UNKNOWN, detail=NO_LONGER_OPEN)
        status = await self._kaspro.transaction_status(attempt.reference, timeout=timeout)
        result = Result.of_status(status)
        if result.state is State.NOT_FOUND:
            if await self._not_found(before, result):
                # KasPro never executed it: the same step goes again, same reference.
                log.info("attempt %s unknown to KasPro: sending it again", attempt.reference)
                self._metrics.kaspro_resends.labels("not_found").inc()
                return await self._send(before, flight, timeout)
            return result
        await self.apply(attempt.reference, result, flight=flight)
        return result

    async def _not_found(self, before: Attempt, result: Result) -> bool:
        """KasPro says it never executed ``before`` (as it stood when we asked): whether
        the same step may be sent again (docs/kaspro.md, "When a step is sent again").

        Only an attempt KasPro never answered (``pending``), unchanged while we asked, of
        an operation that is not frozen, once its last send cannot still be on its way
        (``unanswered_grace_seconds`` after it was made). One KasPro had already accepted
        ("in process") cannot be unknown to it: that contradiction freezes the operation
        rather than risk paying twice. One answered while we asked is left as it is. The
        send again is made under this process's flight claim, which ``_send`` renews with
        its record of the send.
        """

        async def decide(tx: DbTx, notes: Notes) -> bool:
            # Behind the operation's lock, as ``apply``: it may freeze the operation.
            transaction = await lock_operation(tx, before.reference)
            assert transaction is not None
            now = self.now()
            current = await load_attempt(tx, before.reference)
            assert current is not None
            if transaction.frozen:
                await self._note_frozen(tx, notes, current, result, now)
                return False
            if current.status is not before.status:
                return False
            if current.status is AttemptStatus.PENDING:
                sent = current.last_sent_at or current.create_time
                landed = sent + self.timing.unanswered_grace_seconds
                if now < landed:
                    # Asked early (a short backoff, or a callback named it): the last send
                    # may still be on its way to KasPro. Ask again once it cannot be.
                    await save_attempt(
                        tx,
                        replace(
                            current,
                            checks=current.checks + 1,
                            next_check_at=landed,
                            last_detail="not found yet: the last send may still be on its way",
                            update_time=now,
                        ),
                    )
                    return False
                return True  # _send records the send, and renews the claim for it
            if current.status is AttemptStatus.PROCESSING:
                await self._freeze(
                    tx,
                    notes,
                    transaction,
                    now,
                    f"KasPro accepted attempt {current.reference} (in process) but its status "
                    "inquiry does not know it",
                )
                await self._note_frozen(tx, notes, current, result, now)
            return False

        return await self._run(decide, Isolation.READ_COMMITTED)

    async def _run(
        self,
        body: Callable[[DbTx, Notes], Awaitable[T]],
        isolation: Isolation,
    ) -> T:
        """``body`` in one transaction (``Database.run``), then what it noted, logged."""

        async def noted(tx: DbTx) -> tuple[T, Notes]:
            notes = Notes()
            return await body(tx, notes), notes

        outcome, notes = await self.db.run(noted, isolation)
        notes.emit()
        for transaction in notes.ended:
            self.operation_ended(transaction)
        return outcome

    async def _dispatch(self, attempt: Attempt, timeout: float | None) -> MoneyReply:
        args = attempt.call["args"]
        endpoint = attempt.call["endpoint"]
        reference = attempt.reference
        if endpoint == "payment":
            return await self._kaspro.pay_to_merchant(
                reference,
                parse_mobile_number(args["payer"]),
                args["amount"],
                args["reference"],
                args["destination"],
                timeout=timeout,
            )
        if endpoint == "p2p":
            return await self._kaspro.p2p_transfer(
                reference,
                _party(args["source"]),
                _party(args["destination"]),
                args["amount"],
                args.get("note", ""),
                timeout=timeout,
            )
        if endpoint == "bank":
            return await self._kaspro.bank_transfer(
                reference,
                parse_mobile_number(args["mobile"]),
                args["bank_code"],
                args["account_number"],
                args["account_name"],
                args["amount"],
                timeout=timeout,
            )
        if endpoint == "retail":
            return await self._kaspro.retail_withdrawal(
                reference,
                parse_mobile_number(args["mobile"]),
                args["channel"],
                args["amount"],
                timeout=timeout,
            )
        if endpoint == "qris":
            return await self._kaspro.pay_qris(
                reference,
                parse_mobile_number(args["mobile"]),
                args["payload"],
                args["amount"],
                timeout=timeout,
            )
        raise ValueError(f"unknown endpoint {endpoint!r}")

    async def apply(
        self, reference: str, result: Result, *, flight: _Flight | None = None
    ) -> Applied:
        """Apply how attempt ``reference`` ended, and say what that did; the ``flight``
        claim under which the answer came ends in the same transaction.

        It decides on rows it does not write (whether the operation's other legs have
        succeeded), which two replicas answering two legs at once would otherwise both
        read as open. So it locks the operation first, as every transaction changing an
        operation's attempts or row does, and runs at READ COMMITTED behind that lock:
        appliers of one operation take turns, each seeing the turn before, and those of
        different operations never refuse each other (docs/money.md, "Isolation on
        PostgreSQL")."""

        async def decide(tx: DbTx, notes: Notes) -> Applied:
            transaction = await lock_operation(tx, reference)
            if transaction is None:
                return Applied.UNKNOWN_REFERENCE
            applied = await self._decide(tx, notes, transaction, reference, result)
            if flight is not None:
                await end_flight(tx, reference, self.db.incarnation)
            return applied

        applied = await self._run(decide, Isolation.READ_COMMITTED)
        if flight is not None:
            flight.ended = True
        return applied

    async def _decide(
        self, tx: DbTx, notes: Notes, transaction: Transaction, reference: str, result: Result
    ) -> Applied:
        """What ``apply`` does inside its transaction, ``transaction`` locked."""
        attempt = await load_attempt(tx, reference)
        assert attempt is not None  # its operation was found from it
        now = self.now()
        if not attempt.status.is_open:
            if result.state not in (State.SUCCEEDED, State.FAILED):
                return Applied.IGNORED
            if State(attempt.status.value) is result.state:
                return Applied.DUPLICATE
            # Two final answers that disagree: our books follow the first, KasPro's
            # may follow the second. Only a person can tell which is true.
            if transaction.frozen:
                return Applied.IGNORED
            await self._freeze(
                tx,
                notes,
                transaction,
                now,
                f"KasPro said {result.state.value} for attempt {reference} after it had "
                f"{attempt.status.value}",
            )
            return Applied.FROZEN
        if transaction.frozen:
            await self._note_frozen(tx, notes, attempt, result, now)
            return Applied.IGNORED
        mismatch = _mismatch(attempt, result)
        if mismatch:
            await self._freeze(tx, notes, transaction, now, mismatch)
            await self._note_frozen(tx, notes, attempt, result, now)
            return Applied.FROZEN
        await self._apply(tx, notes, attempt, transaction, result, now)
        return Applied.APPLIED

    async def _apply(
        self,
        tx: DbTx,
        notes: Notes,
        attempt: Attempt,
        transaction: Transaction,
        result: Result,
        now: float,
    ) -> None:
        if result.state is State.SUCCEEDED:
            done = replace(
                attempt,
                status=AttemptStatus.SUCCEEDED,
                fee_idr=result.fee_idr,
                kaspro_reff_id=result.reff_id or attempt.kaspro_reff_id,
                update_time=now,
                last_detail="",
            )
            await save_attempt(tx, done)
            await book(tx, transaction.id, attempt.reference, _lines(done), now)
            await self._leg_succeeded(tx, notes, transaction, done, result, now)
        elif result.state is State.FAILED:
            done = replace(
                attempt, status=AttemptStatus.FAILED, update_time=now, last_detail=result.message
            )
            await save_attempt(tx, done)
            await self._leg_failed(tx, notes, transaction, done, result, now)
        else:
            accepted = result.state is State.PROCESSING
            waiting = replace(
                attempt,
                status=AttemptStatus.PROCESSING if accepted else attempt.status,
                # The fee KasPro first accepted it with; the settlement must repeat it.
                fee_idr=(
                    result.fee_idr
                    if accepted and attempt.status is AttemptStatus.PENDING
                    else attempt.fee_idr
                ),
                kaspro_reff_id=result.reff_id or attempt.kaspro_reff_id,
                checks=attempt.checks + 1,
                next_check_at=now + self.timing.backoff(attempt.checks),
                last_detail=result.detail or result.message,
                update_time=now,
            )
            await save_attempt(tx, waiting)
            fields: dict[str, Any] = {}
            if result.withdrawal_code:
                fields["withdrawal_code"] = result.withdrawal_code
            if result.reff_id and transaction.kaspro_reference is None:
                fields["kaspro_reference"] = result.reff_id
            if result.merchant_name:
                fields["details"] = json.dumps(
                    {**transaction.details, "merchant_name": result.merchant_name}
                )
            moved = await move_transaction(tx, transaction.id, TxStatus.PROCESSING, now, **fields)
            if moved is not None:
                await self.event(tx, moved, now)
            elif fields:
                await set_transaction_fields(tx, transaction.id, now, **fields)

    async def _leg_succeeded(
        self,
        tx: DbTx,
        notes: Notes,
        transaction: Transaction,
        attempt: Attempt,
        result: Result,
        now: float,
    ) -> None:
        attempts = await attempts_of(tx, transaction.id)
        if any(a.status is not AttemptStatus.SUCCEEDED for a in attempts):
            return  # other legs still to go
        fields: dict[str, Any] = {"fee_idr": sum(a.fee_idr for a in attempts)}
        if transaction.kaspro_reference is None and attempt.kaspro_reff_id:
            fields["kaspro_reference"] = attempt.kaspro_reff_id
        if result.withdrawal_code:
            fields["withdrawal_code"] = result.withdrawal_code
        if result.merchant_name:
            fields["details"] = json.dumps(
                {**transaction.details, "merchant_name": result.merchant_name}
            )
        moved = await move_transaction(tx, transaction.id, TxStatus.SUCCEEDED, now, **fields)
        if moved is None:
            return
        notes.ended.append(moved)
        await self.event(tx, moved, now)
        ride = await ride_of_transaction(tx, transaction)
        if ride is None:
            return
        target = {
            TxType.RIDE_HOLD: RideStatus.AUTHORIZED,
            TxType.RIDE_CAPTURE: RideStatus.CAPTURED,
            TxType.RIDE_VOID: RideStatus.EXPIRED
            if ride.reason == EXPIRED_REASON
            else RideStatus.VOIDED,
        }.get(transaction.type)
        if target is not None:
            await self._move_ride_noted(tx, notes, ride, target, now)

    async def _leg_failed(
        self,
        tx: DbTx,
        notes: Notes,
        transaction: Transaction,
        attempt: Attempt,
        result: Result,
        now: float,
    ) -> None:
        if transaction.type in (TxType.RIDE_CAPTURE, TxType.RIDE_VOID):
            # Money out of escrow must not fail; if it does, a person has to look.
            await self._freeze(
                tx,
                notes,
                transaction,
                now,
                f"KasPro refused leg {attempt.leg} ({result.message or 'no message'})",
            )
            return
        reason = (result.reason or Reason.PROVIDER_REJECTED).value
        moved = await move_transaction(
            tx,
            transaction.id,
            TxStatus.FAILED,
            now,
            failure_reason=reason,
            failure_message=result.message[:200],
        )
        if moved is None:
            return
        notes.ended.append(moved)
        await self.event(tx, moved, now)
        ride = await ride_of_transaction(tx, transaction)
        if ride is not None and transaction.type is TxType.RIDE_HOLD:
            await self._move_ride_noted(tx, notes, ride, RideStatus.FAILED, now, reason=reason)

    async def _freeze(
        self, tx: DbTx, notes: Notes, transaction: Transaction, now: float, why: str
    ) -> None:
        notes.add(logging.ERROR, "transaction %s frozen for review: %s", transaction.id, why)
        await set_transaction_fields(tx, transaction.id, now, frozen=why[:500])

    async def _note_frozen(
        self, tx: DbTx, notes: Notes, attempt: Attempt, result: Result, now: float
    ) -> None:
        """Keep what KasPro said of an open attempt of a frozen operation, as evidence for
        the review, and ask again only after ``frozen_poll_seconds``; nothing is applied."""
        said = result.state.value
        if result.detail or result.message:
            said += f": {result.detail or result.message}"
        notes.add(
            logging.WARNING,
            "attempt %s of frozen transaction %s: KasPro said %s (nothing applied)",
            attempt.reference,
            attempt.transaction_id,
            said,
        )
        await save_attempt(
            tx,
            replace(
                attempt,
                checks=attempt.checks + 1,
                next_check_at=now + self.timing.frozen_poll_seconds,
                last_detail=f"frozen; KasPro said {said}"[:500],
                update_time=now,
            ),
        )

    async def resolve_frozen(
        self,
        transaction_id: str,
        state: State,
        reference: str,
        record: Callable[[DbTx, Resolution, float], Awaitable[T]],
    ) -> T:
        """Apply the outcome an operator states KasPro confirmed (``state``, SUCCEEDED or
        FAILED) to frozen transaction ``transaction_id``'s attempt ``reference`` (all of
        them when empty), and ``record`` what that did, in one database transaction.

        The outcome goes through ``_apply``, the transition every KasPro answer takes once
        ``_decide`` let it through: the leg is booked, the transaction and its ride payment
        move along their tables, their events are written. Only ``_decide``'s two gates
        are not asked: the operation is frozen (that is what the operator resolves), and
        there is no KasPro answer to compare with what we asked (the operator states the
        call succeeded or failed as asked). The operation is unfrozen first; its other
        open attempts are asked about at once, under the ordinary rules again (a new
        contradiction freezes it again). Refused, changing nothing, when it is not frozen,
        when an attempt already ended otherwise than stated (statuses move forward only),
        or when a leg out of escrow is stated failed (a ride payment has no way back from
        CAPTURING or VOIDING)."""

        async def decide(tx: DbTx, notes: Notes) -> T:
            now = self.now()
            resolution = await self._resolve(tx, notes, transaction_id, state, reference, now)
            return await record(tx, resolution, now)

        return await self._run(decide, Isolation.READ_COMMITTED)

    async def _resolve(
        self,
        tx: DbTx,
        notes: Notes,
        transaction_id: str,
        state: State,
        reference: str,
        now: float,
    ) -> Resolution:
        # Behind the operation's lock, as ``apply``: it changes its attempts and its row.
        transaction = await lock_transaction(tx, transaction_id)
        if transaction is None:
            return Resolution(
                WalletError(Reason.TRANSACTION_NOT_FOUND, "no transaction with this id")
            )
        if not transaction.frozen:
            return Resolution(
                WalletError(Reason.INVALID_STATE, f"transaction {transaction_id} is not frozen")
            )
        attempts = await attempts_of(tx, transaction_id)
        if not attempts:
            return Resolution(
                WalletError(
                    Reason.INVALID_STATE,
                    f"transaction {transaction_id} has no KasPro attempt to resolve",
                )
            )
        targets = [a for a in attempts if a.reference == reference] if reference else attempts
        if not targets:
            return Resolution(
                WalletError(
                    Reason.ATTEMPT_NOT_FOUND,
                    f"transaction {transaction_id} has no attempt {reference}",
                )
            )
        escrow_out = transaction.type in (TxType.RIDE_CAPTURE, TxType.RIDE_VOID)
        failed = [a for a in attempts if a.status is AttemptStatus.FAILED]
        if escrow_out and failed:
            # Whatever is stated of the other legs, the operation could never end: it
            # would leave the freeze for PROCESSING forever, and out of every list.
            return Resolution(
                WalletError(
                    Reason.INVALID_STATE,
                    f"leg {failed[0].leg} of {transaction.type.value} already failed: money "
                    "out of escrow has no way back and the operation cannot complete; make "
                    "the correction with a new operation",
                )
            )
        unsent = [a for a in targets if _never_sent(a)]
        if reference and unsent:
            return Resolution(
                WalletError(
                    Reason.INVALID_STATE,
                    f"attempt {reference} was never sent to KasPro: there is no outcome to "
                    "confirm; resolve the operation without naming it, and its legs not sent "
                    "yet are sent under the ordinary rules once it is unfrozen",
                )
            )
        for attempt in targets:
            if not attempt.status.is_open and State(attempt.status.value) is not state:
                return Resolution(
                    WalletError(
                        Reason.INVALID_STATE,
                        f"attempt {attempt.reference} already {attempt.status.value}, not "
                        f"{state.value}: statuses move forward only; make the correction "
                        "with a new operation",
                    )
                )
            if state is State.FAILED and escrow_out:
                return Resolution(
                    WalletError(
                        Reason.INVALID_STATE,
                        f"leg {attempt.leg} of {transaction.type.value} moves money out of "
                        "escrow and cannot be resolved as failed: the ride payment has no "
                        "way back",
                    )
                )
        # Unfrozen first, so the events the transition writes show the operation as it is.
        await set_transaction_fields(tx, transaction_id, now, frozen="")
        notes.add(
            logging.WARNING,
            "transaction %s unfrozen: an operator stated %s (was frozen: %s)",
            transaction_id,
            state.value,
            transaction.frozen,
        )
        result = Result(
            state,
            message=STATED_BY_OPERATOR,
            reason=Reason.PROVIDER_REJECTED if state is State.FAILED else None,
        )
        applied, confirmed = [], []
        for attempt in targets:
            if not attempt.status.is_open:
                confirmed.append(attempt.reference)
                continue
            if _never_sent(attempt):
                continue  # KasPro cannot have confirmed it: sent under the ordinary rules
            current = await load_transaction(tx, transaction_id)
            assert current is not None
            await self._apply(
                tx, notes, attempt, current, replace(result, fee_idr=attempt.fee_idr), now
            )
            applied.append(attempt.reference)
        for attempt in attempts:
            if attempt.status.is_open and attempt.reference not in applied:
                await check_attempt_at(tx, attempt.reference, now)
        return Resolution(applied=tuple(applied), confirmed=tuple(confirmed))

    async def move_ride(
        self, tx: DbTx, ride: RidePayment, to: RideStatus, now: float, **fields: Any
    ) -> RidePayment | None:
        """Move ``ride`` to ``to`` with its event; None when its status does not allow it."""
        moved = await move_ride(tx, ride.ride_id, to, now, **fields)
        if moved is None:
            return None
        await append_event(tx, RIDE_PAYMENT_UPDATED, moved.ride_id, snapshot(moved), now)
        return moved

    async def _move_ride_noted(
        self, tx: DbTx, notes: Notes, ride: RidePayment, to: RideStatus, now: float, **fields: Any
    ) -> None:
        if await self.move_ride(tx, ride, to, now, **fields) is None:
            notes.add(
                logging.WARNING,
                "ride %s: %s → %s ignored",
                ride.ride_id,
                ride.status.value,
                to.value,
            )

    async def event(self, tx: DbTx, transaction: Transaction, now: float) -> None:
        await append_event(tx, TRANSACTION_UPDATED, transaction.id, snapshot(transaction), now)


EXPIRED_REASON = "expired: not captured within its lifetime"


def _never_sent(attempt: Attempt) -> bool:
    """An attempt no send of ours ever left for (every send is recorded before the call)."""
    return attempt.status is AttemptStatus.PENDING and attempt.last_sent_at is None


def _mismatch(attempt: Attempt, result: Result) -> str:
    """Why a signal does not match what we asked (rule 6), or "" when it does."""
    if result.amount_idr is not None and result.amount_idr != attempt.amount_idr:
        return (
            f"KasPro reported {result.amount_idr} for attempt {attempt.reference}, "
            f"we asked {attempt.amount_idr}"
        )
    if (
        attempt.status is AttemptStatus.PROCESSING
        and result.state is State.SUCCEEDED
        and result.fee_idr != attempt.fee_idr
    ):
        # KasPro told the fee when it accepted the transfer; the settlement must agree.
        return (
            f"KasPro settled attempt {attempt.reference} with fee {result.fee_idr}, "
            f"it accepted it with fee {attempt.fee_idr}"
        )
    payer = _payer(attempt)
    if result.mobile_number is not None and payer is not None and result.mobile_number != payer:
        return f"KasPro reported another wallet for attempt {attempt.reference}"
    return ""


def _payer(attempt: Attempt) -> MobileNumber | None:
    """The subscriber an attempt takes money from (None for a platform account)."""
    args = attempt.call["args"]
    canonical = args.get("payer") or args.get("mobile")
    if canonical:
        return parse_mobile_number(canonical)
    source = args.get("source", "")
    return (
        parse_mobile_number(source.removeprefix("mobile:"))
        if source.startswith("mobile:")
        else None
    )


def _lines(attempt: Attempt) -> list[Line]:
    lines = [Line(account, amount) for account, amount in attempt.call["lines"]]
    if attempt.fee_idr:
        # KasPro's fee comes out of the paying side on top of the amount.
        payer = next(line for line in lines if line.amount_idr < 0)
        lines = [
            Line(line.account, line.amount_idr - attempt.fee_idr) if line is payer else line
            for line in lines
        ]
        lines.append(Line(KASPRO_FEES, attempt.fee_idr))
    return lines
