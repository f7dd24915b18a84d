"""Logs: one call-log line per RPC, and no phone number, OTP, token, NIK or image in any line."""

from __future__ import annotations

import base64
import json
import logging
import os

import grpc
import pytest
from wallet.v1 import account_service_pb2

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
    TOKENS,
    Harness,
    expect_failure,
)

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
        ("GetAccount", "-", "UNAUTHENTICATED"),
        ("GetAccount", "backend", "INVALID_ARGUMENT"),
    ]
    for call in calls:
        assert call["method"].startswith("/wallet.v1.AccountService/")
        assert isinstance(call["duration_ms"], int | float)
        assert call["duration_ms"] >= 0
        assert call["level"] == "INFO"


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
