"""KasPro's callbacks at our receiver (``POST /callbacks/kaspro`` on the HTTP port).

The receiver verifies the signature on the raw bytes (current and previous secret,
±300 s), stores a verified delivery raw, and applies it through the engine's one
transition function. What cannot be verified is answered 401, neither stored nor
trusted (only sampled), and its attempt is asked about at most once per inquiry period;
a reference we do not know is parked, never dropped; a late, repeated or contradicting
callback changes nothing; a callback that disagrees with what we asked freezes the
transaction (MONEY-RULES rules 4, 5, 6).

The hand-made callbacks here are KasPro's side of the contract, signed the way
docs/kaspro.md says (an HMAC written in helpers.py, independent of the service's
verifier).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from wallet.v1 import common_pb2

from .conftest import CANONICAL, LOCAL, OTHER_LOCAL, Harness, wait_for
from .helpers import (
    AMOUNT,
    DEV_SECRET,
    PROCESSING,
    CashOut,
    attempt_row,
    body,
    frozen,
    get_transaction,
    ledger_lines,
    pending_cash_out,
    post,
    sign,
    until_status,
)

SUBSCRIBER = f"subscriber:{CANONICAL}"
SUCCEEDED = common_pb2.TRANSACTION_STATUS_SUCCEEDED
FAILED = common_pb2.TRANSACTION_STATUS_FAILED
MAX_BODY = 64 * 1024
PERIOD = 60.0  # WALLET_UNVERIFIED_INQUIRY_PERIOD_SECONDS


async def event_statuses(h: Harness, transaction_id: str) -> list[str]:
    """The statuses in the transaction's events (the outbox), in sequence order."""
    rows = await h.running.db.fetch_all(
        "SELECT snapshot FROM events WHERE subject_id = ? ORDER BY sequence", (transaction_id,)
    )
    return [json.loads(row["snapshot"])["status"] for row in rows]


async def quiet(h: Harness, c: CashOut) -> None:
    """Let the reconciler ask KasPro about the cash-out until its backoff is longer than
    the inquiry period, and let a period pass since the last answer: now an unverified
    callback may pull the next inquiry forward. The backoff is jittered: it must outlast
    the period and the second the clock moves past it."""
    wait = PERIOD + 1
    while (a := await attempt_row(h, c.reference))["next_check_at"] - a["update_time"] <= wait:
        await h.settle(advance_seconds=a["next_check_at"] - h.clock())
    h.clock.advance(wait)
    assert (await attempt_row(h, c.reference))["next_check_at"] > h.clock()


async def samples(h: Harness) -> list[dict[str, Any]]:
    """The kept sample of unverified callbacks, oldest first."""
    rows = await h.running.db.fetch_all(
        "SELECT size, head, reason FROM unverified_callbacks ORDER BY id"
    )
    return [dict(row) for row in rows]


async def callbacks(h: Harness) -> list[dict[str, Any]]:
    """The stored callbacks, oldest first, leaving out the top-ups that funded the wallet."""
    rows = await h.running.db.fetch_all(
        "SELECT id, raw, timestamp, signature, status, reference, tries, next_try_at, detail "
        "FROM callbacks ORDER BY id"
    )
    return [dict(row) for row in rows if b'"type":"TOPUP"' not in bytes(row["raw"])]


async def snapshot(h: Harness, c: CashOut) -> tuple[Any, ...]:
    """Everything a callback could change about the cash-out."""
    t = await get_transaction(h, c.transaction_id)
    attempt = await attempt_row(h, c.reference)
    return (
        t.status,
        t.update_time.ToNanoseconds(),
        await frozen(h, c.transaction_id),
        await ledger_lines(h, c.transaction_id),
        await event_statuses(h, c.transaction_id),
        attempt["status"],
        await h.ledger(),
    )


def errors_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and r.name.startswith("wallet_service")
        and text in r.getMessage()
    ]


# Verification.


async def test_an_unsigned_callback_is_refused_sampled_and_pulls_the_inquiry_forward(
    h: Harness,
) -> None:
    c = await pending_cash_out(h)
    await quiet(h, c)
    before = await snapshot(h, c)
    raw = body(c.reference, c.reff_id)

    response = await post(h, raw, headers={})

    assert response.status_code == 401
    assert await callbacks(h) == []  # only verified callbacks are stored
    assert await samples(h) == [{"size": len(raw), "head": raw, "reason": "unsigned"}]
    assert await snapshot(h, c) == before
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    # Not trusted: KasPro is asked instead, at once.
    assert (await attempt_row(h, c.reference))["next_check_at"] == h.clock()


async def test_unverified_callbacks_pull_an_inquiry_forward_at_most_once_per_period(
    h: Harness,
) -> None:
    c = await pending_cash_out(h)
    # Fresh from KasPro's answer: the next inquiry is not pulled before a period is over.
    planned = (await attempt_row(h, c.reference))["next_check_at"]
    assert (await post(h, body(c.reference, c.reff_id), headers={})).status_code == 401
    assert (await attempt_row(h, c.reference))["next_check_at"] == planned
    await quiet(h, c)
    inquiries = len(await h.kaspro_requests("/transaction-status/"))

    for _ in range(3):  # a post, a reconciler pass, again and again
        assert (await post(h, body(c.reference, c.reff_id), headers={})).status_code == 401
        await h.running.reconciler.run_once()

    # One inquiry: after it, the next is never sooner than a period after its answer.
    assert len(await h.kaspro_requests("/transaction-status/")) == inquiries + 1
    attempt = await attempt_row(h, c.reference)
    assert attempt["next_check_at"] == attempt["update_time"] + PERIOD == h.clock() + PERIOD


async def test_an_unverifiable_success_is_settled_by_asking_kaspro(h: Harness) -> None:
    c = await pending_cash_out(h)
    await quiet(h, c)
    # KasPro settles it, but its own callback never arrives; an unsigned one does.
    await h.control("POST", "/callback-url", json={"url": None})
    await h.complete_at_kaspro(c.reference)
    inquiries = len(await h.kaspro_requests("/transaction-status/"))

    response = await post(h, body(c.reference, c.reff_id), headers={})
    assert response.status_code == 401
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    # The attempt is due now: one reconciler pass, without moving the clock, asks KasPro.
    assert await h.running.reconciler.run_once() == 1

    assert len(await h.kaspro_requests("/transaction-status/")) == inquiries + 1
    assert (await get_transaction(h, c.transaction_id)).status == SUCCEEDED
    assert await ledger_lines(h, c.transaction_id) == [
        ("external:bank", AMOUNT),
        (SUBSCRIBER, -AMOUNT),
    ]
    await h.assert_books_agree()


@pytest.mark.parametrize(
    "how",
    [
        "wrong-secret",
        "modified-body",
        "old-timestamp",
        "future-timestamp",
        "timestamp-not-a-number",
        "signature-only",
        "timestamp-only",
        "truncated-signature",
    ],
)
async def test_a_callback_that_cannot_be_verified_changes_nothing(h: Harness, how: str) -> None:
    c = await pending_cash_out(h)
    before = await snapshot(h, c)
    raw = body(c.reference, c.reff_id)
    now = str(int(h.clock()))

    if how == "wrong-secret":
        response = await post(h, raw, secret="not-the-callback-secret")
    elif how == "modified-body":
        signed = sign(DEV_SECRET, now, raw)
        tampered = body(c.reference, c.reff_id, amount="5000000")
        response = await post(
            h,
            tampered,
            headers={"KasPro-Callback-Timestamp": now, "KasPro-Callback-Signature": signed},
        )
    elif how == "old-timestamp":
        response = await post(h, raw, offset_seconds=-301)
    elif how == "future-timestamp":
        response = await post(h, raw, offset_seconds=301)
    elif how == "timestamp-not-a-number":
        response = await post(
            h,
            raw,
            headers={
                "KasPro-Callback-Timestamp": now + ".0",
                "KasPro-Callback-Signature": sign(DEV_SECRET, now + ".0", raw),
            },
        )
    elif how == "signature-only":
        response = await post(
            h, raw, headers={"KasPro-Callback-Signature": sign(DEV_SECRET, now, raw)}
        )
    elif how == "timestamp-only":
        response = await post(h, raw, headers={"KasPro-Callback-Timestamp": now})
    else:
        response = await post(
            h,
            raw,
            headers={
                "KasPro-Callback-Timestamp": now,
                "KasPro-Callback-Signature": sign(DEV_SECRET, now, raw)[:-2],
            },
        )

    assert response.status_code == 401, response.text
    assert await snapshot(h, c) == before
    assert await callbacks(h) == []
    unsigned = how in ("signature-only", "timestamp-only")
    ((sampled, reason),) = [(bytes(s["head"]), s["reason"]) for s in await samples(h)]
    assert sampled in (raw, body(c.reference, c.reff_id, amount="5000000"))
    assert reason == ("unsigned" if unsigned else "bad signature")


@pytest.mark.parametrize("offset_seconds", [-300, -299, 299, 300])
async def test_a_timestamp_within_300_seconds_is_accepted(h: Harness, offset_seconds: int) -> None:
    c = await pending_cash_out(h)
    h.clock.now = float(int(h.clock.now))  # a whole second, so that ±300 is exactly 300 away

    response = await post(h, body(c.reference, c.reff_id), offset_seconds=offset_seconds)

    assert response.status_code == 200, response.text
    assert (await get_transaction(h, c.transaction_id)).status == SUCCEEDED


async def test_the_previous_secret_is_accepted_during_a_rotation(h: Harness) -> None:
    await h.restart(
        h.with_config(kaspro_callback_secret="new", kaspro_callback_secret_previous=DEV_SECRET)
    )
    # The sandbox still signs with the old secret: the top-up funding the wallet goes through.
    c = await pending_cash_out(h)
    assert (await h.ledger())[SUBSCRIBER] == 200_000
    refused = await post(h, body(c.reference, c.reff_id), secret="neither-of-them")
    assert refused.status_code == 401
    accepted = await post(h, body(c.reference, c.reff_id), secret="new")
    assert accepted.status_code == 200
    assert (await get_transaction(h, c.transaction_id)).status == SUCCEEDED

    # Once the rotation is over, the old secret is refused.
    await h.restart(h.with_config(kaspro_callback_secret="new", kaspro_callback_secret_previous=""))
    raw = body("UNKNOWNREF000001", "OLSFQ1")
    assert (await post(h, raw, secret=DEV_SECRET)).status_code == 401
    assert (await post(h, raw, secret="new")).status_code == 200


# Unknown references.


async def test_a_callback_for_an_unknown_reference_is_parked_and_kept(h: Harness) -> None:
    await h.onboard(LOCAL, 100_000)
    ledger = await h.ledger()
    events = await h.events()
    raw = body("NOTOURSYET000001", "OLSFQ20990101000000000")

    response = await post(h, raw)

    assert response.status_code == 200
    (parked,) = [cb for cb in await callbacks(h) if bytes(cb["raw"]) == raw]
    assert (parked["status"], parked["reference"], parked["tries"]) == (
        "parked",
        "NOTOURSYET000001",
        1,
    )
    assert parked["next_try_at"] > h.clock()

    # The reconciler retries it, again and again, and keeps it.
    for tries in (2, 3, 4):
        await h.settle()
        (again,) = [cb for cb in await callbacks(h) if cb["id"] == parked["id"]]
        assert (again["status"], again["tries"]) == ("parked", tries)
        assert again["next_try_at"] > h.clock()
    # Not due yet: a pass right away leaves it alone.
    await h.running.reconciler.run_once()
    (same,) = [cb for cb in await callbacks(h) if cb["id"] == parked["id"]]
    assert same["tries"] == 4
    assert await h.ledger() == ledger
    assert await h.events() == events


# Ordering and duplicates.


@pytest.mark.parametrize("first", ["SUCCESS", "FAILED"])
async def test_a_contradicting_late_callback_freezes_the_transaction(
    h: Harness, caplog: pytest.LogCaptureFixture, first: str
) -> None:
    """Two final answers that disagree: our books keep the first (nothing is booked or
    undone), and the transaction is frozen, so the disagreement waits for a person instead
    of staying silent (docs/money.md, invariant 6)."""
    caplog.set_level(logging.WARNING)
    c = await pending_cash_out(h)
    await h.complete_at_kaspro(c.reference, fail=first == "FAILED")
    settled = SUCCEEDED if first == "SUCCESS" else FAILED
    await until_status(h, c.transaction_id, settled)
    before = await snapshot(h, c)
    balances = await h.sandbox_balances()
    late = "FAILED" if first == "SUCCESS" else "SUCCESS"

    response = await post(h, body(c.reference, c.reff_id, late))

    assert response.status_code == 200
    why = await frozen(h, c.transaction_id)
    assert why, "the contradiction did not freeze the transaction"
    assert late.lower().replace("success", "succeeded") in why
    assert c.reference in why
    # Only the freeze changed: the status callers see, the ledger, the events and the
    # attempt are as the first answer left them.
    after = await snapshot(h, c)
    assert after[0] == before[0]
    assert after[3:] == before[3:]
    assert (await get_transaction(h, c.transaction_id)).status == settled
    assert await h.sandbox_balances() == balances
    assert errors_about(caplog, c.reference), "the contradiction was not logged as an error"
    assert [cb["status"] for cb in await callbacks(h)][-1] == "frozen"
    await h.assert_books_agree()

    # The same contradiction again changes nothing more.
    assert (await post(h, body(c.reference, c.reff_id, late))).status_code == 200
    assert await frozen(h, c.transaction_id) == why
    assert [cb["status"] for cb in await callbacks(h)][-1] == "ignored"


async def test_duplicate_success_callbacks_book_once(h: Harness) -> None:
    c = await pending_cash_out(h)
    await h.complete_at_kaspro(c.reference)
    await until_status(h, c.transaction_id, SUCCEEDED)

    # KasPro sends it again (twice), and a hand-made copy arrives twice more, at once.
    await h.resend_callback(c.reference)
    await h.resend_callback(c.reference)

    async def delivered_three_times() -> bool:
        tries: list[dict[str, Any]] = await h.control("GET", "/callbacks")
        ok = [t for t in tries if t["requestId"] == c.reference and t["statusCode"] == 200]
        return len(ok) == 3

    await wait_for(delivered_three_times)
    raw = bytes((await callbacks(h))[0]["raw"])
    answers = await asyncio.gather(post(h, raw), post(h, raw))
    assert [a.status_code for a in answers] == [200, 200]

    assert await ledger_lines(h, c.transaction_id) == [
        ("external:bank", AMOUNT),
        (SUBSCRIBER, -AMOUNT),
    ]
    statuses = await event_statuses(h, c.transaction_id)
    assert statuses.count("SUCCEEDED") == 1, statuses
    assert statuses[-1] == "SUCCEEDED"
    assert len(await callbacks(h)) == 5
    await h.assert_books_agree()


async def test_the_callback_log_says_what_was_done_with_each_delivery(h: Harness) -> None:
    """The callbacks table's own statuses: applied, duplicate, frozen, parked, rejected
    (wallet_service/store/migrations/sqlite/0002_money.sql); an unverified delivery is not in
    it. The metric counts every delivery by verdict."""
    c = await pending_cash_out(h)
    success = body(c.reference, c.reff_id)
    assert (await post(h, success)).status_code == 200
    assert (await post(h, success)).status_code == 200
    assert (await post(h, body(c.reference, c.reff_id, "FAILED"))).status_code == 200
    assert (await post(h, body("NOTOURSYET000002", "OLSFQ2"))).status_code == 200
    assert (await post(h, body(c.reference, c.reff_id, "MAYBE"))).status_code == 200
    assert (await post(h, b"not json")).status_code == 400
    assert (await post(h, success, secret="wrong")).status_code == 401

    statuses = [cb["status"] for cb in await callbacks(h)]
    assert statuses == ["applied", "duplicate", "frozen", "parked", "rejected", "rejected"]
    verdicts = {
        verdict: h.running.metrics.registry.get_sample_value(
            "wallet_callbacks_total", {"verdict": verdict}
        )
        for verdict in ("applied", "duplicate", "frozen", "parked", "rejected", "malformed")
    }
    # The top-up that funded the wallet was applied too.
    assert verdicts == {
        "applied": 2,
        "duplicate": 1,
        "frozen": 1,
        "parked": 1,
        "rejected": 1,
        "malformed": 1,
    }
    assert [s["reason"] for s in await samples(h)] == ["bad signature"]


# Integrity.


@pytest.mark.parametrize("reported", [AMOUNT - 10_000, AMOUNT + 1])
async def test_a_callback_with_another_amount_freezes_the_transaction(
    h: Harness, caplog: pytest.LogCaptureFixture, reported: int
) -> None:
    caplog.set_level(logging.WARNING)
    c = await pending_cash_out(h)

    response = await post(h, body(c.reference, c.reff_id, amount=str(reported)))

    assert response.status_code == 200
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    why = await frozen(h, c.transaction_id)
    assert why, "the transaction was not frozen"
    assert str(reported) in why
    assert await ledger_lines(h, c.transaction_id) == []
    assert errors_about(caplog, c.transaction_id), "the freeze was not logged as an error"

    # Nothing more happens to it: not KasPro's real success, not a reconciler pass.
    await h.complete_at_kaspro(c.reference)

    async def real_callback_received() -> bool:
        return len(await callbacks(h)) == 2

    await wait_for(real_callback_received)
    await h.settle()
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    assert await ledger_lines(h, c.transaction_id) == []
    assert await frozen(h, c.transaction_id) == why


async def test_a_failed_callback_with_another_amount_freezes_the_transaction(h: Harness) -> None:
    """MONEY-RULES rule 6 covers every callback, not only successes."""
    c = await pending_cash_out(h)

    response = await post(h, body(c.reference, c.reff_id, "FAILED", amount=str(AMOUNT * 10)))

    assert response.status_code == 200
    assert await ledger_lines(h, c.transaction_id) == []
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    assert await frozen(h, c.transaction_id), "a FAILED callback for another amount was trusted"


async def test_a_callback_for_another_wallet_freezes_the_transaction(h: Harness) -> None:
    """MONEY-RULES rule 6: the account in a callback must match what we asked, too."""
    c = await pending_cash_out(h)

    response = await post(h, body(c.reference, c.reff_id, mobile=OTHER_LOCAL))

    assert response.status_code == 200
    assert await ledger_lines(h, c.transaction_id) == []
    assert (await get_transaction(h, c.transaction_id)).status == PROCESSING
    assert await frozen(h, c.transaction_id), "a callback naming another wallet was trusted"


# Unreadable callbacks.


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json at all",
        b"<html>oops</html>",
        b'["SUCCESS"]',
        b'"SUCCESS"',
        b"null",
        b'{"requestId":"REF","status":"SUCCESS","amount":"50000"}',  # no reffId
        b'{"reffId":"OLSFQ1","status":"SUCCESS","amount":"50000"}',  # no requestId
        b'{"reffId":"OLSFQ1","requestId":"REF","amount":"50000"}',  # no status
        b'{"reffId":"OLSFQ1","requestId":"REF","status":""}',
        b"\xff\xfe{}",
    ],
)
async def test_a_signed_but_unreadable_callback_is_400_and_changes_nothing(
    h: Harness, raw: bytes
) -> None:
    c = await pending_cash_out(h)
    before = await snapshot(h, c)
    raw = raw.replace(b'"REF"', json.dumps(c.reference).encode())

    response = await post(h, raw)

    assert response.status_code == 400, response.text
    (stored,) = await callbacks(h)
    assert bytes(stored["raw"]) == raw
    assert stored["status"] == "rejected"
    assert await snapshot(h, c) == before


async def test_an_unknown_status_word_is_not_guessed_but_asked_about(h: Harness) -> None:
    c = await pending_cash_out(h)
    before = await snapshot(h, c)

    response = await post(h, body(c.reference, c.reff_id, "REVERSED"))

    assert response.status_code == 200
    assert await snapshot(h, c) == before
    assert (await attempt_row(h, c.reference))["next_check_at"] == h.clock()


async def test_an_oversized_callback_is_413(h: Harness) -> None:
    await h.onboard(LOCAL)
    padding = "x" * MAX_BODY
    raw = body("NOTOURSYET000003", "OLSFQ3", note=padding)
    assert len(raw) > MAX_BODY

    response = await post(h, raw)

    assert response.status_code == 413
    # Right at the limit is still read (and parked: nobody knows the reference).
    fitting = body("NOTOURSYET000003", "OLSFQ3", note="")
    fitting = body("NOTOURSYET000003", "OLSFQ3", note="x" * (MAX_BODY - len(fitting)))
    assert len(fitting) == MAX_BODY
    assert (await post(h, fitting)).status_code == 200


# The rest of the HTTP side.


async def test_healthz_says_serving(h: Harness) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(f"http://127.0.0.1:{h.running.http_port}/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "SERVING"}


async def test_metrics_show_the_unresolved_attempts(h: Harness) -> None:
    async def gauge(name: str) -> float:
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.get(f"http://127.0.0.1:{h.running.http_port}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        values = [
            line.split()[1] for line in response.text.splitlines() if line.split()[:1] == [name]
        ]
        assert len(values) == 1, response.text
        return float(values[0])

    assert await gauge("wallet_unresolved_attempts") == 0
    c = await pending_cash_out(h)
    assert await gauge("wallet_unresolved_attempts") == 1
    assert await gauge("wallet_unresolved_attempts_overdue") == 0
    h.clock.advance(120)
    assert await gauge("wallet_oldest_unresolved_attempt_seconds") == pytest.approx(120, abs=1)

    await h.complete_at_kaspro(c.reference)
    await until_status(h, c.transaction_id, SUCCEEDED)
    assert await gauge("wallet_unresolved_attempts") == 0
