"""Who may call what: bearer tokens → callers, and the roles each RPC allows."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from contextvars import ContextVar

from wallet_service.config import Caller
from wallet_service.domain.errors import Reason, WalletError

_READS = frozenset({"app", "dispatch", "admin"})
_APP = frozenset({"app", "admin"})
_DISPATCH = frozenset({"dispatch", "admin"})

# Fully qualified method → roles allowed to call it (ARCHITECTURE.md, "Callers").
PERMISSIONS: dict[str, frozenset[str]] = {
    "/wallet.v1.AccountService/RegisterCustomer": _APP,
    "/wallet.v1.AccountService/RequestOtp": _APP,
    "/wallet.v1.AccountService/VerifyOtp": _APP,
    "/wallet.v1.AccountService/UpgradeKyc": _APP,
    "/wallet.v1.AccountService/GetAccount": _READS | {"pricing"},
    "/wallet.v1.AccountService/CheckFunds": _READS | {"pricing"},
    "/wallet.v1.FundingService/GetTopUpInstructions": _APP,
    "/wallet.v1.FundingService/GetDriverDepositInstructions": _APP,
    "/wallet.v1.FundingService/CashOut": _APP,
    "/wallet.v1.PaymentService/AuthorizeRidePayment": _DISPATCH,
    "/wallet.v1.PaymentService/CaptureRidePayment": _DISPATCH,
    "/wallet.v1.PaymentService/VoidRidePayment": _DISPATCH,
    "/wallet.v1.PaymentService/GetRidePayment": _READS,
    "/wallet.v1.PaymentService/TipDriver": _DISPATCH,
    "/wallet.v1.PaymentService/Transfer": _APP,
    "/wallet.v1.PaymentService/PayQris": _APP,
    "/wallet.v1.TransactionService/GetTransaction": _READS,
    "/wallet.v1.TransactionService/ListTransactions": _READS,
    "/wallet.v1.TransactionService/WatchEvents": _DISPATCH,
}

# Infrastructure services open to anyone who can reach the port.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

current_caller: ContextVar[Caller] = ContextVar("current_caller")


class Authenticator:
    """Resolves the ``authorization`` metadata to a caller and checks its roles."""

    def __init__(self, callers: Mapping[str, Caller]) -> None:
        # Keyed by a digest so lookups do not compare secrets character by character.
        self._by_digest = {_digest(token): caller for token, caller in callers.items()}

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Caller:
        values = [v for k, v in metadata if k == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            raise WalletError(Reason.UNAUTHENTICATED, "send 'authorization: Bearer <token>'")
        scheme, _, token = values[0].partition(" ")
        caller = self._by_digest.get(_digest(token.strip())) if scheme.lower() == "bearer" else None
        if caller is None:
            raise WalletError(Reason.UNAUTHENTICATED, "unknown bearer token")
        return caller

    @staticmethod
    def authorize(caller: Caller, method: str) -> None:
        allowed = PERMISSIONS.get(method, frozenset({"admin"}))
        if not caller.roles & allowed:
            raise WalletError(
                Reason.PERMISSION_DENIED,
                f"caller {caller.name!r} may not call {method.rsplit('/', 1)[-1]}",
            )


def _digest(token: str) -> bytes:
    return hmac.digest(b"wallet-caller-token", token.encode(), hashlib.sha256)
