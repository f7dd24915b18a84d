"""Callbacks to the partner: signing the raw body and delivering it with retries.

Headers (docs/kaspro.md § Callbacks): `KasPro-Callback-Timestamp: <unix seconds>` and
`KasPro-Callback-Signature: <hex HMAC-SHA256(secret, f"{timestamp}." + raw body)>`. Each try
is signed afresh with the clock's current second; the body bytes stay the same. A delivery
under a signature fault leaves the signature out or signs with a wrong secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx

from kaspro_sandbox.money import CallbackAttempt

TIMESTAMP_HEADER = "KasPro-Callback-Timestamp"
SIGNATURE_HEADER = "KasPro-Callback-Signature"
# What a badly signed callback is signed with, instead of the callback secret.
WRONG_SECRET_PREFIX: Final = "not-the-secret:"

Signing = Literal["valid", "none", "bad"]


def callback_signature(secret: str, timestamp: str, raw_body: bytes) -> str:
    """Hex HMAC-SHA256 over `timestamp + "." + raw body`."""
    message = timestamp.encode() + b"." + raw_body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def encode_body(body: dict[str, Any]) -> bytes:
    """The raw bytes sent (and signed): compact JSON, keys in the body's order."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Delivery:
    """One callback to deliver: where, what, and how to sign and retry it."""

    url: str
    request_id: str
    body: dict[str, Any]
    secret: str
    retry_delays: tuple[float, ...]  # the waits between tries: one fewer than the tries
    timeout_seconds: float
    signing: Signing = "valid"
    fault: str | None = None  # for the callback log


async def deliver(
    delivery: Delivery,
    clock: Callable[[], float],
    record: Callable[[CallbackAttempt], None],
) -> bool:
    """POST the callback until a 2xx or the tries run out (one more than the retry
    delays); `record` gets every try.

    True when a try was answered 2xx. Cancellation stops it between or during tries.
    """
    raw_body = encode_body(delivery.body)
    delays = delivery.retry_delays
    async with httpx.AsyncClient(timeout=delivery.timeout_seconds, trust_env=False) as client:
        for attempt in range(1, len(delays) + 2):
            timestamp = str(int(clock()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
            if delivery.signing != "none":
                secret = delivery.secret
                if delivery.signing == "bad":
                    secret = WRONG_SECRET_PREFIX + secret
                headers[SIGNATURE_HEADER] = callback_signature(secret, timestamp, raw_body)
            status_code: int | None = None
            error: str | None = None
            try:
                response = await client.post(delivery.url, content=raw_body, headers=headers)
                status_code = response.status_code
            except Exception as exc:
                # Whatever failed, this try did not reach the receiver: a provider tries
                # again. Not only httpx's errors: a peer that closes the connection as it
                # opens can make anyio raise AttributeError (getpeername of a closed
                # socket), which once ended the delivery — a top-up credited and never
                # told (docs/reliability.md, issue 15's runs).
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            record(
                CallbackAttempt(
                    time=clock(),
                    url=delivery.url,
                    request_id=delivery.request_id,
                    attempt=attempt,
                    status_code=status_code,
                    error=error,
                    body=delivery.body,
                    fault=delivery.fault,
                )
            )
            if status_code is not None and 200 <= status_code < 300:
                return True
            if attempt <= len(delays):
                await asyncio.sleep(delays[attempt - 1])
    return False
