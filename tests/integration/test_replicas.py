"""Several replicas on one database: the rules that a process once kept in its memory are
kept by the database (docs/money.md, "Several replicas").

Each test runs the service, and builds one or two more replicas beside it: the same
flows, on a Database of their own opened on the same file, with a KasPro client of
their own. ``sole_process`` is off on SQLite too, as on PostgreSQL: a claim of another
incarnation belongs to a live process, not to a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from wallet.v1 import common_pb2, payment_service_pb2

from wallet_service.domain import money
from wallet_service.domain.errors import Reason, WalletError
from wallet_service.domain.money import TxType
from wallet_service.domain.phone import MobileNumber, parse_mobile_number
from wallet_service.domain.records import Attempt
from wallet_service.flows.callbacks import UNAPPLIED_AFTER_SECONDS, CallbackReceiver
from wallet_service.flows.engine import (
    ANOTHER_CALL,
    Engine,
    Result,
    State,
    Timing,
    subscriber_party,
)
from wallet_service.flows.idempotency import LEASE_SECONDS, Idempotency, Request
from wallet_service.flows.onboarding import Onboarding
from wallet_service.flows.operations import Create, Created, Operations, PlatformAccounts
from wallet_service.flows.rides import RidePayments
from wallet_service.flows.top_ups import TopUps
from wallet_service.flows.transfers import Transfers
from wallet_service.kaspro import KasProClient, kaspro_request_id
from wallet_service.metrics import Metrics
from wallet_service.store import idempotency
from wallet_service.store.attempts import claim_flight, load_attempt
from wallet_service.store.callbacks import (
    claim_parked_callback,
    claim_top_up_check,
    claim_unapplied_callback,
)
from wallet_service.store.database import Database
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.sqlite import SqliteDatabase

from .conftest import (
    DEADLINE,
    DISPATCH,
    LOCAL,
    OTHER_LOCAL,
    VALIDATE_OTP_PATH,
    Harness,
    assert_failure,
    expect_failure,
    failure_of,
    wait_for,
)
from .helpers import P2P_PATH, body, lost_top_up, p2p_calls, pending_cash_out, post

STATUS_PATH = "/transaction-status/"
VA = "39358" + LOCAL[1:]
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(autouse=True)
def several_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SqliteDatabase, "sole_process", False)


@dataclass
class Replica:
    """The service's flows as another replica runs them, on the service's database file."""

    db: Database
    engine: Engine
    onboarding: Onboarding
    operations: Operations
    transfers: Transfers
    rides: RidePayments
    callbacks: CallbackReceiver


@contextlib.asynccontextmanager
async def replica(h: Harness) -> AsyncIterator[Replica]:
    config = h.config
    db = await Database.open(h.config.database, pool_size=4)
    kaspro = KasProClient(config.kaspro_settings(h.sandbox_url), clock=h.clock)
    try:
        engine = Engine(
            db, kaspro, h.clock, Timing(unanswered_grace_seconds=config.reconcile_grace_seconds)
        )
        onboarding = Onboarding(db, kaspro, config.otp, h.clock)
        operations = Operations(
            engine,
            onboarding,
            Idempotency(db, h.clock),
            PlatformAccounts(
                escrow=config.kaspro_escrow_account, corporate=config.kaspro_corporate_account
            ),
            config.limits,
        )
        yield Replica(
            db,
            engine,
            onboarding,
            operations,
            Transfers(operations),
            RidePayments(operations),
            CallbackReceiver(engine, TopUps(engine), kaspro, config, h.clock, Metrics()),
        )
    finally:
        await kaspro.aclose()
        await db.close()


# Idempotency keys.


async def test_a_request_whose_key_another_replica_took_over_calls_kaspro_no_more(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    source, target = parse_mobile_number(LOCAL), parse_mobile_number(OTHER_LOCAL)
    request = Request("backend", "Transfer", "transfer-1", b"h" * 32)
    async with replica(h) as a, replica(h) as b:
        paid: list[str] = []

        async def prepare() -> Create:
            # While A makes its checks its lease ends, and the caller's retry reaches B:
            # B takes the key over, and pays.
            h.clock.advance(LEASE_SECONDS + 1)
            t = await b.transfers.transfer(
                request, source, target, 25_000, "makan", timeout=DEADLINE
            )
            paid.append(t.id)
            return lambda tx, now: transfer_of(a, tx, now, source, target)

        answered = await a.operations.run(request, prepare, timeout=DEADLINE)

    # A's creation was refused with its attach: it answers with B's transfer.
    assert answered == paid[0]
    assert len(await p2p_calls(h)) == 1
    rows = await h.running.db.fetch_all("SELECT id FROM transactions WHERE type = 'TRANSFER'")
    assert [row["id"] for row in rows] == paid
    await h.assert_books_agree()


async def test_a_request_whose_key_was_taken_over_mid_way_creates_nothing_and_pays_nothing(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    source, target = parse_mobile_number(LOCAL), parse_mobile_number(OTHER_LOCAL)
    request = Request("backend", "Transfer", "transfer-1", b"h" * 32)
    async with replica(h) as a, replica(h) as b:

        async def prepare() -> Create:
            # A's lease ends during its checks; the retry on B has taken the key and is
            # still running (it created nothing yet).
            h.clock.advance(LEASE_SECONDS + 1)
            taken = await idempotency.claim(
                b.db, request.key, request.request_hash, h.clock(), LEASE_SECONDS
            )
            assert taken.kind is idempotency.ClaimKind.NEW
            return lambda tx, now: transfer_of(a, tx, now, source, target)

        with pytest.raises(WalletError) as refused:
            await a.operations.run(request, prepare, timeout=DEADLINE)

    assert refused.value.reason is Reason.REQUEST_IN_PROGRESS
    assert await p2p_calls(h) == []
    assert await h.running.db.fetch_all("SELECT id FROM transactions WHERE type = 'TRANSFER'") == []


async def transfer_of(
    r: Replica, tx: DbTx, now: float, source: MobileNumber, target: MobileNumber
) -> Created:
    """What a transfer of 25,000 creates, on replica ``r``."""
    t = r.operations.new_transaction(
        TxType.TRANSFER, source, 25_000, now, counterparty=target.canonical
    )
    attempt = r.engine.new_attempt(
        kaspro_request_id("transfer", t.id),
        t,
        "transfer",
        "p2p",
        {
            "source": subscriber_party(source),
            "destination": subscriber_party(target),
            "amount": 25_000,
            "note": "makan",
        },
        money.movement(money.subscriber(source), money.subscriber(target), 25_000),
    )
    return await r.operations.insert(tx, t, [attempt], now)


# One KasPro call per attempt in flight.


async def test_an_attempt_another_replica_is_calling_about_is_left_to_it_until_its_claim_lapses(
    h: Harness,
) -> None:
    c = await pending_cash_out(h)
    inquiries = len(await h.kaspro_requests(STATUS_PATH))
    async with replica(h) as b, replica(h) as other:
        # B claims the attempt's flight, as it does right before its KasPro call.
        now = h.clock()
        assert await claim_flight(
            b.db, c.reference, now, now + b.engine.timing.flight_lease_seconds
        )
        assert not await claim_flight(other.db, c.reference, now, now + 1.0)
        h.clock.advance(10)  # the attempt is due for an inquiry

        # The service's reconciler passes it by; another replica asked to inquire does not.
        assert await h.running.reconciler.run_once() == 0
        attempt = await load_attempt(other.db, c.reference)
        assert attempt is not None
        assert await other.engine.inquire(attempt, timeout=DEADLINE) == Result(
            State.UNKNOWN, detail=ANOTHER_CALL
        )
        assert len(await h.kaspro_requests(STATUS_PATH)) == inquiries

    # B was killed during its call: once its claim lapsed, the service takes it over.
    h.clock.advance(b.engine.timing.flight_lease_seconds)
    assert await h.running.reconciler.run_once() == 1
    assert len(await h.kaspro_requests(STATUS_PATH)) == inquiries + 1
    row = await h.running.db.fetch_one(
        "SELECT status, flight_holder, flight_until FROM attempts WHERE reference = ?",
        (c.reference,),
    )
    assert row is not None
    # Still in process at KasPro; the claim ended with the answer's apply.
    assert tuple(row) == ("processing", None, None)


async def test_a_new_attempt_is_claimed_by_its_request_until_its_answer_is_applied(
    h: Harness,
) -> None:
    c = await pending_cash_out(h)
    row = await h.running.db.fetch_one(
        "SELECT flight_holder, flight_until FROM attempts WHERE reference = ?", (c.reference,)
    )
    assert row is not None
    assert tuple(row) == (None, None)
    async with replica(h) as b:
        assert await claim_flight(b.db, c.reference, h.clock(), h.clock() + 1.0)


async def test_a_leg_sent_late_is_not_sent_again_within_the_grace_after_its_send(
    h: Harness,
) -> None:
    """docs/kaspro.md, "When a step is sent again", rule 4: the last send must be older
    than the grace. A later leg goes out well after its attempt was created; only its
    creation time is on record, so "not found" shortly after its send sends it again."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    source, target = parse_mobile_number(LOCAL), parse_mobile_number(OTHER_LOCAL)
    grace = h.config.reconcile_grace_seconds
    async with replica(h) as a:

        async def create(tx: DbTx) -> list[Attempt]:
            return (await transfer_of(a, tx, h.clock(), source, target))[1]

        [attempt] = await a.db.run(create)
        # The leg goes out 25 s after it was created (the legs before it took that long),
        # and is lost on its way: KasPro never executes it.
        h.clock.advance(grace - 5)
        await h.arm_fault(P2P_PATH, "timeout_before", delay_seconds=0.1)
        assert (await a.engine.send(attempt, timeout=DEADLINE)).state is State.UNKNOWN
    assert len(await p2p_calls(h)) == 1

    # 6 s after the send, the inquiry its UNKNOWN answer scheduled: "not found". The send
    # may still be on its way; the step must wait until the grace after the send is over.
    h.clock.advance(6)
    await h.running.reconciler.run_once()
    assert len(await p2p_calls(h)) == 1


async def test_no_replica_calls_kaspro_about_an_attempt_while_another_replica_sends_it(
    h: Harness,
) -> None:
    """docs/money.md, "Flights": one KasPro call about an attempt at a time, across
    replicas. The claim made at creation is not renewed for the first send, so a send
    that starts late runs past its claim, and another replica's inquiry (and, when
    KasPro says "not found", its resend) goes out beside it."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL, name="Siti")
    source, target = parse_mobile_number(LOCAL), parse_mobile_number(OTHER_LOCAL)
    lease = Timing(unanswered_grace_seconds=h.config.reconcile_grace_seconds).flight_lease_seconds
    async with replica(h) as a:

        async def create(tx: DbTx) -> list[Attempt]:
            return (await transfer_of(a, tx, h.clock(), source, target))[1]

        [attempt] = await a.db.run(create)
        # Replica A sends the leg 39 s after creating it (the legs before it, or a
        # failover's database retries); its call takes 2 s.
        h.clock.advance(lease - 1)
        await h.arm_fault(P2P_PATH, "latency", delay_seconds=2.0)
        sending = asyncio.create_task(a.engine.send(attempt, timeout=DEADLINE))

        async def arrived() -> bool:
            return len(await p2p_calls(h)) == 1

        await wait_for(arrived)
        h.clock.advance(2)  # while A's call is in flight
        before = len(await h.kaspro_requests(STATUS_PATH))
        await h.running.reconciler.run_once()
        meanwhile = len(await h.kaspro_requests(STATUS_PATH)) - before
        await sending
    assert meanwhile == 0, "another replica asked KasPro about the attempt during A's send"


# Workers on every replica.


async def test_a_parked_callback_is_retried_by_one_replica_at_a_time(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    raw = body("NOTOURSYET000001", "OLSFQ20990101000000000")
    assert (await post(h, raw)).status_code == 200
    row = await h.running.db.fetch_one(
        "SELECT id, tries FROM callbacks WHERE reference = 'NOTOURSYET000001'"
    )
    assert row is not None
    callback_id = int(row["id"])
    h.clock.advance(700)  # past any backoff: due

    async with replica(h) as b:
        now = h.clock()
        assert await claim_parked_callback(b.db, callback_id, now, now + 30)
        assert not await claim_parked_callback(b.db, callback_id, now, now + 30)
        await h.running.reconciler.run_once()
        assert await tries(h, callback_id) == 1  # left to B

    h.clock.advance(30)  # B died: its claim lapsed
    await h.running.reconciler.run_once()
    assert await tries(h, callback_id) == 2


async def tries(h: Harness, callback_id: int) -> int:
    row = await h.running.db.fetch_one("SELECT tries FROM callbacks WHERE id = ?", (callback_id,))
    assert row is not None
    return int(row["tries"])


async def test_a_callback_stored_but_never_applied_is_applied_by_one_replica_at_a_time(
    h: Harness,
) -> None:
    await h.onboard(LOCAL)
    sent, callback_id = await lost_top_up(h, 45_000)
    h.clock.advance(UNAPPLIED_AFTER_SECONDS)

    async with replica(h) as b:
        now = h.clock()
        stored_before = now - UNAPPLIED_AFTER_SECONDS
        assert await claim_unapplied_callback(b.db, callback_id, now, stored_before, now + 30)
        assert not await claim_unapplied_callback(b.db, callback_id, now, stored_before, now + 30)
        await h.running.reconciler.run_once()
        assert await tries(h, callback_id) == 0  # left to B
        assert await credited(h, sent["reffId"]) == []

    h.clock.advance(30)  # B died: its claim lapsed. The passes of two replicas meet on it.
    async with replica(h) as c:
        await asyncio.gather(h.running.reconciler.run_once(), c.callbacks.retry_parked())
        await c.callbacks.retry_parked()
    assert await credited(h, sent["reffId"]) == [45_000]
    assert await tries(h, callback_id) == 1  # applied by one of them, once
    await h.assert_books_agree()


async def credited(h: Harness, reff_id: str) -> list[int]:
    rows = await h.running.db.fetch_all(
        "SELECT amount_idr FROM transactions WHERE kaspro_reference = ?", (reff_id,)
    )
    return [int(row["amount_idr"]) for row in rows]


async def test_an_unverified_top_up_is_asked_about_by_one_replica_at_a_time(h: Harness) -> None:
    await h.onboard(LOCAL)
    await h.arm_fault("/_sandbox/topup", "callback_unsigned", times=1)
    sent = await h.control(
        "POST",
        "/topup",
        json={"mobileNumber": LOCAL, "amount": 45_000, "channel": "VA", "vaNumber": VA},
    )
    reference = sent["requestId"]

    async def queued() -> bool:
        row = await h.running.db.fetch_one(
            "SELECT status FROM top_up_checks WHERE reference = ?", (reference,)
        )
        return row is not None and row["status"] == "waiting"

    await wait_for(queued)
    async with replica(h) as b:
        now = h.clock()
        assert await claim_top_up_check(b.db, reference, now, now + 30)
        assert not await claim_top_up_check(b.db, reference, now, now + 30)
        await h.running.reconciler.run_once()
        assert await inquiries_about(h, reference) == 0  # left to B

    h.clock.advance(30)  # B died: its claim lapsed
    await h.running.reconciler.run_once()
    assert await inquiries_about(h, reference) == 1
    credited = await h.running.db.fetch_all(
        "SELECT amount_idr FROM transactions WHERE kaspro_reference = ?", (sent["reffId"],)
    )
    assert [row["amount_idr"] for row in credited] == [45_000]


async def inquiries_about(h: Harness, reference: str) -> int:
    return sum(e["requestId"] == reference for e in await h.kaspro_requests(STATUS_PATH))


async def test_a_hold_past_its_lifetime_is_voided_once_when_replicas_sweep_at_once(
    h: Harness,
) -> None:
    await h.onboard(LOCAL, 100_000)
    authorized = await h.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="auth-1", ride_id="ride-1", passenger_mobile_number=LOCAL, amount_idr=30_000
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    assert authorized.ride_payment.status == common_pb2.RIDE_PAYMENT_STATUS_AUTHORIZED
    h.clock.advance(h.config.limits.hold_lifetime_seconds + 1)

    async with replica(h) as b, replica(h) as c:
        started = await asyncio.gather(b.rides.expire_holds(), c.rides.expire_holds())

    # One replica's move to VOIDING won; the other found the ride moved.
    assert sorted(started) == [0, 1]
    assert len(await p2p_calls(h)) == 1  # the void leg, once
    ride = await h.payments.GetRidePayment(
        payment_service_pb2.GetRidePaymentRequest(ride_id="ride-1"),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    assert ride.ride_payment.status == common_pb2.RIDE_PAYMENT_STATUS_EXPIRED
    await h.assert_books_agree()


# OTP.


async def test_wrong_otps_spread_over_replicas_cannot_exceed_the_attempt_limit(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    mobile = parse_mobile_number(LOCAL)
    guesses = [f"{(int(otp) + i) % 1_000_000:06d}" for i in range(1, 21)]
    async with replica(h) as b:

        async def guess(n: int, code: str) -> str:
            try:
                if n % 2:
                    await b.onboarding.verify_otp(mobile, code, timeout=DEADLINE)
                else:
                    await h.verify_otp(code)
            except WalletError as exc:
                return exc.reason.value
            except grpc.aio.AioRpcError as exc:
                return str(failure_of(exc).reason)
            return "LINKED"

        reasons = await asyncio.gather(*(guess(n, code) for n, code in enumerate(guesses)))
        assert set(reasons) <= {"OTP_INVALID", "OTP_LOCKED"}, reasons
        assert len(await h.kaspro_requests(VALIDATE_OTP_PATH)) <= 5
        with pytest.raises(WalletError) as locked:
            await b.onboarding.verify_otp(mobile, otp, timeout=DEADLINE)
        assert locked.value.reason is Reason.OTP_LOCKED
    assert_failure(await expect_failure(h.verify_otp(otp)), EXHAUSTED, "OTP_LOCKED")


async def test_the_resend_cooldown_holds_on_another_replica(h: Harness) -> None:
    await h.register()
    await h.request_otp()
    async with replica(h) as b:
        with pytest.raises(WalletError) as limited:
            await b.onboarding.request_otp(parse_mobile_number(LOCAL), timeout=DEADLINE)
    assert limited.value.reason is Reason.OTP_RATE_LIMITED
