"""AdminService (docs/operations.md, "Operator tools"): the operators' lists, and their
actions — each admin-only, idempotent by request_id, audited done or refused, a done
one an event — acting through the paths KasPro's own signals take. Driven through the
real server and the sandbox, on both engines."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Awaitable
from functools import partial

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wallet.v1 import admin_service_pb2 as pb
from wallet.v1 import admin_service_pb2_grpc, common_pb2, payment_service_pb2

from wallet_service.kaspro import kaspro_request_id
from wallet_service.store.attempts import claim_flight
from wallet_service.store.audit import actions_of
from wallet_service.store.callbacks import mark_callback, store_callback
from wallet_service.store.database import Database
from wallet_service.store.drifts import DriftKind, record_drift

from .conftest import (
    ADMIN,
    APP,
    DEADLINE,
    DISPATCH,
    LOCAL,
    Harness,
    assert_failure,
    closed_port,
    expect_failure,
    failure_of,
    wait_for,
)
from .helpers import (
    AMOUNT,
    DEV_SECRET,
    INVALID,
    PRECONDITION,
    SUCCEEDED,
    body,
    frozen,
    get_transaction,
    last_sequence,
    ledger_lines,
    pending_cash_out,
    post,
    sign,
)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
DONE = common_pb2.ADMIN_ACTION_OUTCOME_DONE
REFUSED = common_pb2.ADMIN_ACTION_OUTCOME_REFUSED
ACCOUNT = "subscriber:6281234567890"


def admin(h: Harness) -> admin_service_pb2_grpc.AdminServiceAsyncStub:
    assert h.channel is not None
    return admin_service_pb2_grpc.AdminServiceStub(h.channel)


async def admin_events(h: Harness, after: int) -> list[common_pb2.AdminAction]:
    return [
        e.admin_action
        for e in await h.events(after)
        if e.type == common_pb2.EVENT_TYPE_ADMIN_ACTION
    ]


async def frozen_cash_out(h: Harness) -> tuple[str, str]:
    """A bank cash-out KasPro accepted, frozen by a signed callback with another amount;
    KasPro has settled it meanwhile (its own callback, to a port nobody listens on, is
    lost): the transaction and its attempt's reference."""
    c = await pending_cash_out(h)
    assert (await post(h, body(c.reference, c.reff_id, amount=str(AMOUNT + 1)))).status_code == 200
    assert await frozen(h, c.transaction_id)
    await h.control("POST", "/callback-url", json={"url": f"http://127.0.0.1:{closed_port()}/"})
    await h.complete_at_kaspro(c.reference)
    return c.transaction_id, c.reference


def resolve(
    transaction_id: str,
    outcome: int = pb.CONFIRMED_OUTCOME_SUCCEEDED,
    request_id: str = "resolve-1",
    *,
    reference: str = "",
    reason: str = "KasPro ticket 4411: paid out as asked",
) -> pb.ResolveFrozenOperationRequest:
    return pb.ResolveFrozenOperationRequest(
        request_id=request_id,
        transaction_id=transaction_id,
        outcome=outcome,  # type: ignore[arg-type]
        reference=reference,
        reason=reason,
    )


# Roles.


@pytest.mark.parametrize("metadata", [APP, DISPATCH], ids=["app", "dispatch"])
async def test_only_the_admin_role_may_call_the_admin_service(
    h: Harness, metadata: tuple[tuple[str, str], ...]
) -> None:
    stub = admin(h)
    calls: list[Awaitable[object]] = [
        stub.ListUnresolvedAttempts(pb.ListUnresolvedAttemptsRequest(), metadata=metadata),
        stub.ListFrozenOperations(pb.ListFrozenOperationsRequest(), metadata=metadata),
        stub.ListDrifts(pb.ListDriftsRequest(), metadata=metadata),
        stub.ListParkedCallbacks(pb.ListParkedCallbacksRequest(), metadata=metadata),
        stub.InquireAttempt(
            pb.InquireAttemptRequest(request_id="r", reference="x", reason="r"), metadata=metadata
        ),
        stub.ResolveFrozenOperation(resolve("txn_x"), metadata=metadata),
        stub.RetryParkedCallback(
            pb.RetryParkedCallbackRequest(request_id="r", callback_id=1, reason="r"),
            metadata=metadata,
        ),
        stub.AcknowledgeDrift(
            pb.AcknowledgeDriftRequest(request_id="r", drift_id=1, reason="r"), metadata=metadata
        ),
    ]
    for call in calls:
        failure = await expect_failure(call)
        assert_failure(failure, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    rows = await h.running.db.fetch_all("SELECT id FROM admin_actions")
    assert rows == []


# Frozen operations.


async def test_a_frozen_cash_out_is_listed_and_resolved_with_its_audit_row_and_events(
    h: Harness,
) -> None:
    transaction_id, reference = await frozen_cash_out(h)
    (listed,) = (
        await admin(h).ListFrozenOperations(pb.ListFrozenOperationsRequest(), metadata=ADMIN)
    ).operations
    assert listed.transaction.transaction_id == transaction_id
    assert "KasPro reported" in listed.frozen_reason
    assert [(a.reference, a.status) for a in listed.attempts] == [
        (reference, pb.ATTEMPT_STATUS_PROCESSING)
    ]
    assert await ledger_lines(h, transaction_id) == []
    after = await last_sequence(h)

    answer = await admin(h).ResolveFrozenOperation(
        resolve(transaction_id), metadata=ADMIN, timeout=DEADLINE
    )

    assert answer.transaction.status == SUCCEEDED
    assert [a.status for a in answer.attempts] == [pb.ATTEMPT_STATUS_SUCCEEDED]
    assert answer.action.outcome == DONE
    assert answer.action.action == common_pb2.ADMIN_ACTION_TYPE_RESOLVE_FROZEN_OPERATION
    assert (answer.action.caller, answer.action.target) == ("ops", f"transaction:{transaction_id}")
    assert not await frozen(h, transaction_id)
    # Booked through the transition function: our books equal KasPro's again.
    assert sum(amount for _, amount in await ledger_lines(h, transaction_id)) == 0
    await h.assert_books_agree()
    (row,) = await actions_of(h.running.db, f"transaction:{transaction_id}")
    assert (row.caller, row.request_id, row.outcome.value) == ("ops", "resolve-1", "done")
    assert row.reason == "KasPro ticket 4411: paid out as asked"
    assert row.id == answer.action.action_id
    events = await h.events(after)
    statuses = [
        e.transaction.status
        for e in events
        if e.WhichOneof("subject") == "transaction"
        and e.transaction.transaction_id == transaction_id
    ]
    # One move, to SUCCEEDED (``after`` may be a little behind: earlier moves may show).
    assert statuses[-1] == SUCCEEDED
    assert statuses.count(SUCCEEDED) == 1
    (event,) = [e.admin_action for e in events if e.type == common_pb2.EVENT_TYPE_ADMIN_ACTION]
    assert event == answer.action
    assert (
        await admin(h).ListFrozenOperations(pb.ListFrozenOperationsRequest(), metadata=ADMIN)
    ).operations == []

    # Already resolved: no longer frozen, refused (and audited as refused).
    failure = await expect_failure(
        admin(h).ResolveFrozenOperation(
            resolve(transaction_id, request_id="resolve-2"), metadata=ADMIN
        )
    )
    assert_failure(failure, PRECONDITION, "INVALID_STATE")
    assert "not frozen" in failure.message
    refused = (await actions_of(h.running.db, f"transaction:{transaction_id}"))[-1]
    assert (refused.outcome.value, refused.error_reason) == ("refused", "INVALID_STATE")
    assert failure.error_metadata == {"action_id": str(refused.id)}
    assert len(await admin_events(h, after)) == 1  # a refusal changes nothing: no event


async def test_a_frozen_hold_resolved_as_failed_fails_the_ride_payment(h: Harness) -> None:
    """A per-attempt resolution: KasPro confirms the hold never happened."""
    await h.sandbox_settings(auto_complete=False)
    await h.onboard(LOCAL, 200_000)
    await h.arm_fault("/pil-transaction-payment-to-merchant/", "http_500")
    failure = await expect_failure(
        h.payments.AuthorizeRidePayment(
            payment_service_pb2.AuthorizeRidePaymentRequest(
                request_id="auth-1",
                ride_id="ride-1",
                passenger_mobile_number=LOCAL,
                amount_idr=AMOUNT,
            ),
            metadata=DISPATCH,
            timeout=DEADLINE,
        )
    )
    assert failure.reason == "PROVIDER_UNAVAILABLE", failure
    transaction_id = failure.error_metadata["transaction_id"]
    row = await h.running.db.fetch_one(
        "SELECT reference FROM attempts WHERE transaction_id = ?", (transaction_id,)
    )
    assert row is not None
    reference = str(row["reference"])
    # A signed callback naming another wallet freezes it.
    raw = body(reference, "OLSFQ1", mobile="085712345678")
    assert (await post(h, raw)).status_code == 200
    assert await frozen(h, transaction_id)

    answer = await admin(h).ResolveFrozenOperation(
        resolve(transaction_id, pb.CONFIRMED_OUTCOME_FAILED, reference=reference),
        metadata=ADMIN,
        timeout=DEADLINE,
    )

    assert answer.transaction.status == common_pb2.TRANSACTION_STATUS_FAILED
    ride = await h.payments.GetRidePayment(
        payment_service_pb2.GetRidePaymentRequest(ride_id="ride-1"), metadata=DISPATCH
    )
    assert ride.ride_payment.status == common_pb2.RIDE_PAYMENT_STATUS_FAILED
    assert await ledger_lines(h, transaction_id) == []
    await h.assert_books_agree()


async def test_a_resolution_the_state_does_not_allow_is_refused(h: Harness) -> None:
    """A SUCCESS callback, then a FAILED one for the same attempt: frozen with the attempt
    succeeded. Stating "failed" would move it backwards; "succeeded" confirms it."""
    c = await pending_cash_out(h)
    await h.complete_at_kaspro(c.reference)

    async def succeeded() -> bool:
        return (await get_transaction(h, c.transaction_id)).status == SUCCEEDED

    await wait_for(succeeded)
    assert (await post(h, body(c.reference, c.reff_id, status="FAILED"))).status_code == 200
    assert await frozen(h, c.transaction_id)
    booked = await ledger_lines(h, c.transaction_id)

    failure = await expect_failure(
        admin(h).ResolveFrozenOperation(
            resolve(c.transaction_id, pb.CONFIRMED_OUTCOME_FAILED), metadata=ADMIN
        )
    )
    assert_failure(failure, PRECONDITION, "INVALID_STATE")
    assert f"attempt {c.reference} already succeeded" in failure.message
    assert await frozen(h, c.transaction_id)
    assert await ledger_lines(h, c.transaction_id) == booked

    # Not one of its attempts; not a transaction at all.
    failure = await expect_failure(
        admin(h).ResolveFrozenOperation(
            resolve(c.transaction_id, request_id="resolve-2", reference="NOTANATTEMPT0001"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, NOT_FOUND, "ATTEMPT_NOT_FOUND")
    failure = await expect_failure(
        admin(h).ResolveFrozenOperation(resolve("txn_nope", request_id="resolve-3"), metadata=ADMIN)
    )
    assert_failure(failure, NOT_FOUND, "TRANSACTION_NOT_FOUND")

    answer = await admin(h).ResolveFrozenOperation(
        resolve(c.transaction_id, request_id="resolve-4"), metadata=ADMIN
    )
    assert "already so" in answer.action.detail
    assert not await frozen(h, c.transaction_id)
    assert await ledger_lines(h, c.transaction_id) == booked
    await h.assert_books_agree()
    outcomes = [
        a.outcome.value for a in await actions_of(h.running.db, f"transaction:{c.transaction_id}")
    ]
    assert outcomes == ["refused", "refused", "done"]


async def test_a_frozen_capture_cannot_be_stated_failed_nor_succeeded_past_a_refused_leg(
    h: Harness,
) -> None:
    """KasPro refused the payout out of escrow (escrow emptied at the sandbox): the capture
    is frozen with that leg failed and the others never sent. The ride payment has no way
    back from CAPTURING, so "failed" is refused; "succeeded", of the whole operation or of
    another leg, could never complete it (it would leave it PROCESSING and unfrozen, out
    of every list): refused too."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard("085712345678", name="Sari")
    await h.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="auth-1", ride_id="ride-1", passenger_mobile_number=LOCAL, amount_idr=50_000
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    await h.control("POST", "/wallets/888000000000001/balance", json={"balance": 0})
    await h.payments.CaptureRidePayment(
        payment_service_pb2.CaptureRidePaymentRequest(
            request_id="capture-1",
            ride_id="ride-1",
            final_fare_idr=42_000,
            driver_mobile_number="085712345678",
            platform_fee_idr=8_000,
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    row = await h.running.db.fetch_one("SELECT id FROM transactions WHERE type = 'RIDE_CAPTURE'")
    assert row is not None
    capture_id = str(row["id"])
    why = await frozen(h, capture_id)
    assert why
    ledger = await h.ledger()

    legs = await h.running.db.fetch_all(
        "SELECT reference, status FROM attempts WHERE transaction_id = ? ORDER BY reference",
        (capture_id,),
    )
    other = next(str(leg["reference"]) for leg in legs if leg["status"] != "failed")
    tries = [
        resolve(capture_id, pb.CONFIRMED_OUTCOME_FAILED, "resolve-0"),
        resolve(capture_id, pb.CONFIRMED_OUTCOME_SUCCEEDED, "resolve-1"),
        resolve(capture_id, pb.CONFIRMED_OUTCOME_SUCCEEDED, "resolve-2", reference=other),
    ]
    for request in tries:
        failure = await expect_failure(admin(h).ResolveFrozenOperation(request, metadata=ADMIN))
        assert_failure(failure, PRECONDITION, "INVALID_STATE")
        assert "already failed" in failure.message
        assert "cannot complete" in failure.message
    audited = await actions_of(h.running.db, f"transaction:{capture_id}")
    assert [a.outcome for a in audited] == ["refused"] * 3
    assert all("out of escrow" in a.detail for a in audited)
    assert await frozen(h, capture_id) == why
    assert await h.ledger() == ledger


async def test_bad_input_is_named_field_by_field_and_not_audited(h: Harness) -> None:
    stub = admin(h)
    failure = await expect_failure(
        stub.ResolveFrozenOperation(
            pb.ResolveFrozenOperationRequest(request_id="", transaction_id="", reason="  "),
            metadata=ADMIN,
        )
    )
    assert_failure(
        failure, INVALID, "INVALID_FIELD", "request_id", "transaction_id", "outcome", "reason"
    )
    failure = await expect_failure(
        stub.AcknowledgeDrift(
            pb.AcknowledgeDriftRequest(request_id="a-1", drift_id=0, reason="x" * 501),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, INVALID, "INVALID_FIELD", "drift_id", "reason")
    failure = await expect_failure(
        stub.RetryParkedCallback(
            pb.RetryParkedCallbackRequest(request_id="r-1", callback_id=-4, reason="bad\x07"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, INVALID, "INVALID_FIELD", "callback_id", "reason")
    failure = await expect_failure(
        stub.InquireAttempt(
            pb.InquireAttemptRequest(request_id="i-1", reference="not a reference", reason="why"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, INVALID, "INVALID_FIELD", "reference")
    failure = await expect_failure(
        stub.ListDrifts(pb.ListDriftsRequest(page_size=101, page_token="garbage"), metadata=ADMIN)
    )
    assert_failure(failure, INVALID, "INVALID_FIELD", "page_size", "page_token")
    assert await h.running.db.fetch_all("SELECT id FROM admin_actions") == []


# Drifts.


async def test_drifts_are_listed_and_an_open_one_acknowledged_once(h: Harness) -> None:
    db = h.running.db
    drift = await db.run(
        lambda tx: record_drift(tx, ACCOUNT, DriftKind.BALANCE, 0, 5_000, h.clock())
    )
    assert drift is not None
    (listed,) = (
        await admin(h).ListDrifts(pb.ListDriftsRequest(status=pb.DRIFT_STATUS_OPEN), metadata=ADMIN)
    ).drifts
    assert (listed.drift_id, listed.account, listed.difference_idr) == (drift.id, ACCOUNT, 5_000)
    assert listed.kind == pb.DRIFT_KIND_BALANCE
    after = await last_sequence(h)
    request = pb.AcknowledgeDriftRequest(
        request_id="ack-1", drift_id=drift.id, reason="KasPro credited a lost top-up; ticket 7"
    )

    answer = await admin(h).AcknowledgeDrift(request, metadata=ADMIN)

    assert answer.drift.status == pb.DRIFT_STATUS_ACKNOWLEDGED
    assert (answer.drift.closed_by, answer.drift.reason) == ("ops", request.reason)
    assert answer.action.outcome == DONE
    assert answer.action.target == f"drift:{drift.id}"
    (event,) = await admin_events(h, after)
    assert event == answer.action
    assert (
        await admin(h).ListDrifts(pb.ListDriftsRequest(status=pb.DRIFT_STATUS_OPEN), metadata=ADMIN)
    ).drifts == []

    # The same request again: the same answer, still one audit row and one event.
    again = await admin(h).AcknowledgeDrift(request, metadata=ADMIN)
    assert again == answer
    assert len(await actions_of(db, f"drift:{drift.id}")) == 1
    assert len(await admin_events(h, after)) == 1
    # Another request under the same request_id.
    failure = await expect_failure(
        admin(h).AcknowledgeDrift(
            pb.AcknowledgeDriftRequest(request_id="ack-1", drift_id=drift.id, reason="other words"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    # A new request: the drift is no longer open.
    refused = pb.AcknowledgeDriftRequest(request_id="ack-2", drift_id=drift.id, reason="again")
    failure = await expect_failure(admin(h).AcknowledgeDrift(refused, metadata=ADMIN))
    assert_failure(failure, PRECONDITION, "INVALID_STATE")
    assert "is acknowledged, not open" in failure.message
    # Its replay is the same refusal, audited once.
    assert await expect_failure(admin(h).AcknowledgeDrift(refused, metadata=ADMIN)) == failure
    rows = await actions_of(db, f"drift:{drift.id}")
    assert [(r.request_id, r.outcome.value) for r in rows] == [
        ("ack-1", "done"),
        ("ack-2", "refused"),
    ]
    failure = await expect_failure(
        admin(h).AcknowledgeDrift(
            pb.AcknowledgeDriftRequest(request_id="ack-3", drift_id=999, reason="typo"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, NOT_FOUND, "DRIFT_NOT_FOUND")


async def test_drifts_come_in_pages_for_one_filter(h: Harness) -> None:
    db = h.running.db
    for n in range(5):
        account = f"subscriber:62812345678{n:02d}"
        await db.run(
            partial(
                record_drift,
                account=account,
                kind=DriftKind.BALANCE,
                ours_idr=0,
                theirs_idr=n + 1,
                now=float(n),
            )
        )
    seen: list[int] = []
    token = ""
    while True:
        page = await admin(h).ListDrifts(
            pb.ListDriftsRequest(page_size=2, page_token=token), metadata=ADMIN
        )
        seen += [d.drift_id for d in page.drifts]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5
    assert seen == sorted(seen)
    first = await admin(h).ListDrifts(pb.ListDriftsRequest(page_size=2), metadata=ADMIN)
    failure = await expect_failure(
        admin(h).ListDrifts(
            pb.ListDriftsRequest(
                page_size=2, page_token=first.next_page_token, status=pb.DRIFT_STATUS_OPEN
            ),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, INVALID, "INVALID_FIELD", "page_token")


# Attempts.


async def test_an_unresolved_attempt_is_listed_and_inquired_now(h: Harness) -> None:
    c = await pending_cash_out(h)
    (listed,) = (
        await admin(h).ListUnresolvedAttempts(pb.ListUnresolvedAttemptsRequest(), metadata=ADMIN)
    ).attempts
    assert (listed.reference, listed.status) == (c.reference, pb.ATTEMPT_STATUS_PROCESSING)
    assert listed.transaction_id == c.transaction_id
    assert (
        await admin(h).ListUnresolvedAttempts(
            pb.ListUnresolvedAttemptsRequest(status=pb.ATTEMPT_STATUS_PENDING), metadata=ADMIN
        )
    ).attempts == []
    # KasPro settles it; its callback is lost.
    await h.control("POST", "/callback-url", json={"url": f"http://127.0.0.1:{closed_port()}/"})
    await h.complete_at_kaspro(c.reference)
    after = await last_sequence(h)
    request = pb.InquireAttemptRequest(
        request_id="inq-1", reference=c.reference, reason="customer says the money arrived"
    )

    answer = await admin(h).InquireAttempt(request, metadata=ADMIN, timeout=DEADLINE)

    assert answer.kaspro_asked
    assert answer.kaspro_state == pb.KASPRO_STATE_SUCCEEDED
    assert answer.attempt.status == pb.ATTEMPT_STATUS_SUCCEEDED
    assert answer.action.target == f"attempt:{c.reference}"
    assert (await get_transaction(h, c.transaction_id)).status == SUCCEEDED
    await h.assert_books_agree()
    # The transaction's move, then the action, in that order (``after`` may be a little
    # behind: earlier events of the set-up may come first).
    events = [
        (e.type, e.transaction.status if e.WhichOneof("subject") == "transaction" else 0)
        for e in await h.events(after)
    ]
    moved = events.index((common_pb2.EVENT_TYPE_TRANSACTION_UPDATED, SUCCEEDED))
    assert events[moved + 1 :] == [(common_pb2.EVENT_TYPE_ADMIN_ACTION, 0)]
    assert await admin_events(h, after) == [answer.action]
    assert await h.kaspro_requests("/transaction-status/") != []
    asked = len(await h.kaspro_requests("/transaction-status/"))

    # The replay asks KasPro nothing and answers the same.
    assert await admin(h).InquireAttempt(request, metadata=ADMIN) == answer
    assert len(await h.kaspro_requests("/transaction-status/")) == asked
    # A new request: nothing left to ask.
    failure = await expect_failure(
        admin(h).InquireAttempt(
            pb.InquireAttemptRequest(request_id="inq-2", reference=c.reference, reason="again"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, PRECONDITION, "INVALID_STATE")
    failure = await expect_failure(
        admin(h).InquireAttempt(
            pb.InquireAttemptRequest(request_id="inq-3", reference="NOSUCHATTEMPT001", reason="x"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, NOT_FOUND, "ATTEMPT_NOT_FOUND")
    rows = await actions_of(h.running.db, f"attempt:{c.reference}")
    assert [(r.request_id, r.outcome.value) for r in rows] == [
        ("inq-1", "done"),
        ("inq-2", "refused"),
    ]


@pytest.mark.postgresql_only
async def test_an_attempt_another_replica_is_calling_kaspro_about_is_not_asked_again(
    h: Harness,
) -> None:
    c = await pending_cash_out(h)
    asked = len(await h.kaspro_requests("/transaction-status/"))
    assert h.config.db_url
    other = await Database.open(h.config.db_url, pool_size=1)  # another replica
    try:
        assert await claim_flight(other, c.reference, h.clock(), h.clock() + 60)
        answer = await admin(h).InquireAttempt(
            pb.InquireAttemptRequest(request_id="inq-1", reference=c.reference, reason="stuck?"),
            metadata=ADMIN,
            timeout=DEADLINE,
        )
    finally:
        await other.close()

    assert not answer.kaspro_asked
    assert answer.kaspro_state == pb.KASPRO_STATE_UNKNOWN
    assert "another replica" in answer.kaspro_detail
    assert answer.attempt.in_flight
    assert answer.attempt.status == pb.ATTEMPT_STATUS_PROCESSING
    assert answer.action.outcome == DONE
    assert "KasPro not asked" in answer.action.detail
    assert len(await h.kaspro_requests("/transaction-status/")) == asked


# Parked callbacks.


async def test_a_parked_callback_is_listed_and_applied_now(h: Harness) -> None:
    """Its attempt was not committed when it came (another replica's request was still
    creating it): parked. Retried by an operator once the attempt exists, it applies."""
    c = await pending_cash_out(h)
    await h.control("POST", "/callback-url", json={"url": f"http://127.0.0.1:{closed_port()}/"})
    await h.complete_at_kaspro(c.reference)
    raw = body(c.reference, c.reff_id)
    timestamp = str(int(h.clock()))
    db = h.running.db
    callback_id = await store_callback(
        db, raw, timestamp, sign(DEV_SECRET, timestamp, raw), h.clock()
    )
    await db.run(
        lambda tx: mark_callback(
            tx, callback_id, "parked", reference=c.reference, next_try_at=h.clock() + 300
        )
    )
    (listed,) = (
        await admin(h).ListParkedCallbacks(pb.ListParkedCallbacksRequest(), metadata=ADMIN)
    ).callbacks
    assert (listed.callback_id, listed.reference, listed.tries) == (callback_id, c.reference, 1)
    after = await last_sequence(h)

    answer = await admin(h).RetryParkedCallback(
        pb.RetryParkedCallbackRequest(request_id="cb-1", callback_id=callback_id, reason="stuck"),
        metadata=ADMIN,
        timeout=DEADLINE,
    )

    assert answer.verdict == "applied"
    assert answer.action.target == f"callback:{callback_id}"
    assert (await get_transaction(h, c.transaction_id)).status == SUCCEEDED
    await h.assert_books_agree()
    (event,) = await admin_events(h, after)
    assert event == answer.action
    assert (
        await admin(h).ListParkedCallbacks(pb.ListParkedCallbacksRequest(), metadata=ADMIN)
    ).callbacks == []
    # Not parked any more.
    failure = await expect_failure(
        admin(h).RetryParkedCallback(
            pb.RetryParkedCallbackRequest(request_id="cb-2", callback_id=callback_id, reason="x"),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, PRECONDITION, "INVALID_STATE")
    assert "not parked (applied)" in failure.message
    failure = await expect_failure(
        admin(h).RetryParkedCallback(
            pb.RetryParkedCallbackRequest(
                request_id="cb-3", callback_id=callback_id + 99, reason="x"
            ),
            metadata=ADMIN,
        )
    )
    assert_failure(failure, NOT_FOUND, "CALLBACK_NOT_FOUND")


async def test_a_parked_callback_still_unknown_is_parked_again(h: Harness) -> None:
    assert (await post(h, body("NOTOURSYET000001", "OLSFQ2"))).status_code == 200
    (listed,) = (
        await admin(h).ListParkedCallbacks(
            pb.ListParkedCallbacksRequest(reference="NOTOURSYET000001"), metadata=ADMIN
        )
    ).callbacks

    answer = await admin(h).RetryParkedCallback(
        pb.RetryParkedCallbackRequest(
            request_id="cb-1", callback_id=listed.callback_id, reason="x"
        ),
        metadata=ADMIN,
    )

    assert answer.verdict == "parked"
    (again,) = (
        await admin(h).ListParkedCallbacks(pb.ListParkedCallbacksRequest(), metadata=ADMIN)
    ).callbacks
    assert again.tries == 2
    (row,) = await actions_of(h.running.db, f"callback:{listed.callback_id}")
    assert row.detail == "handled again: parked"


# Hostile input: whatever comes in, a documented answer (never INTERNAL), and every field
# a documented rule refuses named in the BadRequest (docs/api.md, "The AdminService").

HOSTILE = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TEXTS = st.one_of(
    st.sampled_from(
        ["", " ", "ok", "a" * 64, "a" * 65, "x" * 500, "x" * 501, "a\x00b", "\u200bok", "ok\n"]
    ),
    st.text(max_size=80),
)
IDS = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1))
_ID_RULE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# What an action may answer besides OK when its input is well formed.
_ACTION_CODES = {NOT_FOUND, PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}


def _bad_id(value: str) -> bool:
    return not _ID_RULE.fullmatch(value)


def _invisible(value: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in value)


def _bad_reason(value: str) -> bool:
    return not value.strip() or len(value) > 500 or _invisible(value)


async def judge(call: Awaitable[object], bad: set[str]) -> None:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        failure = failure_of(error)
        assert failure.domain == "wallet.v1", failure
        if bad:
            assert failure.reason == "INVALID_FIELD", failure
            assert bad <= set(failure.fields), failure
        else:
            assert failure.code in _ACTION_CODES, failure
        return
    assert not bad


@HOSTILE
@given(request_id=TEXTS, reference=TEXTS, reason=TEXTS)
async def test_hostile_inquiries(h: Harness, request_id: str, reference: str, reason: str) -> None:
    bad = {
        name
        for name, is_bad in (
            ("request_id", _bad_id(request_id)),
            ("reference", _bad_id(reference)),
            ("reason", _bad_reason(reason)),
        )
        if is_bad
    }
    request = pb.InquireAttemptRequest(request_id=request_id, reference=reference, reason=reason)
    await judge(admin(h).InquireAttempt(request, metadata=ADMIN, timeout=DEADLINE), bad)


@HOSTILE
@given(
    request_id=TEXTS,
    transaction_id=TEXTS,
    outcome=st.integers(-5, 5),
    reference=TEXTS,
    reason=TEXTS,
)
async def test_hostile_resolutions(
    h: Harness, request_id: str, transaction_id: str, outcome: int, reference: str, reason: str
) -> None:
    bad = {
        name
        for name, is_bad in (
            ("request_id", _bad_id(request_id)),
            ("transaction_id", _bad_id(transaction_id)),
            ("outcome", outcome not in (1, 2)),
            ("reference", bool(reference) and _bad_id(reference)),
            ("reason", _bad_reason(reason)),
        )
        if is_bad
    }
    request = resolve(transaction_id, outcome, request_id, reference=reference, reason=reason)
    await judge(admin(h).ResolveFrozenOperation(request, metadata=ADMIN, timeout=DEADLINE), bad)


@HOSTILE
@given(request_id=TEXTS, target=IDS, reason=TEXTS, drift=st.booleans())
async def test_hostile_callback_retries_and_drift_acknowledgements(
    h: Harness, request_id: str, target: int, reason: str, drift: bool
) -> None:
    bad = {
        name
        for name, is_bad in (
            ("request_id", _bad_id(request_id)),
            ("drift_id" if drift else "callback_id", target < 1),
            ("reason", _bad_reason(reason)),
        )
        if is_bad
    }
    stub = admin(h)
    call: Awaitable[object]
    if drift:
        call = stub.AcknowledgeDrift(
            pb.AcknowledgeDriftRequest(request_id=request_id, drift_id=target, reason=reason),
            metadata=ADMIN,
            timeout=DEADLINE,
        )
    else:
        call = stub.RetryParkedCallback(
            pb.RetryParkedCallbackRequest(request_id=request_id, callback_id=target, reason=reason),
            metadata=ADMIN,
            timeout=DEADLINE,
        )
    await judge(call, bad)


@HOSTILE
@given(page_size=st.integers(-(2**31), 2**31 - 1), token=TEXTS, text=TEXTS, enum=st.integers(-3, 9))
async def test_hostile_lists(h: Harness, page_size: int, token: str, text: str, enum: int) -> None:
    stub = admin(h)
    common: set[str] = set()
    if not 0 <= page_size <= 100:
        common.add("page_size")
    if token:
        common.add("page_token")  # none was issued
    calls: list[tuple[Awaitable[object], set[str], set[str]]] = [
        (
            stub.ListUnresolvedAttempts(
                pb.ListUnresolvedAttemptsRequest(
                    page_size=page_size,
                    page_token=token,
                    status=enum,  # type: ignore[arg-type]
                    transaction_id=text,
                ),
                metadata=ADMIN,
            ),
            {"status"} if enum not in (0, 1, 2) else set(),
            {"transaction_id"} if text and _bad_id(text) else set(),
        ),
        (
            stub.ListFrozenOperations(
                pb.ListFrozenOperationsRequest(
                    page_size=page_size,
                    page_token=token,
                    type=enum,  # type: ignore[arg-type]
                ),
                metadata=ADMIN,
            ),
            {"type"} if not 0 <= enum <= 9 else set(),
            set(),
        ),
        (
            stub.ListDrifts(
                pb.ListDriftsRequest(
                    page_size=page_size,
                    page_token=token,
                    status=enum,  # type: ignore[arg-type]
                    account=text,
                ),
                metadata=ADMIN,
            ),
            {"status"} if not 0 <= enum <= 3 else set(),
            {"account"} if len(text) > 100 or _invisible(text) else set(),
        ),
        (
            stub.ListParkedCallbacks(
                pb.ListParkedCallbacksRequest(
                    page_size=page_size, page_token=token, reference=text
                ),
                metadata=ADMIN,
            ),
            set(),
            {"reference"} if text and _bad_id(text) else set(),
        ),
    ]
    for call, bad_enum, bad_text in calls:
        await judge(call, common | bad_enum | bad_text)


async def test_legs_never_sent_are_left_to_the_ordinary_rules_not_confirmed(h: Harness) -> None:
    """A capture frozen on its payout while KasPro was still answering it (a signed
    callback reported another amount): the fee and refund legs were never sent. Naming
    one of them is refused (KasPro cannot have confirmed it); resolving the operation
    confirms the payout only, and the unsent legs are then sent as usual."""
    await h.onboard(LOCAL, 100_000)
    await h.onboard("085712345678", name="Sari")
    await h.payments.AuthorizeRidePayment(
        payment_service_pb2.AuthorizeRidePaymentRequest(
            request_id="auth-1", ride_id="ride-1", passenger_mobile_number=LOCAL, amount_idr=50_000
        ),
        metadata=DISPATCH,
        timeout=DEADLINE,
    )
    payout = kaspro_request_id("ride", "ride-1", "payout")
    fee = kaspro_request_id("ride", "ride-1", "fee")
    await h.arm_fault("/p2p-transaction/", "delay", delay_seconds=1.0)
    capturing = asyncio.ensure_future(
        h.payments.CaptureRidePayment(
            payment_service_pb2.CaptureRidePaymentRequest(
                request_id="capture-1",
                ride_id="ride-1",
                final_fare_idr=42_000,
                driver_mobile_number="085712345678",
                platform_fee_idr=8_000,
            ),
            metadata=DISPATCH,
            timeout=DEADLINE,
        )
    )

    async def payout_sent() -> bool:
        return any(r["requestId"] == payout for r in await h.kaspro_requests("/p2p-transaction/"))

    await wait_for(payout_sent)
    assert (await post(h, body(payout, "OLSFQ7", amount="34001"))).status_code == 200
    await capturing
    row = await h.running.db.fetch_one("SELECT id FROM transactions WHERE type = 'RIDE_CAPTURE'")
    assert row is not None
    capture_id = str(row["id"])
    assert await frozen(h, capture_id)
    unsent = await h.running.db.fetch_all(
        "SELECT reference FROM attempts WHERE transaction_id = ? AND last_sent_at IS NULL",
        (capture_id,),
    )
    assert fee in {str(r["reference"]) for r in unsent}
    ledger = await h.ledger()

    refused = await expect_failure(
        admin(h).ResolveFrozenOperation(
            resolve(capture_id, request_id="resolve-fee", reference=fee), metadata=ADMIN
        )
    )
    assert_failure(refused, PRECONDITION, "INVALID_STATE")
    assert "never sent" in refused.message
    assert await h.ledger() == ledger

    answer = await admin(h).ResolveFrozenOperation(
        resolve(capture_id, request_id="resolve-all"), metadata=ADMIN, timeout=DEADLINE
    )
    assert answer.action.outcome == DONE
    statuses = {a.reference: a.status for a in answer.attempts}
    assert statuses[payout] == pb.ATTEMPT_STATUS_SUCCEEDED
    assert statuses[fee] == pb.ATTEMPT_STATUS_PENDING  # not confirmed: sent as usual
    assert not await frozen(h, capture_id)

    await h.settle(advance_seconds=120)  # the reconciler asks, then sends the other legs
    assert (await get_transaction(h, capture_id)).status == SUCCEEDED
    await h.assert_books_agree()
