"""Idempotent execution of mutating RPCs at the edge (MONEY-RULES rule 1).

The outcome of a request that reached a decision (a response or a refusal) is stored
under (caller, method, request_id) and replayed to retries; an outcome that is not a
decision (KasPro unavailable, cancelled, crashed) releases the key so a retry runs. A
method may store less than it answered (``kept``): what retries need, not personal data
the caller only needs once (docs/operations.md, "Personal data at rest").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from wallet_service.api.auth import current_caller
from wallet_service.domain.errors import FieldViolation, Reason, WalletError
from wallet_service.flows.payments import Request
from wallet_service.store import idempotency
from wallet_service.store.database import Database

M = TypeVar("M", bound=Message)

# Refusals that are not decisions: the same request may well succeed later.
_TRANSIENT = frozenset(
    {
        Reason.PROVIDER_UNAVAILABLE,
        Reason.REQUEST_IN_PROGRESS,
        Reason.OVERLOADED,
    }
)
_RESPONSE, _ERROR = b"R", b"E"


class Idempotency:
    def __init__(self, db: Database, clock: Callable[[], float], lease_seconds: float) -> None:
        self._db = db
        self._clock = clock
        self._lease = lease_seconds

    async def run(
        self,
        method: str,
        request: Message,
        request_id: str,
        response_type: type[M],
        behaviour: Callable[[], Awaitable[M]],
        *,
        kept: Callable[[M], M] | None = None,
    ) -> M:
        """Run ``behaviour`` once per request_id; retries get ``kept`` of its answer."""
        key = idempotency.Key(current_caller.get().name, method, request_id)
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        claim = await idempotency.claim(self._db, key, digest, self._clock(), self._lease)
        if claim.kind is idempotency.ClaimKind.REUSED:
            raise WalletError(
                Reason.IDEMPOTENCY_KEY_REUSED,
                "this request_id was used for a different request: use a new request_id",
            )
        if claim.kind is idempotency.ClaimKind.IN_PROGRESS:
            raise WalletError(
                Reason.REQUEST_IN_PROGRESS,
                "a request with this request_id is still running: retry shortly",
                retry_after_seconds=1.0,
            )
        if claim.kind is idempotency.ClaimKind.REPLAY:
            assert claim.stored is not None
            return _replay(claim.stored, response_type)
        try:
            response = await behaviour()
        except WalletError as exc:
            if exc.reason in _TRANSIENT:
                await asyncio.shield(idempotency.release(self._db, key))
            else:
                await asyncio.shield(idempotency.complete(self._db, key, _encode_error(exc)))
            raise
        except BaseException:
            await asyncio.shield(idempotency.release(self._db, key))
            raise
        stored = response if kept is None else kept(response)
        await asyncio.shield(
            idempotency.complete(self._db, key, _RESPONSE + stored.SerializeToString())
        )
        return response

    async def reduce_stored(
        self, method: str, response_type: type[M], kept: Callable[[M], M]
    ) -> int:
        """Apply ``kept`` to the answers of ``method`` stored in full before it was
        introduced; return how many changed. Reducing twice changes nothing."""

        def reduce(stored: bytes) -> bytes:
            if not stored.startswith(_RESPONSE):
                return stored
            answer = response_type.FromString(stored[1:])
            smaller = kept(answer)
            return stored if smaller == answer else _RESPONSE + smaller.SerializeToString()

        return await idempotency.rewrite_outcomes(self._db, method, reduce)


def _encode_error(error: WalletError) -> bytes:
    body = {
        "reason": error.reason.value,
        "message": error.message,
        "violations": [[v.field, v.description] for v in error.violations],
        "metadata": dict(error.metadata),
    }
    return _ERROR + json.dumps(body).encode()


def _replay(stored: bytes, response_type: type[M]) -> M:
    if stored.startswith(_RESPONSE):
        return response_type.FromString(stored[1:])
    body = json.loads(stored[1:])
    raise WalletError(
        Reason(body["reason"]),
        body["message"],
        [FieldViolation(f, d) for f, d in body["violations"]],
        metadata=body["metadata"],
    )


def money_request(method: str, request: Message, request_id: str) -> Request:
    """The idempotency identity of a money RPC: caller, method, key and fingerprint."""
    return Request(
        caller=current_caller.get().name,
        method=method,
        request_id=request_id,
        request_hash=hashlib.sha256(request.SerializeToString(deterministic=True)).digest(),
    )
