"""The fake OCR of a KTP photo: image checks and identity data derived from the image bytes.

`ocr_identity` is pure so tests can compute what the sandbox will answer; the derivation is
written out in docs/sandbox.md. Images are only hashed, never stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The 38 province codes of Indonesia's administrative code (Kemendagri).
PROVINCE_CODES: tuple[str, ...] = (
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21",
    "31", "32", "33", "34", "35", "36",
    "51", "52", "53",
    "61", "62", "63", "64", "65",
    "71", "72", "73", "74", "75", "76",
    "81", "82",
    "91", "92", "93", "94", "95", "96",
)  # fmt: skip

FIXED_FIELDS: dict[str, str] = {
    "religion": "ISLAM",
    "rtrw": "001/002",
    "address": "JL. MERDEKA NO. 17",
    "province": "DKI JAKARTA",
    "district": "JAKARTA PUSAT",
    "subDistrict": "GAMBIR",
    "occupation": "KARYAWAN SWASTA",
    "birthPlace": "JAKARTA",
    "idExpiredDate": "SEUMUR HIDUP",
    "bloodType": "-",
    "villageDistrict": "GAMBIR",
    "nationality": "WNI",
    "maritalStatus": "BELUM KAWIN",
}


def decode_image(value: str) -> bytes | None:
    """The bytes of a base64 JPEG or PNG (whitespace ignored); None for anything else."""
    compact = "".join(value.split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    if data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC):
        return data
    return None


def ocr_identity(id_card_image: bytes, full_name: str) -> dict[str, str]:
    """What the sandbox 'reads' off a KTP: every eKYC `data` field except `requestId`.

    With d = sha256(id_card_image): province PROVINCE_CODES[d[0] % 38], regency
    1 + d[1] % 79, district 1 + d[2] % 50, woman iff d[3] is odd, day 1 + d[4] % 28
    (+40 in the NIK for a woman), month 1 + d[5] % 12, year 1960 + d[6] % 46,
    serial 1 + int.from_bytes(d[7:9], "big") % 9999.
    """
    d = hashlib.sha256(id_card_image).digest()
    province = PROVINCE_CODES[d[0] % len(PROVINCE_CODES)]
    regency = 1 + d[1] % 79
    district = 1 + d[2] % 50
    woman = d[3] % 2 == 1
    day = 1 + d[4] % 28
    month = 1 + d[5] % 12
    year = 1960 + d[6] % 46
    serial = 1 + int.from_bytes(d[7:9], "big") % 9999
    nik_day = day + 40 if woman else day
    region = f"{province}{regency:02d}{district:02d}"
    nik = f"{region}{nik_day:02d}{month:02d}{year % 100:02d}{serial:04d}"
    f = FIXED_FIELDS
    return {
        "idCardNumber": nik,
        "name": " ".join(full_name.split()).upper(),
        "religion": f["religion"],
        "rtrw": f["rtrw"],
        "address": f["address"],
        "province": f["province"],
        "district": f["district"],
        "subDistrict": f["subDistrict"],
        "occupation": f["occupation"],
        "birthPlace": f["birthPlace"],
        "gender": "PEREMPUAN" if woman else "LAKI-LAKI",
        "birthDate": f"{day:02d}-{month:02d}-{year}",
        "idExpiredDate": f["idExpiredDate"],
        "bloodType": f["bloodType"],
        "villageDistrict": f["villageDistrict"],
        "nationality": f["nationality"],
        "maritalStatus": f["maritalStatus"],
    }
