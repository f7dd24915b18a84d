"""QRIS payloads: parsing and checking a merchant-presented QR code, and the amount to pay.

QRIS is Indonesia's profile of EMVCo merchant-presented mode: a flat string of TLV fields
(2-digit tag, 2-digit decimal length, value), some of which are templates holding nested
TLVs, closed by a CRC-16 in field 63. This module owns the structural and semantic rules
a payload must meet before the wallet pays it, and the rule that picks the amount to pay
from the QR and the caller's request. It does no I/O and knows no gRPC or KasPro names.
"""

from __future__ import annotations

import binascii
import enum
import re
from dataclasses import dataclass

# EMVCo caps a merchant-presented payload at 512 characters.
MAX_PAYLOAD_CHARS = 512

_FORMAT_INDICATOR = "00"
_POINT_OF_INITIATION = "01"
_MERCHANT_CATEGORY = "52"
_CURRENCY = "53"
_AMOUNT = "54"
_TIP_INDICATOR = "55"
_FIXED_FEE = "56"
_PERCENT_FEE = "57"
_COUNTRY = "58"
_MERCHANT_NAME = "59"
_MERCHANT_CITY = "60"
_POSTAL_CODE = "61"
_ADDITIONAL_DATA = "62"
_CRC = "63"
_ALTERNATE_LANGUAGE = "64"

# Merchant account information templates: 26-45 per payment network, 46-51 reserved for
# national use (QRIS puts its national merchant id in 51). Each carries a globally unique
# id in sub-field 00 naming whose merchant id it is.
_ACCOUNT_TEMPLATES = frozenset(f"{tag:02d}" for tag in range(26, 52))
_TEMPLATES = _ACCOUNT_TEMPLATES | {_ADDITIONAL_DATA, _ALTERNATE_LANGUAGE}

_STATIC = "11"
_DYNAMIC = "12"
_IDR = "360"
_INDONESIA = "ID"

_NAMES = {
    _FORMAT_INDICATOR: "payload format indicator",
    _POINT_OF_INITIATION: "point of initiation",
    _MERCHANT_CATEGORY: "merchant category code",
    _CURRENCY: "currency",
    _AMOUNT: "amount",
    _TIP_INDICATOR: "tip indicator",
    _FIXED_FEE: "convenience fee",
    _PERCENT_FEE: "convenience fee percentage",
    _COUNTRY: "country",
    _MERCHANT_NAME: "merchant name",
    _MERCHANT_CITY: "merchant city",
    _POSTAL_CODE: "postal code",
    _ADDITIONAL_DATA: "additional data",
    _CRC: "checksum",
    _ALTERNATE_LANGUAGE: "merchant information in alternate language",
}

# Up to 13 characters of digits with an optional decimal part. A sign, exponent or
# grouping separator is not an EMVCo amount.
_AMOUNT_TEXT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_PERCENT_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MCC_TEXT = re.compile(r"[0-9]{4}")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
# Printable ASCII: lengths count characters, and a QR string from a scanner with
# anything else in it is either corrupted or not a QRIS payload.
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection): binascii's CRC-CCITT."""
    return binascii.crc_hqx(data, 0xFFFF)


class InvalidQris(ValueError):
    """The text is not a QRIS payload the wallet can pay; the message says why."""


class AmountProblem(enum.Enum):
    """Why a requested amount does not fit a QRIS code; the value is the description."""

    DIFFERS_FROM_QR = "must be left unset or equal the amount fixed by the QRIS code"
    REQUIRED = "is required: the QRIS code carries no amount"
    NOT_POSITIVE = "must be greater than zero"


class QrisAmountError(ValueError):
    """The amount the caller asked to pay does not fit the QRIS code.

    Raised apart from InvalidQris because the fault lies in the requested amount, not in
    the payload, so the edge can blame that field.
    """

    def __init__(self, problem: AmountProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


@dataclass(frozen=True)
class Qris:
    """A checked QRIS payload: the values the wallet shows and pays by."""

    dynamic: bool
    merchant_name: str
    merchant_city: str
    # None when the payer chooses the amount; whole rupiah otherwise.
    amount_idr: int | None
    currency: str
    country: str
    merchant_category_code: str
    # Globally unique ids of the merchant account templates (26-51), in tag order.
    merchant_account_ids: tuple[str, ...]
    # "" when the payload has no postal code.
    postal_code: str
    # The payload as scanned; the payment is made with it verbatim.
    payload: str


def parse_qris(payload: str) -> Qris:
    """Check ``payload`` against the QRIS rules and return its values.

    Raises InvalidQris naming the first problem found: structure first, then the
    checksum, then the meaning of the fields.
    """
    if not payload:
        raise InvalidQris("QRIS payload is empty")
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise InvalidQris(f"QRIS payload is longer than {MAX_PAYLOAD_CHARS} characters")
    if not _PRINTABLE_ASCII.fullmatch(payload):
        raise InvalidQris("QRIS payload must contain printable ASCII characters only")

    fields = _split(payload, "QRIS payload", "field")
    tags = [tag for tag, _ in fields]
    if _FORMAT_INDICATOR not in tags:
        raise InvalidQris(_missing(_FORMAT_INDICATOR))
    if tags[0] != _FORMAT_INDICATOR:
        raise InvalidQris(f"{_label(_FORMAT_INDICATOR)} must be the first field")
    if _CRC not in tags:
        raise InvalidQris(_missing(_CRC))
    if tags[-1] != _CRC:
        raise InvalidQris(f"{_label(_CRC)} must be the last field")
    values = dict(fields)
    _check_crc(payload, values[_CRC])
    if values[_FORMAT_INDICATOR] != "01":
        raise InvalidQris(f"{_label(_FORMAT_INDICATOR)} must be 01")

    # A template must hold well-formed sub-fields even when nothing is read from it: a
    # broken one means the payload is not what the merchant's acquirer issued.
    for tag in sorted(_TEMPLATES & values.keys()):
        _split(values[tag], _label(tag), "sub-field")
    account_ids = tuple(
        _account_id(tag, values[tag]) for tag in sorted(_ACCOUNT_TEMPLATES & values.keys())
    )
    if not account_ids:
        raise InvalidQris("QRIS payload has no merchant account information (fields 26-51)")

    dynamic = _point_of_initiation(values)
    mcc = _required(values, _MERCHANT_CATEGORY)
    if not _MCC_TEXT.fullmatch(mcc):
        raise InvalidQris(f"{_label(_MERCHANT_CATEGORY)} must be 4 digits")
    if _required(values, _CURRENCY) != _IDR:
        raise InvalidQris(f"{_label(_CURRENCY)} must be {_IDR} (IDR)")
    amount = _amount(values[_AMOUNT], _AMOUNT) if _AMOUNT in values else None
    if dynamic and amount is None:
        # A dynamic QR is made for one payment of a known amount: without it the payload
        # has lost the thing that makes it dynamic.
        raise InvalidQris(f"{_label(_AMOUNT)} is missing from a dynamic QRIS payload")
    _check_fees(values)
    if _required(values, _COUNTRY) != _INDONESIA:
        raise InvalidQris(f"{_label(_COUNTRY)} must be {_INDONESIA}")
    name = _text(values, _MERCHANT_NAME, 25)
    city = _text(values, _MERCHANT_CITY, 15)
    postal_code = values.get(_POSTAL_CODE, "")
    if len(postal_code) > 10:
        raise InvalidQris(f"{_label(_POSTAL_CODE)} must be at most 10 characters")

    return Qris(
        dynamic=dynamic,
        merchant_name=name,
        merchant_city=city,
        amount_idr=amount,
        currency=_IDR,
        country=_INDONESIA,
        merchant_category_code=mcc,
        merchant_account_ids=account_ids,
        postal_code=postal_code,
        payload=payload,
    )


def amount_to_pay(qris: Qris, requested_idr: int) -> int:
    """The rupiah amount to pay ``qris`` with, given the amount the caller asked for.

    ``requested_idr`` is 0 when the caller gave none. A QR that carries an amount fixes
    it: the caller may repeat it but not change it. A QR without one needs the caller's.
    Raises QrisAmountError otherwise.
    """
    if requested_idr < 0:
        raise QrisAmountError(AmountProblem.NOT_POSITIVE)
    if qris.amount_idr is not None:
        if requested_idr not in (0, qris.amount_idr):
            raise QrisAmountError(AmountProblem.DIFFERS_FROM_QR)
        return qris.amount_idr
    if requested_idr == 0:
        raise QrisAmountError(AmountProblem.REQUIRED)
    return requested_idr


def _split(text: str, whole: str, unit: str) -> list[tuple[str, str]]:
    """Cut ``text`` into (tag, value) pairs; ``whole`` and ``unit`` word the errors."""
    fields: list[tuple[str, str]] = []
    seen: set[str] = set()
    pos = 0
    while pos < len(text):
        tag = text[pos : pos + 2]
        if len(tag) < 2:
            raise InvalidQris(f"{whole} is truncated at position {pos}")
        if not (tag.isascii() and tag.isdigit()):
            raise InvalidQris(f"{whole} is malformed at position {pos} (expected a 2-digit tag)")
        length_text = text[pos + 2 : pos + 4]
        if len(length_text) < 2:
            raise InvalidQris(f"{whole} is truncated at {unit} {tag}")
        if not (length_text.isascii() and length_text.isdigit()):
            raise InvalidQris(f"{whole} has a malformed length at {unit} {tag}")
        length = int(length_text)
        start = pos + 4
        if start + length > len(text):
            raise InvalidQris(f"{whole} is truncated at {unit} {tag}")
        if length == 0:
            # EMVCo lengths run 01-99: a present field always has a value.
            raise InvalidQris(f"{whole} has an empty {unit} {tag}")
        if tag in seen:
            raise InvalidQris(f"{whole} repeats {unit} {tag}")
        seen.add(tag)
        fields.append((tag, text[start : start + length]))
        pos = start + length
    return fields


def _check_crc(payload: str, crc_text: str) -> None:
    if not _HEX4.fullmatch(crc_text):
        raise InvalidQris(f"{_label(_CRC)} must be 4 hex characters")
    # The checksum covers everything before its own value, its tag and length included.
    expected = crc16_ccitt_false(payload[:-4].encode("ascii"))
    if int(crc_text, 16) != expected:
        raise InvalidQris("QRIS checksum (tag 63) does not match")


def _account_id(tag: str, template: str) -> str:
    sub_fields = dict(_split(template, _label(tag), "sub-field"))
    unique_id = sub_fields.get("00")
    if unique_id is None:
        raise InvalidQris(f"{_label(tag)} has no globally unique id (sub-field 00)")
    return unique_id


def _point_of_initiation(values: dict[str, str]) -> bool:
    # EMVCo makes field 01 optional; QRIS makes it mandatory, and whether the QR is
    # dynamic decides whether it must carry the amount.
    method = _required(values, _POINT_OF_INITIATION)
    if method not in (_STATIC, _DYNAMIC):
        raise InvalidQris(
            f"{_label(_POINT_OF_INITIATION)} must be {_STATIC} (static) or {_DYNAMIC} (dynamic)"
        )
    return method == _DYNAMIC


def _amount(text: str, tag: str) -> int:
    match = _AMOUNT_TEXT.fullmatch(text)
    if match is None or len(text) > 13:
        raise InvalidQris(f"{_label(tag)} is not a valid amount")
    whole, fraction = match.groups()
    # Rupiah has no minor unit in use: "15000.00" is 15000, "15000.50" cannot be paid.
    if fraction is not None and fraction.strip("0"):
        raise InvalidQris(f"{_label(tag)} is not a whole rupiah amount")
    amount = int(whole)
    if amount == 0:
        raise InvalidQris(f"{_label(tag)} must be greater than zero")
    return amount


def _check_fees(values: dict[str, str]) -> None:
    # 55 = 01 asks the payer for a tip, 02 adds the fixed fee in 56, 03 the percentage in
    # 57. A fee field without its indicator would leave the total to pay ambiguous.
    indicator = values.get(_TIP_INDICATOR)
    if indicator not in (None, "01", "02", "03"):
        raise InvalidQris(f"{_label(_TIP_INDICATOR)} must be 01, 02 or 03")
    for fee_tag, wanted in ((_FIXED_FEE, "02"), (_PERCENT_FEE, "03")):
        if (fee_tag in values) != (indicator == wanted):
            raise InvalidQris(
                f"{_label(fee_tag)} must be present exactly when "
                f"{_label(_TIP_INDICATOR)} is {wanted}"
            )
    if _FIXED_FEE in values:
        _amount(values[_FIXED_FEE], _FIXED_FEE)
    percent = values.get(_PERCENT_FEE)
    if percent is not None and not (len(percent) <= 5 and _PERCENT_TEXT.fullmatch(percent)):
        raise InvalidQris(f"{_label(_PERCENT_FEE)} is not a valid percentage")


def _text(values: dict[str, str], tag: str, max_chars: int) -> str:
    # Printers pad names with spaces; what the payer is shown is the trimmed text.
    text = _required(values, tag).strip()
    if not text:
        raise InvalidQris(f"{_label(tag)} is blank")
    if len(values[tag]) > max_chars:
        raise InvalidQris(f"{_label(tag)} must be at most {max_chars} characters")
    return text


def _required(values: dict[str, str], tag: str) -> str:
    value = values.get(tag)
    if value is None:
        raise InvalidQris(_missing(tag))
    return value


def _missing(tag: str) -> str:
    return f"{_label(tag)} is missing"


def _label(tag: str) -> str:
    name = _NAMES.get(tag)
    if name is None and tag in _ACCOUNT_TEMPLATES:
        name = "merchant account information"
    return f"QRIS field {tag} ({name})" if name else f"QRIS field {tag}"
