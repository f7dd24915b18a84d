"""The exceptions the KasPro adapter raises: outcome unknown, or a definite refusal."""

from __future__ import annotations

from wallet_service.kaspro.codes import Rejection


class KasProError(Exception):
    """Base of everything the KasPro adapter raises."""


class KasProUnavailable(KasProError):
    """We do not know what KasPro did: the operation may or may not have happened.

    ``reason`` is short and safe to log: it never holds a body, a number or a token.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KasProAuthError(KasProUnavailable):
    """The gateway refused our credentials, signature or clock and a new token won't help.

    Callers treat it like any unavailability; it exists so that it can be logged loudly.
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class KasProRejected(KasProError):
    """KasPro definitely refused the operation (a known failure code)."""

    def __init__(self, rejection: Rejection, code: int, message: str) -> None:
        # KasPro's message stays out of str(): it is free text we do not control.
        super().__init__(f"{rejection.value} (code {code})")
        self.rejection = rejection
        self.code = code
        self.message = message


class KasProCallbackInvalid(KasProError):
    """A callback body we cannot read: not a JSON object, or no reffId, requestId or status.

    ``reason`` is short and safe to log: it never holds a body, a number or an amount.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
