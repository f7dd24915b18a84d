"""The KasPro adapter: everything that knows KasPro's wire format lives in this package."""

from wallet_service.kaspro.client import KasProClient, KasProSettings
from wallet_service.kaspro.codes import Outcome, Rejection, classify
from wallet_service.kaspro.endpoints import (
    RETAIL_CHANNELS,
    Callback,
    CallbackKind,
    HttpRequest,
    MoneyReply,
    Party,
    Registration,
    StatusReply,
    TransferState,
    kaspro_request_id,
    parse_callback,
)
from wallet_service.kaspro.errors import (
    KasProAuthError,
    KasProCallbackInvalid,
    KasProError,
    KasProRejected,
    KasProUnavailable,
)
from wallet_service.kaspro.signing import (
    CALLBACK_SIGNATURE_HEADER,
    CALLBACK_TIMESTAMP_HEADER,
    HmacSigner,
    Signer,
    callback_signature,
    verify_callback,
)

__all__ = [
    "CALLBACK_SIGNATURE_HEADER",
    "CALLBACK_TIMESTAMP_HEADER",
    "RETAIL_CHANNELS",
    "Callback",
    "CallbackKind",
    "HmacSigner",
    "HttpRequest",
    "KasProAuthError",
    "KasProCallbackInvalid",
    "KasProClient",
    "KasProError",
    "KasProRejected",
    "KasProSettings",
    "KasProUnavailable",
    "MoneyReply",
    "Outcome",
    "Party",
    "Registration",
    "Rejection",
    "Signer",
    "StatusReply",
    "TransferState",
    "callback_signature",
    "classify",
    "kaspro_request_id",
    "parse_callback",
    "verify_callback",
]
