"""The KasPro adapter: everything that knows KasPro's wire format lives in this package."""

from wallet_service.kaspro.client import KasProClient, KasProSettings
from wallet_service.kaspro.codes import Outcome, Rejection, classify
from wallet_service.kaspro.endpoints import HttpRequest, Registration, kaspro_request_id
from wallet_service.kaspro.errors import (
    KasProAuthError,
    KasProError,
    KasProRejected,
    KasProUnavailable,
)
from wallet_service.kaspro.signing import HmacSigner, Signer

__all__ = [
    "HmacSigner",
    "HttpRequest",
    "KasProAuthError",
    "KasProClient",
    "KasProError",
    "KasProRejected",
    "KasProSettings",
    "KasProUnavailable",
    "Outcome",
    "Registration",
    "Rejection",
    "Signer",
    "classify",
    "kaspro_request_id",
]
