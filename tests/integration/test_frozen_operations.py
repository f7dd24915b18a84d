"""Frozen means frozen (docs/money.md, invariant 6): an operation frozen for review gets no
KasPro money call and is never sent again; its open attempts are only asked about, rarely,
for the record of the person who reviews it. KasPro contradicting itself is a freeze too.

Each test drives the real service and the sandbox, and counts KasPro's money calls in the
sandbox's request log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from wallet.v1 import common_pb2

from wallet_service.flows.engine import Timing
from wallet_service.http import CALLBACK_PATH
from wallet_service.store.attempts import load_attempt

from .conftest import APP, DEADLINE, LOCAL, Harness, closed_port, expect_failure, wait_for
from .helpers import (
    AMOUNT,
    attempt_row,
    body,
    cash_out,
    frozen,
    get_transaction,
    ledger_lines,
    pending_cash_out,
    post,
)

BANK_PATH = "/bank-transfer/"
STATUS_PATH = "/transaction-status/"
PROCESSING = common_pb2.TRANSACTION_STATUS_PROCESSING
SUCCEEDED = common_pb2.TRANSACTION_STATUS_SUCCEEDED
FROZEN_POLL = Timing().frozen_poll_seconds


async def calls(h: Harness, path: str, request_id: str) -> int:
    """How often KasPro was called on ``path`` about ``request_id``."""
    return sum(1 for e in await h.kaspro_requests(path) if e["requestId"] == request_id)


async def executed(h: Harness, request_id: str) -> list[dict[str, Any]]:
    """KasPro's transactions for ``request_id`` (the sandbox's books)."""
    found: list[dict[str, Any]] = await h.control("GET", "/transactions")
    return [t for t in found if t["requestId"] == request_id]


async def passes(h: Harness, count: int, *, seconds_apart: float) -> None:
    """``count`` reconciler passes, the clock moved ``seconds_apart`` before each."""
    for _ in range(count):
        await h.settle(advance_seconds=seconds_apart)


async def unsent_cash_out(h: Harness) -> tuple[str, str]:
    """A bank cash-out whose call KasPro never executed (answered 500): the transaction
    and its attempt's reference, the attempt still ``pending``."""
    await h.onboard(LOCAL, 200_000)
    await h.arm_fault(BANK_PATH, "http_500")
    failure = await expect_failure(
        h.funding.CashOut(cash_out(AMOUNT, "cash-out-unsent"), metadata=APP, timeout=DEADLINE)
    )
    assert failure.reason == "PROVIDER_UNAVAILABLE", failure
    transaction_id = failure.error_metadata["transaction_id"]
    row = await h.running.db.fetch_one(
        "SELECT reference, status FROM attempts WHERE transaction_id = ?", (transaction_id,)
    )
    assert row is not None
    assert row["status"] == "pending"
    assert await calls(h, BANK_PATH, str(row["reference"])) == 1
    assert await executed(h, str(row["reference"])) == []  # KasPro never executed it
    return transaction_id, str(row["reference"])


async def metric(h: Harness, name: str) -> float:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(f"http://127.0.0.1:{h.running.http_port}/metrics")
    values = [line.split()[1] for line in response.text.splitlines() if line.split()[:1] == [name]]
    assert len(values) == 1, response.text
    return float(values[0])


async def test_a_frozen_cash_out_is_asked_about_once_an_hour_not_every_pass(h: Harness) -> None:
    c = await pending_cash_out(h)
    assert (await post(h, body(c.reference, c.reff_id, amount=str(AMOUNT + 1)))).status_code == 200
    assert await frozen(h, c.transaction_id)
    asked = await calls(h, STATUS_PATH, c.reference)

    # An hour of reconciler passes, one every 30 s of the clock: no inquiry at all.
    await passes(h, 119, seconds_apart=30)
    assert await calls(h, STATUS_PATH, c.reference) == asked

    # After the hour, one inquiry; what KasPro said is kept on the attempt as evidence,
    # and nothing is applied.
    await passes(h, 2, seconds_apart=30)
    assert await calls(h, STATUS_PATH, c.reference) == asked + 1
    row = await h.running.db.fetch_one(
        "SELECT status, last_detail, next_check_at, update_time FROM attempts WHERE reference = ?",
        (c.reference,),
    )
    assert row is not None
    assert row["status"] == "processing"
    assert row["last_detail"].startswith("frozen; KasPro said processing"), row["last_detail"]
    # Asked on the first pass past the hour (30 s before the last one); next in an hour.
    assert row["update_time"] == pytest.approx(h.clock() - 30, abs=0.01)
    assert row["next_check_at"] == pytest.approx(row["update_time"] + FROZEN_POLL, abs=0.01)
    assert await calls(h, BANK_PATH, c.reference) == 1
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    assert await ledger_lines(h, c.transaction_id) == []


async def test_a_frozen_cash_out_kaspro_never_saw_is_not_sent_after_a_restart(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    transaction_id, ref = await unsent_cash_out(h)
    # A signed callback for it with another amount freezes it.
    assert (await post(h, body(ref, "OLSFQ9", amount=str(AMOUNT * 2)))).status_code == 200
    why = await frozen(h, transaction_id)
    assert why

    await h.restart()
    await passes(h, 3, seconds_apart=FROZEN_POLL / 2)

    # KasPro was asked (it does not know the reference) but the cash-out was not sent again.
    assert await calls(h, STATUS_PATH, ref) >= 1
    assert await calls(h, BANK_PATH, ref) == 1
    assert await executed(h, ref) == []
    assert not [r for r in caplog.records if "sending it again" in r.getMessage()]
    assert (await attempt_row(h, ref))["status"] == "pending"
    detail = await h.running.db.fetch_one(
        "SELECT last_detail FROM attempts WHERE reference = ?", (ref,)
    )
    assert detail is not None
    assert detail["last_detail"].startswith("frozen; KasPro said not_found"), detail["last_detail"]
    assert await frozen(h, transaction_id) == why


async def test_an_unfrozen_cash_out_kaspro_never_saw_is_sent_again_with_its_reference(
    h: Harness,
) -> None:
    """The one safe resend (docs/kaspro.md): never answered, unknown to KasPro, not frozen."""
    transaction_id, ref = await unsent_cash_out(h)
    await h.restart()

    await passes(h, 1, seconds_apart=60)

    assert await calls(h, BANK_PATH, ref) == 2
    assert len(await executed(h, ref)) == 1
    assert (await attempt_row(h, ref))["status"] in ("processing", "succeeded")
    assert not await frozen(h, transaction_id)
    resends = h.running.metrics.registry.get_sample_value(
        "wallet_kaspro_resends_total", {"reason": "not_found"}
    )
    assert resends == 1


async def test_not_found_while_the_first_send_may_be_on_its_way_sends_nothing(
    h: Harness,
) -> None:
    """Asked about before ``WALLET_RECONCILE_GRACE_SECONDS`` (the first backoff is 2 s),
    "not found" may only mean the request has not arrived yet: nothing is sent, and KasPro
    is asked again only once the grace is over, not on every pass meanwhile."""
    transaction_id, ref = await unsent_cash_out(h)
    attempt = await load_attempt(h.running.db, ref)
    assert attempt is not None
    grace = h.config.reconcile_grace_seconds

    await passes(h, int(grace) - 5, seconds_apart=1)

    assert await calls(h, STATUS_PATH, ref) == 1
    assert await calls(h, BANK_PATH, ref) == 1
    row = await attempt_row(h, ref)
    assert row["status"] == "pending"
    assert row["next_check_at"] == pytest.approx(attempt.create_time + grace, abs=0.01)
    assert not await frozen(h, transaction_id)

    await passes(h, 1, seconds_apart=10)
    assert await calls(h, STATUS_PATH, ref) == 2
    assert await calls(h, BANK_PATH, ref) == 2  # now it is sent again, same reference


async def test_not_found_soon_after_a_resend_does_not_send_a_third_time(h: Harness) -> None:
    """The grace counts from the last send: a resend whose answer was lost too may still
    be on its way when KasPro next says "not found"."""
    _, ref = await unsent_cash_out(h)
    await h.arm_fault(BANK_PATH, "http_500")
    await passes(h, 1, seconds_apart=60)
    assert await calls(h, BANK_PATH, ref) == 2
    grace = h.config.reconcile_grace_seconds

    await passes(h, int(grace) - 5, seconds_apart=1)

    assert await calls(h, BANK_PATH, ref) == 2
    assert await executed(h, ref) == []
    await passes(h, 1, seconds_apart=10)
    assert await calls(h, BANK_PATH, ref) == 3
    assert len(await executed(h, ref)) == 1


async def test_an_unverified_callback_does_not_hurry_a_frozen_attempt(h: Harness) -> None:
    c = await pending_cash_out(h)
    assert (await post(h, body(c.reference, c.reff_id, amount=str(AMOUNT + 1)))).status_code == 200
    planned = (await attempt_row(h, c.reference))["next_check_at"]

    unsigned = body(c.reference, c.reff_id)
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        for _ in range(3):
            h.clock.advance(120)
            response = await client.post(
                f"http://127.0.0.1:{h.running.http_port}{CALLBACK_PATH}", content=unsigned
            )
            assert response.status_code == 401

    assert (await attempt_row(h, c.reference))["next_check_at"] == planned


async def test_kaspro_forgetting_an_accepted_cash_out_freezes_it_instead_of_resending(
    h: Harness,
) -> None:
    """KasPro answered "in process", then its status inquiry says it never saw it (here:
    the sandbox is reset, as an embedded sandbox is by a restart). Sending it again could
    pay twice: the cash-out is frozen and nothing is sent."""
    c = await pending_cash_out(h)
    await h.control("POST", "/reset")
    await h.control(
        "POST",
        "/callback-url",
        json={"url": f"http://127.0.0.1:{h.running.http_port}{CALLBACK_PATH}"},
    )

    await passes(h, 3, seconds_apart=60)

    why = await frozen(h, c.transaction_id)
    assert why is not None
    assert "in process" in why
    assert c.reference in why
    assert await calls(h, BANK_PATH, c.reference) == 0  # the log was reset with it
    assert (await attempt_row(h, c.reference))["status"] == "processing"
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    assert await ledger_lines(h, c.transaction_id) == []
    assert await metric(h, "wallet_frozen_operations") == 1


async def test_a_status_answer_contradicting_a_final_callback_freezes_the_transaction(
    h: Harness,
) -> None:
    """KasPro's status inquiry, in flight when a verified SUCCESS callback landed, answers
    FAILED for the same attempt: the two final answers disagree."""
    c = await pending_cash_out(h)
    # KasPro's books say FAILED; its own callback of that is lost on the way.
    await h.control("POST", "/callback-url", json={"url": f"http://127.0.0.1:{closed_port()}/"})
    await h.complete_at_kaspro(c.reference, fail=True)
    await h.arm_fault(STATUS_PATH, "delay", delay_seconds=1.0)
    asking = asyncio.create_task(h.settle())

    async def asked() -> bool:
        return await calls(h, STATUS_PATH, c.reference) == 1

    await wait_for(asked)
    assert (await post(h, body(c.reference, c.reff_id))).status_code == 200
    assert (await get_transaction(h, c.transaction_id)).status == SUCCEEDED
    booked = await ledger_lines(h, c.transaction_id)
    assert booked
    assert not await frozen(h, c.transaction_id)

    await asking

    why = await frozen(h, c.transaction_id)
    assert why is not None
    assert f"KasPro said failed for attempt {c.reference} after it had succeeded" in why
    assert await ledger_lines(h, c.transaction_id) == booked
    assert (await get_transaction(h, c.transaction_id)).status == SUCCEEDED
    assert await metric(h, "wallet_frozen_operations") == 1
