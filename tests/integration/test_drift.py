"""The drift check (workers/drift.py), on both engines: a credit KasPro made that the
service never heard of is recorded as a drift with both figures, logged and listed, and
cleared once the books agree; nothing in flight and no late callback makes a false one;
a wallet without new activity is not asked about; two replicas never ask about one
wallet in one pass; escrow is held against the open holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from metric_labels import families, value
from wallet.v1 import admin_service_pb2, admin_service_pb2_grpc, payment_service_pb2

from wallet_service.domain.phone import parse_mobile_number
from wallet_service.kaspro import KasProClient
from wallet_service.store.callbacks import store_callback
from wallet_service.store.database import Database
from wallet_service.store.drift_checks import difference_of
from wallet_service.store.drifts import DriftKind, DriftStatus, list_drifts, open_drifts
from wallet_service.workers.drift import COMMIT_MARGIN_SECONDS, DriftCheck

from .conftest import (
    ADMIN,
    CANONICAL,
    DEADLINE,
    DISPATCH,
    INQUIRY_PATH,
    LOCAL,
    OTHER_LOCAL,
    Harness,
    wait_for,
)
from .helpers import (
    DEV_SECRET,
    SUCCEEDED,
    body,
    callback_url,
    lost_top_up,
    pending_cash_out,
    send,
    sign,
    transfer,
    until_status,
)

ACCOUNT = f"subscriber:{CANONICAL}"
MASKED = "subscriber:0812****7890"
THIRD_LOCAL = "081311112222"
VA = "39358" + LOCAL[1:]
# Past the margin a scan reads again (lines committed late), so that a wallet compared
# after this is not due again for the activity before it.
SETTLED = COMMIT_MARGIN_SECONDS + 1


async def unheard_top_up(h: Harness, amount_idr: int) -> dict[str, Any]:
    """A VA top-up KasPro credits to LOCAL while no callback can reach the service: the
    customer has the money, our books never hear of it (KasPro's answer)."""
    await h.control("POST", "/callback-url", json={"url": None})
    sent: dict[str, Any] = await h.control(
        "POST",
        "/topup",
        json={"mobileNumber": LOCAL, "amount": amount_idr, "channel": "VA", "vaNumber": VA},
    )
    await h.control("POST", "/callback-url", json={"url": callback_url(h)})
    return sent


async def late_callback(h: Harness, sent: dict[str, Any]) -> None:
    """KasPro's callback of that top-up arrives after all; wait until it is booked."""
    await h.resend_callback(sent["requestId"])

    async def booked() -> bool:
        row = await h.running.db.fetch_one(
            "SELECT 1 FROM transactions WHERE kaspro_reference = ?", (sent["reffId"],)
        )
        return row is not None

    await wait_for(booked)


async def ledger_line_count(h: Harness) -> int:
    row = await h.running.db.fetch_one("SELECT COUNT(*) AS n FROM ledger_lines")
    assert row is not None
    return int(row["n"])


async def inquired(h: Harness) -> list[str]:
    """The numbers KasPro was asked the balance of (its log masks them), in order."""
    return sorted(entry["mobileNumber"] for entry in await h.kaspro_requests(INQUIRY_PATH))


def masked(*numbers: str) -> list[str]:
    return sorted(parse_mobile_number(n).masked for n in numbers)


async def test_a_credit_the_service_never_heard_of_is_a_drift_until_the_books_agree(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wallet_service.workers.drift")
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL)
    h.clock.advance(SETTLED)
    first = await h.check_drift()
    assert first.compared == [ACCOUNT]
    assert (first.differences, first.recorded) == ({}, [])

    sent = await unheard_top_up(h, 50_000)
    await send(h, transfer(10_000))  # new activity: the wallet is due again
    h.clock.advance(SETTLED)
    seen = await h.check_drift()
    assert ACCOUNT in seen.compared
    assert seen.differences == {ACCOUNT: (90_000, 140_000)}
    # Seen once: it may be a callback on its way. Not a drift yet.
    assert seen.recorded == []
    assert await open_drifts(h.running.db) == 0

    lines = await ledger_line_count(h)
    h.clock.advance(h.config.drift_confirm_seconds + 1)
    confirmed = await h.check_drift()
    assert confirmed.compared == [ACCOUNT]
    [drift] = confirmed.recorded
    assert (drift.account, drift.kind, drift.status) == (ACCOUNT, DriftKind.BALANCE, "open")
    assert (drift.ours_idr, drift.theirs_idr, drift.difference_idr) == (90_000, 140_000, 50_000)
    assert drift.detected_at == drift.last_seen_at == h.clock.now
    assert await list_drifts(h.running.db) == [drift]
    assert await open_drifts(h.running.db) == 1
    # Exported on /metrics, and listed to operators by the AdminService.
    async with httpx.AsyncClient() as client:
        scraped = await client.get(f"http://127.0.0.1:{h.running.http_port}/metrics")
    assert value(families(scraped.text), "wallet_drifts_open") == 1
    assert h.channel is not None
    listed = await admin_service_pb2_grpc.AdminServiceStub(h.channel).ListDrifts(
        admin_service_pb2.ListDriftsRequest(), metadata=ADMIN, timeout=DEADLINE
    )
    assert [(d.drift_id, d.ours_idr, d.theirs_idr) for d in listed.drifts] == [
        (drift.id, 90_000, 140_000)
    ]
    # Recorded, never "fixed": the check wrote no ledger line.
    assert await ledger_line_count(h) == lines
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "wallet_service.workers.drift"
    ]
    assert len(warnings) == 1
    assert MASKED in warnings[0]
    assert "140000" in warnings[0]
    assert "90000" in warnings[0]
    assert CANONICAL not in warnings[0]
    assert LOCAL not in warnings[0]

    # Seen again while it lasts: the same drift, renewed.
    h.clock.advance(h.config.drift_confirm_seconds + 1)
    again = await h.check_drift()
    assert [d.id for d in again.recorded] == [drift.id]
    assert again.recorded[0].last_seen_at == h.clock.now

    # KasPro's callback reaches us at last: the books agree, the drift is cleared.
    await late_callback(h, sent)
    h.clock.advance(SETTLED)
    cleared = await h.check_drift()
    assert ACCOUNT in cleared.compared
    [gone] = cleared.cleared
    assert (gone.id, gone.status, gone.closed_by) == (drift.id, DriftStatus.CLEARED, "drift check")
    assert await open_drifts(h.running.db) == 0
    assert await list_drifts(h.running.db, status=DriftStatus.CLEARED) == [gone]
    await h.assert_books_agree()


async def test_a_callback_late_by_less_than_the_confirmation_is_no_drift(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL)
    h.clock.advance(SETTLED)
    await h.check_drift()
    sent = await unheard_top_up(h, 50_000)
    await send(h, transfer(10_000))
    h.clock.advance(SETTLED)
    seen = await h.check_drift()
    assert seen.differences == {ACCOUNT: (90_000, 140_000)}
    assert await difference_of(h.running.db, ACCOUNT) is not None

    h.clock.advance(h.config.drift_confirm_seconds / 2)
    await late_callback(h, sent)
    h.clock.advance(h.config.drift_confirm_seconds)
    agreed = await h.check_drift()
    assert agreed.compared == [ACCOUNT]
    assert (agreed.differences, agreed.recorded) == ({}, [])
    assert await difference_of(h.running.db, ACCOUNT) is None
    assert await list_drifts(h.running.db) == []


async def test_no_comparison_while_a_cash_out_is_in_flight(h: Harness) -> None:
    # KasPro took the money at once; our books move when KasPro says it is done.
    cash = await pending_cash_out(h, 50_000)
    assert (await h.kaspro_customer(LOCAL) or {})["balance"] == 150_000
    for _ in range(2):
        report = await h.check_drift()
        assert report.skipped == [ACCOUNT]
        assert (report.compared, report.differences) == ([], {})
        h.clock.advance(h.config.drift_confirm_seconds + 1)
    assert await list_drifts(h.running.db) == []

    await h.complete_at_kaspro(cash.reference)
    await until_status(h, cash.transaction_id, SUCCEEDED)
    done = await h.check_drift()
    assert done.compared == [ACCOUNT]
    assert (done.differences, done.recorded) == ({}, [])


async def test_no_comparison_while_a_stored_callback_is_not_applied(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    # Credited at KasPro, its callback stored here and not applied yet.
    await lost_top_up(h, 40_000)
    await h.control("POST", "/callback-url", json={"url": callback_url(h)})
    for _ in range(2):
        report = await h.check_drift()
        assert (report.skipped, report.differences) == ([ACCOUNT], {})
        h.clock.advance(h.config.drift_confirm_seconds + 1)

    await h.settle(advance_seconds=120)  # the reconciler applies the stored callback
    done = await h.check_drift()
    assert done.compared == [ACCOUNT]
    assert (done.differences, done.recorded) == ({}, [])
    assert await list_drifts(h.running.db) == []


async def test_a_stored_duplicate_of_a_booked_top_up_does_not_hold_the_wallet_back(
    h: Harness,
) -> None:
    """A replica killed between storing a callback and applying it leaves it stored; if
    KasPro's retry was applied elsewhere meanwhile, the stored one can change nothing
    (applied a minute later as a duplicate): the wallet is compared all the same."""
    await h.onboard(LOCAL)
    sent = await h.top_up(LOCAL, 40_000)
    raw = body(
        sent["requestId"],
        sent["reffId"],
        amount="40000",
        type="TOPUP",
        channel="VA",
        vaNumber=VA,
    )
    timestamp = str(int(h.clock()))
    await store_callback(h.running.db, raw, timestamp, sign(DEV_SECRET, timestamp, raw), h.clock())
    h.clock.advance(SETTLED)

    report = await h.check_drift()

    assert report.compared == [ACCOUNT]
    assert (report.skipped, report.differences) == ([], {})


async def test_a_top_up_booked_while_kaspro_is_asked_is_no_difference(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    h.clock.advance(SETTLED)
    await h.control("DELETE", "/requests")
    # KasPro reads the balance as the inquiry arrives, and answers two seconds later.
    await h.arm_fault(INQUIRY_PATH, "latency", delay_seconds=2.0)
    checking = asyncio.create_task(h.check_drift())

    async def asked() -> bool:
        return bool(await h.kaspro_requests(INQUIRY_PATH))

    await wait_for(asked)
    # Credited and booked after KasPro read 100,000: our books say 150,000 by its answer.
    await h.top_up(LOCAL, 50_000)
    report = await checking
    assert (report.skipped, report.compared, report.differences) == ([ACCOUNT], [], {})

    h.clock.advance(SETTLED)
    again = await h.check_drift()
    assert (again.compared, again.differences) == ([ACCOUNT], {})


async def test_a_wallet_without_new_activity_is_not_asked_about(h: Harness) -> None:
    await h.onboard(OTHER_LOCAL, 30_000)
    h.clock.advance(3600)
    await h.onboard(LOCAL, 100_000)
    h.clock.advance(SETTLED)
    # OTHER_LOCAL's books would differ now; but nothing happened to it lately.
    await h.set_balance(OTHER_LOCAL, 999)
    await h.control("DELETE", "/requests")
    report = await h.check_drift()
    assert report.compared == [ACCOUNT]
    assert await inquired(h) == masked(LOCAL)

    h.clock.advance(120)
    await h.control("DELETE", "/requests")
    quiet = await h.check_drift()
    assert (quiet.compared, quiet.skipped) == ([], [])
    assert await inquired(h) == []
    assert await list_drifts(h.running.db) == []

    # Every wallet, as after a chaos run: OTHER_LOCAL's difference is found.
    sweep = await h.check_drift(every_wallet=True)
    assert sorted(sweep.compared) == sorted([ACCOUNT, "subscriber:6285712345678"])
    assert sweep.differences == {"subscriber:6285712345678": (30_000, 999)}


@contextlib.asynccontextmanager
async def another_replica(h: Harness) -> AsyncIterator[DriftCheck]:
    """The drift check as another replica runs it: its own database pool and KasPro
    client, on the service's database."""
    config = h.config
    db = await Database.open(config.database, pool_size=4)
    kaspro = KasProClient(config.kaspro_settings(h.sandbox_url), clock=h.clock)
    try:
        yield DriftCheck.configured(db, kaspro, h.clock, config)
    finally:
        await kaspro.aclose()
        await db.close()


async def test_two_replicas_never_ask_about_one_wallet_in_one_pass(h: Harness) -> None:
    await h.restart(h.with_config(drift_check_batch=2))
    for number in (LOCAL, OTHER_LOCAL, THIRD_LOCAL):
        await h.onboard(number, 10_000, name="Dewi")
    h.clock.advance(SETTLED)
    await h.control("DELETE", "/requests")
    async with another_replica(h) as other:
        mine, theirs = await asyncio.gather(h.check_drift(), other.run_once())
        assert set(mine.compared).isdisjoint(theirs.compared)
        assert len(mine.compared) + len(theirs.compared) == 3
        # Whatever is left (a batch is two) is the next pass's, on either replica.
        rest = await other.run_once()
        assert len(mine.compared + theirs.compared + rest.compared) == 3
        assert await inquired(h) == masked(LOCAL, OTHER_LOCAL, THIRD_LOCAL)
        # Compared and nothing new: neither asks again.
        h.clock.advance(120)
        await asyncio.gather(h.check_drift(), other.run_once())
        assert len(await h.kaspro_requests(INQUIRY_PATH)) == 3
        # Escrow's check ran once for both.
        assert [mine.escrow_checked, theirs.escrow_checked].count(True) == 1


async def test_a_pass_whose_claim_lapsed_writes_nothing(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    h.clock.advance(SETTLED)
    await h.arm_fault(INQUIRY_PATH, "latency", delay_seconds=2.0)
    await h.control("DELETE", "/requests")
    slow = asyncio.create_task(h.check_drift())

    async def asked() -> bool:
        return bool(await h.kaspro_requests(INQUIRY_PATH))

    await wait_for(asked)
    # Its claim lapses while KasPro is slow: another replica takes the wallet over.
    h.clock.advance(3600)
    async with another_replica(h) as other:
        taken = await other.run_once()
    assert taken.compared == [ACCOUNT]
    late = await slow
    assert (late.compared, late.skipped) == ([], [ACCOUNT])
    row = await h.running.db.fetch_one(
        "SELECT checked_at, claimed_by FROM drift_checks WHERE account = ?", (ACCOUNT,)
    )
    assert row is not None
    assert (row["checked_at"], row["claimed_by"]) == (h.clock.now, None)


async def test_escrow_is_held_against_the_open_holds(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL)
    ride = await h.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="auth-1", ride_id="ride-1", passenger_mobile_number=LOCAL, amount_idr=20_000
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    assert ride.ride_payment.held_amount_idr == 20_000
    report = await h.check_drift()
    assert report.escrow_checked
    assert "escrow" not in report.differences
    # The passenger's hold is open: no comparison of that wallet now.
    assert report.skipped == [ACCOUNT]

    # A bug's trace: a hold that says more than escrow took.
    await h.running.db.run(
        lambda tx: tx.execute("UPDATE ride_payments SET held_amount_idr = 25000")
    )
    assert not (await h.check_drift()).escrow_checked  # once per interval
    h.clock.advance(h.config.drift_check_interval_seconds)
    found = await h.check_drift()
    [drift] = found.recorded
    assert (drift.account, drift.kind) == ("escrow", DriftKind.HOLDS)
    assert (drift.ours_idr, drift.theirs_idr) == (20_000, 25_000)

    await h.running.db.run(
        lambda tx: tx.execute("UPDATE ride_payments SET held_amount_idr = 20000")
    )
    h.clock.advance(h.config.drift_check_interval_seconds)
    [cleared] = (await h.check_drift()).cleared
    assert (cleared.id, cleared.status) == (drift.id, DriftStatus.CLEARED)


async def test_every_replica_runs_the_check_by_itself_when_enabled(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    await h.onboard(OTHER_LOCAL)
    await unheard_top_up(h, 50_000)
    await send(h, transfer(10_000))
    await h.restart(
        h.with_config(
            drift_check_enabled=True,
            drift_check_interval_seconds=0.05,
            drift_confirm_seconds=0.0,
        )
    )

    async def recorded() -> bool:
        h.clock.advance(1)  # the service's clock stands still unless moved
        return await open_drifts(h.running.db) == 1

    await wait_for(recorded)
    [drift] = await list_drifts(h.running.db)
    assert (drift.account, drift.ours_idr, drift.theirs_idr) == (ACCOUNT, 90_000, 140_000)
