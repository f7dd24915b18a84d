"""Valid QRIS payloads for tests.

The TLV writer here is written apart from wallet_service.domain.qris, so a parser bug
cannot hide behind the same bug in the payloads it is tested with; the checksum is the
domain's (binascii's), pinned by published vectors in tests/unit/test_domain_qris.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from wallet_service.domain.qris import crc16_ccitt_false

QRIS_GUID = "ID.CO.QRIS.WWW"
ACQUIRER_GUID = "COM.EXAMPLE.WWW"


def tlv(tag: str, value: str) -> str:
    """One field: 2-digit tag, 2-digit length, value."""
    if len(tag) != 2 or not tag.isdigit():
        raise ValueError(f"bad tag {tag!r}")
    if len(value) > 99:
        raise ValueError(f"field {tag} value longer than 99 characters")
    return f"{tag}{len(value):02d}{value}"


def with_crc(body: str) -> str:
    """``body`` closed by field 63 holding the checksum over ``body`` + ``6304``."""
    head = body + "6304"
    return head + f"{crc16_ccitt_false(head.encode('ascii')):04X}"


def assemble(fields: Iterable[tuple[str, str]]) -> str:
    """The fields in the given order (repeats allowed), closed by a correct field 63."""
    return with_crc("".join(tlv(tag, value) for tag, value in fields))


def build_qris(
    merchant_name: str = "TOKO KOPI SENJA",
    city: str = "JAKARTA",
    amount_idr: int | None = None,
    *,
    dynamic: bool | None = None,
    mcc: str = "5812",
    extra: dict[str, str] | None = None,
) -> str:
    """A valid QRIS payload with a correct checksum.

    ``dynamic`` defaults to whether an amount is given. ``extra`` adds top-level fields
    or replaces the defaults (tags 00-62); fields are written in tag order.
    """
    if dynamic is None:
        dynamic = amount_idr is not None
    fields: dict[str, str] = {
        "00": "01",
        "01": "12" if dynamic else "11",
        "26": (
            tlv("00", ACQUIRER_GUID)
            + tlv("01", "936000000000000001")
            + tlv("02", "000000000001")
            + tlv("03", "UMI")
        ),
        "51": tlv("00", QRIS_GUID) + tlv("02", "ID1020000000001") + tlv("03", "UMI"),
        "52": mcc,
        "53": "360",
        "58": "ID",
        "59": merchant_name,
        "60": city,
    }
    if amount_idr is not None:
        fields["54"] = str(amount_idr)
    fields.update(extra or {})
    return assemble(sorted(fields.items()))
