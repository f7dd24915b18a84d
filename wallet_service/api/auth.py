"""Who may call what: tokens and client certificates → callers, and the roles of each RPC."""

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
_ADMIN = frozenset({"admin"})

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
    "/wallet.v1.AdminService/ListUnresolvedAttempts": _ADMIN,
    "/wallet.v1.AdminService/ListFrozenOperations": _ADMIN,
    "/wallet.v1.AdminService/ListDrifts": _ADMIN,
    "/wallet.v1.AdminService/ListParkedCallbacks": _ADMIN,
    "/wallet.v1.AdminService/InquireAttempt": _ADMIN,
    "/wallet.v1.AdminService/ResolveFrozenOperation": _ADMIN,
    "/wallet.v1.AdminService/RetryParkedCallback": _ADMIN,
    "/wallet.v1.AdminService/AcknowledgeDrift": _ADMIN,
}

# Infrastructure services open to anyone who can reach the port.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

current_caller: ContextVar[Caller] = ContextVar("current_caller")

# What the call log names as the caller of a call whose credentials were refused.
NO_CREDENTIALS = "no credentials"
UNKNOWN_TOKEN = "unknown token"
UNKNOWN_CERTIFICATE = "unknown certificate"
NO_CERTIFICATE = "no certificate"


class Unauthenticated(WalletError):
    """UNAUTHENTICATED; ``presented`` names, for the call log, what the call presented:
    one of the words above, or the callers of a token and a certificate that disagree.
    Never the token itself, nor a part of it."""

    def __init__(self, presented: str, message: str) -> None:
        super().__init__(Reason.UNAUTHENTICATED, message)
        self.presented = presented


class Authenticator:
    """Resolves a call's credentials to a caller and checks its roles.

    Two credentials exist: ``authorization: Bearer <token>`` metadata, and (with mutual
    TLS and certificate callers configured) the subject CN of the client certificate
    the TLS handshake verified. The rule when both are presented: every credential a
    call presents must be valid, and they must name the same caller; a mismatch is
    UNAUTHENTICATED rather than one silently winning. With certificate callers
    configured, a certificate whose CN names no caller is UNAUTHENTICATED even with a
    valid token.
    """

    def __init__(
        self,
        callers: Mapping[str, Caller],
        certificate_callers: Mapping[str, Caller] | None = None,
    ) -> None:
        # Keyed by the tokens' digests, computed once: a presented token is hashed and
        # looked up, so it is never compared with a secret character by character.
        self._by_digest = {_digest(token): caller for token, caller in callers.items()}
        self._by_common_name = dict(certificate_callers or {})

    @property
    def uses_certificates(self) -> bool:
        """True when client certificates identify callers (the edge then reads the CN)."""
        return bool(self._by_common_name)

    def authenticate(
        self,
        metadata: Sequence[tuple[str, str | bytes]],
        common_names: Sequence[str] = (),
    ) -> Caller:
        """The caller of a call: ``common_names`` are the verified client certificate's CNs."""
        by_token = self._token_caller(metadata)
        if not self._by_common_name:
            if by_token is None:
                raise Unauthenticated(NO_CREDENTIALS, "send 'authorization: Bearer <token>'")
            return by_token
        by_certificate = self._certificate_caller(common_names)
        if by_token is not None and by_token != by_certificate:
            raise Unauthenticated(
                f"token of {by_token.name}, certificate of {by_certificate.name}",
                "the bearer token and the client certificate belong to different callers",
            )
        return by_certificate

    def _token_caller(self, metadata: Sequence[tuple[str, str | bytes]]) -> Caller | None:
        """The token's caller; None without an ``authorization`` header; else a refusal."""
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return None
        if len(values) != 1 or not isinstance(values[0], str):
            raise Unauthenticated(UNKNOWN_TOKEN, "send 'authorization: Bearer <token>'")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthenticated(UNKNOWN_TOKEN, "unknown bearer token")
        caller = self._by_digest.get(_digest(token.strip()))
        if caller is None:
            raise Unauthenticated(UNKNOWN_TOKEN, "unknown bearer token")
        return caller

    def _certificate_caller(self, common_names: Sequence[str]) -> Caller:
        caller = self._by_common_name.get(common_names[0]) if len(common_names) == 1 else None
        if caller is None:
            shown = ", ".join(repr(name[:64]) for name in common_names) or "none"
            raise Unauthenticated(
                UNKNOWN_CERTIFICATE if common_names else NO_CERTIFICATE,
                f"the client certificate's common name ({shown}) is not a known caller",
            )
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
