"""Idempotency keys: a duplicate in flight waits, in this process or another; a key left by
a dead process does not; an operation is attached to the key, and the key ended, only by
the claim that holds it; a request that decides nothing gives its key back; refusals
stored by earlier versions still replay; answers stored whole are reduced once, and
nothing else is touched."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from wallet.v1 import account_service_pb2, common_pb2

from wallet_service.api.account import reduce_stored_answers
from wallet_service.domain.errors import CommitUnknown, Reason, WalletError
from wallet_service.flows.idempotency import Held, Idempotency, Request
from wallet_service.store import idempotency, sqlite
from wallet_service.store.database import Database, Isolation, migrations
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.sqlite import SqliteDatabase

T = TypeVar("T")
KEY = idempotency.Key("app", "Transfer", "req-1")
HASH = b"h" * 32


async def test_a_running_key_of_this_process_is_in_progress(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        first = await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        again = await idempotency.claim(db, KEY, HASH, 1001.0, 120.0)
        other = await idempotency.claim(db, KEY, b"x" * 32, 1001.0, 120.0)
        assert (first.kind, again.kind, other.kind) == (
            idempotency.ClaimKind.NEW,
            idempotency.ClaimKind.IN_PROGRESS,
            idempotency.ClaimKind.REUSED,
        )
    finally:
        await db.close()


async def test_a_key_held_by_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    other = idempotency.Key("app", "Transfer", "req-2")
    dead = await Database.open(path)
    await idempotency.claim(dead, KEY, HASH, 1000.0, 120.0)  # died before creating
    claimed = await idempotency.claim(dead, other, HASH, 1000.0, 120.0)
    await _attach(dead, other, claimed.holder, "txn_1")  # died after creating txn_1
    await dead.close()  # the process is gone; its keys are still 'running', leases on

    alive = await Database.open(path)
    try:
        taken = await idempotency.claim(alive, KEY, HASH, 1001.0, 120.0)
        made = await idempotency.claim(alive, other, HASH, 1001.0, 120.0)

        assert taken.kind is idempotency.ClaimKind.NEW
        # Not REQUEST_IN_PROGRESS: the retry reports on the operation the dead one made.
        assert (made.kind, made.operation_id) == (idempotency.ClaimKind.REPLAY, "txn_1")
        # Taken over now, so kept for the full retention from now.
        row = await alive.fetch_one(
            "SELECT created_at FROM idempotency_keys WHERE request_id = ?", (KEY.request_id,)
        )
        assert row is not None
        assert row["created_at"] == 1001.0
    finally:
        await alive.close()


async def test_a_key_of_another_live_process_is_in_progress_until_its_lease_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several processes on one database (PostgreSQL): another incarnation's running key
    is a duplicate in flight, not a dead process's. It is taken over once its lease
    ended, and its first request can then neither attach, complete nor give it back."""
    monkeypatch.setattr(SqliteDatabase, "sole_process", False)
    path = str(tmp_path / "w.db")
    a, b = await Database.open(path), await Database.open(path)
    try:
        first = await idempotency.claim(a, KEY, HASH, 1000.0, 120.0)
        assert (await idempotency.claim(b, KEY, HASH, 1119.0, 120.0)).kind is (
            idempotency.ClaimKind.IN_PROGRESS
        )
        taken = await idempotency.claim(b, KEY, HASH, 1121.0, 120.0)
        assert taken.kind is idempotency.ClaimKind.NEW
        assert taken.holder != first.holder

        assert not await _attach(a, KEY, first.holder, "txn_a")
        await idempotency.complete(a, KEY, first.holder, b"R" + b"late")
        await idempotency.release(a, KEY, first.holder)
        running = await idempotency.look(b, KEY, HASH, 1122.0)
        assert running is not None
        assert running.kind is idempotency.ClaimKind.IN_PROGRESS

        assert await _attach(b, KEY, taken.holder, "txn_b")
        await idempotency.complete(b, KEY, taken.holder, None)
        assert await idempotency.look(a, KEY, HASH, 1123.0) == idempotency.Claim(
            idempotency.ClaimKind.REPLAY, None, "txn_b"
        )
    finally:
        await a.close()
        await b.close()


async def test_two_requests_of_one_process_are_told_apart(tmp_path: Path) -> None:
    """A request whose lease ended, and whose key a retry in the same process took over,
    cannot store its outcome over the retry's."""
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        first = await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        retry = await idempotency.claim(db, KEY, HASH, 1121.0, 120.0)
        assert retry.kind is idempotency.ClaimKind.NEW

        await idempotency.complete(db, KEY, first.holder, b"E" + b"a refusal")
        running = await idempotency.look(db, KEY, HASH, 1122.0)
        assert running is not None
        assert running.kind is idempotency.ClaimKind.IN_PROGRESS

        await idempotency.complete(db, KEY, retry.holder, b"R" + b"answer")
        assert await idempotency.look(db, KEY, HASH, 1123.0) == idempotency.Claim(
            idempotency.ClaimKind.REPLAY, b"R" + b"answer"
        )
    finally:
        await db.close()


async def test_only_the_holder_attaches_an_operation_and_only_once(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    db = await Database.open(path)
    try:
        first = await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        assert await _attach(db, KEY, first.holder, "txn_1")
        assert not await _attach(db, KEY, first.holder, "txn_2")
        # Another process takes the key over (say its lease ended): it is not ours.
        second = idempotency.Key("app", "Transfer", "req-2")
        claimed = await idempotency.claim(db, second, HASH, 1000.0, 120.0)
        with contextlib.closing(sqlite3.connect(path)) as other, other:
            other.execute("UPDATE idempotency_keys SET holder = 'another process'")
        assert not await _attach(db, second, claimed.holder, "txn_3")

        looked = await idempotency.look(db, KEY, HASH, 1001.0)
        assert looked is not None
        assert looked.operation_id == "txn_1"
    finally:
        await db.close()


async def test_a_released_key_is_forgotten_unless_it_names_an_operation(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    made = idempotency.Key("app", "Transfer", "req-2")
    try:
        holders = [
            (await idempotency.claim(db, k, HASH, 1000.0, 120.0)).holder for k in (KEY, made)
        ]
        await _attach(db, made, holders[1], "txn_1")

        await idempotency.release(db, KEY, holders[0])
        await idempotency.release(db, made, holders[1])

        assert await idempotency.look(db, KEY, HASH, 1001.0) is None  # a retry runs afresh
        assert await idempotency.look(db, made, HASH, 1001.0) == idempotency.Claim(
            idempotency.ClaimKind.REPLAY, None, "txn_1"
        )
    finally:
        await db.close()


async def test_look_waits_for_an_open_transaction_and_never_sees_what_rolls_back(
    tmp_path: Path,
) -> None:
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        claimed = await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        await idempotency.complete(db, KEY, claimed.holder, None)
        with contextlib.suppress(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("DELETE FROM idempotency_keys")
                # Another request looks while this transaction is open (its coroutine
                # suspended here): what it would read is not committed.
                looking = asyncio.ensure_future(idempotency.look(db, KEY, HASH, 1000.0))
                await asyncio.sleep(0.01)
                assert not looking.done()
                raise RuntimeError("rolled back")
        assert await looking == idempotency.Claim(idempotency.ClaimKind.REPLAY)
    finally:
        await db.close()


async def test_purge_forgets_old_decided_keys_and_old_keys_whose_lease_ended(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "w.db")
    keys = {name: idempotency.Key("app", "Transfer", name) for name in ("a", "b", "c", "d")}
    dead = await Database.open(path)
    a = await idempotency.claim(dead, keys["a"], HASH, 1000.0, 120.0)  # running, lease over
    await _attach(dead, keys["a"], a.holder, "txn_1")  # (a retry would be told about txn_1)
    await idempotency.claim(dead, keys["b"], HASH, 1000.0, 10**9)  # running, lease on
    c = await idempotency.claim(dead, keys["c"], HASH, 1000.0, 120.0)
    await idempotency.complete(dead, keys["c"], c.holder, None)  # decided, old
    d = await idempotency.claim(dead, keys["d"], HASH, 9000.0, 120.0)
    await idempotency.complete(dead, keys["d"], d.holder, None)  # decided, recent
    await dead.close()

    db = await Database.open(path)
    try:
        assert await idempotency.purge(db, older_than=5000.0) == 2
        rows = await db.fetch_all("SELECT request_id FROM idempotency_keys ORDER BY request_id")
        assert [row["request_id"] for row in rows] == ["b", "d"]
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("stored", "reason", "message"),
    [
        (b"LIMIT_EXCEEDED\nat most 40000000 IDR may move in 30 days", "LIMIT_EXCEEDED", None),
        (b"INVALID_STATE\ntwo\nlines", "INVALID_STATE", "two\nlines"),
    ],
)
async def test_a_money_refusal_stored_by_an_earlier_version_is_answered_again_after_upgrade(
    tmp_path: Path, stored: bytes, reason: str, message: str | None
) -> None:
    path = str(tmp_path / "w.db")
    # The database as the previous version left it: migration 0007, its encoding.
    with contextlib.closing(sqlite3.connect(path)) as old, old:
        for version, sql in migrations("sqlite"):
            if version <= 7:
                old.executescript(sql)
        old.execute("PRAGMA user_version = 7")
        old.execute(
            "INSERT INTO idempotency_keys (caller, method, request_id, request_hash, state, "
            "response, lease_until, created_at, holder) "
            "VALUES ('app', 'Transfer', 'req-1', ?, 'done', ?, 0, 0, 'old')",
            (HASH, stored),
        )

    db = await Database.open(path)
    try:
        request = Request("app", "Transfer", "req-1", HASH)
        with pytest.raises(WalletError) as refused:
            await Idempotency(db, lambda: 1.0).run(
                request, _never, keep=lambda _: None, replay=lambda _: None
            )
        expected = message or stored.decode().partition("\n")[2]
        assert (refused.value.reason, refused.value.message) == (Reason(reason), expected)
    finally:
        await db.close()


async def test_reducing_stored_answers_touches_only_whole_answers_of_its_method(
    tmp_path: Path,
) -> None:
    whole = account_service_pb2.UpgradeKycResponse(
        kyc_status=common_pb2.KYC_STATUS_VERIFIED,
        identity=common_pb2.KycIdentity(
            id_card_number="3171015508920007", id_card_number_valid=True, name="SITI RAHAYU"
        ),
    )
    other = account_service_pb2.RegisterCustomerResponse(
        account=common_pb2.Account(first_name="Siti")
    )
    refusal = b'E{"reason": "WALLET_NOT_LINKED", "message": "m", "violations": [], "metadata": {}}'
    outcomes = {
        idempotency.Key("app", "UpgradeKyc", "whole"): b"R" + whole.SerializeToString(),
        idempotency.Key("app", "UpgradeKyc", "refused"): refusal,
        idempotency.Key("app", "RegisterCustomer", "r"): b"R" + other.SerializeToString(),
    }
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        for key, outcome in outcomes.items():
            claimed = await idempotency.claim(db, key, HASH, 1000.0, 120.0)
            await idempotency.complete(db, key, claimed.holder, outcome)
        running = idempotency.Key("app", "UpgradeKyc", "running")
        await idempotency.claim(db, running, HASH, 1000.0, 120.0)
        idempotent = Idempotency(db, lambda: 1000.0)

        assert await reduce_stored_answers(idempotent) == 1
        assert await reduce_stored_answers(idempotent) == 0  # a second start changes nothing

        stored = {
            row["request_id"]: row["response"]
            for row in await db.fetch_all("SELECT request_id, response FROM idempotency_keys")
        }
        reduced = account_service_pb2.UpgradeKycResponse.FromString(stored["whole"][1:])
        assert reduced.identity == common_pb2.KycIdentity(
            id_card_number="3171**********07", id_card_number_valid=True
        )
        assert reduced.kyc_status == common_pb2.KYC_STATUS_VERIFIED
        assert stored["refused"] == refusal
        assert stored["r"] == outcomes[idempotency.Key("app", "RegisterCustomer", "r")]
        assert stored["running"] is None
    finally:
        await db.close()


async def _attach(db: Database, key: idempotency.Key, holder: str, operation_id: str) -> bool:
    """What a money request does in the transaction that creates its operation."""
    return await db.run(lambda tx: idempotency.attach(tx, key, holder, operation_id))


async def _never(_: Held) -> None:
    raise AssertionError("a decided request must not run again")


def commits_then_loses_the_connection(
    db: Database, monkeypatch: pytest.MonkeyPatch, *, commit: bool
) -> None:
    """The next transaction of ``db`` ends as a lost connection does (``commit``: after its
    COMMIT went through, the answer lost; else before it): ``run`` raises CommitUnknown."""
    run = db.run

    async def once(
        body: Callable[[DbTx], Awaitable[T]], isolation: Isolation = Isolation.SERIALIZABLE
    ) -> T:
        monkeypatch.setattr(db, "run", run)
        if commit:
            await run(body, isolation)
        raise CommitUnknown

    monkeypatch.setattr(db, "run", once)


async def _work(_: Held) -> bytes:
    return b"answer"


async def test_a_key_claimed_with_an_unknown_commit_is_given_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim committed, its answer was lost: the request fails (DATABASE_BUSY), and its
    retry runs at once instead of finding its own key running for the whole lease."""
    db = await Database.open(str(tmp_path / "w.db"))
    keys = Idempotency(db, lambda: 1000.0)
    request = Request(KEY.caller, KEY.method, KEY.request_id, HASH)
    try:
        commits_then_loses_the_connection(db, monkeypatch, commit=True)
        with pytest.raises(CommitUnknown):
            await keys.run(request, _never, keep=lambda r: r, replay=lambda d: d.answer)
        assert await idempotency.look(db, KEY, HASH, 1000.0) is None

        answer = await keys.run(request, _work, keep=lambda r: r, replay=lambda d: d.answer)
        assert answer == b"answer"
    finally:
        await db.close()


async def test_giving_back_a_claim_of_unknown_outcome_touches_no_other_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SqliteDatabase, "sole_process", False)
    path = str(tmp_path / "w.db")
    a, b = await Database.open(path), await Database.open(path)
    request = Request(KEY.caller, KEY.method, KEY.request_id, HASH)
    try:
        # A's lease ended; B's claim, taking the key over, never reached the database.
        held = await idempotency.claim(a, KEY, HASH, 1000.0, 120.0)
        commits_then_loses_the_connection(b, monkeypatch, commit=False)
        with pytest.raises(CommitUnknown):
            await Idempotency(b, lambda: 1200.0).run(
                request, _never, keep=lambda r: r, replay=lambda d: d.answer
            )
        # A's key is as it was: A still ends it.
        running = await idempotency.look(a, KEY, HASH, 1000.0)
        assert running is not None
        assert running.kind is idempotency.ClaimKind.IN_PROGRESS
        await idempotency.complete(a, KEY, held.holder, b"R" + b"answer")
        decided = await idempotency.look(b, KEY, HASH, 1200.0)
        assert decided is not None
        assert (decided.kind, decided.stored) == (idempotency.ClaimKind.REPLAY, b"Ranswer")
    finally:
        await a.close()
        await b.close()


async def test_a_key_is_ended_even_when_its_caller_is_cancelled_while_another_process_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "LOCK_WAIT_SECONDS", 0.2)
    path = tmp_path / "w.db"
    db = await Database.open(str(path))
    keys = Idempotency(db, lambda: 1000.0)
    request = Request(KEY.caller, KEY.method, KEY.request_id, HASH)
    other = sqlite3.connect(path, isolation_level=None)  # another process's connection
    locked = asyncio.Event()

    async def work(_: Held) -> bytes:
        other.execute("BEGIN IMMEDIATE")  # the lock is taken before the key's end is written
        locked.set()
        return b"answer"

    try:
        caller = asyncio.create_task(
            keys.run(request, work, keep=lambda r: r, replay=lambda d: d.answer)
        )
        await locked.wait()
        await asyncio.sleep(0.05)  # the end's first try waits for the lock
        caller.cancel()  # the caller's deadline
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.3)  # past the first try: still locked, still running
        running = await idempotency.look(db, KEY, HASH, 1000.0)
        assert running is not None
        assert running.kind is idempotency.ClaimKind.IN_PROGRESS
        other.execute("ROLLBACK")

        async def decided() -> idempotency.Claim | None:
            for _ in range(100):
                claim = await idempotency.look(db, KEY, HASH, 1000.0)
                if claim is not None and claim.kind is idempotency.ClaimKind.REPLAY:
                    return claim
                await asyncio.sleep(0.05)
            return None

        claim = await decided()
        assert claim is not None
        assert claim.stored == b"R" + b"answer"
    finally:
        other.close()
        await db.close()


async def test_a_key_end_that_cannot_be_written_is_raised_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    keys = Idempotency(db, lambda: 1000.0)
    request = Request(KEY.caller, KEY.method, KEY.request_id, HASH)

    async def work(_: Held) -> bytes:
        await db.close()  # the database goes away before the key's end is written
        return b"answer"

    with pytest.raises(sqlite3.ProgrammingError):
        await keys.run(request, work, keep=lambda r: r, replay=lambda d: d.answer)
    assert "could not write the end of an idempotency key" in caplog.text
