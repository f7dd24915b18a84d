"""KasPro endpoints: pure request builders and tolerant response parsers (no I/O).

Every KasPro field name, path and vocabulary word lives in this module; docs/kaspro.md
is the contract it follows.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from wallet_service.domain.account import (
    Account,
    AccountStatus,
    AccountType,
    Balance,
    CustomerType,
    KycIdentity,
    KycStatus,
)
from wallet_service.domain.phone import InvalidMobileNumber, MobileNumber, parse_mobile_number
from wallet_service.kaspro.codes import GATEWAY_REFUSALS, Outcome, classify
from wallet_service.kaspro.errors import KasProAuthError, KasProRejected, KasProUnavailable

TOKEN_PATH: Final = "/authentication-server/oauth/token"
REGISTER_CUSTOMER_PATH: Final = "/register-customer/"
GET_OTP_PATH: Final = "/pil-partner-get-otp/"
VALIDATE_OTP_PATH: Final = "/validate-otp/"
EKYC_UPGRADE_PATH: Final = "/pil-partner/ekyc-upgrade-premium-inquiry/"
ACCOUNT_INQUIRY_PATH: Final = "/customer-account-inquiry/"

# Used when the token answer has no expires_in: the lifetime KasPro's sample shows.
DEFAULT_TOKEN_LIFETIME_SECONDS: Final = 3600.0

_REQUEST_ID_LENGTH: Final = 16
_OAUTH_ERROR: Final = re.compile(r"[a-z_]{1,40}")
# Up to 18 digits: more than any rupiah amount, and int() stays cheap.
_DIGITS: Final = re.compile(r"[0-9]{1,18}")
_SIGNED_DIGITS: Final = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One call to KasPro as data: the client turns it into HTTP."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class AccessToken:
    """The gateway's OAuth2 bearer token and how long it lives."""

    value: str = field(repr=False)
    expires_in_seconds: float


@dataclass(frozen=True, slots=True)
class Registration:
    """What KasPro needs to open a wallet. Unknown text fields are empty strings."""

    request_id: str
    mobile_number: MobileNumber
    first_name: str
    middle_name: str
    last_name: str
    email: str
    address: str
    city: str
    province: str
    postal_code: str


def kaspro_request_id(*parts: str) -> str:
    """A 16-character upper-case alphanumeric requestId derived from ``parts``.

    Derived, not random, so that a retry of the same caller request sends the same id.
    The parts are JSON-encoded before hashing so that ("ab", "c") and ("a", "bc") differ.
    """
    digest = hashlib.sha256(json.dumps(list(parts)).encode("utf-8")).digest()
    return base64.b32encode(digest).decode("ascii")[:_REQUEST_ID_LENGTH]


# Request builders.


def token_request(client_id: str, client_secret: str) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=TOKEN_PATH,
        form={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        },
    )


def register_customer_request(registration: Registration) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=REGISTER_CUSTOMER_PATH,
        json={
            "requestId": registration.request_id,
            "firstName": registration.first_name,
            "middleName": registration.middle_name,
            "lastName": registration.last_name,
            "email": registration.email,
            "mobileNumber": registration.mobile_number.local,
            "address": registration.address,
            "city": registration.city,
            "province": registration.province,
            "country": "ID",
            "postalCode": registration.postal_code,
        },
    )


def get_otp_request(mobile: MobileNumber) -> HttpRequest:
    return HttpRequest(method="GET", path=GET_OTP_PATH, query={"mobileNumber": mobile.local})


def validate_otp_request(mobile: MobileNumber, otp: str) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=VALIDATE_OTP_PATH,
        json={"mobileNumber": mobile.local, "otp": otp},
    )


def ekyc_upgrade_request(
    request_id: str,
    mobile: MobileNumber,
    id_card_image: bytes,
    selfie_image: bytes,
    selfie_with_id_card_image: bytes,
) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=EKYC_UPGRADE_PATH,
        json={
            "requestId": request_id,
            "mobileNumber": mobile.local,
            "idCardImage": _base64(id_card_image),
            "selfieImage": _base64(selfie_image),
            "selfieWithIdCardImage": _base64(selfie_with_id_card_image),
        },
    )


def account_inquiry_request(mobile: MobileNumber) -> HttpRequest:
    return HttpRequest(
        method="GET", path=ACCOUNT_INQUIRY_PATH, query={"mobileNumber": mobile.local}
    )


def _base64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


# Response parsers.


def parse_token(body: Any) -> AccessToken:
    """The token endpoint's HTTP 200 answer."""
    if not isinstance(body, dict):
        raise KasProUnavailable("token answer is not a JSON object")
    value = body.get("access_token")
    if not isinstance(value, str) or not value:
        raise KasProUnavailable("token answer has no access_token")
    token_type = body.get("token_type")
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() != "bearer"
    ):
        raise KasProUnavailable("token answer is not a bearer token")
    expires_in = body.get("expires_in")
    if expires_in is None:
        return AccessToken(value, DEFAULT_TOKEN_LIFETIME_SECONDS)
    lifetime = _whole_number(expires_in)
    if lifetime is None or lifetime <= 0:
        raise KasProUnavailable("token answer has a malformed expires_in")
    return AccessToken(value, float(lifetime))


def token_refusal(body: Any) -> str:
    """A safe description of the token endpoint's refusal (``invalid_client``)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str) and _OAUTH_ERROR.fullmatch(error):
        return f"token refused: {error}"
    return "token refused"


def peek_code(body: Any) -> int | None:
    """The KasPro code of a decoded answer, or None when it has no readable one."""
    if not isinstance(body, dict):
        return None
    return _whole_number(body.get("code"))


def parse_register_customer(body: Any) -> str:
    """The ``responseId`` of a successful registration."""
    answer = _succeeded(body)
    return _text(answer, "responseId") or _text(answer, "responseId ")


def parse_get_otp(body: Any) -> int:
    """The lifetime of the OTP KasPro sent, in seconds."""
    data = _object(_succeeded(body), "data")
    expiry = _whole_number(data.get("expiry"))
    if expiry is None or expiry < 0:
        raise KasProUnavailable("malformed OTP expiry")
    return expiry


def parse_validate_otp(body: Any) -> None:
    _succeeded(body)


def parse_ekyc_upgrade(body: Any) -> KycIdentity:
    """The identity KasPro's OCR read off the KTP, its values unchanged (maybe masked)."""
    data = _object(_succeeded(body), "data")
    return KycIdentity(
        id_card_number=_text(data, "idCardNumber"),
        name=_text(data, "name"),
        birth_place=_text(data, "birthPlace"),
        birth_date=_text(data, "birthDate"),
        gender=_text(data, "gender"),
        blood_type=_text(data, "bloodType"),
        address=_text(data, "address"),
        rt_rw=_text(data, "rtrw"),
        village_district=_text(data, "villageDistrict"),
        sub_district=_text(data, "subDistrict"),
        district=_text(data, "district"),
        province=_text(data, "province"),
        religion=_text(data, "religion"),
        marital_status=_text(data, "maritalStatus"),
        occupation=_text(data, "occupation"),
        nationality=_text(data, "nationality"),
        id_expiry_date=_text(data, "idExpiredDate"),
    )


_ACCOUNT_TYPES: Final = {"basic": AccountType.BASIC, "premium": AccountType.PREMIUM}
_ACCOUNT_STATUSES: Final = {
    "active": AccountStatus.ACTIVE,
    "inactive": AccountStatus.INACTIVE,
    "blocked": AccountStatus.BLOCKED,
}
_CUSTOMER_TYPES: Final = {
    "subscriber": CustomerType.SUBSCRIBER,
    "merchant": CustomerType.MERCHANT,
    "corporate": CustomerType.CORPORATE,
}
_KYC_STATUSES: Final = {
    "unverified": KycStatus.UNVERIFIED,
    "pending": KycStatus.PENDING,
    "verified": KycStatus.VERIFIED,
    "rejected": KycStatus.REJECTED,
}


def parse_account_inquiry(body: Any) -> Account:
    data = _object(_succeeded(body), "data")
    balance = _object(data, "balance")
    return Account(
        mobile_number=_mobile_number(data.get("mobileNumber")),
        first_name=_text(data, "firstName"),
        middle_name=_text(data, "middleName"),
        last_name=_text(data, "lastName"),
        full_name=_text(data, "fullName"),
        email=_text(data, "email"),
        account_type=_ACCOUNT_TYPES.get(_word(data, "accountType"), AccountType.UNKNOWN),
        account_status=_ACCOUNT_STATUSES.get(_word(data, "accountStatus"), AccountStatus.UNKNOWN),
        customer_type=_CUSTOMER_TYPES.get(_word(data, "customerType"), CustomerType.UNKNOWN),
        kyc_status=_KYC_STATUSES.get(_word(data, "kycStatus"), KycStatus.UNKNOWN),
        balance=Balance(
            pocket_id=_text(balance, "pocketId"),
            available_idr=parse_amount(balance.get("availableBalance")),
        ),
    )


def parse_amount(value: Any) -> int:
    """Whole rupiah from a string of digits or a JSON integer; anything else is an error.

    A masked (``4xxx9``), empty, fractional or negative amount must never read as zero.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise KasProUnavailable("malformed amount")


def _succeeded(body: Any) -> Mapping[str, Any]:
    """The body of a success answer; any other answer raises."""
    if not isinstance(body, dict):
        raise KasProUnavailable("answer is not a JSON object")
    code = peek_code(body)
    if code is None:
        raise KasProUnavailable("answer has no integer code")
    outcome, rejection = classify(code)
    if outcome is Outcome.SUCCEEDED:
        return body
    if rejection is not None:
        raise KasProRejected(rejection, code, _text(body, "message"))
    if code in GATEWAY_REFUSALS:
        raise KasProAuthError(f"gateway refused the call (code {code})", code)
    if outcome is Outcome.IN_PROCESS:
        raise KasProUnavailable("unexpected in-process answer")
    raise KasProUnavailable(f"unknown code {code}")


def _whole_number(value: Any) -> int | None:
    """An integer sent as a JSON number or as a string of digits (codes, expiry)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _SIGNED_DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _object(container: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise KasProUnavailable(f"answer has no {key} object")
    return value


def _text(container: Mapping[str, Any], key: str) -> str:
    """An optional text field: missing or null is empty; a number is its digits."""
    value = container.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise KasProUnavailable(f"malformed field {key.strip()}")


def _word(container: Mapping[str, Any], key: str) -> str:
    """A vocabulary field normalised for case-insensitive lookup."""
    return _text(container, key).strip().lower()


def _mobile_number(value: Any) -> MobileNumber:
    """KasPro's mobileNumber: a JSON number (which lost any leading 0) or a string."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise KasProUnavailable("malformed mobile number")
    try:
        if text.startswith("8"):
            return MobileNumber(text)
        return parse_mobile_number(text)
    except InvalidMobileNumber:
        raise KasProUnavailable("malformed mobile number") from None
