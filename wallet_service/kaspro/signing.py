"""Signing KasPro partner calls and verifying KasPro's callbacks (HMAC-SHA256, docs/kaspro.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final, Protocol
from urllib.parse import quote


def http_date(when: datetime) -> str:
    """RFC 1123 date in GMT, as the ``Date`` header: ``Mon, 04 Oct 2021 07:00:30 GMT``."""
    if when.tzinfo is None:
        # A naive time could be local or UTC; guessing wrong shifts the signed date by hours.
        raise ValueError("http_date needs a timezone-aware datetime")
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)


def request_path(path: str) -> str:
    """The part of a request target that is signed: the path, without query or fragment."""
    return path.partition("?")[0].partition("#")[0]


def string_to_sign(method: str, path: str, date: str) -> str:
    """The text the signature covers: request target and date, one per line."""
    return f"(request-target): {method.lower()} {request_path(path)}\ndate: {date}"


def signature(secret: str, method: str, path: str, date: str) -> str:
    """The URL-encoded base64 HMAC-SHA256 of the string to sign, keyed by the secret's text."""
    digest = hmac.new(
        secret.encode("utf-8"), string_to_sign(method, path, date).encode("utf-8"), hashlib.sha256
    ).digest()
    return quote(base64.b64encode(digest).decode("ascii"), safe="")


def signature_header(key_id: str, secret: str, method: str, path: str, date: str) -> str:
    """The value of the ``KasPro-Signature`` header."""
    return (
        f'Signature keyId="{key_id}",algorithm="hmac-sha256",'
        f'headers="(request-target) date",signature="{signature(secret, method, path, date)}"'
    )


class Signer(Protocol):
    """Produces the authentication headers of one partner call (besides the bearer token).

    A protocol so that another scheme (KasPro's SNAP-BI signature) can replace it.
    """

    def headers(self, method: str, path: str) -> dict[str, str]: ...


class HmacSigner:
    """The partner gateway's HMAC signature: ``Date``, ``KasPro-Signature``, ``Partner-Key``."""

    def __init__(self, key_id: str, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        self._key_id = key_id
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:
        return f"HmacSigner(key_id={self._key_id!r})"

    def headers(self, method: str, path: str) -> dict[str, str]:
        date = http_date(datetime.fromtimestamp(math.floor(self._clock()), tz=UTC))
        signed = signature_header(self._key_id, self._secret, method, path, date)
        return {"Date": date, "KasPro-Signature": signed, "Partner-Key": self._key_id}


# Callbacks: KasPro signs what it POSTs to us (docs/kaspro.md, "Callbacks").
CALLBACK_TIMESTAMP_HEADER: Final = "KasPro-Callback-Timestamp"
CALLBACK_SIGNATURE_HEADER: Final = "KasPro-Callback-Signature"
CALLBACK_WINDOW_SECONDS: Final = 300.0

# Unix seconds as ASCII digits; 12 digits reach far past any clock we will meet.
_UNIX_SECONDS: Final = re.compile(r"[0-9]{1,12}")


def callback_signature(secret: str, timestamp: str, raw_body: bytes) -> str:
    """Hex HMAC-SHA256 over ``<timestamp>.`` followed by the raw body, as KasPro sends it."""
    message = f"{timestamp}.".encode() + raw_body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_callback(
    raw_body: bytes,
    timestamp: str | None,
    signature: str | None,
    secrets: Sequence[str],
    now: float,
    window_seconds: float = CALLBACK_WINDOW_SECONDS,
) -> bool:
    """Whether a callback is KasPro's: a fresh timestamp and a signature by one of ``secrets``.

    ``secrets`` holds the current and the previous secret, so that a rotation loses no
    callback; empty ones are skipped. The comparison takes constant time.
    """
    if timestamp is None or signature is None:
        return False
    if not _UNIX_SECONDS.fullmatch(timestamp) or abs(int(timestamp) - now) > window_seconds:
        return False
    # compare_digest refuses non-ASCII text; such a signature cannot be ours anyway.
    offered = signature.strip().lower()
    if not offered.isascii():
        return False
    matched = False
    for secret in secrets:
        if secret:
            # No early exit: every secret is tried, whichever one matches.
            expected = callback_signature(secret, timestamp, raw_body)
            matched |= hmac.compare_digest(expected, offered)
    return matched
