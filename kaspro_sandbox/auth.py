"""The gateway's checks on a partner call: HTTP signature, Date freshness, bearer token.

Written from docs/kaspro.md independently of the service's signer, so that a bug in one
shows up as a refusal from the other.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from kaspro_sandbox import codes
from kaspro_sandbox.config import SandboxConfig
from kaspro_sandbox.state import SandboxState

SIGNED_HEADERS = "(request-target) date"
ALGORITHM = "hmac-sha256"

_RFC1123 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_SIGNATURE_PARAM = re.compile(r'([A-Za-z]+)="([^"]*)"')


@dataclass(frozen=True)
class Refusal:
    """Why the gateway turns a call away: always HTTP 401 with `{"code", "message"}`."""

    code: int

    @property
    def message(self) -> str:
        return codes.MESSAGES[self.code]


def expected_signature(secret: str, method: str, path: str, date: str) -> str:
    """The `signature` parameter a correct client sends: urlencoded base64 HMAC-SHA256."""
    signing_string = f"(request-target): {method.lower()} {path}\ndate: {date}"
    digest = hmac.new(secret.encode(), signing_string.encode(), hashlib.sha256).digest()
    return quote(base64.b64encode(digest).decode(), safe="")


def parse_signature_header(value: str) -> dict[str, str] | None:
    """The parameters of `Signature keyId="…",algorithm="…",…`; None when malformed."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != "Signature":
        return None
    params: dict[str, str] = {}
    for part in rest.split(","):
        match = _SIGNATURE_PARAM.fullmatch(part.strip())
        if match is None:
            return None
        params[match[1]] = match[2]
    return params


# A partner's calls within one second carry the same Date, whose value never changes:
# parsed once (docs/performance.md, fix 13, says what it saves).
@functools.lru_cache(maxsize=256)
def parse_http_date(value: str) -> float | None:
    """Unix seconds of an RFC 1123 GMT date (`Mon, 04 Oct 2021 07:00:30 GMT`); None if not one."""
    if _RFC1123.fullmatch(value) is None:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except ValueError:
        return None


def check_partner_call(
    method: str,
    path: str,
    headers: Mapping[str, str],
    config: SandboxConfig,
    state: SandboxState,
) -> Refusal | None:
    """None when the call is signed, dated and authorised as the gateway requires.

    `headers` must look names up case-insensitively; `path` excludes the query string.
    """
    params = parse_signature_header(headers.get("kaspro-signature", ""))
    if (
        params is None
        or headers.get("partner-key") != config.hmac_key
        or params.get("keyId") != config.hmac_key
        or params.get("algorithm") != ALGORITHM
        or params.get("headers") != SIGNED_HEADERS
        or "signature" not in params
    ):
        return Refusal(codes.INVALID_SIGNATURE)

    now = config.clock()
    date = headers.get("date", "")
    sent_at = parse_http_date(date)
    if sent_at is None or abs(now - sent_at) > config.date_skew_seconds:
        return Refusal(codes.DATE_OUT_OF_RANGE)

    expected = expected_signature(config.hmac_secret, method, path, date)
    if not hmac.compare_digest(params["signature"].encode(), expected.encode()):
        return Refusal(codes.INVALID_SIGNATURE)

    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not state.token_is_live(token.strip(), now):
        return Refusal(codes.INVALID_TOKEN)
    return None
