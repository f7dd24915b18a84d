"""KasPro callbacks: verifying the signature on the raw bytes, then reading the body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wallet_service.domain.phone import MobileNumber
from wallet_service.kaspro import (
    CALLBACK_SIGNATURE_HEADER,
    CALLBACK_TIMESTAMP_HEADER,
    Callback,
    CallbackKind,
    KasProCallbackInvalid,
    KasProError,
    TransferState,
    callback_signature,
    parse_callback,
    verify_callback,
)

SECRET = "cb-s3cr3t"
PREVIOUS = "cb-old-s3cr3t"
NOW = 1_633_330_830.0
STAMP = "1633330830"

# Computed once outside this code (`printf '%s' '1633330830.<body>' | openssl dgst -sha256
# -hmac cb-s3cr3t`), then pinned: a change here makes every callback unverifiable.
VECTOR_BODY = b'{"reffId":"R1","requestId":"ABCDEFGHIJKLMNOP","status":"SUCCESS"}'
VECTOR_SIGNATURE = "dd3ac8041b4d5fbcacaf66d2bae54bf089de77341ef35b07c7d8d417f731d95d"

BANK_TRANSFER_CALLBACK: dict[str, Any] = {
    "reffId": "OLSFQ20220214101951114",
    "requestId": "ABCDEFGHIJKLMNOP",
    "status": "SUCCESS",
    "code": 0,
    "message": "Berhasil",
    "amount": "50000",
    "serviceFee": "2500",
    "mobileNumber": "081234567890",
    "type": "BANK_TRANSFER",
    "timestamp": "2024-02-09T23:05:01Z",
}

TOPUP_CALLBACK: dict[str, Any] = {
    "reffId": "TOPUP0001",
    "requestId": "KASPRO-VA-0001",
    "status": "SUCCESS",
    "code": 0,
    "message": "Berhasil",
    "amount": "100000",
    "serviceFee": "0",
    "mobileNumber": "081234567890",
    "type": "TOPUP",
    "channel": "VA",
    "vaNumber": "8877081234567890",
    "timestamp": "2024-02-09T23:05:01Z",
}


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def callback(**fields: Any) -> bytes:
    return raw({**BANK_TRANSFER_CALLBACK, **fields})


def without(*keys: str) -> bytes:
    return raw({k: v for k, v in BANK_TRANSFER_CALLBACK.items() if k not in keys})


# Signature.


def test_header_names() -> None:
    assert CALLBACK_TIMESTAMP_HEADER == "KasPro-Callback-Timestamp"
    assert CALLBACK_SIGNATURE_HEADER == "KasPro-Callback-Signature"


def test_callback_signature_matches_the_pinned_vector() -> None:
    assert callback_signature(SECRET, STAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_a_good_signature_verifies() -> None:
    assert verify_callback(VECTOR_BODY, STAMP, VECTOR_SIGNATURE, [SECRET], NOW)
    assert verify_callback(VECTOR_BODY, STAMP, VECTOR_SIGNATURE.upper(), [SECRET], NOW)


def test_a_wrong_secret_does_not_verify() -> None:
    assert not verify_callback(VECTOR_BODY, STAMP, VECTOR_SIGNATURE, ["other"], NOW)


def test_the_previous_secret_is_accepted_during_a_rotation() -> None:
    signed = callback_signature(PREVIOUS, STAMP, VECTOR_BODY)
    assert verify_callback(VECTOR_BODY, STAMP, signed, [SECRET, PREVIOUS], NOW)
    assert verify_callback(VECTOR_BODY, STAMP, VECTOR_SIGNATURE, (SECRET, PREVIOUS), NOW)
    assert not verify_callback(VECTOR_BODY, STAMP, signed, [SECRET], NOW)


def test_empty_secrets_never_verify() -> None:
    unkeyed = callback_signature("", STAMP, VECTOR_BODY)
    assert not verify_callback(VECTOR_BODY, STAMP, unkeyed, ["", SECRET], NOW)
    assert not verify_callback(VECTOR_BODY, STAMP, unkeyed, [""], NOW)
    assert not verify_callback(VECTOR_BODY, STAMP, VECTOR_SIGNATURE, [], NOW)


@pytest.mark.parametrize(
    "body",
    [
        VECTOR_BODY.replace(b"SUCCESS", b"FAILED"),
        VECTOR_BODY + b" ",
        VECTOR_BODY.replace(b'":"', b'": "'),
        b"",
    ],
)
def test_a_tampered_body_does_not_verify(body: bytes) -> None:
    assert not verify_callback(body, STAMP, VECTOR_SIGNATURE, [SECRET], NOW)


def test_the_timestamp_is_signed_too() -> None:
    later = str(int(NOW) + 1)
    assert not verify_callback(VECTOR_BODY, later, VECTOR_SIGNATURE, [SECRET], NOW)


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
def test_a_stale_or_future_timestamp_does_not_verify(offset: int) -> None:
    stamp = str(int(NOW) + offset)
    signed = callback_signature(SECRET, stamp, VECTOR_BODY)
    assert not verify_callback(VECTOR_BODY, stamp, signed, [SECRET], NOW)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_a_timestamp_within_the_window_verifies(offset: int) -> None:
    stamp = str(int(NOW) + offset)
    signed = callback_signature(SECRET, stamp, VECTOR_BODY)
    assert verify_callback(VECTOR_BODY, stamp, signed, [SECRET], NOW)


def test_the_window_is_configurable() -> None:
    stamp = str(int(NOW) - 100)
    signed = callback_signature(SECRET, stamp, VECTOR_BODY)
    assert verify_callback(VECTOR_BODY, stamp, signed, [SECRET], NOW, window_seconds=100)
    assert not verify_callback(VECTOR_BODY, stamp, signed, [SECRET], NOW, window_seconds=99)


@pytest.mark.parametrize(
    ("stamp", "signature"),
    [(None, VECTOR_SIGNATURE), (STAMP, None), (None, None)],
)
def test_missing_headers_do_not_verify(stamp: str | None, signature: str | None) -> None:
    assert not verify_callback(VECTOR_BODY, stamp, signature, [SECRET], NOW)


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "1633330830.0",
        "1.6e9",
        "-1633330830",
        "+1633330830",
        " 1633330830",
        "1633330830 ",
        "0x61",
        "\uff11\uff16\uff13\uff13\uff13\uff13\uff10\uff18\uff13\uff10",
        "2021-10-04T07:00:30Z",
        "9" * 40,
    ],
)
def test_a_timestamp_that_is_not_whole_unix_seconds_does_not_verify(stamp: str) -> None:
    signed = callback_signature(SECRET, stamp, VECTOR_BODY)
    assert not verify_callback(VECTOR_BODY, stamp, signed, [SECRET], NOW)


@pytest.mark.parametrize(
    "signature",
    ["", "xyz", VECTOR_SIGNATURE[:-1], "\u00e9" * 64, f'"{VECTOR_SIGNATURE}"'],
)
def test_a_malformed_signature_does_not_verify(signature: str) -> None:
    assert not verify_callback(VECTOR_BODY, STAMP, signature, [SECRET], NOW)


# Body.


def test_bank_transfer_callback() -> None:
    assert parse_callback(raw(BANK_TRANSFER_CALLBACK)) == Callback(
        reff_id="OLSFQ20220214101951114",
        request_id="ABCDEFGHIJKLMNOP",
        state=TransferState.SUCCEEDED,
        code=0,
        message="Berhasil",
        amount_idr=50000,
        fee_idr=2500,
        mobile_number=MobileNumber("81234567890"),
        kind=CallbackKind.BANK_TRANSFER,
        channel="",
        va_number="",
        payment_code="",
        timestamp="2024-02-09T23:05:01Z",
        detail="",
    )


def test_topup_callback_by_virtual_account() -> None:
    event = parse_callback(raw(TOPUP_CALLBACK))
    assert event.kind is CallbackKind.TOPUP
    assert (event.channel, event.va_number, event.payment_code) == ("VA", "8877081234567890", "")
    assert (event.state, event.amount_idr, event.fee_idr) == (TransferState.SUCCEEDED, 100000, 0)
    assert event.request_id == "KASPRO-VA-0001"


def test_topup_callback_by_retail_payment_code() -> None:
    body = {**TOPUP_CALLBACK, "channel": "ALFAMART", "paymentCode": "31081234567890"}
    del body["vaNumber"]
    event = parse_callback(raw(body))
    assert (event.kind, event.channel, event.payment_code, event.va_number) == (
        CallbackKind.TOPUP,
        "ALFAMART",
        "31081234567890",
        "",
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("BANK_TRANSFER", CallbackKind.BANK_TRANSFER),
        ("RETAIL_WITHDRAWAL", CallbackKind.RETAIL_WITHDRAWAL),
        ("QRIS", CallbackKind.QRIS),
        ("topup", CallbackKind.TOPUP),
        ("P2P", CallbackKind.UNKNOWN),
        ("", CallbackKind.UNKNOWN),
        (None, CallbackKind.UNKNOWN),
        (7, CallbackKind.UNKNOWN),
    ],
)
def test_callback_kinds(kind: Any, expected: CallbackKind) -> None:
    assert parse_callback(callback(type=kind)).kind is expected


def test_a_failed_callback_may_omit_amounts() -> None:
    event = parse_callback(callback(status="FAILED", code=140001))
    assert (event.state, event.code, event.amount_idr) == (TransferState.FAILED, 140001, 50000)
    body = {**BANK_TRANSFER_CALLBACK, "status": "failed"}
    del body["amount"], body["serviceFee"]
    event = parse_callback(raw(body))
    assert (event.state, event.amount_idr, event.fee_idr, event.detail) == (
        TransferState.FAILED,
        None,
        0,
        "",
    )


@pytest.mark.parametrize("status", ["PENDING", "DONE", "SUCCEEDED", 1])
def test_a_status_word_we_do_not_know_is_unknown(status: Any) -> None:
    event = parse_callback(callback(status=status))
    assert (event.state, event.amount_idr, event.detail) == (
        TransferState.UNKNOWN,
        None,
        "unknown status",
    )


@pytest.mark.parametrize("status", ["SUCCESS", "FAILED"])
@pytest.mark.parametrize("amount", ["4xxx9", "", "12.5", -5, 50000.0, True, ["1"]])
def test_a_masked_amount_makes_the_state_unknown_never_zero(status: str, amount: Any) -> None:
    event = parse_callback(callback(status=status, amount=amount))
    assert (event.state, event.amount_idr, event.detail) == (
        TransferState.UNKNOWN,
        None,
        "malformed amount",
    )


def test_a_success_without_an_amount_is_unknown() -> None:
    event = parse_callback(without("amount"))
    assert (event.state, event.detail) == (TransferState.UNKNOWN, "answer has no amount")


def test_a_masked_fee_is_unknown_and_a_missing_fee_is_zero() -> None:
    event = parse_callback(callback(serviceFee="6xxx"))
    assert (event.state, event.fee_idr, event.detail) == (
        TransferState.UNKNOWN,
        0,
        "malformed serviceFee",
    )
    event = parse_callback(without("serviceFee"))
    assert (event.state, event.fee_idr) == (TransferState.SUCCEEDED, 0)


def test_amounts_as_numbers_are_read() -> None:
    event = parse_callback(callback(amount=50000, serviceFee=2500, code="0"))
    assert (event.amount_idr, event.fee_idr, event.code) == (50000, 2500, 0)


@pytest.mark.parametrize("mobile", [6281234567890, "6281234567890", "+6281234567890"])
def test_mobile_number_in_any_accepted_form(mobile: Any) -> None:
    assert parse_callback(callback(mobileNumber=mobile)).mobile_number == MobileNumber(
        "81234567890"
    )


@pytest.mark.parametrize("mobile", [None, "", "021555123", "0812-3456-7890", True, {"n": 1}])
def test_an_unreadable_mobile_number_is_none(mobile: Any) -> None:
    event = parse_callback(callback(mobileNumber=mobile))
    assert event.mobile_number is None
    assert event.state is TransferState.SUCCEEDED


def test_optional_fields_missing_or_odd_are_empty() -> None:
    body = {
        "reffId": "R1",
        "requestId": "ABCDEFGHIJKLMNOP",
        "status": "FAILED",
        "code": "x",
        "message": {"text": "no"},
        "channel": ["VA"],
        "timestamp": 1707519901,
    }
    event = parse_callback(raw(body))
    assert (event.code, event.message, event.channel, event.timestamp) == (
        None,
        "",
        "",
        "1707519901",
    )
    assert (event.kind, event.va_number, event.payment_code) == (CallbackKind.UNKNOWN, "", "")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "callback is not JSON"),
        (b"<html>", "callback is not JSON"),
        (b"\xff\xfe{", "callback is not JSON"),
        (b"[" * 100_000, "callback is not JSON"),
        (b"null", "callback is not a JSON object"),
        (b"[]", "callback is not a JSON object"),
        (b'"reffId"', "callback is not a JSON object"),
        (without("reffId"), "callback has no reffId"),
        (callback(reffId=""), "callback has no reffId"),
        (callback(reffId=None), "callback has no reffId"),
        (callback(reffId={"id": "R1"}), "callback has no reffId"),
        (without("requestId"), "callback has no requestId"),
        (callback(requestId="  "), "callback has no requestId"),
        (without("status"), "callback has no status"),
        (callback(status=""), "callback has no status"),
        (callback(status=None), "callback has no status"),
    ],
)
def test_an_unusable_body_is_invalid(body: bytes, reason: str) -> None:
    with pytest.raises(KasProCallbackInvalid) as caught:
        parse_callback(body)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
    assert isinstance(caught.value, KasProError)
