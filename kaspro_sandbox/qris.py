"""A tiny reader of QRIS payloads (EMVCo merchant-presented QR): top-level TLV only.

Each data object is a 2-digit tag, a 2-digit length and that many characters of value.
Nested templates (26 to 51, 62, …) stay unread strings; the CRC (tag 63) is not checked.
"""

from __future__ import annotations

MERCHANT_NAME_TAG = "59"


def read_tlv(payload: str) -> dict[str, str] | None:
    """The top-level data objects of `payload` by tag; None unless it parses to the end."""
    objects: dict[str, str] = {}
    position = 0
    while position < len(payload):
        header = payload[position : position + 4]
        if len(header) < 4 or not (header.isascii() and header.isdigit()):
            return None
        tag, length = header[:2], int(header[2:])
        value = payload[position + 4 : position + 4 + length]
        if len(value) != length:
            return None
        objects.setdefault(tag, value)
        position += 4 + length
    return objects or None


def merchant_name(payload: str) -> str | None:
    """Tag 59 (merchant name) of a QRIS payload; None when unreadable or missing or blank."""
    objects = read_tlv(payload)
    if objects is None:
        return None
    name = objects.get(MERCHANT_NAME_TAG, "").strip()
    return name or None
