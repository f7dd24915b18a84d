# ruff: noqa: RUF001  (look-alike digits are part of the garbage)
"""KasPro's callback receiver (``POST /callbacks/kaspro``) under garbage, generated with Hypothesis.

- Garbage (random bytes, JSON of random shapes, KasPro-like objects with hostile values,
  random headers, with or without a signature) is never answered 5xx and changes no
  transaction, ride payment, event or ledger line. A verified delivery is recorded in the
  ``callbacks`` table, raw; an unverified one is not, and only its first kilobyte is kept
  as the newest of the unverified sample.
- A callback signed outside the ±300 s window, or a valid signature over a changed body,
  is answered 401 and changes nothing.
- A signed callback whose amount, requestId, status or mobileNumber was changed is either
  applied consistently with what KasPro did, frozen, parked or rejected: our ledger never
  disagrees with the sandbox's balances, and no status ever moves backwards.

The callbacks are signed here the way docs/kaspro.md says (an HMAC written here,
independent of the service's verifier). One service serves all examples of a test.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from wallet.v1 import common_pb2

from .conftest import ADMIN, DEADLINE, E164, LOCAL, OTHER_E164, OTHER_LOCAL, Harness
from .helpers import DEV_SECRET, cash_out, sign

TIMESTAMP_HEADER = "KasPro-Callback-Timestamp"
SIGNATURE_HEADER = "KasPro-Callback-Signature"
WINDOW = 300
MAX_BODY = 64 * 1024
CASH_OUT = 10_000
FEE = 2_500  # the sandbox's cash-out fee in these tests
INT64_MAX = 2**63 - 1

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# What may follow what (common.proto, TransactionStatus).
FORWARD: dict[str, set[str]] = {
    "PENDING": {"PROCESSING", "SUCCEEDED", "FAILED"},
    "PROCESSING": {"SUCCEEDED", "FAILED"},
    "SUCCEEDED": {"REVERSED"},
    "FAILED": set(),
    "REVERSED": set(),
}
# The callbacks table's own words (what was done with a delivery).
CALLBACK_STATUSES = {"applied", "duplicate", "ignored", "frozen", "parked", "rejected"}


def compact(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


Headers = list[tuple[str, str | bytes]]


def signed(raw: bytes, timestamp: int, secret: str = DEV_SECRET) -> Headers:
    return [
        ("Content-Type", "application/json"),
        (TIMESTAMP_HEADER, str(timestamp)),
        (SIGNATURE_HEADER, sign(secret, str(timestamp), raw)),
    ]


async def post(h: Harness, raw: bytes, headers: Headers | None = None) -> httpx.Response:
    """POST ``raw``: signed now with the right secret, or with exactly ``headers``
    (values as bytes go out as they are, e.g. latin-1)."""
    if headers is None:
        headers = signed(raw, int(h.clock()))
    sent = [
        (name.encode(), value if isinstance(value, bytes) else value.encode())
        for name, value in headers
    ]
    url = f"http://127.0.0.1:{h.running.http_port}/callbacks/kaspro"
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        return await client.post(url, content=raw, headers=sent)


# Reading our state.


@dataclass(frozen=True)
class State:
    """Everything a callback could change, apart from the callbacks table itself."""

    transactions: tuple[tuple[Any, ...], ...]
    rides: tuple[tuple[Any, ...], ...]
    lines: tuple[tuple[Any, ...], ...]
    events: int


async def state(h: Harness) -> State:
    db = h.running.db
    transactions = await db.fetch_all(
        "SELECT id, status, frozen, amount_idr, fee_idr, update_time FROM transactions ORDER BY id"
    )
    rides = await db.fetch_all("SELECT ride_id, status, update_time FROM ride_payments")
    lines = await db.fetch_all(
        "SELECT transaction_id, account, amount_idr FROM ledger_lines "
        "ORDER BY transaction_id, account"
    )
    events = await db.fetch_one("SELECT COUNT(*) AS n FROM events")
    assert events is not None
    return State(
        tuple(tuple(row) for row in transactions),
        tuple(tuple(row) for row in rides),
        tuple(tuple(row) for row in lines),
        int(events["n"]),
    )


async def stored_callbacks(h: Harness) -> list[dict[str, Any]]:
    rows = await h.running.db.fetch_all("SELECT id, raw, status FROM callbacks ORDER BY id")
    return [dict(row) for row in rows]


async def newest_sample(h: Harness) -> dict[str, Any] | None:
    """The newest unverified callback kept (the sample keeps the newest 100)."""
    row = await h.running.db.fetch_one(
        "SELECT id, size, head, reason FROM unverified_callbacks ORDER BY id DESC LIMIT 1"
    )
    return None if row is None else dict(row)


async def assert_sampled_not_stored(
    h: Harness, raw: bytes, stored: list[dict[str, Any]], sampled: dict[str, Any] | None
) -> None:
    """``raw`` was unverified: not stored, and now the newest of the sample."""
    assert await stored_callbacks(h) == stored, "an unverified delivery was stored"
    newest = await newest_sample(h)
    assert newest is not None
    assert sampled is None or newest["id"] > sampled["id"], "not sampled"
    assert (newest["size"], bytes(newest["head"])) == (len(raw), raw[:1024])


async def statuses(h: Harness) -> dict[str, str]:
    rows = await h.running.db.fetch_all("SELECT id, status FROM transactions")
    return {str(row["id"]): str(row["status"]) for row in rows}


async def assert_forward_only(h: Harness, before: Mapping[str, str]) -> dict[str, str]:
    """No transaction moved backwards since ``before``, and no event sequence either."""
    now = await statuses(h)
    for transaction_id, then in before.items():
        is_ = now[transaction_id]
        assert is_ == then or is_ in FORWARD[then], f"{transaction_id}: {then} → {is_}"
    rows = await h.running.db.fetch_all(
        "SELECT subject_id, snapshot FROM events WHERE type = 'TRANSACTION_UPDATED' "
        "ORDER BY sequence"
    )
    seen: dict[str, str] = {}
    for row in rows:
        status = json.loads(row["snapshot"])["status"]
        was = seen.get(row["subject_id"])
        assert was is None or status == was or status in FORWARD[was], (row["subject_id"], was)
        seen[row["subject_id"]] = status
    return now


# Set-ups.


@dataclass
class Pending:
    """A bank cash-out KasPro accepted and has not settled."""

    transaction_id: str
    reference: str  # our requestId, the attempt's
    reff_id: str  # KasPro's


class World:
    """The harness and the cash-outs made so far (not a dataclass: Hypothesis prints it)."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.cash_outs = 0
        self.references: list[str] = []

    def __repr__(self) -> str:  # keeps Hypothesis' failure reports readable
        return "World(...)"

    @contextlib.asynccontextmanager
    async def callbacks_on(self) -> AsyncIterator[None]:
        """Let the sandbox call this service back (for a top-up) for a while."""
        url = f"http://127.0.0.1:{self.h.running.http_port}/callbacks/kaspro"
        await self.h.control("POST", "/callback-url", json={"url": url})
        try:
            yield
        finally:
            await self.h.control("POST", "/callback-url", json={"url": None})

    async def cash_out(self) -> Pending:
        balances = await self.h.sandbox_balances()
        if int(balances["subscribers"][LOCAL]) < 100_000:  # many examples: top up again
            async with self.callbacks_on():
                await self.h.top_up(LOCAL, 1_000_000)
        self.cash_outs += 1
        response = await self.h.funding.CashOut(
            cash_out(CASH_OUT, f"cash-out-{self.cash_outs}"),
            metadata=ADMIN,
            timeout=DEADLINE,
        )
        t = response.transaction
        assert t.status == common_pb2.TRANSACTION_STATUS_PROCESSING, t
        row = await self.h.running.db.fetch_one(
            "SELECT reference FROM attempts WHERE transaction_id = ?", (t.transaction_id,)
        )
        assert row is not None
        reference = str(row["reference"])
        self.references.append(reference)
        at_kaspro = await self.h.control("GET", f"/transactions/{reference}")
        assert at_kaspro["status"] == "PENDING"
        return Pending(t.transaction_id, reference, str(at_kaspro["reffId"]))

    async def settle_at_kaspro(self, pending: Pending, status: str) -> dict[str, Any]:
        """Settle at the sandbox (which calls nobody back here); its final callback body."""
        await self.h.complete_at_kaspro(pending.reference, fail=status == "FAILED")
        settled = await self.h.control("GET", f"/transactions/{pending.reference}")
        assert settled["status"] == status
        callback: dict[str, Any] = settled["callback"]
        assert callback["requestId"] == pending.reference
        return callback


@pytest_asyncio.fixture
async def world(h: Harness) -> World:
    """Two funded, linked wallets; the sandbox settles async transfers only by hand, with a
    fee, and calls nobody back: every callback here is one the test sends."""
    await h.onboard(LOCAL, 1_500_000)
    await h.onboard(OTHER_LOCAL, 100_000, name="Sari")
    await h.sandbox_settings(auto_complete=False, cash_out_fee=FEE)
    await h.control("POST", "/callback-url", json={"url": None})
    return World(h)


# 1. Garbage.

ZWSP = "\u200b"
HOSTILE_AMOUNTS: list[Any] = [
    0,
    -1,
    -CASH_OUT,
    "-10000",
    "0",
    "",
    " ",
    "4xxx9",
    "10000.00",
    "1e4",
    "１００００",
    "9" * 19,
    "9" * 5000,
    10000.0,
    1e308,
    2**63,
    2**64 + 1,
    10**30,
    True,
    None,
    [CASH_OUT],
    {"value": CASH_OUT},
]
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
KASPRO_KEYS = [
    "reffId",
    "requestId",
    "status",
    "code",
    "message",
    "amount",
    "serviceFee",
    "mobileNumber",
    "type",
    "timestamp",
    "channel",
    "vaNumber",
    "paymentCode",
]


@st.composite
def kaspro_like(draw: st.DrawFn) -> bytes:
    """A KasPro-shaped object whose fields are hostile (any subset of the keys)."""
    values: dict[str, st.SearchStrategy[Any]] = {
        "reffId": st.one_of(st.sampled_from(["OLSFQ1", "", " ", 0, None]), ANY_JSON),
        "requestId": st.one_of(st.sampled_from(["NOTOURS000000001", "", None, 7]), ANY_JSON),
        "status": st.one_of(
            st.sampled_from(["SUCCESS", "FAILED", "success", " Failed ", "PENDING", "", None]),
            ANY_JSON,
        ),
        "code": st.one_of(st.sampled_from([0, 150002, "0", -1, 2**70, 1e300, None]), ANY_JSON),
        "message": st.one_of(st.sampled_from(["Berhasil", "", "x" * 5000]), ANY_JSON),
        "amount": st.one_of(st.sampled_from(HOSTILE_AMOUNTS), ANY_JSON),
        "serviceFee": st.one_of(st.sampled_from(HOSTILE_AMOUNTS), ANY_JSON),
        "mobileNumber": st.one_of(
            st.sampled_from([LOCAL, E164, OTHER_LOCAL, 81234567890, "０８１２", "", None]), ANY_JSON
        ),
        "type": st.one_of(
            st.sampled_from(["TOPUP", "topup", "BANK_TRANSFER", "QRIS", "RETAIL_WITHDRAWAL", ""]),
            ANY_JSON,
        ),
        "timestamp": ANY_JSON,
        "channel": st.one_of(st.sampled_from(["VA", "ALFAMART", "INDOMARET"]), ANY_JSON),
        "vaNumber": st.one_of(st.just("3935981234567890"), ANY_JSON),
        "paymentCode": ANY_JSON,
    }
    keys = draw(st.lists(st.sampled_from(KASPRO_KEYS), unique=True))
    document = {key: draw(values[key]) for key in keys}
    extra = draw(st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=3))
    return json.dumps({**extra, **document}, allow_nan=False).encode()


SPECIAL_BODIES = [
    b"",
    b"null",
    b"{}",
    b"[]",
    b'"SUCCESS"',
    b"\xff\xfe{}",
    b"\xef\xbb\xbf{}",
    '{"reffId":"OLSFQ1"}'.encode("utf-16"),
    b"[" * 60_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"amount":' + b"9" * 5000 + b"}",
    b'{"amount":NaN,"status":"SUCCESS","reffId":"R","requestId":"NOTOURS000000002"}',
    b'{"amount":1e999,"status":"SUCCESS","reffId":"R","requestId":"NOTOURS000000003"}',
    b'{"status":"SUCCESS","status":"FAILED","reffId":"R","requestId":"NOTOURS000000004"}',
    b"\x00" * 100,
    ZWSP.encode() + b"{}",
    b"x" * (MAX_BODY - 1),
]
BODIES = st.one_of(
    st.sampled_from(SPECIAL_BODIES),
    st.binary(max_size=512),
    ANY_JSON.map(lambda v: json.dumps(v).encode()),
    kaspro_like(),
)
HEADER_TEXT = st.binary(max_size=80).map(
    # What HTTP lets through in a header value: visible ASCII, obs-text and inner spaces.
    lambda b: bytes(c for c in b if c == 0x20 or 0x21 <= c <= 0x7E or c >= 0x80).strip()
)
HEADER_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda n: (
        n.lower()
        not in {
            "content-length",
            "transfer-encoding",
            "host",
            "connection",
            "expect",
            "upgrade",
            "te",
            "trailer",
            "keep-alive",
            "content-type",
            TIMESTAMP_HEADER.lower(),
            SIGNATURE_HEADER.lower(),
        }
    )
)


@dataclass(frozen=True)
class Delivery:
    body: bytes
    signing: str  # none | garbage | wrong-secret | stale | future | valid
    timestamp: bytes
    signature: bytes
    content_type: str | None
    extra: tuple[tuple[str, bytes], ...]


DELIVERIES = st.builds(
    Delivery,
    body=BODIES,
    signing=st.sampled_from(["none", "garbage", "wrong-secret", "stale", "future", "valid"]),
    timestamp=st.one_of(
        st.sampled_from([b"", b"0", b"-1", b"1e9", b"9" * 13, b"1 2", "１".encode()]), HEADER_TEXT
    ),
    signature=st.one_of(st.sampled_from([b"", b"0" * 64, b"g" * 64]), HEADER_TEXT),
    content_type=st.sampled_from(
        [None, "application/json", "text/plain", "application/x-www-form-urlencoded", "*/*"]
    ),
    extra=st.lists(st.tuples(HEADER_NAMES, HEADER_TEXT), max_size=3).map(tuple),
)


def headers_of(delivery: Delivery, now: int) -> Headers:
    raw = delivery.body
    headers: Headers = list(delivery.extra)
    if delivery.content_type is not None:
        headers.append(("Content-Type", delivery.content_type))
    signed_at = {"stale": now - WINDOW - 1, "future": now + WINDOW + 1}.get(delivery.signing, now)
    if delivery.signing == "garbage":
        headers += [(TIMESTAMP_HEADER, delivery.timestamp), (SIGNATURE_HEADER, delivery.signature)]
    elif delivery.signing != "none":
        secret = "not-the-callback-secret" if delivery.signing == "wrong-secret" else DEV_SECRET
        timestamp = str(signed_at)
        headers += [(TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, sign(secret, timestamp, raw))]
    return headers


def could_move_money(raw: bytes, references: list[str]) -> bool:
    """Whether a *validly signed* body could legitimately change state: a callback naming
    one of our references, or a top-up crediting a readable amount. Garbage must not."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    if not isinstance(document, dict):
        return False
    if str(document.get("requestId", "")).strip() in references:
        return True
    amount = document.get("amount")
    readable = (isinstance(amount, int) and not isinstance(amount, bool) and amount > 0) or (
        isinstance(amount, str) and amount.isascii() and amount.isdigit() and len(amount) <= 18
    )
    kind = str(document.get("type", "")).strip().lower()
    # A top-up credit of an amount no wallet can hold is garbage: the receiver must refuse
    # it (and never crash on it), so only amounts that fit a wallet count as money.
    return kind == "topup" and readable and int(str(amount)) <= INT64_MAX


@SETTINGS
@given(delivery=DELIVERIES)
@example(  # a signed top-up for an amount beyond int64 (a JSON number): refused, not a crash
    delivery=Delivery(
        body=compact(
            {
                "reffId": "OLSFQ9999",
                "requestId": "TOPUP000000000009999",
                "status": "SUCCESS",
                "code": 0,
                "message": "Berhasil",
                "amount": 10**30,
                "serviceFee": "0",
                "mobileNumber": LOCAL,
                "type": "TOPUP",
                "channel": "VA",
                "vaNumber": "3935881234567890",
            }
        ),
        signing="valid",
        timestamp=b"",
        signature=b"",
        content_type="application/json",
        extra=(),
    )
)
async def test_garbage_is_never_5xx_changes_nothing_and_is_recorded(
    world: World, delivery: Delivery
) -> None:
    h = world.h
    if not world.references:
        await world.cash_out()  # a real reference that unsigned garbage may name
    if delivery.signing == "valid":
        assume(not could_move_money(delivery.body, world.references))
    before, stored, sampled = await state(h), await stored_callbacks(h), await newest_sample(h)

    response = await post(h, delivery.body, headers_of(delivery, int(h.clock())))

    assert response.status_code < 500, (response.status_code, response.text)
    assert response.status_code in (200, 400, 401), response.status_code
    if delivery.signing != "valid":
        assert response.status_code == 401
    assert await state(h) == before
    if response.status_code == 401:
        await assert_sampled_not_stored(h, delivery.body, stored, sampled)
        return
    after = await stored_callbacks(h)
    assert len(after) == len(stored) + 1, "the delivery was not recorded (or recorded twice)"
    recorded = after[-1]
    assert bytes(recorded["raw"]) == delivery.body
    if response.status_code == 200:
        assert recorded["status"] in ("parked", "rejected"), recorded["status"]
    else:
        assert recorded["status"] == "rejected", recorded["status"]


# 2. Deliveries sent again, and forgeries.


@SETTINGS
@given(
    delay=st.one_of(st.sampled_from([WINDOW + 1, WINDOW + 2, 86_400]), st.integers(301, 10**6)),
    early=st.booleans(),
    delivered_first=st.booleans(),
    status=st.sampled_from(["SUCCESS", "FAILED"]),
)
async def test_a_callback_outside_the_window_is_401_and_changes_nothing(
    world: World, delay: int, early: bool, delivered_first: bool, status: str
) -> None:
    h = world.h
    pending = await world.cash_out()
    raw = compact(await world.settle_at_kaspro(pending, status))
    if delivered_first:  # KasPro's own delivery, captured and replayed later
        assert (await post(h, raw)).status_code == 200
    headers = signed(raw, int(h.clock()) + (delay if early else 0))
    if not early:
        h.clock.advance(delay)
    before, stored, sampled = await state(h), await stored_callbacks(h), await newest_sample(h)

    response = await post(h, raw, headers)

    assert response.status_code == 401, response.text
    assert await state(h) == before
    await assert_sampled_not_stored(h, raw, stored, sampled)
    if not delivered_first:
        row = await h.running.db.fetch_one(
            "SELECT status FROM transactions WHERE id = ?", (pending.transaction_id,)
        )
        assert row is not None
        assert row["status"] == "PROCESSING"


@st.composite
def tamperings(draw: st.DrawFn) -> tuple[str, Any]:
    how = draw(st.sampled_from(["flip", "insert", "delete", "field", "reformat", "whitespace"]))
    if how == "flip":
        return how, (draw(st.integers(0, 10_000)), draw(st.integers(1, 255)))
    if how == "insert":
        return how, (draw(st.integers(0, 10_000)), draw(st.binary(min_size=1, max_size=8)))
    if how == "delete":
        return how, (draw(st.integers(0, 10_000)), draw(st.integers(1, 8)))
    if how == "field":
        key = draw(st.sampled_from(["amount", "status", "mobileNumber", "requestId", "serviceFee"]))
        return how, (key, draw(st.one_of(st.sampled_from(HOSTILE_AMOUNTS[:-2]), JSON_SCALARS)))
    if how == "reformat":
        return how, draw(st.sampled_from(["spaced", "sorted", "indented", "ascii"]))
    return how, draw(st.sampled_from([b" ", b"\n", b"\r\n", b"\t"]))


def tamper(raw: bytes, how: str, arg: Any) -> bytes:
    if how == "flip":
        at, mask = arg
        at %= len(raw)
        return raw[:at] + bytes([raw[at] ^ mask]) + raw[at + 1 :]
    if how == "insert":
        at, inserted = arg
        at %= len(raw) + 1
        return raw[:at] + bytes(inserted) + raw[at:]
    if how == "delete":
        at, count = arg
        at %= len(raw)
        return raw[:at] + raw[at + count :]
    document = json.loads(raw)
    if how == "field":
        key, value = arg
        document[key] = value
        return compact(document)
    if how == "reformat":
        if arg == "spaced":
            return json.dumps(document).encode()
        if arg == "sorted":
            return compact(dict(sorted(document.items())))
        if arg == "indented":
            return json.dumps(document, indent=2).encode()
        return compact(document) + b" "
    assert isinstance(arg, bytes)
    return arg + raw if len(raw) % 2 else raw + arg


@SETTINGS
@given(tampering=tamperings(), status=st.sampled_from(["SUCCESS", "FAILED"]))
async def test_a_valid_signature_over_a_changed_body_is_401_and_changes_nothing(
    world: World, tampering: tuple[str, Any], status: str
) -> None:
    h = world.h
    pending = await world.cash_out()
    raw = compact(await world.settle_at_kaspro(pending, status))
    changed = tamper(raw, *tampering)
    assume(changed != raw)
    headers = signed(raw, int(h.clock()))
    before, stored, sampled = await state(h), await stored_callbacks(h), await newest_sample(h)

    response = await post(h, changed, headers)

    assert response.status_code == 401, response.text
    assert await state(h) == before
    await assert_sampled_not_stored(h, changed, stored, sampled)


# 3. Signed callbacks with changed fields.

KEEP = object()  # leave the field as KasPro wrote it
DROP = object()  # leave the field out


@dataclass(frozen=True)
class Mutation:
    """How each field of KasPro's true callback is changed before it is signed and sent."""

    amount: Any = KEEP
    request_id: Any = KEEP
    status: Any = KEEP
    mobile_number: Any = KEEP

    def __repr__(self) -> str:
        shown = {
            name: ("KEEP" if value is KEEP else "DROP" if value is DROP else value)
            for name, value in vars(self).items()
        }
        return f"Mutation({shown})"


def spelled(word: str) -> st.SearchStrategy[Any]:
    """Other spellings of KasPro's own status word, and words that are no final status.

    Never the opposite final status: a signed SUCCESS for a FAILED transfer would be KasPro
    lying, which no receiver can detect.
    """
    return st.sampled_from(
        [
            KEEP,
            DROP,
            word.lower(),
            word.title(),
            f" {word} ",
            word + ZWSP,
            word[:-1],
            word + "FUL",
            "PENDING",
            "REVERSED",
            "",
            None,
            0,
            [word],
        ]
    )


@st.composite
def mutations(draw: st.DrawFn, true_status: str) -> Mutation:
    return Mutation(
        amount=draw(
            st.sampled_from(
                [
                    KEEP,
                    KEEP,
                    DROP,
                    str(CASH_OUT + 1),
                    str(CASH_OUT - 1),
                    CASH_OUT,  # the right amount as a JSON number
                    f"{CASH_OUT}.00",
                    str(CASH_OUT + FEE),
                    *HOSTILE_AMOUNTS,
                ]
            )
        ),
        request_id=draw(
            st.sampled_from(
                [KEEP, KEEP, DROP, "OTHER", "NOTOURS000000009", "LOWER", "PADDED", "", None, 12345]
            )
        ),
        status=draw(spelled(true_status)),
        mobile_number=draw(
            st.sampled_from(
                [
                    KEEP,
                    KEEP,
                    DROP,
                    E164,
                    "6281234567890",
                    81234567890,  # a JSON number, as KasPro sends it
                    OTHER_LOCAL,
                    OTHER_E164,
                    "089999999999",
                    "garbage",
                    "０８１２３４５６７８９０",
                    None,
                ]
            )
        ),
    )


def mutate(
    callback: Mapping[str, Any], mutation: Mutation, other_references: list[str]
) -> dict[str, Any]:
    changed = dict(callback)
    request_id = mutation.request_id
    if request_id == "OTHER":
        request_id = other_references[-1] if other_references else KEEP
    elif request_id == "LOWER":
        request_id = str(callback["requestId"]).lower()
    elif request_id == "PADDED":
        request_id = f" {callback['requestId']} "
    for key, value in (
        ("amount", mutation.amount),
        ("requestId", request_id),
        ("status", mutation.status),
        ("mobileNumber", mutation.mobile_number),
    ):
        if value is DROP:
            changed.pop(key, None)
        elif value is not KEEP:
            changed[key] = value
    return changed


async def subscriber_balance(h: Harness) -> tuple[int, int]:
    """LOCAL's balance in our ledger and at the sandbox."""
    ledger = await h.ledger()
    sandbox = await h.sandbox_balances()
    return ledger.get("subscriber:6281234567890", 0), int(sandbox["subscribers"][LOCAL])


@SETTINGS
@given(data=st.data(), true_status=st.sampled_from(["SUCCESS", "FAILED"]))
async def test_a_changed_signed_callback_never_breaks_the_books_or_goes_backwards(
    world: World, data: st.DataObject, true_status: str
) -> None:
    h = world.h
    others = list(world.references)
    pending = await world.cash_out()
    forward = await statuses(h)
    callback = await world.settle_at_kaspro(pending, true_status)
    mutation = data.draw(mutations(true_status), label="mutation")
    changed = mutate(callback, mutation, others)
    stored = await stored_callbacks(h)

    first = await post(h, json.dumps(changed, allow_nan=False).encode())
    forward = await assert_forward_only(h, forward)
    # Then KasPro's own callback arrives, as it keeps retrying until it gets a 2xx.
    second = await post(h, compact(callback))
    forward = await assert_forward_only(h, forward)

    assert first.status_code in (200, 400), (first.status_code, first.text)
    assert second.status_code == 200, second.text
    after = await stored_callbacks(h)
    assert len(after) == len(stored) + 2
    assert after[-2]["status"] in CALLBACK_STATUSES, after[-2]
    assert after[-1]["status"] in ("applied", "duplicate", "ignored"), after[-1]

    row = await h.running.db.fetch_one(
        "SELECT status, frozen FROM transactions WHERE id = ?", (pending.transaction_id,)
    )
    assert row is not None
    lines = await h.running.db.fetch_all(
        "SELECT account, amount_idr FROM ledger_lines WHERE transaction_id = ? ORDER BY account",
        (pending.transaction_id,),
    )
    booked = {str(line["account"]): int(line["amount_idr"]) for line in lines}
    if row["frozen"]:
        # Frozen for review: nothing more happens to it, nothing is booked, and our books
        # differ from KasPro's by exactly what KasPro took for it.
        assert (row["status"], booked) == ("PROCESSING", {}), (row, booked)
        ours, kaspro = await subscriber_balance(h)
        taken = CASH_OUT + FEE if true_status == "SUCCESS" else 0
        assert ours == kaspro + taken, (ours, kaspro, taken)
        # A person looks at it and writes it off at KasPro's side, so later examples can
        # compare the whole books again.
        await h.set_balance(LOCAL, ours)
    elif true_status == "SUCCESS":
        assert row["status"] == "SUCCEEDED", (row, mutation)
        assert booked == {
            "external:bank": CASH_OUT,
            "kaspro:fees": FEE,
            "subscriber:6281234567890": -(CASH_OUT + FEE),
        }, booked
    else:
        assert (row["status"], booked) == ("FAILED", {}), (row, booked, mutation)
    await h.assert_books_agree()


@SETTINGS
@given(data=st.data())
async def test_a_changed_top_up_callback_never_credits_twice(
    world: World, data: st.DataObject
) -> None:
    """A top-up is recorded once per KasPro reference (reffId): a signed copy with other
    fields changed must not credit again, credit someone else, or crash the receiver."""
    h = world.h
    async with world.callbacks_on():
        callback = await h.top_up(OTHER_LOCAL, 5_000)
    mutation = data.draw(mutations("SUCCESS"), label="mutation")
    changed = mutate(callback, mutation, [])
    forward = await statuses(h)
    before = await state(h)

    response = await post(h, json.dumps(changed, allow_nan=False).encode())

    assert response.status_code in (200, 400), (response.status_code, response.text)
    assert await state(h) == before
    await assert_forward_only(h, forward)
    stored = await stored_callbacks(h)
    assert stored[-1]["status"] in ("duplicate", "rejected"), stored[-1]
    await h.assert_books_agree()
