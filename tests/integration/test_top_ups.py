"""Top-ups told by KasPro's callback: recorded once per KasPro reference, whatever the retries.

A VA transfer or a cash payment at an outlet is credited by KasPro (here the sandbox's
``POST /_sandbox/topup``), which calls our receiver back. Each credited top-up becomes one
SUCCEEDED TOP_UP (or DRIVER_DEPOSIT, for a driver prefix) transaction, one balanced ledger
entry from ``external:va``/``external:retail`` to the subscriber, and one event — however
many times the callback is delivered (MONEY-RULES rules 5, 8, 9).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from wallet.v1 import common_pb2, transaction_service_pb2

from wallet_service.flows.callbacks import UNAPPLIED_AFTER_SECONDS

from .conftest import (
    APP,
    CANONICAL,
    DEADLINE,
    E164,
    LOCAL,
    NATIONAL,
    OTHER_LOCAL,
    Harness,
    wait_for,
)
from .helpers import callback_tries, lost_top_up, pending_cash_out, post, until_status

TOP_UP = common_pb2.TRANSACTION_TYPE_TOP_UP
DRIVER_DEPOSIT = common_pb2.TRANSACTION_TYPE_DRIVER_DEPOSIT
SUCCEEDED = common_pb2.TRANSACTION_STATUS_SUCCEEDED
SUBSCRIBER = f"subscriber:{CANONICAL}"
# The schema's migration files, NNNN_name.sql, as the package ships them.
MIGRATIONS = resources.files("wallet_service.store") / "migrations" / "sqlite"


async def top_up_rows(h: Harness, reff_id: str) -> list[dict[str, Any]]:
    rows = await h.running.db.fetch_all(
        "SELECT id, type, status, amount_idr, mobile_number, details FROM transactions "
        "WHERE kaspro_reference = ?",
        (reff_id,),
    )
    return [dict(row) for row in rows]


async def only_top_up(h: Harness, reff_id: str) -> dict[str, Any]:
    found = await top_up_rows(h, reff_id)
    assert len(found) == 1, found
    return found[0]


async def ledger_lines(h: Harness, transaction_id: str) -> list[tuple[str, str, int]]:
    rows = await h.running.db.fetch_all(
        "SELECT reference, account, amount_idr FROM ledger_lines WHERE transaction_id = ? "
        "ORDER BY account",
        (transaction_id,),
    )
    return [(row["reference"], row["account"], row["amount_idr"]) for row in rows]


async def events_of(h: Harness, transaction_id: str) -> list[common_pb2.Event]:
    return [e for e in await h.events() if e.transaction.transaction_id == transaction_id]


async def stored_raw(h: Harness, reff_id: str) -> bytes:
    """The body KasPro sent, byte for byte, as our receiver stored it. The callback's row
    is marked with the reference after the top-up it applied committed (a transaction of
    its own): wait for the mark, not only for the top-up."""
    found: list[bytes] = []

    async def stored() -> bool:
        row = await h.running.db.fetch_one(
            "SELECT raw FROM callbacks WHERE reference = ? ORDER BY id LIMIT 1", (reff_id,)
        )
        if row is not None:
            found.append(bytes(row["raw"]))
        return row is not None

    await wait_for(stored)
    return found[0]


async def assert_recorded_once(
    h: Harness, reff_id: str, type_: int, amount_idr: int, source: str
) -> str:
    """One transaction, one ledger entry (source → subscriber), one event; its id."""
    row = await only_top_up(h, reff_id)
    assert (row["status"], row["amount_idr"], row["mobile_number"]) == (
        "SUCCEEDED",
        amount_idr,
        CANONICAL,
    )
    t = (
        await h.transactions.GetTransaction(
            transaction_service_pb2.GetTransactionRequest(transaction_id=row["id"]),
            metadata=APP,
            timeout=DEADLINE,
        )
    ).transaction
    assert (t.type, t.status, t.amount_idr, t.fee_idr) == (type_, SUCCEEDED, amount_idr, 0)
    assert (t.mobile_number, t.counterparty_mobile_number) == (E164, "")
    assert t.kaspro_reference == reff_id
    assert await ledger_lines(h, row["id"]) == sorted(
        [(f"topup:{reff_id}", source, -amount_idr), (f"topup:{reff_id}", SUBSCRIBER, amount_idr)],
        key=lambda line: line[1],
    )
    events = await events_of(h, row["id"])
    assert len(events) == 1, events
    (event,) = events
    assert event.type == common_pb2.EVENT_TYPE_TRANSACTION_UPDATED
    assert (event.transaction.type, event.transaction.status, event.transaction.amount_idr) == (
        type_,
        SUCCEEDED,
        amount_idr,
    )
    assert event.transaction.kaspro_reference == reff_id
    return str(row["id"])


async def test_a_va_top_up_becomes_one_succeeded_top_up(h: Harness) -> None:
    await h.onboard(LOCAL)

    sent = await h.top_up(LOCAL, 50_000)

    assert sent["vaNumber"] == "39358" + NATIONAL
    await assert_recorded_once(h, sent["reffId"], TOP_UP, 50_000, "external:va")
    row = await only_top_up(h, sent["reffId"])
    assert json.loads(row["details"]) == {"channel": "VA"}
    assert (await h.ledger())[SUBSCRIBER] == 50_000
    assert (await h.sandbox_balances())["subscribers"][LOCAL] == 50_000
    await h.assert_books_agree()
    # The receiver kept the callback and says what it did with it.
    callback = await h.running.db.fetch_one(
        "SELECT status FROM callbacks WHERE reference = ?", (sent["reffId"],)
    )
    assert callback is not None
    assert callback["status"] == "applied"


async def test_the_same_callback_three_times_is_recorded_once(h: Harness) -> None:
    await h.onboard(LOCAL)
    sent = await h.top_up(LOCAL, 75_000)
    transaction_id = await assert_recorded_once(h, sent["reffId"], TOP_UP, 75_000, "external:va")
    raw = await stored_raw(h, sent["reffId"])

    # KasPro's exact bytes again, three times (freshly signed, as KasPro's retries are).
    for _ in range(3):
        response = await post(h, raw)
        assert response.status_code == 200, response.text

    assert await assert_recorded_once(h, sent["reffId"], TOP_UP, 75_000, "external:va") == (
        transaction_id
    )
    received = await h.running.db.fetch_all("SELECT id FROM callbacks WHERE raw = ?", (raw,))
    assert len(received) == 4  # every delivery is stored, one was applied
    assert (await h.ledger())[SUBSCRIBER] == 75_000
    await h.assert_books_agree()


async def test_concurrent_duplicate_callbacks_are_recorded_once(h: Harness) -> None:
    await h.onboard(LOCAL)
    sent = await h.top_up(LOCAL, 60_000)
    raw = await stored_raw(h, sent["reffId"])

    answers = await asyncio.gather(*(post(h, raw) for _ in range(5)))

    assert [a.status_code for a in answers] == [200] * 5
    await assert_recorded_once(h, sent["reffId"], TOP_UP, 60_000, "external:va")
    await h.assert_books_agree()


async def test_the_sandbox_resending_the_top_up_callback_changes_nothing(h: Harness) -> None:
    await h.onboard(LOCAL)
    sent = await h.top_up(LOCAL, 40_000)
    transaction_id = await assert_recorded_once(h, sent["reffId"], TOP_UP, 40_000, "external:va")

    await h.resend_callback(sent["requestId"])
    await h.resend_callback(sent["requestId"])

    async def delivered_three_times() -> bool:
        answered = [d for d in await callback_tries(h, sent["requestId"]) if d["statusCode"] == 200]
        return len(answered) == 3

    await wait_for(delivered_three_times)
    assert await assert_recorded_once(h, sent["reffId"], TOP_UP, 40_000, "external:va") == (
        transaction_id
    )
    await h.assert_books_agree()


async def test_a_driver_va_prefix_is_a_driver_deposit(h: Harness) -> None:
    await h.onboard(LOCAL)

    sent = await h.top_up(LOCAL, 100_000, number="39359" + NATIONAL)

    await assert_recorded_once(h, sent["reffId"], DRIVER_DEPOSIT, 100_000, "external:va")
    await h.assert_books_agree()


async def test_every_default_driver_va_prefix_is_a_driver_deposit(h: Harness) -> None:
    await h.onboard(LOCAL)

    for prefix in ("39359", "89509", "8809", "26216"):
        sent = await h.top_up(LOCAL, 10_000, number=prefix + NATIONAL)
        row = await only_top_up(h, sent["reffId"])
        assert row["type"] == "DRIVER_DEPOSIT", prefix
    for prefix in ("39358", "89508", "8808", "26215"):
        sent = await h.top_up(LOCAL, 10_000, number=prefix + NATIONAL)
        row = await only_top_up(h, sent["reffId"])
        assert row["type"] == "TOP_UP", prefix
    assert (await h.ledger())[SUBSCRIBER] == 80_000
    await h.assert_books_agree()


async def test_a_retail_top_up_is_a_top_up_from_the_outlet(h: Harness) -> None:
    await h.onboard(LOCAL)

    sent = await h.top_up(LOCAL, 20_000, channel="ALFAMART")

    assert sent["paymentCode"] == "7010" + NATIONAL
    await assert_recorded_once(h, sent["reffId"], TOP_UP, 20_000, "external:retail")
    row = await only_top_up(h, sent["reffId"])
    assert json.loads(row["details"]) == {"channel": "ALFAMART"}
    await h.assert_books_agree()


async def test_a_driver_retail_code_is_a_driver_deposit(h: Harness) -> None:
    await h.onboard(LOCAL)

    sent = await h.top_up(LOCAL, 30_000, channel="INDOMARET", number="7021" + NATIONAL)

    await assert_recorded_once(h, sent["reffId"], DRIVER_DEPOSIT, 30_000, "external:retail")
    row = await only_top_up(h, sent["reffId"])
    assert json.loads(row["details"]) == {"channel": "INDOMARET"}
    await h.assert_books_agree()


async def test_top_ups_of_two_wallets_keep_both_books_in_agreement(h: Harness) -> None:
    await h.onboard(LOCAL)
    await h.onboard(OTHER_LOCAL, name="Siti")

    await h.top_up(LOCAL, 50_000)
    await h.top_up(OTHER_LOCAL, 25_000, channel="INDOMARET")
    await h.top_up(LOCAL, 15_000, channel="ALFAMART")

    ledger = await h.ledger()
    assert ledger[SUBSCRIBER] == 65_000
    assert ledger["subscriber:6285712345678"] == 25_000
    assert ledger["external:va"] == -50_000
    assert ledger["external:retail"] == -40_000
    await h.assert_books_agree()


async def test_the_top_up_is_listed_for_the_wallet(h: Harness) -> None:
    await h.onboard(LOCAL)
    await h.onboard(OTHER_LOCAL, name="Siti")
    sent = await h.top_up(LOCAL, 35_000)
    row = await only_top_up(h, sent["reffId"])

    mine = await h.transactions.ListTransactions(
        transaction_service_pb2.ListTransactionsRequest(mobile_number=LOCAL),
        metadata=APP,
        timeout=DEADLINE,
    )
    theirs = await h.transactions.ListTransactions(
        transaction_service_pb2.ListTransactionsRequest(mobile_number=OTHER_LOCAL),
        metadata=APP,
        timeout=DEADLINE,
    )
    only_top_ups = await h.transactions.ListTransactions(
        transaction_service_pb2.ListTransactionsRequest(mobile_number=E164, type=TOP_UP),
        metadata=APP,
        timeout=DEADLINE,
    )

    assert [(t.transaction_id, t.type, t.status, t.amount_idr) for t in mine.transactions] == [
        (row["id"], TOP_UP, SUCCEEDED, 35_000)
    ]
    assert mine.next_page_token == ""
    assert list(theirs.transactions) == []
    assert [t.transaction_id for t in only_top_ups.transactions] == [row["id"]]


async def test_a_top_up_callback_stored_but_never_applied_is_credited_by_the_reconciler(
    h: Harness,
) -> None:
    await h.onboard(LOCAL)
    sent, callback_id = await lost_top_up(h, 65_000)
    # Its receiver may still be at work: a pass within the minute leaves it.
    h.clock.advance(UNAPPLIED_AFTER_SECONDS - 1)
    await h.running.reconciler.run_once()
    assert await top_up_rows(h, sent["reffId"]) == []

    h.clock.advance(1)
    await h.running.reconciler.run_once()

    await assert_recorded_once(h, sent["reffId"], TOP_UP, 65_000, "external:va")
    assert await callback_state(h, callback_id) == ("applied", 1)
    await h.assert_books_agree()
    # Later passes change nothing.
    for _ in range(2):
        await h.settle(advance_seconds=3600)
    await assert_recorded_once(h, sent["reffId"], TOP_UP, 65_000, "external:va")
    assert await callback_state(h, callback_id) == ("applied", 1)
    assert (await h.ledger())[SUBSCRIBER] == 65_000


async def callback_state(h: Harness, callback_id: int) -> tuple[str, int]:
    row = await h.running.db.fetch_one(
        "SELECT status, tries FROM callbacks WHERE id = ?", (callback_id,)
    )
    assert row is not None
    return str(row["status"]), int(row["tries"])


async def unverified_top_up(h: Harness, amount_idr: int) -> dict[str, Any]:
    """A VA top-up KasPro credits and calls back about unsigned (answered 401): the
    sandbox's callback body, once the service has queued its check."""
    await h.arm_fault("/_sandbox/topup", "callback_unsigned", times=1)
    sent: dict[str, Any] = await h.control(
        "POST",
        "/topup",
        json={
            "mobileNumber": LOCAL,
            "amount": amount_idr,
            "channel": "VA",
            "vaNumber": "39358" + LOCAL[1:],
        },
    )

    async def queued() -> bool:
        return await top_up_check(h, sent["requestId"]) == "waiting"

    await wait_for(queued)
    return sent


async def test_a_top_up_whose_callback_fails_verification_is_confirmed_with_kaspro(
    h: Harness,
) -> None:
    await h.onboard(LOCAL)
    sent = await unverified_top_up(h, 70_000)
    # Not trusted, not stored: nothing booked until KasPro confirms it by status inquiry.
    assert (await h.ledger()).get(f"subscriber:{CANONICAL}", 0) == 0
    stored = await h.running.db.fetch_one(
        "SELECT 1 FROM callbacks WHERE reference = ?", (sent["reffId"],)
    )
    assert stored is None

    await h.settle()

    await assert_credited_once(h, sent["reffId"], 70_000)
    assert await top_up_check(h, sent["requestId"]) == "applied"
    # The unverified callback comes again: its reference is on record, so nothing is
    # queued and KasPro is not asked again within the inquiry period.
    inquiries = len(await h.kaspro_requests("/transaction-status/"))
    refused = [c for c in await h.control("GET", "/callbacks") if c["statusCode"] == 401]
    unsigned = json.dumps(refused[0]["body"]).encode()
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        for _ in range(3):
            response = await client.post(
                f"http://127.0.0.1:{h.running.http_port}/callbacks/kaspro", content=unsigned
            )
            assert response.status_code == 401
    await h.settle(advance_seconds=0)
    assert len(await h.kaspro_requests("/transaction-status/")) == inquiries
    await assert_credited_once(h, sent["reffId"], 70_000)


async def test_an_unverified_top_up_whose_inquiry_got_no_usable_answer_is_asked_again(
    h: Harness,
) -> None:
    """KasPro's first status answer is unreadable: the check waits (no sooner than the
    inquiry period) and the top-up is credited on a later pass, once."""
    await h.onboard(LOCAL)
    await h.arm_fault("/transaction-status/", "garbage", times=1)
    sent = await unverified_top_up(h, 60_000)
    await h.settle(advance_seconds=1)
    assert await top_up_check(h, sent["requestId"]) == "waiting"
    assert (await h.ledger()).get(f"subscriber:{CANONICAL}", 0) == 0
    asked = len(await h.kaspro_requests("/transaction-status/"))
    assert asked == 1

    period = h.config.unverified_inquiry_period_seconds
    await h.settle(advance_seconds=period / 2)
    assert len(await h.kaspro_requests("/transaction-status/")) == asked
    await h.settle(advance_seconds=period)

    await assert_credited_once(h, sent["reffId"], 60_000)
    assert await top_up_check(h, sent["requestId"]) == "applied"


@pytest.mark.sqlite_only
async def test_a_top_up_waiting_for_its_check_before_the_upgrade_is_still_confirmed(
    h: Harness, tmp_path: Path
) -> None:
    """Migration 0005: a top-up whose callback failed verification used to wait in the
    callbacks table ('verify'); after the upgrade it is confirmed with KasPro all the same."""
    await h.onboard(LOCAL)
    await h.control("POST", "/callback-url", json={"url": None})
    sent = await h.control(
        "POST",
        "/topup",
        json={
            "mobileNumber": LOCAL,
            "amount": 45_000,
            "channel": "VA",
            "vaNumber": "39358" + LOCAL[1:],
        },
    )
    raw = json.dumps({**sent, "status": "SUCCESS", "type": "TOPUP"}).encode()
    path = tmp_path / "before-0005.db"
    with contextlib.closing(sqlite3.connect(path)) as old:
        for entry in sorted(MIGRATIONS.iterdir(), key=lambda e: e.name):
            if entry.name < "0005":
                old.executescript(entry.read_text())
        old.execute(
            "INSERT INTO callbacks (received_at, raw, status, reference, next_try_at, detail) "
            "VALUES (?, ?, 'verify', ?, ?, 'bad signature')",
            (h.clock(), raw, sent["requestId"], h.clock()),
        )
        old.execute("PRAGMA user_version = 4")
        old.commit()

    # The reconciler's first pass, at start-up, asks KasPro.
    await h.restart(h.with_config(db_path=str(path)))

    async def confirmed() -> bool:
        return await top_up_check(h, sent["requestId"]) == "applied"

    await wait_for(confirmed)
    await assert_credited_once(h, sent["reffId"], 45_000)
    (status,) = await h.running.db.fetch_all("SELECT status FROM callbacks")
    assert status["status"] == "rejected"


async def top_up_check(h: Harness, reference: str) -> str | None:
    row = await h.running.db.fetch_one(
        "SELECT status FROM top_up_checks WHERE reference = ?", (reference,)
    )
    return None if row is None else str(row["status"])


async def assert_credited_once(h: Harness, reff_id: str, amount_idr: int) -> None:
    rows = await h.running.db.fetch_all(
        "SELECT type, amount_idr FROM transactions WHERE kaspro_reference = ?", (reff_id,)
    )
    assert [(row["type"], row["amount_idr"]) for row in rows] == [("TOP_UP", amount_idr)]
    await h.assert_books_agree()


async def post_unsigned_top_up(h: Harness, request_id: str) -> None:
    """An unsigned TOPUP callback naming ``request_id`` (answered 401, queued for a check)."""
    raw = json.dumps(
        {
            "reffId": "OLSFQ1",
            "requestId": request_id,
            "status": "SUCCESS",
            "amount": "50000",
            "mobileNumber": LOCAL,
            "type": "TOPUP",
            "channel": "VA",
            "vaNumber": "39358" + LOCAL[1:],
        }
    ).encode()
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        response = await client.post(
            f"http://127.0.0.1:{h.running.http_port}/callbacks/kaspro", content=raw
        )
    assert response.status_code == 401


async def test_an_unverified_top_up_kaspro_does_not_know_is_asked_a_few_times_then_dropped(
    h: Harness,
) -> None:
    """KasPro's status may lag its callback: "not found" is asked again (a period apart),
    five times in all, then the check is settled and KasPro is not asked again."""
    await h.onboard(LOCAL)
    await post_unsigned_top_up(h, "TOPUPNOTKNOWN0001")
    period = h.config.unverified_inquiry_period_seconds

    for _ in range(12):
        await h.settle(advance_seconds=period)

    asked = [
        e
        for e in await h.kaspro_requests("/transaction-status/")
        if e["requestId"] == "TOPUPNOTKNOWN0001"
    ]
    assert len(asked) == 5
    # Settled (and, a period later, forgotten): no longer waiting to be asked about.
    assert await top_up_check(h, "TOPUPNOTKNOWN0001") != "waiting"
    assert (await h.ledger()).get(f"subscriber:{CANONICAL}", 0) == 0


async def test_an_unverified_top_up_naming_another_kind_of_transfer_is_not_kept_waiting(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """KasPro says SUCCESS, but for a cash-out: nothing to credit, settled at once and
    logged as an error, rather than asked about for ever."""
    caplog.set_level(logging.ERROR)
    c = await pending_cash_out(h)
    await h.complete_at_kaspro(c.reference)
    await until_status(h, c.transaction_id, SUCCEEDED)
    before = await h.ledger()

    await post_unsigned_top_up(h, c.reference)
    await h.settle(advance_seconds=1)

    assert await top_up_check(h, c.reference) == "rejected"
    assert await h.ledger() == before
    assert [r for r in caplog.records if "not a top-up credit" in r.getMessage()]
