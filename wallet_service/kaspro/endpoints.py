"""KasPro endpoints: pure request builders and tolerant response parsers (no I/O).

Every KasPro field name, path and vocabulary word lives in this module; docs/kaspro.md
is the contract it follows.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

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
from wallet_service.kaspro.codes import (
    GATEWAY_REFUSALS,
    MONEY_REJECTIONS,
    Outcome,
    Rejection,
    classify,
)
from wallet_service.kaspro.errors import (
    KasProAuthError,
    KasProCallbackInvalid,
    KasProRejected,
    KasProUnavailable,
)

TOKEN_PATH: Final = "/authentication-server/oauth/token"
REGISTER_CUSTOMER_PATH: Final = "/register-customer/"
GET_OTP_PATH: Final = "/pil-partner-get-otp/"
VALIDATE_OTP_PATH: Final = "/validate-otp/"
EKYC_UPGRADE_PATH: Final = "/pil-partner/ekyc-upgrade-premium-inquiry/"
ACCOUNT_INQUIRY_PATH: Final = "/customer-account-inquiry/"
PAYMENT_TO_MERCHANT_PATH: Final = "/pil-transaction-payment-to-merchant/"
P2P_PATH: Final = "/p2p-transaction/"
BANK_TRANSFER_PATH: Final = "/bank-transfer/"
QRIS_PAYMENT_PATH: Final = "/qris-issuer/"
TRANSACTION_STATUS_PATH: Final = "/transaction-status/"
# Each path's name in metrics (wallet_kaspro_calls_total{endpoint}): bank transfers and
# retail withdrawals share a path, so they share a name.
ENDPOINT_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        TOKEN_PATH: "token",
        REGISTER_CUSTOMER_PATH: "register_customer",
        GET_OTP_PATH: "get_otp",
        VALIDATE_OTP_PATH: "validate_otp",
        EKYC_UPGRADE_PATH: "ekyc_upgrade",
        ACCOUNT_INQUIRY_PATH: "account_inquiry",
        PAYMENT_TO_MERCHANT_PATH: "payment_to_merchant",
        P2P_PATH: "p2p_transfer",
        BANK_TRANSFER_PATH: "bank_transfer",
        QRIS_PAYMENT_PATH: "qris_payment",
        TRANSACTION_STATUS_PATH: "transaction_status",
    }
)

# The retail outlets where a customer can take cash out of the wallet.
RETAIL_CHANNELS: Final = frozenset({"ALFAMART", "INDOMARET"})
# The wallet's main pocket, the only one we move money in.
_POCKET_ID: Final = "2"

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


# Eighteen digits, as for strings: beyond that no real amount, and no SQLite INTEGER.
_MAX_AMOUNT = 10**18


def parse_amount(value: Any) -> int:
    """Whole rupiah from a string of digits or a JSON integer; anything else is an error.

    A masked (``4xxx9``), empty, fractional or negative amount must never read as zero.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_AMOUNT:
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


# Money (docs/kaspro.md, "Money endpoints" and "Callbacks").
#
# Money parsers never raise: for money an exception would lose what we know, so every
# answer becomes a reply whose outcome says it, and an unreadable one is UNKNOWN with a
# short, safe ``detail`` for the logs. Only a status inquiry settles an unknown outcome.

# A subscriber (sent in its local 08… form) or a platform account number (sent verbatim).
Party: TypeAlias = MobileNumber | str


class TransferState(enum.Enum):
    """Where a money transfer stands according to a status inquiry or a callback."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


class CallbackKind(enum.Enum):
    """What a callback reports: the end of one of our async transfers, or a top-up."""

    BANK_TRANSFER = "bank_transfer"
    RETAIL_WITHDRAWAL = "retail_withdrawal"
    QRIS = "qris"
    TOPUP = "topup"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class MoneyReply:
    """KasPro's answer to a money call, as far as it can be read.

    ``amount_idr`` is what KasPro says moved, for the caller to compare with what it
    asked; it is None unless the outcome is SUCCEEDED or IN_PROCESS. ``detail`` says why
    the outcome is UNKNOWN (``timeout``, ``HTTP 502``, ``malformed amount``), else "".
    """

    outcome: Outcome
    rejection: Rejection | None
    code: int | None
    message: str
    reff_id: str | None
    amount_idr: int | None
    fee_idr: int
    withdrawal_code: str | None
    merchant_name: str | None
    detail: str

    @classmethod
    def unknown(cls, detail: str, code: int | None = None, message: str = "") -> MoneyReply:
        return cls(Outcome.UNKNOWN, None, code, message, None, None, 0, None, None, detail)


@dataclass(frozen=True, slots=True)
class StatusReply:
    """KasPro's answer to a status inquiry; ``detail`` says why the state is UNKNOWN."""

    state: TransferState
    reff_id: str | None
    amount_idr: int | None
    fee_idr: int
    message: str
    detail: str
    # Why a FAILED transfer failed, when KasPro's refusal code says so (data.code).
    rejection: Rejection | None = None
    # The wallet and the kind KasPro names (what a top-up is found by, when its
    # callback could not be trusted).
    mobile_number: MobileNumber | None = None
    kind: CallbackKind = CallbackKind.UNKNOWN

    @classmethod
    def unknown(cls, detail: str, message: str = "") -> StatusReply:
        return cls(TransferState.UNKNOWN, None, None, 0, message, detail)


@dataclass(frozen=True, slots=True)
class Callback:
    """A callback's body. ``state`` is UNKNOWN (and ``detail`` says why) when its status
    word is not one we know or its amounts cannot be read; empty text fields are ""."""

    reff_id: str
    request_id: str
    state: TransferState
    code: int | None
    message: str
    amount_idr: int | None
    fee_idr: int
    mobile_number: MobileNumber | None
    kind: CallbackKind
    channel: str
    va_number: str
    payment_code: str
    timestamp: str
    detail: str = ""


# Money request builders. They refuse what can only be our bug: no amount, no account.


def payment_to_merchant_request(
    request_id: str, payer: MobileNumber, amount_idr: int, reference: str, destination: str
) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=PAYMENT_TO_MERCHANT_PATH,
        json={
            "requestId": request_id,
            "mobileNumber": payer.local,
            "payments": {
                "pocketId": _POCKET_ID,
                "amount": _amount_text(amount_idr),
                "reference": reference,
            },
            "destination": party_text(destination),
        },
    )


def p2p_request(
    request_id: str, source: Party, destination: Party, amount_idr: int, note: str
) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=P2P_PATH,
        json={
            "requestId": request_id,
            "mobileNumber": party_text(source),
            "destination": party_text(destination),
            "amount": _amount_text(amount_idr),
            "pocketId": _POCKET_ID,
            "note": note,
        },
    )


def bank_transfer_request(
    request_id: str,
    mobile: MobileNumber,
    bank_code: str,
    account_number: str,
    account_name: str,
    amount_idr: int,
) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=BANK_TRANSFER_PATH,
        json={
            "requestId": request_id,
            "mobileNumber": mobile.local,
            "bankCode": bank_code,
            "accountNumber": account_number,
            "accountName": account_name,
            "amount": _amount_text(amount_idr),
        },
    )


def retail_withdrawal_request(
    request_id: str, mobile: MobileNumber, channel: str, amount_idr: int
) -> HttpRequest:
    """A cash-out at a retail outlet's till (``ALFAMART`` or ``INDOMARET``)."""
    if channel not in RETAIL_CHANNELS:
        raise ValueError("unknown retail channel")
    return HttpRequest(
        method="POST",
        path=BANK_TRANSFER_PATH,
        json={
            "requestId": request_id,
            "mobileNumber": mobile.local,
            "channel": channel,
            "amount": _amount_text(amount_idr),
        },
    )


def qris_payment_request(
    request_id: str, mobile: MobileNumber, qris_payload: str, amount_idr: int
) -> HttpRequest:
    return HttpRequest(
        method="POST",
        path=QRIS_PAYMENT_PATH,
        json={
            "requestId": request_id,
            "mobileNumber": mobile.local,
            "qrisPayload": qris_payload,
            "amount": _amount_text(amount_idr),
        },
    )


def transaction_status_request(request_id: str) -> HttpRequest:
    return HttpRequest(method="GET", path=TRANSACTION_STATUS_PATH, query={"requestId": request_id})


def party_text(party: Party) -> str:
    """How a party goes on the wire: a subscriber's ``08…`` or the account number."""
    if isinstance(party, MobileNumber):
        return party.local
    if not party.strip():
        raise ValueError("empty account number")
    return party


def _amount_text(amount_idr: int) -> str:
    """Whole rupiah as KasPro takes them: a string of digits, never zero or negative."""
    if isinstance(amount_idr, bool) or not isinstance(amount_idr, int) or amount_idr <= 0:
        raise ValueError("amount must be a positive whole number of rupiah")
    return str(amount_idr)


# Money answer parsers.


@dataclass(frozen=True, slots=True)
class _MoneyData:
    """What a code-0/1 money answer's ``data`` says moved."""

    amount_idr: int
    fee_idr: int
    reff_id: str | None = None
    withdrawal_code: str | None = None
    merchant_name: str | None = None


def parse_money(body: Any) -> MoneyReply:
    """A payment-to-merchant, bank-transfer, retail-withdrawal or QRIS answer: one shape.
    ``withdrawal_code`` is what a retail customer shows at the till."""
    return _money_reply(body, _amount_data)


def parse_p2p(body: Any, destination: Party) -> MoneyReply:
    """A P2P answer; the amount is the one credited on ``destination``'s line."""

    def read(data: Mapping[str, Any]) -> _MoneyData:
        return _MoneyData(
            amount_idr=_credited(data, destination),
            fee_idr=_fee(data),
            reff_id=_loose_text(data, "reffId"),
        )

    return _money_reply(body, read)


def _money_reply(body: Any, read: Callable[[Mapping[str, Any]], _MoneyData]) -> MoneyReply:
    """The reply for a money answer; ``read`` reads a code-0/1 answer's ``data``."""
    if not isinstance(body, dict):
        return MoneyReply.unknown("answer is not a JSON object")
    code = peek_code(body)
    message = _loose_text(body, "message") or ""
    if code is None:
        return MoneyReply.unknown("answer has no integer code", message=message)
    outcome, rejection = classify(code)
    response_id = _response_id(body)
    if rejection in MONEY_REJECTIONS:
        return MoneyReply(
            Outcome.REJECTED, rejection, code, message, response_id, None, 0, None, None, ""
        )
    if outcome not in (Outcome.SUCCEEDED, Outcome.IN_PROCESS):
        return MoneyReply.unknown(_unexpected(code), code, message)
    try:
        data = read(_object(body, "data"))
    except KasProUnavailable as exc:
        return MoneyReply.unknown(exc.reason, code, message)
    return MoneyReply(
        outcome=outcome,
        rejection=None,
        code=code,
        message=message,
        reff_id=data.reff_id or response_id,
        amount_idr=data.amount_idr,
        fee_idr=data.fee_idr,
        withdrawal_code=data.withdrawal_code,
        merchant_name=data.merchant_name,
        detail="",
    )


def _amount_data(data: Mapping[str, Any]) -> _MoneyData:
    """The ``data`` of a payment, bank-transfer, retail or QRIS answer (``parse_money``)."""
    return _MoneyData(
        amount_idr=parse_amount(data.get("amount")),
        fee_idr=_fee(data),
        reff_id=_loose_text(data, "reffId"),
        withdrawal_code=_loose_text(data, "withdrawalCode"),
        merchant_name=_loose_text(data, "merchantName"),
    )


def _credited(data: Mapping[str, Any], destination: Party) -> int:
    """The absolute amount of the one ``walletTransactions`` line for ``destination``."""
    lines = data.get("walletTransactions")
    if not isinstance(lines, list):
        raise KasProUnavailable("answer has no walletTransactions")
    ours = [
        line
        for line in lines
        if isinstance(line, dict) and _same_party(line.get("account"), destination)
    ]
    if len(ours) != 1:
        raise KasProUnavailable("no single walletTransactions line for the destination")
    amount = ours[0].get("amount")
    if isinstance(amount, int) and not isinstance(amount, bool):
        return abs(amount)
    if isinstance(amount, str) and _SIGNED_DIGITS.fullmatch(amount):
        return abs(int(amount))
    raise KasProUnavailable("malformed amount")


def _same_party(account: Any, party: Party) -> bool:
    """Whether a line's account is ``party``: a number in any accepted form, or verbatim."""
    if isinstance(party, MobileNumber):
        try:
            return _mobile_number(account) == party
        except KasProUnavailable:
            return False
    if isinstance(account, int) and not isinstance(account, bool):
        account = str(account)
    return isinstance(account, str) and account.strip() == party.strip()


def _fee(data: Mapping[str, Any]) -> int:
    """``serviceFee``: none when missing; a malformed one is as bad as a malformed amount."""
    fee = data.get("serviceFee")
    if fee is None:
        return 0
    try:
        return parse_amount(fee)
    except KasProUnavailable:
        raise KasProUnavailable("malformed serviceFee") from None


def _response_id(body: Mapping[str, Any]) -> str | None:
    # The seed spells the key "responseId " (trailing space) in failures.
    return _loose_text(body, "responseId") or _loose_text(body, "responseId ")


def _loose_text(container: Mapping[str, Any], key: str) -> str | None:
    """An optional text field that never fails: None when missing, empty or not text."""
    value = container.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _unexpected(code: int) -> str:
    """Why a code that is neither success nor a money refusal leaves the outcome unknown."""
    if code in GATEWAY_REFUSALS:
        return f"gateway refused the call (code {code})"
    outcome, _ = classify(code)
    if outcome is Outcome.UNKNOWN:
        return f"unknown code {code}"
    return f"unexpected code {code}"


# Status inquiry.

_TRANSFER_STATES: Final = {
    "success": TransferState.SUCCEEDED,
    "failed": TransferState.FAILED,
    "pending": TransferState.PENDING,
}


def parse_transaction_status(body: Any, request_id: str) -> StatusReply:
    """Where our ``request_id`` stands. NOT_FOUND: KasPro never executed it."""
    if not isinstance(body, dict):
        return StatusReply.unknown("answer is not a JSON object")
    code = peek_code(body)
    message = _loose_text(body, "message") or ""
    if code is None:
        return StatusReply.unknown("answer has no integer code", message)
    outcome, rejection = classify(code)
    if rejection is Rejection.TRANSACTION_NOT_FOUND:
        return StatusReply(TransferState.NOT_FOUND, None, None, 0, message, "")
    if outcome is not Outcome.SUCCEEDED:
        return StatusReply.unknown(_unexpected(code), message)
    data = body.get("data")
    if not isinstance(data, dict):
        return StatusReply.unknown("answer has no data object", message)
    message = _loose_text(data, "message") or message
    answered_for = _loose_text(data, "requestId")
    if answered_for is not None and answered_for != request_id:
        return StatusReply.unknown("answer is for another requestId", message)
    state = _TRANSFER_STATES.get(_loose_word(data, "status"), TransferState.UNKNOWN)
    if state is TransferState.UNKNOWN:
        return StatusReply.unknown("unknown status", message)
    try:
        amount, fee = _settled_amounts(data, required=state is TransferState.SUCCEEDED)
    except KasProUnavailable as exc:
        return StatusReply.unknown(exc.reason, message)
    rejection = None
    if state is TransferState.FAILED:
        failure_code = peek_code(data)
        if failure_code is not None:
            failed_how, why = classify(failure_code)
            rejection = why if failed_how is Outcome.REJECTED and why in MONEY_REJECTIONS else None
    return StatusReply(
        state,
        _loose_text(data, "reffId"),
        amount,
        fee,
        message,
        "",
        rejection,
        _loose_mobile_number(data.get("mobileNumber")),
        _CALLBACK_KINDS.get(_loose_word(data, "type"), CallbackKind.UNKNOWN),
    )


def _settled_amounts(data: Mapping[str, Any], *, required: bool) -> tuple[int | None, int]:
    """``amount`` and ``serviceFee``; the amount may be missing unless ``required``."""
    amount = data.get("amount")
    if amount is None and required:
        raise KasProUnavailable("answer has no amount")
    return (None if amount is None else parse_amount(amount)), _fee(data)


def _loose_word(container: Mapping[str, Any], key: str) -> str:
    return (_loose_text(container, key) or "").strip().lower()


# Callbacks.

_CALLBACK_STATES: Final = {
    "success": TransferState.SUCCEEDED,
    "failed": TransferState.FAILED,
}
_CALLBACK_KINDS: Final = {
    "bank_transfer": CallbackKind.BANK_TRANSFER,
    "retail_withdrawal": CallbackKind.RETAIL_WITHDRAWAL,
    "qris": CallbackKind.QRIS,
    "topup": CallbackKind.TOPUP,
}


def parse_callback(raw: bytes) -> Callback:
    """A callback's raw body (verify its signature first); raises KasProCallbackInvalid
    when it has no reffId, requestId or status to tie it to anything."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise KasProCallbackInvalid("callback is not JSON") from None
    if not isinstance(body, dict):
        raise KasProCallbackInvalid("callback is not a JSON object")
    reff_id = _loose_text(body, "reffId")
    if reff_id is None:
        raise KasProCallbackInvalid("callback has no reffId")
    request_id = _loose_text(body, "requestId")
    if request_id is None:
        raise KasProCallbackInvalid("callback has no requestId")
    status = _loose_word(body, "status")
    if not status:
        raise KasProCallbackInvalid("callback has no status")
    state = _CALLBACK_STATES.get(status, TransferState.UNKNOWN)
    detail = "" if state is not TransferState.UNKNOWN else "unknown status"
    amount: int | None = None
    fee = 0
    if state is not TransferState.UNKNOWN:
        try:
            amount, fee = _settled_amounts(body, required=state is TransferState.SUCCEEDED)
        except KasProUnavailable as exc:
            state, detail = TransferState.UNKNOWN, exc.reason
    return Callback(
        reff_id=reff_id,
        request_id=request_id,
        state=state,
        code=peek_code(body),
        message=_loose_text(body, "message") or "",
        amount_idr=amount,
        fee_idr=fee,
        mobile_number=_loose_mobile_number(body.get("mobileNumber")),
        kind=_CALLBACK_KINDS.get(_loose_word(body, "type"), CallbackKind.UNKNOWN),
        channel=_loose_text(body, "channel") or "",
        va_number=_loose_text(body, "vaNumber") or "",
        payment_code=_loose_text(body, "paymentCode") or "",
        timestamp=_loose_text(body, "timestamp") or "",
        detail=detail,
    )


def _loose_mobile_number(value: Any) -> MobileNumber | None:
    try:
        return _mobile_number(value)
    except KasProUnavailable:
        return None
