# ruff: noqa: RUF001  (look-alike characters are the point of this file)
"""Hostile input at every RPC of the four services, generated with Hypothesis.

Each test builds requests for one RPC from random and boundary values (empty and 10k
strings, look-alike digits and letters, invisible and right-to-left characters, numbers
in every accepted and many refused spellings, int64 extremes, broken QRIS payloads,
empty, random and oversized images, unknown enum numbers, forged page tokens) and sends
them to the real service as admin, with a short deadline. Whatever comes in:

- the answer is a code the contract documents for that RPC (the proto comments), never
  INTERNAL, UNKNOWN or DEADLINE_EXCEEDED (a hang);
- every refusal carries a wallet.v1 ErrorInfo whose reason goes with its code
  (docs/api.md, "Errors");
- an INVALID_FIELD refusal names at least one field, and KasPro was not called for it
  (the sandbox's request log gained no entry);
- a request that breaks a documented rule is refused INVALID_ARGUMENT, and the
  BadRequest names that field (it lists *every* bad field, docs/api.md).

One service (with two funded, linked wallets, an authorized and a captured ride) serves
all examples of a test; assertions only compare deltas of the request log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import cast

import grpc
import pytest_asyncio
from google.protobuf.message import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from qris_samples import build_qris, with_crc
from wallet.v1 import account_service_pb2 as accounts
from wallet.v1 import common_pb2
from wallet.v1 import funding_service_pb2 as funding
from wallet.v1 import payment_service_pb2 as payments
from wallet.v1 import transaction_service_pb2 as transactions

from .conftest import (
    ADMIN,
    ARABIC_INDIC_LOCAL,
    CANONICAL,
    E164,
    FULL_WIDTH_LOCAL,
    GIF_HEADER,
    ID_CARD_JPEG,
    LOCAL,
    MAX_IMAGE_BYTES,
    NATIONAL,
    OTHER_E164,
    OTHER_LOCAL,
    PNG_HEADER,
    SELFIE_JPEG,
    SELFIE_WITH_ID_CARD_JPEG,
    Harness,
    RpcFailure,
    failure_of,
)

# A short deadline: every answer here should take milliseconds; a hang fails the test.
CALL_DEADLINE = 5.0
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)

Code = grpc.StatusCode
OK = Code.OK
INVALID_ARGUMENT = Code.INVALID_ARGUMENT
NOT_FOUND = Code.NOT_FOUND
ALREADY_EXISTS = Code.ALREADY_EXISTS
FAILED_PRECONDITION = Code.FAILED_PRECONDITION
RESOURCE_EXHAUSTED = Code.RESOURCE_EXHAUSTED
ABORTED = Code.ABORTED
UNAVAILABLE = Code.UNAVAILABLE
NEVER = frozenset({Code.INTERNAL, Code.UNKNOWN, Code.DEADLINE_EXCEEDED})

# The codes each RPC's proto comment documents (UNAUTHENTICATED and PERMISSION_DENIED
# left out: every call here is made as admin).
_ACCOUNT = frozenset({OK, INVALID_ARGUMENT, UNAVAILABLE})  # "Every RPC can also answer …"
_PAYMENT = _ACCOUNT | {ALREADY_EXISTS, ABORTED}
_TRANSACTION = frozenset({OK, INVALID_ARGUMENT})
ALLOWED: dict[str, frozenset[Code]] = {
    "RegisterCustomer": _ACCOUNT | {ALREADY_EXISTS, ABORTED},
    "RequestOtp": _ACCOUNT | {NOT_FOUND, RESOURCE_EXHAUSTED},
    "VerifyOtp": _ACCOUNT | {FAILED_PRECONDITION, RESOURCE_EXHAUSTED, NOT_FOUND},
    "UpgradeKyc": _ACCOUNT | {NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED},
    "GetAccount": _ACCOUNT | {NOT_FOUND},
    "CheckFunds": _ACCOUNT | {NOT_FOUND},
    "GetTopUpInstructions": _ACCOUNT | {NOT_FOUND},
    "GetDriverDepositInstructions": _ACCOUNT | {NOT_FOUND},
    "CashOut": _ACCOUNT | {FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED, NOT_FOUND},
    "AuthorizeRidePayment": _PAYMENT | {FAILED_PRECONDITION, NOT_FOUND},
    "CaptureRidePayment": _PAYMENT | {NOT_FOUND, FAILED_PRECONDITION},
    "VoidRidePayment": _PAYMENT | {NOT_FOUND, FAILED_PRECONDITION},
    "GetRidePayment": _PAYMENT | {NOT_FOUND},
    "TipDriver": _PAYMENT | {NOT_FOUND, FAILED_PRECONDITION},
    "Transfer": _PAYMENT | {FAILED_PRECONDITION, NOT_FOUND},
    "PayQris": _PAYMENT | {FAILED_PRECONDITION, NOT_FOUND},
    "GetTransaction": _TRANSACTION | {NOT_FOUND},
    "ListTransactions": _TRANSACTION,
    "WatchEvents": _TRANSACTION,
}

# docs/api.md, "Errors": the code each reason comes with.
REASON_CODES: dict[str, Code] = {
    "INVALID_FIELD": INVALID_ARGUMENT,
    "IMAGE_REJECTED": INVALID_ARGUMENT,
    "CUSTOMER_NOT_FOUND": NOT_FOUND,
    "RIDE_PAYMENT_NOT_FOUND": NOT_FOUND,
    "TRANSACTION_NOT_FOUND": NOT_FOUND,
    "CUSTOMER_ALREADY_REGISTERED": ALREADY_EXISTS,
    "IDEMPOTENCY_KEY_REUSED": ALREADY_EXISTS,
    "REQUEST_IN_PROGRESS": ABORTED,
    "WALLET_NOT_LINKED": FAILED_PRECONDITION,
    "OTP_EXPIRED": FAILED_PRECONDITION,
    "OTP_INVALID": FAILED_PRECONDITION,
    "PROVIDER_REJECTED": FAILED_PRECONDITION,
    "INSUFFICIENT_FUNDS": FAILED_PRECONDITION,
    "LIMIT_EXCEEDED": FAILED_PRECONDITION,
    "INVALID_STATE": FAILED_PRECONDITION,
    "KYC_REQUIRED": FAILED_PRECONDITION,
    "OTP_RATE_LIMITED": RESOURCE_EXHAUSTED,
    "OTP_LOCKED": RESOURCE_EXHAUSTED,
    "OVERLOADED": RESOURCE_EXHAUSTED,
    "PROVIDER_UNAVAILABLE": UNAVAILABLE,
}

SERVICE_OF: dict[str, str] = {
    **dict.fromkeys(
        ("RegisterCustomer", "RequestOtp", "VerifyOtp", "UpgradeKyc", "GetAccount", "CheckFunds"),
        "accounts",
    ),
    **dict.fromkeys(("GetTopUpInstructions", "GetDriverDepositInstructions", "CashOut"), "funding"),
    **dict.fromkeys(
        (
            "AuthorizeRidePayment",
            "CaptureRidePayment",
            "VoidRidePayment",
            "GetRidePayment",
            "TipDriver",
            "Transfer",
            "PayQris",
        ),
        "payments",
    ),
    **dict.fromkeys(("GetTransaction", "ListTransactions", "WatchEvents"), "transactions"),
}

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# The world every example runs against.

RIDE_OPEN = "ride-open"  # AUTHORIZED: LOCAL pays, 50,000 held
RIDE_DONE = "ride-done"  # CAPTURED: OTHER_LOCAL drove


class World:
    """The harness and what the set-up made (not a dataclass: Hypothesis prints it)."""

    def __init__(self, h: Harness, transaction_ids: list[str], page_token: str) -> None:
        self.h = h
        self.transaction_ids = transaction_ids
        self.page_token = page_token  # issued for LOCAL, page_size 1, every type and status

    def __repr__(self) -> str:  # keeps Hypothesis' failure reports readable
        return "World(...)"


@pytest_asyncio.fixture
async def world(h: Harness) -> World:
    await h.onboard(LOCAL, 500_000)
    await h.onboard(OTHER_LOCAL, 100_000, name="Sari")
    for ride, fare in ((RIDE_DONE, 30_000), (RIDE_OPEN, 50_000)):
        await h.payments.AuthorizeRidePayment(
            payments.AuthorizeRidePaymentRequest(
                request_id=f"setup-auth-{ride}",
                ride_id=ride,
                passenger_mobile_number=LOCAL,
                amount_idr=fare,
            ),
            metadata=ADMIN,
            timeout=CALL_DEADLINE,
        )
    await h.payments.CaptureRidePayment(
        payments.CaptureRidePaymentRequest(
            request_id="setup-capture",
            ride_id=RIDE_DONE,
            final_fare_idr=25_000,
            driver_mobile_number=OTHER_LOCAL,
            platform_fee_idr=5_000,
        ),
        metadata=ADMIN,
        timeout=CALL_DEADLINE,
    )
    rows = await h.running.db.fetch_all("SELECT id FROM transactions ORDER BY id")
    page = await h.transactions.ListTransactions(
        transactions.ListTransactionsRequest(mobile_number=LOCAL, page_size=1),
        metadata=ADMIN,
        timeout=CALL_DEADLINE,
    )
    assert page.next_page_token
    return World(h, [str(row["id"]) for row in rows], page.next_page_token)


# Symbolic values, resolved against the world at run time (so @example can pin them).


@dataclass(frozen=True)
class Existing:
    """The transaction id at this index (modulo) of the world's transactions."""

    index: int


@dataclass(frozen=True)
class Tampered:
    """The world's real page token with element ``position`` of its JSON array replaced
    by ``value`` (``raw`` = the JSON text to put there verbatim)."""

    position: int
    raw: str


TokenRecipe = str | Tampered


def resolve_token(world: World, token: TokenRecipe) -> str:
    if isinstance(token, str):
        return token
    decoded = base64.urlsafe_b64decode(world.page_token + "=" * (-len(world.page_token) % 4))
    parts = [json.dumps(p) for p in json.loads(decoded)]
    parts[token.position % len(parts)] = token.raw
    raw = ("[" + ",".join(parts) + "]").encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Building blocks of hostile values.

ZWSP, ZWNJ, RLM, LRM, RLO, BOM = "\u200b", "\u200c", "\u200f", "\u200e", "\u202e", "\ufeff"
HUGE = "9" * 10_000
HUGE_TEXT = "x" * 10_000
CONFUSABLE_TEXT = [
    "",
    " ",
    HUGE_TEXT,
    "Ｂｕｄｉ",  # full-width letters
    "Вudi",  # Cyrillic Ve
    "Budі",  # Cyrillic i
    "Budi" + ZWSP,
    RLM + "Budi",
    "Bu" + RLO + "di",
    BOM + "Budi",
    "Budi" + ZWNJ + "Santoso",
    "Budi  Santoso",
    " Budi",
    "Budi ",
    "O'Neil",
    "Jean-Luc",
    "St. John",
    "Budi1",
    "مُحَمَّد",
    "李小龍",
    "\u0301",
    "-",
    "Bu\x00di",
    "Budi\n",
    "Budi\t",
    "🙂",
    "a" * 50,
    "a" * 51,
    "a" * 100,
    "a" * 101,
    "a" * 200,
    "a" * 201,
    "\ud7ff",
    "\U0010fffd",
]
REGISTERED_NUMBERS = [LOCAL, CANONICAL, E164, OTHER_LOCAL, OTHER_E164, "6285712345678"]
INVALID_NUMBERS = [
    "",
    " ",
    "0",
    "08",
    "+62",
    "62",
    "+",
    "0812345",
    "081234567",
    "08123456789012",
    "0712345678",
    "0841234567",
    "0801234567",
    "+0812345678",
    "+6281234567890 ",
    " 081234567890",
    "081234567890\n",
    "0812 3456 7890",
    "0812-3456-7890",
    "(0812)34567890",
    "+62-812-3456-7890",
    "+62 81234567890",
    "6208123456789",
    "+62081234567890",
    "00628123456789",
    "tel:+6281234567890",
    NATIONAL,
    FULL_WIDTH_LOCAL,
    ARABIC_INDIC_LOCAL,
    "۰۸۱۲۳۴۵۶۷۸۹۰",  # extended Arabic-Indic
    "০৮১২৩৪৫৬৭৮৯০",  # Bengali
    "𝟎𝟖𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗𝟎",  # mathematical bold
    "⁰⁸¹²³⁴⁵⁶⁷⁸⁹⁰",  # superscripts: isdigit() but not int()
    "08１２34567890",  # mixed
    "+６２８１２３４５６７８９０",
    "0812" + ZWSP + "34567890",
    RLM + LOCAL,
    LOCAL + RLM,
    LRM + E164,
    RLO + "098765432180",
    BOM + LOCAL,
    "O81234567890",  # Latin O
    "О81234567890",  # Cyrillic O
    "08l234567890",  # small L
    "081234567890\x00",
    "0" * 10_000,
    "08" + "1" * 9_998,
    "+62" + HUGE,
]
_DOC_MOBILE = re.compile(r"(?:0|62|\+62)(8[1-35-9][0-9]{7,10})")
_DOC_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def doc_national(text: str) -> str | None:
    """The national digits of a number docs/api.md accepts, or None."""
    match = _DOC_MOBILE.fullmatch(text)
    return match.group(1) if match else None


def valid_numbers() -> st.SearchStrategy[str]:
    return st.builds(
        lambda prefix, national: prefix + national,
        st.sampled_from(["0", "62", "+62"]),
        st.from_regex(r"8[1-35-9][0-9]{7,10}", fullmatch=True),
    )


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(REGISTERED_NUMBERS),
        valid_numbers(),
        st.sampled_from(INVALID_NUMBERS),
        st.text(max_size=20),
    )


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(CONFUSABLE_TEXT), st.text(max_size=60))


def identifiers(*known: str) -> st.SearchStrategy[str]:
    """request_id / ride_id values: valid, boundary and hostile."""
    hostile = [
        "",
        "a" * 64,
        "a" * 65,
        HUGE_TEXT,
        "req id",
        "req" + ZWSP + "id",
        "ｒｅｑ-1",
        "реq-1",  # Cyrillic
        "../etc/passwd",
        "req\x00",
        RLO + "1-qer",
        "req/1",
        "%00",
        "req\n",
        "١٢٣",
    ]
    return st.one_of(
        st.sampled_from([*known, *hostile]),
        st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
        st.text(max_size=70),
    )


AMOUNT_EDGES = [
    0,
    -1,
    1,
    2,
    999,
    9_999,
    10_000,
    50_000,
    100_000,
    100_001,
    2_000_000,
    10_000_001,
    40_000_001,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MAX - 1,
    INT64_MIN,
    INT64_MIN + 1,
]


def amounts() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(AMOUNT_EDGES), st.integers(INT64_MIN, INT64_MAX))


def int32s(*edges: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([*edges, -1, INT32_MAX, INT32_MIN]), st.integers(INT32_MIN, INT32_MAX)
    )


JPEG_MAGIC = b"\xff\xd8\xff"
IMAGES = [
    b"",
    b"\xff",
    b"\xff\xd8",
    JPEG_MAGIC,
    PNG_HEADER,
    PNG_HEADER[:-1],
    GIF_HEADER + b"\x00" * 10,
    ID_CARD_JPEG,
    SELFIE_JPEG,
    SELFIE_WITH_ID_CARD_JPEG,
    b"\x00" * 100,
    b"%PDF-1.4",
    b"<svg/>",
    JPEG_MAGIC + ZWSP.encode(),
]


def images() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(IMAGES),
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: JPEG_MAGIC + b),
        st.binary(max_size=64).map(lambda b: PNG_HEADER + b),
    )


OVERSIZED_JPEG = JPEG_MAGIC + b"\x00" * (MAX_IMAGE_BYTES + 1 - len(JPEG_MAGIC))


def _valid_qris() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(build_qris()),
        st.integers(1, 10**12).map(lambda a: build_qris(amount_idr=a)),
        st.just(build_qris("FAIL MERCHANT", amount_idr=15_000)),
    )


@st.composite
def qris_payloads(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["valid", "flipped", "truncated", "recrc", "garbage", "edge"]))
    if kind == "valid":
        return draw(_valid_qris())
    base = draw(_valid_qris())
    if kind == "flipped":
        at = draw(st.integers(0, len(base) - 1))
        return base[:at] + draw(st.characters()) + base[at + 1 :]
    if kind == "truncated":
        return base[: draw(st.integers(0, len(base) - 1))]
    if kind == "recrc":  # a broken body closed by a correct checksum
        body = base[:-8]
        at = draw(st.integers(0, len(body)))
        inserted = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6))
        return with_crc(body[:at] + inserted + body[at:])
    if kind == "garbage":
        return draw(st.text(max_size=100))
    return draw(
        st.sampled_from(
            [
                "",
                HUGE_TEXT,
                "000201",
                "0002016304",
                build_qris() + ZWSP,
                build_qris().replace("TOKO", "ТОКО"),  # Cyrillic, checksum now wrong
                build_qris(amount_idr=0),
                build_qris(amount_idr=INT64_MAX),
                build_qris(dynamic=True),
                with_crc("00020101021" + "2" * 500),
                build_qris().lower(),
            ]
        )
    )


def qris_amount(payload: str) -> tuple[bool, int | None]:
    """(ours, amount): whether the payload is exactly a *valid* one as our builder makes
    it, and then its tag-54 amount (None for a static QR)."""
    if not payload.isascii():
        return False, None
    fields: dict[str, str] = {}
    pos = 0
    while pos + 4 <= len(payload):
        length_text = payload[pos + 2 : pos + 4]
        if not re.fullmatch(r"[0-9]{2}", length_text):
            return False, None
        fields[payload[pos : pos + 2]] = payload[pos + 4 : pos + 4 + int(length_text)]
        pos += 4 + int(length_text)
    amount_text = fields.get("54")
    if amount_text is not None and not re.fullmatch(r"[1-9][0-9]{0,12}", amount_text):
        return False, None
    amount = None if amount_text is None else int(amount_text)
    dynamic = fields.get("01") == "12"
    if dynamic != (amount is not None):
        return False, None
    rebuilt = build_qris(fields.get("59", ""), fields.get("60", ""), amount, dynamic=dynamic)
    return rebuilt == payload, amount


# Calling and judging.


async def call(h: Harness, method: str, request: Message) -> tuple[Code, RpcFailure | None]:
    """Call ``method`` as admin; for WatchEvents, read until the stream goes quiet."""
    if isinstance(request, transactions.WatchEventsRequest):
        return await _watch(h, request)
    stub = getattr(h, SERVICE_OF[method])
    try:
        await getattr(stub, method)(request, metadata=ADMIN, timeout=CALL_DEADLINE)
    except grpc.aio.AioRpcError as error:
        return error.code(), failure_of(error)
    return OK, None


async def _watch(
    h: Harness, request: transactions.WatchEventsRequest
) -> tuple[Code, RpcFailure | None]:
    stream = h.transactions.WatchEvents(request, metadata=ADMIN, timeout=CALL_DEADLINE)
    try:
        while True:
            try:
                response = await asyncio.wait_for(stream.read(), 0.15)
            except TimeoutError:
                return OK, None  # streaming and quiet: a valid request
            if not isinstance(response, transactions.WatchEventsResponse):
                return await stream.code(), None
    except grpc.aio.AioRpcError as error:
        return error.code(), failure_of(error)
    finally:
        stream.cancel()


def _short(request: Message) -> str:
    text = repr(request)
    return text if len(text) < 600 else text[:600] + f"… ({len(text)} chars)"


async def exercise(world: World, method: str, request: Message, bad: set[str]) -> None:
    """Send ``request``; judge the answer. ``bad``: fields a documented rule refuses."""
    h = world.h
    before = len(await h.kaspro_requests())
    code, failure = await call(h, method, request)
    kaspro_calls = len(await h.kaspro_requests()) - before
    seen = f"{method} answered {code.name} {failure} to {_short(request)}"

    assert code not in NEVER, seen
    assert code in ALLOWED[method], seen
    if failure is not None:
        assert failure.domain == "wallet.v1", seen
        assert failure.reason is not None, seen
        assert REASON_CODES.get(failure.reason) == code, seen
    if code is INVALID_ARGUMENT:
        assert failure is not None
        if failure.reason == "INVALID_FIELD":
            assert failure.fields, seen
            assert all(description for _, description in failure.violations), seen
            assert kaspro_calls == 0, (
                f"KasPro called {kaspro_calls}x for an invalid request: {seen}"
            )
    if bad:
        assert code is INVALID_ARGUMENT, f"breaks the rules of {sorted(bad)}: {seen}"
        assert failure is not None
        assert failure.reason == "INVALID_FIELD", seen
        missing = bad - set(failure.fields)
        assert not missing, f"BadRequest does not name {sorted(missing)}: {seen}"
        assert kaspro_calls == 0, seen


# The documented rules, written from the protos and docs/api.md (not from the code).


def check_id(bad: set[str], field: str, value: str) -> None:
    if not _DOC_ID.fullmatch(value):
        bad.add(field)


def check_mobile(bad: set[str], field: str, value: str) -> None:
    if doc_national(value) is None:
        bad.add(field)


def check_positive(bad: set[str], field: str, value: int) -> None:
    if value < 1:
        bad.add(field)


def check_length(bad: set[str], field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        bad.add(field)


def check_name(bad: set[str], field: str, value: str, *, required: bool) -> None:
    """Names: letters of any script, spaces, apostrophes, dots, hyphens; 1 (first) to 50."""
    if (required and not value) or len(value) > 50:
        bad.add(field)
        return
    for ch in value:
        category = unicodedata.category(ch)
        if category[0] in "NCS" or (category[0] == "P" and ch not in "'.-"):
            bad.add(field)
            return


def check_image(bad: set[str], field: str, value: bytes) -> None:
    """eKYC images: JPEG or PNG, 1 byte to 5 MiB."""
    if (
        not value
        or len(value) > MAX_IMAGE_BYTES
        or not (value.startswith(JPEG_MAGIC) or value.startswith(PNG_HEADER))
    ):
        bad.add(field)


def invisible(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value)


# AccountService.


@SETTINGS
@given(
    request=st.builds(
        accounts.RegisterCustomerRequest,
        request_id=identifiers("register-1"),
        mobile_number=numbers(),
        first_name=texts(),
        middle_name=texts(),
        last_name=texts(),
        email=st.one_of(
            st.sampled_from(
                [
                    "",
                    "budi@example.com",
                    "a@b",
                    "@",
                    "budi@ｅxample.com",
                    "budi@example.com" + ZWSP,
                    "x" * 250 + "@example.com",
                    "budi@@example.com",
                    HUGE_TEXT,
                ]
            ),
            st.emails(),
            st.text(max_size=30),
        ),
        address=texts(),
        city=texts(),
        province=texts(),
        postal_code=st.one_of(
            st.sampled_from(["", "12345", "1234", "123456", "１２３４５", "12 345", "1234" + ZWSP]),
            st.text(max_size=6),
        ),
    )
)
async def test_register_customer(world: World, request: accounts.RegisterCustomerRequest) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    check_mobile(bad, "mobile_number", request.mobile_number)
    check_name(bad, "first_name", request.first_name, required=True)
    check_name(bad, "middle_name", request.middle_name, required=False)
    check_name(bad, "last_name", request.last_name, required=False)
    check_length(bad, "email", request.email, 254)
    check_length(bad, "address", request.address, 200)
    check_length(bad, "city", request.city, 100)
    check_length(bad, "province", request.province, 100)
    if request.postal_code and not re.fullmatch(r"\d{5}", request.postal_code):
        bad.add("postal_code")
    await exercise(world, "RegisterCustomer", request, bad)


@SETTINGS
@given(request=st.builds(accounts.RequestOtpRequest, mobile_number=numbers()))
async def test_request_otp(world: World, request: accounts.RequestOtpRequest) -> None:
    bad: set[str] = set()
    check_mobile(bad, "mobile_number", request.mobile_number)
    await exercise(world, "RequestOtp", request, bad)


OTPS = st.one_of(
    st.sampled_from(
        [
            "",
            "123",
            "1234",
            "12345678",
            "123456789",
            "１２３４５６",
            "١٢٣٤٥٦",
            "12 34",
            "123456" + ZWSP,
            "-1234",
            "0000",
            "⁰⁰⁰⁰",
            HUGE,
        ]
    ),
    st.from_regex(r"[0-9]{4,8}", fullmatch=True),
    st.text(max_size=10),
)


@SETTINGS
@given(request=st.builds(accounts.VerifyOtpRequest, mobile_number=numbers(), otp=OTPS))
async def test_verify_otp(world: World, request: accounts.VerifyOtpRequest) -> None:
    bad: set[str] = set()
    check_mobile(bad, "mobile_number", request.mobile_number)
    if not re.fullmatch(r"[0-9]{4,8}", request.otp):
        bad.add("otp")
    await exercise(world, "VerifyOtp", request, bad)


@SETTINGS
@given(
    request=st.builds(
        accounts.UpgradeKycRequest,
        request_id=identifiers("kyc-1"),
        mobile_number=numbers(),
        id_card_image=images(),
        selfie_image=images(),
        selfie_with_id_card_image=images(),
    )
)
@example(  # the boundary: one image of 5 MiB + 1 byte (the message itself is under the limit)
    request=accounts.UpgradeKycRequest(
        request_id="kyc-oversized",
        mobile_number=LOCAL,
        id_card_image=OVERSIZED_JPEG,
        selfie_image=SELFIE_JPEG,
        selfie_with_id_card_image=SELFIE_WITH_ID_CARD_JPEG,
    )
)
async def test_upgrade_kyc(world: World, request: accounts.UpgradeKycRequest) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    check_mobile(bad, "mobile_number", request.mobile_number)
    for name in ("id_card_image", "selfie_image", "selfie_with_id_card_image"):
        check_image(bad, name, getattr(request, name))
    await exercise(world, "UpgradeKyc", request, bad)


@SETTINGS
@given(request=st.builds(accounts.GetAccountRequest, mobile_number=numbers()))
async def test_get_account(world: World, request: accounts.GetAccountRequest) -> None:
    bad: set[str] = set()
    check_mobile(bad, "mobile_number", request.mobile_number)
    await exercise(world, "GetAccount", request, bad)


@SETTINGS
@given(request=st.builds(accounts.CheckFundsRequest, mobile_number=numbers(), amount_idr=amounts()))
async def test_check_funds(world: World, request: accounts.CheckFundsRequest) -> None:
    bad: set[str] = set()
    check_mobile(bad, "mobile_number", request.mobile_number)
    check_positive(bad, "amount_idr", request.amount_idr)
    await exercise(world, "CheckFunds", request, bad)


# FundingService.


@SETTINGS
@given(request=st.builds(funding.GetTopUpInstructionsRequest, mobile_number=numbers()))
async def test_get_top_up_instructions(
    world: World, request: funding.GetTopUpInstructionsRequest
) -> None:
    bad: set[str] = set()
    check_mobile(bad, "mobile_number", request.mobile_number)
    await exercise(world, "GetTopUpInstructions", request, bad)


@SETTINGS
@given(request=st.builds(funding.GetDriverDepositInstructionsRequest, mobile_number=numbers()))
async def test_get_driver_deposit_instructions(
    world: World, request: funding.GetDriverDepositInstructionsRequest
) -> None:
    bad: set[str] = set()
    check_mobile(bad, "mobile_number", request.mobile_number)
    await exercise(world, "GetDriverDepositInstructions", request, bad)


BANK_ACCOUNTS = st.builds(
    common_pb2.BankAccount,
    bank_code=st.one_of(
        st.sampled_from(
            ["014", "002", "008", "009", "999", "", "14", "0014", "０１４", "01a", HUGE]
        ),
        st.text(max_size=4),
    ),
    account_number=st.one_of(
        st.sampled_from(
            [
                "1234567890",
                "12345",
                "1234",
                "1" * 20,
                "1" * 21,
                "１２３４５６７８９０",
                "12345 67890",
                "1234567890" + ZWSP,
                "",
                "-12345",
                "1234560000",
                HUGE,
            ]
        ),
        st.from_regex(r"[0-9]{5,20}", fullmatch=True),
        st.text(max_size=22),
    ),
    account_name=st.one_of(
        st.sampled_from(
            [
                "SITI RAHAYU",
                "",
                " ",
                "x" * 100,
                "x" * 101,
                "PT. MAJU & JAYA, Tbk",
                "12345",
                "SITI" + ZWSP + "RAHAYU",
                RLO + "SITI",
                "СИТИ",
                "Ｓｉｔｉ",
                "Siti\n",
                HUGE_TEXT,
            ]
        ),
        st.text(max_size=20),
    ),
)


@st.composite
def cash_outs(draw: st.DrawFn) -> funding.CashOutRequest:
    request = funding.CashOutRequest(
        request_id=draw(identifiers("cash-out-1")),
        mobile_number=draw(numbers()),
        amount_idr=draw(amounts()),
    )
    destination = draw(st.sampled_from(["none", "bank", "retail"]))
    if destination == "bank":
        request.bank_account.CopyFrom(draw(BANK_ACCOUNTS))
    elif destination == "retail":
        request.retail_outlet = cast("common_pb2.RetailOutlet.ValueType", draw(int32s(0, 1, 2, 3)))
    return request


@SETTINGS
@given(request=cash_outs())
async def test_cash_out(world: World, request: funding.CashOutRequest) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    check_mobile(bad, "mobile_number", request.mobile_number)
    check_positive(bad, "amount_idr", request.amount_idr)
    destination = request.WhichOneof("destination")
    if destination is None:
        bad.add("destination")
    elif destination == "retail_outlet":
        if request.retail_outlet not in (
            common_pb2.RETAIL_OUTLET_ALFAMART,
            common_pb2.RETAIL_OUTLET_INDOMARET,
        ):
            bad.add("retail_outlet")
    else:
        account = request.bank_account
        if not re.fullmatch(r"[0-9]{3}", account.bank_code):
            bad.add("bank_account.bank_code")
        if not re.fullmatch(r"[0-9]{5,20}", account.account_number):
            bad.add("bank_account.account_number")
        name = account.account_name
        if (
            not name.strip()
            or len(name) > 100
            or invisible(name)
            or not any(unicodedata.category(ch)[0] == "L" for ch in name)
        ):
            bad.add("bank_account.account_name")
    await exercise(world, "CashOut", request, bad)


# PaymentService.


@SETTINGS
@given(
    request=st.builds(
        payments.AuthorizeRidePaymentRequest,
        request_id=identifiers("auth-1"),
        ride_id=identifiers(RIDE_OPEN, RIDE_DONE, "ride-new"),
        passenger_mobile_number=numbers(),
        amount_idr=amounts(),
    )
)
async def test_authorize_ride_payment(
    world: World, request: payments.AuthorizeRidePaymentRequest
) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    check_id(bad, "ride_id", request.ride_id)
    check_mobile(bad, "passenger_mobile_number", request.passenger_mobile_number)
    check_positive(bad, "amount_idr", request.amount_idr)
    await exercise(world, "AuthorizeRidePayment", request, bad)


@SETTINGS
@given(
    request=st.builds(
        payments.CaptureRidePaymentRequest,
        request_id=identifiers("capture-1"),
        ride_id=identifiers(RIDE_OPEN, RIDE_DONE),
        final_fare_idr=amounts(),
        driver_mobile_number=numbers(),
        platform_fee_idr=amounts(),
    )
)
async def test_capture_ride_payment(
    world: World, request: payments.CaptureRidePaymentRequest
) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    if not request.ride_id:
        bad.add("ride_id")
    check_positive(bad, "final_fare_idr", request.final_fare_idr)
    check_mobile(bad, "driver_mobile_number", request.driver_mobile_number)
    if request.platform_fee_idr < 0 or request.platform_fee_idr > request.final_fare_idr > 0:
        bad.add("platform_fee_idr")
    await exercise(world, "CaptureRidePayment", request, bad)


@SETTINGS
@given(
    request=st.builds(
        payments.VoidRidePaymentRequest,
        request_id=identifiers("void-1"),
        ride_id=identifiers(RIDE_OPEN, RIDE_DONE),
        reason=texts(),
    )
)
async def test_void_ride_payment(world: World, request: payments.VoidRidePaymentRequest) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    if not request.ride_id:
        bad.add("ride_id")
    check_length(bad, "reason", request.reason, 200)
    await exercise(world, "VoidRidePayment", request, bad)


@SETTINGS
@given(request=st.builds(payments.GetRidePaymentRequest, ride_id=identifiers(RIDE_OPEN, RIDE_DONE)))
async def test_get_ride_payment(world: World, request: payments.GetRidePaymentRequest) -> None:
    bad: set[str] = set()
    if not request.ride_id:
        bad.add("ride_id")
    await exercise(world, "GetRidePayment", request, bad)


@SETTINGS
@given(
    request=st.builds(
        payments.TipDriverRequest,
        request_id=identifiers("tip-1"),
        ride_id=identifiers(RIDE_OPEN, RIDE_DONE),
        amount_idr=amounts(),
    )
)
async def test_tip_driver(world: World, request: payments.TipDriverRequest) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    if not request.ride_id:
        bad.add("ride_id")
    check_positive(bad, "amount_idr", request.amount_idr)
    await exercise(world, "TipDriver", request, bad)


@SETTINGS
@given(
    request=st.builds(
        payments.TransferRequest,
        request_id=identifiers("transfer-1"),
        from_mobile_number=numbers(),
        to_mobile_number=numbers(),
        amount_idr=amounts(),
        note=texts(),
    )
)
async def test_transfer(world: World, request: payments.TransferRequest) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    check_mobile(bad, "from_mobile_number", request.from_mobile_number)
    check_mobile(bad, "to_mobile_number", request.to_mobile_number)
    source = doc_national(request.from_mobile_number)
    if source is not None and source == doc_national(request.to_mobile_number):
        bad.add("to_mobile_number")
    check_positive(bad, "amount_idr", request.amount_idr)
    check_length(bad, "note", request.note, 100)
    await exercise(world, "Transfer", request, bad)


@st.composite
def qris_requests(draw: st.DrawFn) -> payments.PayQrisRequest:
    payload = draw(qris_payloads())
    _, fixed = qris_amount(payload)
    choices = [st.just(0), amounts()]
    if fixed is not None:
        choices.append(st.just(fixed))
    return payments.PayQrisRequest(
        request_id=draw(identifiers("qris-1")),
        mobile_number=draw(numbers()),
        qris_payload=payload,
        amount_idr=draw(st.one_of(*choices)),
    )


@SETTINGS
@given(request=qris_requests())
@example(  # a negative amount is bad whatever the payload (BadRequest lists every bad field)
    request=payments.PayQrisRequest(
        request_id="qris-negative", mobile_number=LOCAL, qris_payload="garbage", amount_idr=-1
    )
)
async def test_pay_qris(world: World, request: payments.PayQrisRequest) -> None:
    bad: set[str] = set()
    check_id(bad, "request_id", request.request_id)
    check_mobile(bad, "mobile_number", request.mobile_number)
    if not request.qris_payload:
        bad.add("qris_payload")
    if request.amount_idr < 0:  # "Negative amounts are never valid" (common.proto)
        bad.add("amount_idr")
    ours, fixed = qris_amount(request.qris_payload)
    if ours and fixed is None and request.amount_idr == 0:
        bad.add("amount_idr")  # "Required for a static QR"
    if ours and fixed is not None and request.amount_idr not in (0, fixed):
        bad.add("amount_idr")  # "when given it must equal the QR's amount"
    await exercise(world, "PayQris", request, bad)


# TransactionService.

TransactionId = str | Existing


@SETTINGS
@given(
    transaction_id=st.one_of(
        st.builds(Existing, st.integers(0, 100)),
        st.sampled_from(["", "x" * 64, "x" * 65, HUGE_TEXT, "../", "txn" + ZWSP, "' OR 1=1 --"]),
        st.text(max_size=70),
    )
)
async def test_get_transaction(world: World, transaction_id: TransactionId) -> None:
    if isinstance(transaction_id, Existing):
        transaction_id = world.transaction_ids[transaction_id.index % len(world.transaction_ids)]
    request = transactions.GetTransactionRequest(transaction_id=transaction_id)
    bad = {"transaction_id"} if not transaction_id else set()
    await exercise(world, "GetTransaction", request, bad)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


PAGE_TOKENS: st.SearchStrategy[TokenRecipe] = st.one_of(
    st.sampled_from(
        [
            "",
            "garbage",
            "!!!not-base64!!!",
            HUGE_TEXT,
            "８８８",
            _b64(b"null"),
            _b64(b"[]"),
            _b64(b"[1, 2, 3, 4]"),
            _b64(b'{"a": 1}'),
            _b64(b"\xff\xfe\xfd"),
            _b64(b"[" * 100_000),
        ]
    ),
    st.text(max_size=40),
    st.binary(max_size=60).map(_b64),
    st.builds(
        Tampered,
        st.integers(0, 2),
        st.sampled_from(
            [
                "null",
                "true",
                '"x"',
                "[]",
                "{}",
                "-1",
                "0",
                "1e308",
                "1e400",
                "-1e400",
                "NaN",
                "Infinity",
                "1" + "0" * 30,
                "1" + "0" * 400,
                "-" + "1" * 400,
                '"' + "x" * 10_000 + '"',
            ]
        ),
    ),
)


@st.composite
def list_requests(draw: st.DrawFn) -> tuple[transactions.ListTransactionsRequest, TokenRecipe]:
    token = draw(PAGE_TOKENS)
    if isinstance(token, Tampered):
        # A token is bound to its listing: keep the listing, so only the tampering counts.
        request = transactions.ListTransactionsRequest(
            mobile_number=draw(st.sampled_from([LOCAL, CANONICAL, E164])),
            page_size=draw(st.sampled_from([0, 1, 2, 100])),
        )
    else:
        request = transactions.ListTransactionsRequest(
            mobile_number=draw(numbers()),
            page_size=draw(int32s(0, 1, 20, 100, 101)),
            type=cast("common_pb2.TransactionType.ValueType", draw(int32s(*range(10)))),
            status=cast("common_pb2.TransactionStatus.ValueType", draw(int32s(*range(6)))),
        )
    return request, token


@SETTINGS
@given(case=list_requests())
# Both were INTERNAL before 28f16bf: float() of a 401-digit create_time (OverflowError) and
# json.loads of deep nesting (RecursionError) escaped the token check.
@example(
    case=(transactions.ListTransactionsRequest(mobile_number=LOCAL), Tampered(0, "1" + "0" * 400))
)
@example(case=(transactions.ListTransactionsRequest(mobile_number=LOCAL), _b64(b"[" * 100_000)))
async def test_list_transactions(
    world: World, case: tuple[transactions.ListTransactionsRequest, TokenRecipe]
) -> None:
    request, recipe = case
    request.page_token = resolve_token(world, recipe)
    bad: set[str] = set()
    check_mobile(bad, "mobile_number", request.mobile_number)
    if not 0 <= request.page_size <= 100:
        bad.add("page_size")
    await exercise(world, "ListTransactions", request, bad)


@SETTINGS
@given(
    request=st.builds(
        transactions.WatchEventsRequest,
        after_sequence=st.one_of(
            st.sampled_from([0, 1, 5, -1, INT64_MAX, INT64_MIN]), st.integers(INT64_MIN, INT64_MAX)
        ),
    )
)
async def test_watch_events(world: World, request: transactions.WatchEventsRequest) -> None:
    bad = {"after_sequence"} if request.after_sequence < 0 else set()
    await exercise(world, "WatchEvents", request, bad)


# The tests above must cover the contract: every RPC of the four services.


def test_every_rpc_has_a_hostile_input_test() -> None:
    services = [
        (accounts, "AccountService"),
        (funding, "FundingService"),
        (payments, "PaymentService"),
        (transactions, "TransactionService"),
    ]
    methods = {
        m.name
        for module, name in services
        for m in module.DESCRIPTOR.services_by_name[name].methods
    }
    assert methods == set(ALLOWED) == set(SERVICE_OF)
    for method in methods:
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()
        assert callable(globals().get(f"test_{snake}")), method
