"""Personal data at rest: after the README's onboarding walkthrough every table holds only
what docs/operations.md lists; no NIK, no KTP identity, no image; a retry of UpgradeKyc
gets the identity reduced; answers stored by an earlier version are reduced at start."""

from __future__ import annotations

import base64
import contextlib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from wallet.v1 import account_service_pb2, common_pb2

from wallet_service.domain.nik import mask_nik

from .conftest import (
    APP,
    APP_TOKEN,
    CALLERS,
    DEADLINE,
    ID_CARD_JPEG,
    LOCAL,
    NATIONAL,
    SELFIE_JPEG,
    SELFIE_WITH_ID_CARD_JPEG,
    Harness,
)

# What lies in the SQLite file and its WAL; on PostgreSQL, data at rest is the server's
# (docs/operations.md, "Personal data at rest").
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[2]
NIK = "3171015508920007"  # well formed: Jakarta Pusat, a woman born 15-08-1992, serial 7
IMAGES = (ID_CARD_JPEG, SELFIE_JPEG, SELFIE_WITH_ID_CARD_JPEG)

# The walkthrough's customer, as the README registers her.
FIRST_NAME, LAST_NAME, EMAIL = "Siti", "Rahayu", "siti@example.com"

# The personal data the doc allows, as found in a cell; the label is how the doc's table
# names it (docs/operations.md, "Personal data at rest").
ALLOWED: dict[str, Callable[[bytes], bool]] = {
    "mobile number": lambda cell: NATIONAL.encode() in cell,
    "name": lambda cell: LAST_NAME.lower().encode() in cell.lower(),
    "email": lambda cell: EMAIL.encode() in cell,
    "masked NIK": lambda cell: mask_nik(NIK).encode() in cell,
}
# What the walkthrough leaves, table by table: finding less means the scan is blind.
EXPECTED = {
    "customers": {"mobile number"},
    "otp_state": {"mobile number"},
    "otp_sends": {"mobile number"},
    "idempotency_keys": {"mobile number", "name", "email", "masked NIK"},
    "events": {"mobile number"},
}


def upgrade_request() -> account_service_pb2.UpgradeKycRequest:
    return account_service_pb2.UpgradeKycRequest(
        request_id="kyc-1",
        mobile_number=LOCAL,
        id_card_image=ID_CARD_JPEG,
        selfie_image=SELFIE_JPEG,
        selfie_with_id_card_image=SELFIE_WITH_ID_CARD_JPEG,
    )


async def upgrade(h: Harness) -> account_service_pb2.UpgradeKycResponse:
    return await h.accounts.UpgradeKyc(upgrade_request(), metadata=APP, timeout=DEADLINE)


async def onboard(h: Harness) -> account_service_pb2.UpgradeKycResponse:
    """The README's walkthrough up to the eKYC upgrade, with a NIK we know."""
    await h.register(first_name=FIRST_NAME, last_name=LAST_NAME, email=EMAIL)
    await h.link()
    await h.override_ocr(LOCAL, NIK)
    first = await upgrade(h)
    assert first.identity.id_card_number == NIK  # the caller gets it whole, once
    assert first.identity.address
    assert first.identity.birth_date
    return first


def reduced(identity: common_pb2.KycIdentity) -> common_pb2.KycIdentity:
    return common_pb2.KycIdentity(
        id_card_number=mask_nik(identity.id_card_number),
        id_card_number_valid=identity.id_card_number_valid,
        id_card_number_problem=identity.id_card_number_problem,
    )


def every_cell(db_path: Path) -> dict[str, list[bytes]]:
    """Every value of every row of every table, as bytes (text as UTF-8, numbers as text)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        cells: dict[str, list[bytes]] = {}
        for table in tables:
            found = cells.setdefault(table, [])
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        found.append(value)
                    elif value is not None:
                        found.append(str(value).encode())
        return cells
    finally:
        conn.close()


def ocr_fields(identity: common_pb2.KycIdentity) -> dict[str, str]:
    """The KTP identity KasPro read, but the NIK and its check (looked for separately)."""
    return {
        field.name: value
        for field, value in identity.ListFields()
        if isinstance(value, str) and not field.name.startswith("id_card_number")
    }


def image_needles() -> list[bytes]:
    """Pieces of the three images, raw and in base64, from their middles and ends."""
    needles = [b"\xff\xd8\xff", b"\x89PNG"]
    for image in IMAGES:
        encoded = base64.b64encode(image)
        for at in (len(image) // 2, len(image) - 48):
            needles.append(image[at : at + 32])
        for at in (4, (len(encoded) // 8) * 4, len(encoded) - 68):
            needles.append(encoded[at : at + 64])
    return needles


def documented_tables() -> dict[str, str]:
    """The rows of the table in docs/operations.md's "Personal data at rest", by table."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("\n## Personal data at rest\n", 1)[1].split("\n## ", 1)[0]
    return {match[1]: match[0] for match in re.findall(r"^(\| `([a-z_]+)` \|.*)$", section, re.M)}


async def test_after_the_walkthrough_every_table_holds_only_what_the_doc_lists(
    h: Harness,
) -> None:
    first = await onboard(h)
    await h.get_account()
    retried = await upgrade(h)

    assert retried.identity == reduced(first.identity)
    assert retried.identity.id_card_number == "3171**********07"
    assert (retried.kyc_status, retried.account) == (first.kyc_status, first.account)

    cells = every_cell(h.db_path)
    assert {"customers", "idempotency_keys", "events"} <= cells.keys()
    ocr = ocr_fields(first.identity)
    name, address = ocr["name"].lower().encode(), ocr["address"].lower().encode()
    for table, values in cells.items():
        for cell in values:
            assert NIK.encode() not in cell, table
            assert not (name in cell.lower() and address in cell.lower()), table
            for field, value in ocr.items():
                if field != "name" and len(value) > 3:
                    assert value.encode() not in cell, (table, field)
            for needle in image_needles():
                assert needle not in cell, table

    found = {
        table: {label for label, seen in ALLOWED.items() if any(seen(c) for c in values)}
        for table, values in cells.items()
    }
    assert {table: kinds for table, kinds in found.items() if kinds} == EXPECTED
    documented = documented_tables()
    for table, kinds in EXPECTED.items():
        assert table in documented, f"docs/operations.md does not list {table}"
        for kind in kinds:
            assert kind.lower() in documented[table].lower(), (table, kind)


async def test_a_retry_of_a_malformed_nik_keeps_its_problem_not_the_nik(h: Harness) -> None:
    await h.register()
    await h.link()
    await h.override_ocr(LOCAL, "3171011513900001")  # birth month 13

    first = await upgrade(h)
    retried = await upgrade(h)

    assert first.identity.id_card_number == "3171011513900001"
    assert retried.identity == common_pb2.KycIdentity(
        id_card_number="3171**********01",
        id_card_number_valid=False,
        id_card_number_problem=first.identity.id_card_number_problem,
    )
    assert "month" in retried.identity.id_card_number_problem


async def test_answers_stored_with_the_full_identity_are_reduced_at_start(h: Harness) -> None:
    first = await onboard(h)
    await h.stop_service()
    # What an earlier version kept under the request_id: the whole first answer.
    with contextlib.closing(sqlite3.connect(h.db_path)) as db, db:
        db.execute(
            "UPDATE idempotency_keys SET response = ? WHERE caller = ? AND request_id = 'kyc-1'",
            (b"R" + first.SerializeToString(), CALLERS[APP_TOKEN].name),
        )
    assert NIK.encode() in h.db_path.read_bytes()  # the file holds it: the check can fail

    await h.start()
    retried = await upgrade(h)
    await h.stop_service()

    assert retried.identity == reduced(first.identity)
    assert retried.account == first.account
    # Gone from the file itself, not only from the row: no copy left in freed space.
    stored = h.db_path.read_bytes()
    assert b"idempotency_keys" in stored
    assert NIK.encode() not in stored
    assert first.identity.address.encode() not in stored
