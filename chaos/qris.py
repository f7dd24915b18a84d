"""QRIS payloads for the workload: merchant-presented EMVCo TLV with a correct CRC.

The TLV writer is written apart from wallet_service.domain.qris, so a parser bug cannot
hide behind the same bug in the payloads the simulation sends.
"""

from __future__ import annotations

from wallet_service.domain.qris import crc16_ccitt_false


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def payload(merchant_name: str, amount_idr: int | None, *, city: str = "JAKARTA") -> str:
    """A static QR (no amount) or a dynamic one (``amount_idr`` in tag 54)."""
    fields = {
        "00": "01",
        "01": "11" if amount_idr is None else "12",
        "26": _tlv("00", "ID.CO.CHAOS.WWW")
        + _tlv("01", "936000000000000001")
        + _tlv("02", "000000000001")
        + _tlv("03", "UMI"),
        "51": _tlv("00", "ID.CO.QRIS.WWW") + _tlv("02", "ID1020000000001") + _tlv("03", "UMI"),
        "52": "5812",
        "53": "360",
        "58": "ID",
        "59": merchant_name,
        "60": city,
    }
    if amount_idr is not None:
        fields["54"] = str(amount_idr)
    head = "".join(_tlv(tag, value) for tag, value in sorted(fields.items())) + "6304"
    return head + f"{crc16_ccitt_false(head.encode('ascii')):04X}"
