"""Logs: one call-log line per RPC, refused calls named for audit, one trace id through an
operation's every line (the RPC's, the KasPro calls', the reconciler's and the callback's),
and no phone number, OTP, token, NIK or image in any line."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from typing import Any

import grpc
import pytest
from wallet.v1 import account_service_pb2

from wallet_service.api.edge import TRACE_ID_KEY
from wallet_service.logs import JsonFormatter

from .conftest import (
    APP,
    CANONICAL,
    DEADLINE,
    E164,
    LOCAL,
    NATIONAL,
    OTHER_E164,
    OTHER_LOCAL,
    PRICING,
    TOKENS,
    Harness,
    Metadata,
    bearer,
    expect_failure,
    wait_for,
)
from .helpers import PROCESSING, SUCCEEDED, cash_out, settled

JPEG_HEADER = b"\xff\xd8\xff\xe0"
MALFORMED_NIK = "3171011513900001"  # 16 digits, birth month 13

# The sandbox plays KasPro: its own log lines show OTPs on purpose (they are how a
# developer "receives" one), and they are not the service's logs.
NOT_OURS = ("kaspro_sandbox", "uvicorn")


def our_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = JsonFormatter()
    return [
        formatter.format(record)
        for record in caplog.records
        if not record.name.startswith(NOT_OURS)
    ]


def image(marker: bytes) -> bytes:
    return JPEG_HEADER + marker + os.urandom(2048) + marker


def upgrade_request(
    request_id: str, mobile: str, images: list[bytes]
) -> account_service_pb2.UpgradeKycRequest:
    return account_service_pb2.UpgradeKycRequest(
        request_id=request_id,
        mobile_number=mobile,
        id_card_image=images[0],
        selfie_image=images[1],
        selfie_with_id_card_image=images[2],
    )


async def test_walkthrough_logs_no_personal_data_or_secrets(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    markers = [os.urandom(48) for _ in range(3)]
    images = [image(m) for m in markers]

    await h.register(E164, request_id="walk-1")
    await h.request_otp(CANONICAL)
    otp = await h.otp(LOCAL)
    wrong = otp[:-1] + str((int(otp[-1]) + 1) % 10)
    await expect_failure(h.verify_otp(wrong, LOCAL))
    await h.verify_otp(otp, LOCAL)
    upgraded = await h.accounts.UpgradeKyc(
        upgrade_request("walk-kyc", LOCAL, images), metadata=APP, timeout=DEADLINE
    )
    nik = upgraded.identity.id_card_number
    await h.get_account(CANONICAL)
    await h.accounts.CheckFunds(
        account_service_pb2.CheckFundsRequest(mobile_number=E164, amount_idr=1),
        metadata=APP,
        timeout=DEADLINE,
    )
    # A second customer whose KTP KasPro misreads: the malformed NIK is logged about.
    await h.register(OTHER_LOCAL, request_id="walk-2")
    await h.link(OTHER_LOCAL)
    await h.override_ocr(OTHER_LOCAL, MALFORMED_NIK)
    misread = await h.accounts.UpgradeKyc(
        upgrade_request("walk-kyc-2", OTHER_E164, images), metadata=APP, timeout=DEADLINE
    )
    assert misread.identity.id_card_number == MALFORMED_NIK

    lines = our_lines(caplog)
    text = "\n".join(lines)
    assert "wallet_service" in text  # the service did log: the search below means something
    forbidden = {
        "local number": LOCAL,
        "628 number": CANONICAL,
        "E.164 number": E164,
        "national digits": NATIONAL,
        "other local number": OTHER_LOCAL,
        "other E.164 number": OTHER_E164,
        "other national digits": OTHER_LOCAL[1:],
        "OTP": otp,
        "wrong OTP": wrong,
        "NIK": nik,
        "malformed NIK": MALFORMED_NIK,
    }
    for i, token in enumerate(TOKENS):
        forbidden[f"token {i}"] = token
    for i, marker in enumerate(markers):
        forbidden[f"image {i} (base64)"] = base64.b64encode(marker).decode()
        forbidden[f"image {i} (hex)"] = marker.hex()
        forbidden[f"image {i} (repr)"] = repr(marker)[2:-1][:32]
    leaks = {name for name, value in forbidden.items() if value in text}
    assert not leaks, [line for line in lines if any(forbidden[n] in line for n in leaks)]


async def test_one_call_log_line_per_rpc(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    await h.register()
    await h.request_otp()
    otp = await h.otp(LOCAL)
    await expect_failure(h.verify_otp("000000" if otp != "000000" else "111111"))
    await h.verify_otp(otp)
    await h.get_account()
    await expect_failure(h.accounts.GetAccount(account_service_pb2.GetAccountRequest()))
    await expect_failure(h.get_account("0712345678"))

    calls = [
        json.loads(JsonFormatter().format(record))
        for record in caplog.records
        if record.name == "wallet_service.calls"
    ]
    summary = [(c["method"].rsplit("/", 1)[-1], c["caller"], c["code"]) for c in calls]
    assert summary == [
        ("RegisterCustomer", "backend", "OK"),
        ("RequestOtp", "backend", "OK"),
        ("VerifyOtp", "backend", "FAILED_PRECONDITION"),
        ("VerifyOtp", "backend", "OK"),
        ("GetAccount", "backend", "OK"),
        ("GetAccount", "no credentials", "UNAUTHENTICATED"),
        ("GetAccount", "backend", "INVALID_ARGUMENT"),
    ]
    for call in calls:
        assert call["method"].startswith("/wallet.v1.AccountService/")
        assert isinstance(call["duration_ms"], int | float)
        assert call["duration_ms"] >= 0
        # A refused caller is a warning (kept at WALLET_LOG_LEVEL=WARNING, for audit).
        assert call["level"] == ("WARNING" if call["code"] == "UNAUTHENTICATED" else "INFO")
    assert len({call["trace_id"] for call in calls}) == len(calls)


async def test_failed_calls_are_logged_with_their_code(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await h.register()
    await h.arm_fault("/customer-account-inquiry/", "http_500")

    failure = await expect_failure(h.get_account())

    assert failure.code == grpc.StatusCode.UNAVAILABLE
    calls = [r for r in caplog.records if r.name == "wallet_service.calls"]
    assert [getattr(r, "code", None) for r in calls] == ["OK", "UNAVAILABLE"]


# Refused calls, for audit.

SECRET_TOKEN = "zq7-not-a-caller-token-5511"


def call_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The call-log lines: the one line per RPC that ends it, with its status code."""
    return [
        json.loads(JsonFormatter().format(record))
        for record in caplog.records
        if record.name == "wallet_service.calls" and hasattr(record, "code")
    ]


@pytest.mark.parametrize(
    ("metadata", "caller", "code"),
    [
        pytest.param((), "no credentials", "UNAUTHENTICATED", id="no-credentials"),
        pytest.param(bearer(SECRET_TOKEN), "unknown token", "UNAUTHENTICATED", id="unknown-token"),
        pytest.param(
            (("authorization", f"Basic {SECRET_TOKEN}"),),
            "unknown token",
            "UNAUTHENTICATED",
            id="not-bearer",
        ),
        pytest.param(PRICING, "pricing", "PERMISSION_DENIED", id="permission-denied"),
    ],
)
async def test_a_refused_call_is_logged_with_its_caller_method_and_reason(
    h: Harness, caplog: pytest.LogCaptureFixture, metadata: Metadata, caller: str, code: str
) -> None:
    caplog.set_level(logging.INFO)

    failure = await expect_failure(
        h.funding.CashOut(cash_out(), metadata=metadata, timeout=DEADLINE)
    )

    assert failure.code.name == code
    [line] = call_lines(caplog)
    assert line["method"] == "/wallet.v1.FundingService/CashOut"
    assert (line["caller"], line["code"], line["reason"]) == (caller, code, code)
    assert line["level"] == "WARNING"
    assert re.fullmatch("[0-9a-f]{32}", line["trace_id"])
    # Never the token, nor a part of it.
    text = "\n".join(our_lines(caplog))
    assert SECRET_TOKEN[:5] not in text


async def test_a_failed_call_line_names_its_reason(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await expect_failure(h.get_account())

    [line] = call_lines(caplog)
    assert (line["caller"], line["code"], line["reason"]) == (
        "backend",
        "NOT_FOUND",
        "CUSTOMER_NOT_FOUND",
    )
    assert line["level"] == "INFO"


# Trace ids.

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),)
CASH_OUT_PATH = "/bank-transfer/"
STATUS_PATH = "/transaction-status/"


def logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The service's lines, as the JSON formatter writes them (not grpc's debug lines of
    the test's own client)."""
    lines = [json.loads(line) for line in our_lines(caplog)]
    return [line for line in lines if line["logger"].startswith("wallet_service")]


def trailer(metadata: Any) -> str | None:
    return next((v for k, v in metadata or () if k == TRACE_ID_KEY), None)


async def sandbox_request_ids(h: Harness, before: int) -> list[str]:
    """The requestIds the sandbox saw after its first ``before`` requests."""
    seen = (await h.kaspro_requests())[before:]
    return [r["requestId"] for r in seen if r.get("requestId")]


async def test_every_line_of_an_rpc_carries_the_trace_id_of_its_traceparent(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await h.sandbox_settings(auto_complete=False)  # no callback during the call
    await h.onboard(LOCAL, 200_000)
    before = len(await h.kaspro_requests())
    caplog.set_level(logging.DEBUG)
    caplog.clear()

    call = h.funding.CashOut(cash_out(50_000), metadata=APP + TRACEPARENT, timeout=DEADLINE)
    response = await call

    assert response.transaction.status == PROCESSING
    lines = logged(caplog)
    assert {line["logger"] for line in lines} >= {"wallet_service.calls", "wallet_service.kaspro"}
    assert [line for line in lines if line.get("trace_id") != TRACE_ID] == []
    [call_line] = [line for line in lines if line["logger"] == "wallet_service.calls"]
    sent = await sandbox_request_ids(h, before)
    assert sent  # the bank transfer's requestId, as the sandbox saw it
    assert call_line["kaspro_request_ids"] == sent
    kaspro_lines = [line for line in lines if line["logger"] == "wallet_service.kaspro"]
    assert any(f"request_id={sent[0]}" in line["msg"] for line in kaspro_lines)
    assert trailer(await call.trailing_metadata()) == TRACE_ID


async def test_a_trace_id_is_made_up_when_none_or_an_invalid_one_is_sent(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await h.register()
    caplog.set_level(logging.DEBUG)
    invalid = (("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01"),)
    made_up = []
    for metadata in (APP, APP, APP + invalid):
        call = h.accounts.GetAccount(
            account_service_pb2.GetAccountRequest(mobile_number=LOCAL),
            metadata=metadata,
            timeout=DEADLINE,
        )
        await call
        made_up.append(trailer(await call.trailing_metadata()))

    for trace_id in made_up:
        assert trace_id is not None
        assert re.fullmatch("[0-9a-f]{32}", trace_id)
        assert trace_id != "0" * 32
    assert len(set(made_up)) == 3
    calls = call_lines(caplog)
    assert [c["trace_id"] for c in calls] == made_up
    # An invalid traceparent is said at debug, under the trace id made up instead.
    [said] = [line for line in logged(caplog) if "invalid traceparent" in line["msg"]]
    assert (said["level"], said["trace_id"]) == ("DEBUG", made_up[2])


async def test_a_failed_call_tells_its_trace_id_with_the_error_details(h: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h.accounts.GetAccount(
            account_service_pb2.GetAccountRequest(mobile_number=LOCAL),
            metadata=APP + TRACEPARENT,
            timeout=DEADLINE,
        )

    keys = [k for k, _ in caught.value.trailing_metadata() or ()]
    assert "grpc-status-details-bin" in keys
    assert trailer(caught.value.trailing_metadata()) == TRACE_ID


async def test_later_work_on_an_attempt_logs_under_the_trace_id_of_its_rpc(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A cash-out KasPro never received: after a restart (another process, as another
    replica would be) the reconciler asks about it and sends it again, and KasPro's
    callback settles it, each logged under the trace id of the CashOut call."""
    await h.sandbox_settings(auto_complete=False)
    await h.onboard(LOCAL, 200_000)
    await h.arm_fault(CASH_OUT_PATH, "http_500")
    before = len(await h.kaspro_requests())

    failure = await expect_failure(
        h.funding.CashOut(cash_out(50_000), metadata=APP + TRACEPARENT, timeout=DEADLINE)
    )
    assert failure.reason == "PROVIDER_UNAVAILABLE"
    [reference] = set(await sandbox_request_ids(h, before))
    await h.restart()
    caplog.set_level(logging.INFO)
    caplog.clear()

    assert await h.settle() == 1

    sent = await h.kaspro_requests()
    assert [r["path"] for r in sent[before:] if r.get("requestId") == reference] == [
        CASH_OUT_PATH,
        STATUS_PATH,
        CASH_OUT_PATH,
    ]
    about = [line for line in logged(caplog) if reference in line["msg"]]
    said = [line["msg"] for line in about]
    assert any(msg.startswith(f"kaspro GET {STATUS_PATH}") for msg in said), said
    assert any("sending it again" in msg for msg in said), said
    assert any(msg.startswith(f"kaspro POST {CASH_OUT_PATH}") for msg in said), said
    assert {line.get("trace_id") for line in about} == {TRACE_ID}

    caplog.clear()
    await h.complete_at_kaspro(reference)
    [transaction] = await h.running.db.fetch_all(
        "SELECT transaction_id FROM attempts WHERE reference = ?", (reference,)
    )
    done = await settled(h, transaction["transaction_id"])
    assert done.status == SUCCEEDED

    async def callback_logged() -> bool:
        return any("callback" in line["msg"] for line in logged(caplog))

    await wait_for(callback_logged)
    [callback] = [line for line in logged(caplog) if line["logger"].endswith("callbacks")]
    assert callback["msg"].endswith(f"for attempt {reference}: applied")
    assert callback["trace_id"] == TRACE_ID


async def test_an_attempt_without_a_trace_id_is_worked_on_under_the_passs_own(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """An attempt created before trace ids were stored: the reconciler's pass makes one up."""
    await h.sandbox_settings(auto_complete=False)
    await h.onboard(LOCAL, 200_000)
    await h.funding.CashOut(cash_out(50_000), metadata=APP + TRACEPARENT, timeout=DEADLINE)
    [row] = await h.running.db.fetch_all("SELECT reference, trace_id FROM attempts")
    assert row["trace_id"] == TRACE_ID
    await h.running.db.run(lambda tx: tx.execute("UPDATE attempts SET trace_id = ''"))
    caplog.set_level(logging.INFO)
    caplog.clear()

    assert await h.settle() == 1

    about = [line for line in logged(caplog) if row["reference"] in line["msg"]]
    assert about
    [trace_id] = {line.get("trace_id") for line in about}
    assert isinstance(trace_id, str)
    assert re.fullmatch("[0-9a-f]{32}", trace_id)
    assert trace_id != TRACE_ID
