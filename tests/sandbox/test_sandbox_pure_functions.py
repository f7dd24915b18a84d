"""The sandbox's pure pieces: signature vectors, mobile number forms, OCR derivation,
amounts, withdrawal codes and the QRIS reader.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kaspro_sandbox import ocr_identity
from kaspro_sandbox.auth import expected_signature, parse_http_date
from kaspro_sandbox.callbacks import (
    Delivery,
    callback_signature,
    deliver,
)
from kaspro_sandbox.config import (
    QUICK_CALLBACK_RETRY_DELAYS,
    REALISTIC_CALLBACK_RETRY_DELAYS,
    SandboxConfig,
)
from kaspro_sandbox.mobile import mask, to_international_number, to_local
from kaspro_sandbox.money import CallbackAttempt, parse_amount, withdrawal_code
from kaspro_sandbox.ocr import PROVINCE_CODES, decode_image
from kaspro_sandbox.qris import merchant_name, read_tlv

from .partner_client import JPEG, PNG, b64, qris_payload, sign

VECTOR_DATE = "Mon, 04 Oct 2021 07:00:30 GMT"
# Computed outside this code with `openssl dgst -sha256 -hmac s3cr3t -binary | base64`,
# then urlencoded; docs/kaspro.md pins the same vector for the service's signer.
VECTOR_SIGNATURE = "v8qhEt%2BOqbTu4iuXK37hlqZ9Gdw3MwiXNjNhDIaXaaI%3D"

EKYC_IDENTITY_KEYS = {
    "idCardNumber",
    "name",
    "religion",
    "rtrw",
    "address",
    "province",
    "district",
    "subDistrict",
    "occupation",
    "birthPlace",
    "gender",
    "birthDate",
    "idExpiredDate",
    "bloodType",
    "villageDistrict",
    "nationality",
    "maritalStatus",
}


def test_signature_scheme_matches_the_pinned_vector() -> None:
    path = "/customer-account-inquiry/"
    assert sign("s3cr3t", "GET", path, VECTOR_DATE) == VECTOR_SIGNATURE
    assert expected_signature("s3cr3t", "GET", path, VECTOR_DATE) == VECTOR_SIGNATURE


def test_http_date_parses_rfc_1123_gmt_only() -> None:
    assert parse_http_date(VECTOR_DATE) == 1633330830.0
    assert parse_http_date("Mon, 4 Oct 2021 07:00:30 GMT") is None
    assert parse_http_date("Mon, 04 Oct 2021 07:00:30 +0700") is None


def test_mobile_number_forms() -> None:
    assert to_local("081234567890") == "081234567890"
    assert to_local("6281234567890") == "081234567890"
    assert to_local("+6281234567890") == "081234567890"
    assert to_local(" 6281234567890") == "081234567890"  # a `+` that a query string ate
    assert to_local("080012345678") is None
    assert to_local("0812345") is None
    assert to_international_number("081234567890") == 6281234567890
    assert mask("081234567890") == "0812****7890"


def test_only_jpeg_and_png_decode() -> None:
    assert decode_image(b64(JPEG)) == JPEG
    assert decode_image(b64(PNG)) == PNG
    wrapped = b64(JPEG)
    assert decode_image(wrapped[:10] + "\n" + wrapped[10:]) == JPEG
    assert decode_image(b64(b"GIF89a....")) is None
    assert decode_image("not base64!") is None
    assert decode_image("") is None


def test_ocr_identity_is_the_documented_derivation() -> None:
    identity = ocr_identity(JPEG, "Budi  Santoso")
    assert set(identity) == EKYC_IDENTITY_KEYS
    d = hashlib.sha256(JPEG).digest()
    woman = d[3] % 2 == 1
    day, month, year = 1 + d[4] % 28, 1 + d[5] % 12, 1960 + d[6] % 46
    serial = 1 + int.from_bytes(d[7:9], "big") % 9999
    expected_nik = (
        f"{PROVINCE_CODES[d[0] % 38]}{1 + d[1] % 79:02d}{1 + d[2] % 50:02d}"
        f"{day + (40 if woman else 0):02d}{month:02d}{year % 100:02d}{serial:04d}"
    )
    assert identity["idCardNumber"] == expected_nik
    assert identity["name"] == "BUDI SANTOSO"
    assert identity["birthDate"] == f"{day:02d}-{month:02d}-{year}"
    assert identity["gender"] == ("PEREMPUAN" if woman else "LAKI-LAKI")
    assert identity["idExpiredDate"] == "SEUMUR HIDUP"
    assert identity["nationality"] == "WNI"


@given(st.binary(max_size=64))
def test_every_derived_nik_is_structurally_valid(image: bytes) -> None:
    identity = ocr_identity(image, "Siti")
    assert all(isinstance(value, str) for value in identity.values())
    nik = identity["idCardNumber"]
    assert len(nik) == 16
    assert nik.isdigit()
    assert nik[0:2] in PROVINCE_CODES
    assert nik[2:4] != "00"
    assert nik[4:6] != "00"
    nik_day, month, yy, serial = int(nik[6:8]), int(nik[8:10]), nik[10:12], nik[12:16]
    assert 1 <= nik_day <= 31 or 41 <= nik_day <= 71
    assert 1 <= month <= 12
    assert serial != "0000"
    woman = nik_day > 40
    assert identity["gender"] == ("PEREMPUAN" if woman else "LAKI-LAKI")
    day_text, month_text, year_text = identity["birthDate"].split("-")
    assert int(day_text) == nik_day - (40 if woman else 0)
    assert int(month_text) == month
    assert year_text[2:] == yy
    date(int(year_text), month, int(day_text))  # a real calendar date


def test_same_image_same_identity() -> None:
    assert ocr_identity(JPEG, "Budi") == ocr_identity(JPEG, "Budi")
    assert ocr_identity(JPEG, "Budi")["idCardNumber"] != ocr_identity(PNG, "Budi")["idCardNumber"]


# money helpers

# Computed outside this code with `printf '%s' '1700000000.{"status":"SUCCESS","amount":"50000"}'
# | openssl dgst -sha256 -hmac wallet-dev-callback-secret`.
CALLBACK_VECTOR = "54c8720d03926919f66046587a4736d10e0c95f265b1175ef984583d244c789a"


def test_callback_signature_vector() -> None:
    body = b'{"status":"SUCCESS","amount":"50000"}'
    assert callback_signature("wallet-dev-callback-secret", "1700000000", body) == CALLBACK_VECTOR


def test_the_default_callback_retries_back_off_for_about_a_day() -> None:
    delays = SandboxConfig().callback_retry_delays
    assert delays == REALISTIC_CALLBACK_RETRY_DELAYS
    assert delays[:4] == (10, 30, 60, 300)
    assert list(delays) == sorted(delays)
    assert 23 * 3600 < sum(delays) <= 24 * 3600
    assert sum(QUICK_CALLBACK_RETRY_DELAYS) < 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50000", 50000),
        ("1", 1),
        ("999999999999999999", 999999999999999999),
        ("0", None),
        ("050", None),
        ("-1", None),
        ("1e3", None),
        ("1,000", None),
        ("1000000000000000000", None),
        ("\u0661\u0662", None),
        (50000, None),
        (None, None),
    ],
)
def test_parse_amount(value: object, expected: int | None) -> None:
    assert parse_amount(value) == expected


def test_withdrawal_code_is_12_digits_per_request_id() -> None:
    code = withdrawal_code("RQ00000000000001")
    assert len(code) == 12
    assert code.isdigit()
    assert code == withdrawal_code("RQ00000000000001")
    assert code != withdrawal_code("RQ00000000000002")


def test_qris_reader_reads_the_top_level_objects() -> None:
    payload = qris_payload("WARUNG BU SITI", city="BANDUNG")
    objects = read_tlv(payload)
    assert objects is not None
    assert objects["59"] == "WARUNG BU SITI"
    assert objects["60"] == "BANDUNG"
    assert objects["26"].startswith("0014ID.CO.QRIS.WWW")
    assert len(objects["63"]) == 4
    assert merchant_name(payload) == "WARUNG BU SITI"


@pytest.mark.parametrize(
    "payload",
    ["", "59", "5904ABC", "59XXABCD", "000201590", "0002015900", "59 4ABCD", "\uff15\uff19"],
)
def test_qris_reader_refuses_what_it_cannot_read(payload: str) -> None:
    assert merchant_name(payload) is None


@given(st.text(max_size=99))
def test_any_merchant_name_round_trips(name: str) -> None:
    payload = "000201" + f"59{len(name):02d}{name}"
    assert merchant_name(payload) == (name.strip() or None)


async def test_a_try_that_fails_in_any_way_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POST that fails with something other than an httpx error (anyio's AttributeError
    on a connection closed as it opened) is a failed try, recorded and tried again: the
    delivery goes on (it once ended there, and a top-up was never told)."""
    answers: list[Exception | int] = [AttributeError("'NoneType' object has no attribute"), 200]

    async def post(self: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    monkeypatch.setattr(httpx.AsyncClient, "post", post)
    tries: list[CallbackAttempt] = []
    delivery = Delivery(
        url="http://127.0.0.1:9/callbacks/kaspro",
        request_id="TOPUP1",
        body={"requestId": "TOPUP1"},
        secret="s",
        retry_delays=(0.001, 0.002),
        timeout_seconds=1.0,
    )

    assert await deliver(delivery, lambda: 0.0, tries.append)
    assert [t.status_code for t in tries] == [None, 200]
    assert tries[0].error is not None
    assert tries[0].error.startswith("AttributeError")
