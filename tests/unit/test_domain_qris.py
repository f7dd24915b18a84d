"""QRIS payloads: the checksum, the TLV structure, the field rules and the amount to pay."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from qris_samples import (
    ACQUIRER_GUID,
    QRIS_GUID,
    assemble,
    build_qris,
    tlv,
    with_crc,
)

from wallet_service.domain.qris import (
    AmountProblem,
    InvalidQris,
    Qris,
    QrisAmountError,
    amount_to_pay,
    crc16_ccitt_false,
    parse_qris,
)

ACCOUNTS = [
    ("26", tlv("00", ACQUIRER_GUID) + tlv("01", "936000000000000001")),
    ("51", tlv("00", QRIS_GUID) + tlv("02", "ID1020000000001")),
]
MERCHANT = [("52", "5812"), ("53", "360"), ("58", "ID"), ("59", "TOKO"), ("60", "BANDUNG")]
STATIC = [("00", "01"), ("01", "11"), *ACCOUNTS, *MERCHANT]


def without(fields: list[tuple[str, str]], *tags: str) -> list[tuple[str, str]]:
    return [(tag, value) for tag, value in fields if tag not in tags]


def replaced(fields: list[tuple[str, str]], tag: str, value: str) -> list[tuple[str, str]]:
    return [(t, value if t == tag else v) for t, v in fields]


def refused(payload: str) -> str:
    with pytest.raises(InvalidQris) as caught:
        parse_qris(payload)
    return str(caught.value)


# --- the checksum -------------------------------------------------------------------


def test_crc_has_the_standard_check_value() -> None:
    # The check value of CRC-16/CCITT-FALSE in the CRC catalogue (reveng).
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_crc_of_nothing_is_the_initial_value() -> None:
    assert crc16_ccitt_false(b"") == 0xFFFF


@pytest.mark.parametrize(
    "published",
    [
        # The example decoded in the README of sunary/qris (Go), a QRIS payload.
        "00020101021226380016ID.CO.SHOPEE.WWW010201020815863724530336054061440005802ID"
        "5921PT. SHOPPEE INDONESIA6007JAKARTA62180814gen by go-qris63049635",
        # A Thai PromptPay payload (EMVCo merchant-presented, the same checksum).
        "00020101021129370016A000000677010111011300669245317755802TH54076000.00530376463049B3B",
    ],
)
def test_crc_matches_published_payloads(published: str) -> None:
    assert crc16_ccitt_false(published[:-4].encode("ascii")) == int(published[-4:], 16)


# --- valid payloads -----------------------------------------------------------------


def test_a_static_qr_without_amount_parses() -> None:
    payload = build_qris()
    assert parse_qris(payload) == Qris(
        dynamic=False,
        merchant_name="TOKO KOPI SENJA",
        merchant_city="JAKARTA",
        amount_idr=None,
        currency="360",
        country="ID",
        merchant_category_code="5812",
        merchant_account_ids=(ACQUIRER_GUID, QRIS_GUID),
        postal_code="",
        payload=payload,
    )


def test_a_dynamic_qr_carries_its_amount() -> None:
    qris = parse_qris(build_qris(amount_idr=25000))
    assert qris.dynamic is True
    assert qris.amount_idr == 25000


def test_a_static_qr_may_fix_an_amount() -> None:
    qris = parse_qris(build_qris(amount_idr=12000, dynamic=False))
    assert qris.dynamic is False
    assert qris.amount_idr == 12000


printable = st.sampled_from(string.ascii_letters + string.digits + string.punctuation + " ")
names = st.text(printable, min_size=1, max_size=25).filter(str.strip)
cities = st.text(printable, min_size=1, max_size=15).filter(str.strip)
amounts = st.none() | st.integers(1, 10**13 - 1)


@given(names, cities, amounts, st.booleans(), st.from_regex(r"[0-9]{4}", fullmatch=True))
def test_built_payloads_round_trip(
    name: str, city: str, amount: int | None, static_with_amount: bool, mcc: str
) -> None:
    dynamic = amount is not None and not static_with_amount
    payload = build_qris(name, city, amount, dynamic=dynamic, mcc=mcc)
    qris = parse_qris(payload)
    assert qris.merchant_name == name.strip()
    assert qris.merchant_city == city.strip()
    assert qris.amount_idr == amount
    assert qris.dynamic is dynamic
    assert qris.merchant_category_code == mcc
    assert qris.payload == payload


# A dynamic QR as an acquirer prints it, written out field by field.
SAMPLE_BODY = (
    "000201"  # 00 payload format indicator
    "010212"  # 01 point of initiation: dynamic
    "2668"  # 26 merchant account information, 68 characters:
    "0016ID.CO.TELKOM.WWW"  # 00 globally unique id
    "0118936008990000012345"  # 01 merchant PAN
    "0215000195000012345"  # 02 merchant id
    "0303UMI"  # 03 merchant criteria
    "5144"  # 51 national merchant id, 44 characters:
    "0014ID.CO.QRIS.WWW"
    "0215ID1022148217496"  # 02 NMID
    "0303UMI"
    "52045812"  # 52 merchant category code
    "5303360"  # 53 currency: IDR
    "540527500"  # 54 amount
    "5802ID"  # 58 country
    "5919WARUNG MAKAN BU SRI"  # 59 merchant name
    "6010YOGYAKARTA"  # 60 merchant city
    "610555281"  # 61 postal code
    "6224"  # 62 additional data, 24 characters:
    "0113INV-2024-0042"  # 01 bill number
    "0703A01"  # 07 terminal label
)


def test_a_hand_assembled_sample_parses() -> None:
    payload = with_crc(SAMPLE_BODY)
    assert payload.startswith(SAMPLE_BODY + "6304")
    assert parse_qris(payload) == Qris(
        dynamic=True,
        merchant_name="WARUNG MAKAN BU SRI",
        merchant_city="YOGYAKARTA",
        amount_idr=27500,
        currency="360",
        country="ID",
        merchant_category_code="5812",
        merchant_account_ids=("ID.CO.TELKOM.WWW", "ID.CO.QRIS.WWW"),
        postal_code="55281",
        payload=payload,
    )


def test_a_lower_case_checksum_is_accepted() -> None:
    payload = next(
        p
        for p in (build_qris(amount_idr=n) for n in range(1, 100))
        if any(c in "ABCDEF" for c in p[-4:])
    )
    lowered = payload[:-4] + payload[-4:].lower()
    assert lowered != payload
    assert parse_qris(lowered).payload == lowered


@pytest.mark.parametrize(("text", "amount"), [("15000", 15000), ("15000.00", 15000), ("7.0", 7)])
def test_amounts_with_zero_decimals_are_whole_rupiah(text: str, amount: int) -> None:
    assert parse_qris(build_qris(extra={"54": text, "01": "12"})).amount_idr == amount


def test_a_payload_of_512_characters_is_accepted() -> None:
    # Fill unreserved templates 80-99 (not read by the parser) up to the limit; each
    # field costs 4 characters of tag and length on top of its value.
    room = 512 - len(build_qris())
    extra: dict[str, str] = {}
    for tag in range(80, 100):
        if room <= 4:
            break
        size = min(99, room - 4)
        if 0 < room - 4 - size < 5:  # leave a remainder another field can take
            size -= 5
        extra[str(tag)] = "X" * size
        room -= 4 + size
    payload = build_qris(extra=extra)
    assert len(payload) == 512
    assert parse_qris(payload).payload == payload


@pytest.mark.parametrize(
    "extra",
    [{"55": "01"}, {"55": "02", "56": "1000"}, {"55": "03", "57": "2.5"}],
)
def test_tip_and_fee_indicators_are_accepted(extra: dict[str, str]) -> None:
    assert parse_qris(build_qris(extra=extra)).merchant_name == "TOKO KOPI SENJA"


# --- the payload as a whole ---------------------------------------------------------


def test_an_empty_payload_is_refused() -> None:
    assert refused("") == "QRIS payload is empty"


def test_a_payload_over_512_characters_is_refused() -> None:
    payload = build_qris(extra={tag: "X" * 99 for tag in ("80", "81", "82", "83", "84")})
    assert len(payload) > 512
    assert refused(payload) == "QRIS payload is longer than 512 characters"


@pytest.mark.parametrize(
    "payload",
    [
        build_qris().replace("SENJA", "SENJ\u00c1"),
        build_qris().replace("SENJA", "SENJ\u0410"),  # Cyrillic A
        build_qris() + "\n",
        build_qris().replace(" ", "\t", 1),
        build_qris().replace(" ", "\x00", 1),
    ],
)
def test_non_ascii_and_control_characters_are_refused(payload: str) -> None:
    assert refused(payload) == "QRIS payload must contain printable ASCII characters only"


# --- TLV structure ------------------------------------------------------------------


def test_a_non_digit_tag_is_refused() -> None:
    assert refused(with_crc("000201" + "A1021" + "1")) == (
        "QRIS payload is malformed at position 6 (expected a 2-digit tag)"
    )


def test_a_non_digit_length_is_refused() -> None:
    assert (
        refused(with_crc("000201" + "01X211")) == "QRIS payload has a malformed length at field 01"
    )


def test_a_value_running_past_the_end_is_refused() -> None:
    payload = build_qris()
    cut = payload[: payload.index("5915TOKO") + 8]
    assert refused(cut) == "QRIS payload is truncated at field 59"


def test_a_field_cut_inside_its_length_is_refused() -> None:
    payload = build_qris()
    assert refused(payload[:-5]) == "QRIS payload is truncated at field 63"


def test_a_dangling_character_is_refused() -> None:
    payload = build_qris()
    assert refused(payload + "6") == f"QRIS payload is truncated at position {len(payload)}"


def test_an_empty_field_is_refused() -> None:
    assert refused(assemble([*STATIC, ("61", "")])) == "QRIS payload has an empty field 61"


def test_a_repeated_field_is_refused() -> None:
    assert refused(assemble([*STATIC, ("59", "TOKO LAIN")])) == "QRIS payload repeats field 59"


@pytest.mark.parametrize(
    ("tag", "template", "message"),
    [
        (
            "26",
            "0014ID.CO.QRIS",
            "QRIS field 26 (merchant account information) is truncated at sub-field 00",
        ),
        (
            "51",
            "0014ID.CO.QRIS.WWW0014ID.CO.QRIS.WWW",
            "QRIS field 51 (merchant account information) repeats sub-field 00",
        ),
        (
            "62",
            "01AB",
            "QRIS field 62 (additional data) has a malformed length at sub-field 01",
        ),
        (
            "62",
            "X105ABCDE",
            "QRIS field 62 (additional data) is malformed at position 0 (expected a 2-digit tag)",
        ),
        (
            "64",
            "0002",
            "QRIS field 64 (merchant information in alternate language)"
            " is truncated at sub-field 00",
        ),
    ],
)
def test_malformed_templates_are_refused(tag: str, template: str, message: str) -> None:
    assert refused(assemble([*without(STATIC, tag), (tag, template)])) == message


def test_an_account_template_without_a_unique_id_is_refused() -> None:
    fields = [*STATIC, ("27", tlv("01", "936000000000000002"))]
    assert refused(assemble(fields)) == (
        "QRIS field 27 (merchant account information) has no globally unique id (sub-field 00)"
    )


# --- fields 00 and 63 ---------------------------------------------------------------


def test_a_payload_without_field_00_is_refused() -> None:
    assert refused(assemble(without(STATIC, "00"))) == (
        "QRIS field 00 (payload format indicator) is missing"
    )


def test_field_00_must_come_first() -> None:
    fields = [("01", "11"), ("00", "01"), *STATIC[2:]]
    assert refused(assemble(fields)) == (
        "QRIS field 00 (payload format indicator) must be the first field"
    )


def test_field_00_must_be_01() -> None:
    assert refused(assemble(replaced(STATIC, "00", "02"))) == (
        "QRIS field 00 (payload format indicator) must be 01"
    )


def test_a_payload_without_checksum_is_refused() -> None:
    body = "".join(tlv(tag, value) for tag, value in STATIC)
    assert refused(body) == "QRIS field 63 (checksum) is missing"


def test_the_checksum_must_be_the_last_field() -> None:
    payload = assemble(STATIC) + tlv("61", "12190")
    assert refused(payload) == "QRIS field 63 (checksum) must be the last field"


@pytest.mark.parametrize("crc_field", ["6304ZZZZ", "6304 1A2", "630312A", "63051A2B3"])
def test_the_checksum_must_be_4_hex_characters(crc_field: str) -> None:
    body = "".join(tlv(tag, value) for tag, value in STATIC)
    assert refused(body + crc_field) == "QRIS field 63 (checksum) must be 4 hex characters"


def test_a_wrong_checksum_is_refused() -> None:
    payload = build_qris()
    wrong = f"{(int(payload[-4:], 16) + 1) % 0x10000:04X}"
    assert refused(payload[:-4] + wrong) == "QRIS checksum (tag 63) does not match"


def test_an_edited_merchant_name_breaks_the_checksum() -> None:
    payload = build_qris().replace("SENJA", "SENJO")
    assert refused(payload) == "QRIS checksum (tag 63) does not match"


@given(
    st.builds(
        build_qris,
        names,
        cities,
        amounts,
        mcc=st.from_regex(r"[0-9]{4}", fullmatch=True),
    ),
    st.data(),
)
def test_changing_any_one_character_is_caught(payload: str, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(payload) - 1), label="index")
    old = payload[index]
    new = data.draw(st.characters().filter(lambda c: c != old), label="new")
    mutated = payload[:index] + new + payload[index + 1 :]
    in_checksum_value = index >= len(payload) - 4
    if in_checksum_value and new.upper() == old.upper():
        # Only the case of a hex digit changed: the same checksum, written in lower case.
        assert parse_qris(mutated).payload == mutated
        return
    with pytest.raises(InvalidQris):
        parse_qris(mutated)


def test_every_printable_substitution_in_a_sample_is_caught() -> None:
    # Exhaustive over one payload, where the property test above samples many.
    payload = with_crc(SAMPLE_BODY)
    for index, old in enumerate(payload):
        for new in string.printable:
            if new == old:
                continue
            mutated = payload[:index] + new + payload[index + 1 :]
            if index >= len(payload) - 4 and new.upper() == old.upper():
                continue
            with pytest.raises(InvalidQris):
                parse_qris(mutated)


# --- the meaning of the fields ------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("01", "QRIS field 01 (point of initiation) is missing"),
        ("52", "QRIS field 52 (merchant category code) is missing"),
        ("53", "QRIS field 53 (currency) is missing"),
        ("58", "QRIS field 58 (country) is missing"),
        ("59", "QRIS field 59 (merchant name) is missing"),
        ("60", "QRIS field 60 (merchant city) is missing"),
    ],
)
def test_mandatory_fields_are_required(tag: str, message: str) -> None:
    assert refused(assemble(without(STATIC, tag))) == message


def test_merchant_account_information_is_required() -> None:
    fields = [*without(STATIC, "26", "51"), ("02", "4000123456789012")]
    assert refused(assemble(fields)) == (
        "QRIS payload has no merchant account information (fields 26-51)"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"01": "13"}, "QRIS field 01 (point of initiation) must be 11 (static) or 12 (dynamic)"),
        ({"52": "581A"}, "QRIS field 52 (merchant category code) must be 4 digits"),
        ({"52": "58120"}, "QRIS field 52 (merchant category code) must be 4 digits"),
        ({"53": "840"}, "QRIS field 53 (currency) must be 360 (IDR)"),
        ({"58": "SG"}, "QRIS field 58 (country) must be ID"),
        ({"58": "id"}, "QRIS field 58 (country) must be ID"),
        ({"59": "A" * 26}, "QRIS field 59 (merchant name) must be at most 25 characters"),
        ({"59": "   "}, "QRIS field 59 (merchant name) is blank"),
        ({"60": "B" * 16}, "QRIS field 60 (merchant city) must be at most 15 characters"),
        ({"61": "12345678901"}, "QRIS field 61 (postal code) must be at most 10 characters"),
    ],
)
def test_bad_field_values_are_refused(extra: dict[str, str], message: str) -> None:
    assert refused(build_qris(extra=extra)) == message


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("15000.50", "QRIS field 54 (amount) is not a whole rupiah amount"),
        ("15000.05", "QRIS field 54 (amount) is not a whole rupiah amount"),
        ("0.5", "QRIS field 54 (amount) is not a whole rupiah amount"),
        ("-15000", "QRIS field 54 (amount) is not a valid amount"),
        ("+15000", "QRIS field 54 (amount) is not a valid amount"),
        ("15,000", "QRIS field 54 (amount) is not a valid amount"),
        ("1.5e4", "QRIS field 54 (amount) is not a valid amount"),
        ("15000.", "QRIS field 54 (amount) is not a valid amount"),
        (".5", "QRIS field 54 (amount) is not a valid amount"),
        ("Rp15000", "QRIS field 54 (amount) is not a valid amount"),
        ("12345678901234", "QRIS field 54 (amount) is not a valid amount"),
        ("0", "QRIS field 54 (amount) must be greater than zero"),
        ("0.00", "QRIS field 54 (amount) must be greater than zero"),
        ("000", "QRIS field 54 (amount) must be greater than zero"),
    ],
)
def test_bad_amounts_are_refused(amount: str, message: str) -> None:
    assert refused(build_qris(extra={"54": amount}, dynamic=True)) == message


def test_a_dynamic_qr_without_amount_is_refused() -> None:
    assert refused(build_qris(dynamic=True)) == (
        "QRIS field 54 (amount) is missing from a dynamic QRIS payload"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"55": "04"}, "QRIS field 55 (tip indicator) must be 01, 02 or 03"),
        (
            {"55": "02"},
            "QRIS field 56 (convenience fee) must be present exactly when "
            "QRIS field 55 (tip indicator) is 02",
        ),
        (
            {"56": "1000"},
            "QRIS field 56 (convenience fee) must be present exactly when "
            "QRIS field 55 (tip indicator) is 02",
        ),
        (
            {"55": "01", "57": "5"},
            "QRIS field 57 (convenience fee percentage) must be present exactly when "
            "QRIS field 55 (tip indicator) is 03",
        ),
        ({"55": "02", "56": "-1"}, "QRIS field 56 (convenience fee) is not a valid amount"),
        (
            {"55": "03", "57": "5%"},
            "QRIS field 57 (convenience fee percentage) is not a valid percentage",
        ),
    ],
)
def test_inconsistent_tip_and_fee_fields_are_refused(extra: dict[str, str], message: str) -> None:
    assert refused(build_qris(extra=extra)) == message


# --- the amount to pay --------------------------------------------------------------


def test_a_qr_amount_is_paid_when_the_caller_gives_none_or_the_same() -> None:
    qris = parse_qris(build_qris(amount_idr=15000))
    assert amount_to_pay(qris, 0) == 15000
    assert amount_to_pay(qris, 15000) == 15000


def test_a_static_qr_amount_is_fixed_too() -> None:
    qris = parse_qris(build_qris(amount_idr=15000, dynamic=False))
    assert amount_to_pay(qris, 0) == 15000
    with pytest.raises(QrisAmountError) as caught:
        amount_to_pay(qris, 20000)
    assert caught.value.problem is AmountProblem.DIFFERS_FROM_QR


@pytest.mark.parametrize("requested", [1, 14999, 15001])
def test_a_qr_amount_cannot_be_changed(requested: int) -> None:
    qris = parse_qris(build_qris(amount_idr=15000))
    with pytest.raises(QrisAmountError) as caught:
        amount_to_pay(qris, requested)
    assert caught.value.problem is AmountProblem.DIFFERS_FROM_QR
    assert str(caught.value) == "must be left unset or equal the amount fixed by the QRIS code"


def test_without_a_qr_amount_the_callers_amount_is_paid() -> None:
    assert amount_to_pay(parse_qris(build_qris()), 20000) == 20000


def test_without_a_qr_amount_the_caller_must_give_one() -> None:
    with pytest.raises(QrisAmountError) as caught:
        amount_to_pay(parse_qris(build_qris()), 0)
    assert caught.value.problem is AmountProblem.REQUIRED
    assert str(caught.value) == "is required: the QRIS code carries no amount"


@pytest.mark.parametrize("payload", [build_qris(), build_qris(amount_idr=15000)])
def test_a_negative_amount_is_refused(payload: str) -> None:
    with pytest.raises(QrisAmountError) as caught:
        amount_to_pay(parse_qris(payload), -1)
    assert caught.value.problem is AmountProblem.NOT_POSITIVE
    assert str(caught.value) == "must be greater than zero"


def test_amount_errors_are_not_payload_errors() -> None:
    # The edge blames amount_idr for one and qris_payload for the other.
    assert not issubclass(QrisAmountError, InvalidQris)
    assert not issubclass(InvalidQris, QrisAmountError)
