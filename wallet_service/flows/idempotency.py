"""Every mutating RPC runs once per request_id (MONEY-RULES rule 1), onboarding and money
alike.

A request claims its key (caller, RPC, request_id) with its request's hash: a
``running`` row with a lease and a holder of its own (``store/idempotency.py``), which
it carries to the end (``Held``).
It then decides one of: an answer, stored as the RPC keeps it; the operation it
created, attached to the key in the transaction creating it (money: a retry answers
with the operation's current state); a refusal, stored. The same request again gets the
decision; another request under the key IDEMPOTENCY_KEY_REUSED; a duplicate while the
first runs REQUEST_IN_PROGRESS, on any replica. A request that decided nothing (KasPro
unavailable, cancelled, or its claim's commit unknown) gives the key back, and a retry
runs afresh; a key left running is taken over once its lease ended (at once, on SQLite,
when its process is gone). A request whose key was taken over can no longer attach,
complete or give it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from wallet_service.domain.errors import DatabaseBusy, FieldViolation, Reason, WalletError
from wallet_service.metrics import Metrics
from wallet_service.store import idempotency
from wallet_service.store.database import Database
from wallet_service.store.database import Transaction as DbTx

# A running key's lease: longer than any request runs (its KasPro calls end with the
# caller's deadline or the KasPro timeout), so only a request that died loses its key.
LEASE_SECONDS = 120.0

# Refusals that are not decisions: the same request may well succeed later.
_TRANSIENT = frozenset(
    {
        Reason.PROVIDER_UNAVAILABLE,
        Reason.REQUEST_IN_PROGRESS,
        Reason.OVERLOADED,
        Reason.DATABASE_BUSY,
    }
)
# A stored outcome is an answer (the RPC's bytes) or a refusal (JSON), so marked.
_ANSWER, _REFUSAL = b"R", b"E"

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Request:
    """Who asked for what: the idempotency key and the request's fingerprint."""

    caller: str
    method: str
    request_id: str
    request_hash: bytes

    @property
    def key(self) -> idempotency.Key:
        return idempotency.Key(self.caller, self.method, self.request_id)


@dataclass(frozen=True, slots=True)
class Held:
    """A request that holds its key: ``holder`` names its claim."""

    request: Request
    holder: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What a decided key gives a retry (a refusal is raised instead)."""

    answer: bytes = b""  # what the request kept of its answer
    operation_id: str = ""  # the operation a money request created


class KeyTaken(Exception):
    """The key is no longer this request's: another writer decided it or took it over."""


class Idempotency:
    def __init__(
        self, db: Database, clock: Callable[[], float], *, metrics: Metrics | None = None
    ) -> None:
        self._db = db
        self._clock = clock
        # Idempotency of its own (tests) counts into a registry nobody serves.
        self._metrics = metrics or Metrics()
        self._ending: set[asyncio.Task[None]] = set()

    async def run(
        self,
        request: Request,
        work: Callable[[Held], Awaitable[T]],
        *,
        keep: Callable[[T], bytes | None],
        replay: Callable[[Decision], T],
    ) -> T:
        """Run ``work`` once per key and store ``keep`` of its result (None: the
        operation attached is the answer); a retry gets ``replay`` of the decision."""
        key, request_hash = request.key, request.request_hash
        holder = idempotency.new_holder(self._db)
        try:
            claim = await idempotency.claim(
                self._db, key, request_hash, self._clock(), LEASE_SECONDS, holder=holder
            )
        except DatabaseBusy:
            # The claim may have committed (CommitUnknown) under a holder only this request
            # knows: left running, the key would answer every retry REQUEST_IN_PROGRESS
            # until its lease ends. Give it back (only if it is this holder's), then fail
            # as before.
            with contextlib.suppress(Exception):
                await self._end(lambda: idempotency.release(self._db, key, holder))
            raise
        if claim.kind is not idempotency.ClaimKind.NEW:
            return self._answer(claim, replay)
        try:
            result = await work(Held(request, holder))
        except KeyTaken:
            # Its creation rolled back: answer with what the key says now.
            now = await idempotency.look(self._db, key, request_hash, self._clock())
            if now is None:
                raise _in_progress() from None
            return self._answer(now, replay)
        except WalletError as exc:
            if exc.reason in _TRANSIENT:
                await self._end(lambda: idempotency.release(self._db, key, holder))
            else:
                refusal = _encode_refusal(exc)
                await self._end(lambda: idempotency.complete(self._db, key, holder, refusal))
            raise
        except BaseException:
            await self._end(lambda: idempotency.release(self._db, key, holder))
            raise
        kept = keep(result)
        outcome = None if kept is None else _ANSWER + kept
        await self._end(lambda: idempotency.complete(self._db, key, holder, outcome))
        return result

    def _answer(self, claim: idempotency.Claim, replay: Callable[[Decision], T]) -> T:
        if claim.kind is idempotency.ClaimKind.REPLAY:
            self._metrics.idempotent_replays.inc()
        return _answer(claim, replay)

    async def _end(self, write: Callable[[], Awaitable[None]]) -> None:
        """Write a key's end in a task of its own, which a cancelled caller does not stop.
        The caller waits for the first try; while another process keeps the database
        locked the task tries again until the lock is free, since a key left running
        would answer REQUEST_IN_PROGRESS until its lease ends."""
        tried = asyncio.Event()
        failed: list[Exception] = []

        async def until_written() -> None:
            while True:
                try:
                    return await write()
                except DatabaseBusy:
                    pass  # each try already waited for the lock
                except Exception as exc:
                    # Raised to the caller when it still waits; logged either way, since
                    # a key left running answers REQUEST_IN_PROGRESS until its lease ends.
                    log.exception("could not write the end of an idempotency key")
                    failed.append(exc)
                    return
                finally:
                    tried.set()
                await asyncio.sleep(0.1)

        task = asyncio.create_task(until_written())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        await asyncio.shield(tried.wait())
        if failed:
            raise failed[0]

    async def attach(self, tx: DbTx, held: Held, operation_id: str) -> None:
        """Name the operation ``held``'s request created, in the transaction creating it
        (raises ``KeyTaken``, rolling the creation back, when the key is not its own)."""
        if not await idempotency.attach(tx, held.request.key, held.holder, operation_id):
            raise KeyTaken

    async def rewrite_answers(self, method: str, rewrite: Callable[[bytes], bytes]) -> int:
        """Replace each answer stored for ``method`` by ``rewrite`` of it; how many changed."""

        def outcome(stored: bytes) -> bytes:
            if not stored.startswith(_ANSWER):
                return stored
            return _ANSWER + rewrite(stored[1:])

        return await idempotency.rewrite_outcomes(self._db, method, outcome)


def _answer(claim: idempotency.Claim, replay: Callable[[Decision], T]) -> T:
    if claim.kind is idempotency.ClaimKind.REUSED:
        raise WalletError(
            Reason.IDEMPOTENCY_KEY_REUSED,
            "this request_id was used for a different request: use a new request_id",
        )
    if claim.kind is idempotency.ClaimKind.IN_PROGRESS:
        raise _in_progress()
    if claim.operation_id is not None:
        return replay(Decision(operation_id=claim.operation_id))
    stored = claim.stored or b""
    if stored.startswith(_ANSWER):
        return replay(Decision(answer=stored[1:]))
    raise _decode_refusal(stored)


def _in_progress() -> WalletError:
    return WalletError(
        Reason.REQUEST_IN_PROGRESS,
        "a request with this request_id is still running: retry shortly",
        retry_after_seconds=1.0,
    )


def _encode_refusal(error: WalletError) -> bytes:
    body = {
        "reason": error.reason.value,
        "message": error.message,
        "violations": [[v.field, v.description] for v in error.violations],
        "metadata": dict(error.metadata),
    }
    return _REFUSAL + json.dumps(body).encode()


def _decode_refusal(stored: bytes) -> WalletError:
    if not stored.startswith(_REFUSAL):
        return WalletError(Reason.INVALID_STATE, "this request was refused before")
    body = json.loads(stored[1:])
    return WalletError(
        Reason(body["reason"]),
        body["message"],
        [FieldViolation(f, d) for f, d in body["violations"]],
        metadata=body["metadata"],
    )
