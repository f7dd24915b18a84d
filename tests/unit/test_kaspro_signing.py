"""The KasPro HTTP signature: pinned vector, header format, query stripping, dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from wallet_service.kaspro.signing import (
    HmacSigner,
    http_date,
    signature,
    signature_header,
    string_to_sign,
)

VECTOR_DATE = "Mon, 04 Oct 2021 07:00:30 GMT"
# Computed once outside this code (python hmac/base64/quote, and `openssl dgst -sha256
# -hmac s3cr3t -binary | base64`), then pinned: a change here breaks every partner call.
VECTOR_SIGNATURE = "v8qhEt%2BOqbTu4iuXK37hlqZ9Gdw3MwiXNjNhDIaXaaI%3D"


def test_string_to_sign_is_request_target_and_date() -> None:
    assert string_to_sign("GET", "/customer-account-inquiry/", VECTOR_DATE) == (
        "(request-target): get /customer-account-inquiry/\ndate: Mon, 04 Oct 2021 07:00:30 GMT"
    )


def test_signature_matches_the_pinned_vector() -> None:
    assert signature("s3cr3t", "GET", "/customer-account-inquiry/", VECTOR_DATE) == (
        VECTOR_SIGNATURE
    )


def test_query_string_is_not_signed() -> None:
    with_query = signature(
        "s3cr3t", "GET", "/customer-account-inquiry/?mobileNumber=081234567890", VECTOR_DATE
    )
    assert with_query == VECTOR_SIGNATURE
    assert string_to_sign("get", "/a/?b=1#c", "d") == "(request-target): get /a/\ndate: d"


def test_method_case_does_not_matter_but_path_and_date_do() -> None:
    path = "/customer-account-inquiry/"
    assert signature("s3cr3t", "get", path, VECTOR_DATE) == VECTOR_SIGNATURE
    assert signature("s3cr3t", "POST", path, VECTOR_DATE) != VECTOR_SIGNATURE
    assert signature("s3cr3t", "GET", path.rstrip("/"), VECTOR_DATE) != VECTOR_SIGNATURE
    assert signature("s3cr3t", "GET", path, "Mon, 04 Oct 2021 07:00:31 GMT") != (VECTOR_SIGNATURE)
    assert signature("s3cr3T", "GET", path, VECTOR_DATE) != VECTOR_SIGNATURE


def test_signature_header_format() -> None:
    header = signature_header(
        "partner-key", "s3cr3t", "GET", "/customer-account-inquiry/", VECTOR_DATE
    )
    assert header == (
        'Signature keyId="partner-key",algorithm="hmac-sha256",'
        'headers="(request-target) date",'
        'signature="v8qhEt%2BOqbTu4iuXK37hlqZ9Gdw3MwiXNjNhDIaXaaI%3D"'
    )


def test_http_date_is_rfc_1123_gmt() -> None:
    assert http_date(datetime(2021, 10, 4, 7, 0, 30, tzinfo=UTC)) == VECTOR_DATE
    assert http_date(datetime(2021, 10, 4, 7, 0, 30, 999_999, tzinfo=UTC)) == VECTOR_DATE
    jakarta = timezone(timedelta(hours=7))
    assert http_date(datetime(2021, 10, 4, 14, 0, 30, tzinfo=jakarta)) == VECTOR_DATE
    assert http_date(datetime(2024, 2, 9, 23, 5, 1, tzinfo=UTC)) == (
        "Fri, 09 Feb 2024 23:05:01 GMT"
    )


def test_http_date_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        http_date(datetime(2021, 10, 4, 7, 0, 30))


def test_hmac_signer_headers_use_its_clock() -> None:
    when = datetime(2021, 10, 4, 7, 0, 30, tzinfo=UTC).timestamp()
    signer = HmacSigner("partner-key", "s3cr3t", clock=lambda: when)
    headers = signer.headers("GET", "/customer-account-inquiry/?mobileNumber=081234567890")
    assert headers == {
        "Date": VECTOR_DATE,
        "KasPro-Signature": signature_header(
            "partner-key", "s3cr3t", "GET", "/customer-account-inquiry/", VECTOR_DATE
        ),
        "Partner-Key": "partner-key",
    }
    assert "s3cr3t" not in repr(signer)


def test_hmac_signer_headers_stay_right_as_the_clock_and_target_change() -> None:
    # Whatever the order of calls and the clock, every header equals the one computed
    # from scratch.
    start = datetime(2021, 10, 4, 7, 0, 30, tzinfo=UTC).timestamp()
    now = [start]
    signer = HmacSigner("partner-key", "s3cr3t", clock=lambda: now[0])
    calls = [
        (0.0, "GET", "/customer-account-inquiry/?mobileNumber=081234567890"),
        (0.2, "POST", "/p2p-transaction/"),
        (0.5, "GET", "/customer-account-inquiry/?mobileNumber=089999999999"),
        (0.9, "POST", "/customer-account-inquiry/"),
        (1.0, "GET", "/customer-account-inquiry/"),
        (1.7, "POST", "/p2p-transaction/"),
        (61.0, "POST", "/p2p-transaction/"),
        (0.1, "POST", "/p2p-transaction/"),  # a clock set back
    ]
    for offset, method, path in calls:
        now[0] = start + offset
        date = http_date(datetime.fromtimestamp(now[0], tz=UTC))
        headers = signer.headers(method, path)
        assert headers == {
            "Date": date,
            "KasPro-Signature": signature_header("partner-key", "s3cr3t", method, path, date),
            "Partner-Key": "partner-key",
        }, (offset, method, path)
