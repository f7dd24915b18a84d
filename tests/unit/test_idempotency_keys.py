"""Idempotency keys: a duplicate in flight waits; a key left by a dead process does not;
a money request's key is written once, decided, and read without a transaction; answers
stored whole are reduced once, and nothing else is touched."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from wallet.v1 import account_service_pb2, common_pb2

from wallet_service.api.account import reduce_stored_answers
from wallet_service.api.idempotent import Idempotency
from wallet_service.store import idempotency
from wallet_service.store.database import Database

KEY = idempotency.Key("app", "Transfer", "req-1")
HASH = b"h" * 32


async def test_a_running_key_of_this_process_is_in_progress(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        first = await idempotency.claim(db, KEY, HASH, 1000.0, 120.0)
        again = await idempotency.claim(db, KEY, HASH, 1001.0, 120.0)
        assert (first.kind, again.kind) == (
            idempotency.ClaimKind.NEW,
            idempotency.ClaimKind.IN_PROGRESS,
        )
    finally:
        await db.close()


async def test_a_key_held_by_a_killed_process_is_taken_over_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    dead = await Database.open(path)
    await idempotency.claim(dead, KEY, HASH, 1000.0, 120.0)
    await _set_operation(dead, "txn_1")
    await dead.close()  # the process is gone; its key is still 'running', lease unexpired

    alive = await Database.open(path)
    try:
        claim = await idempotency.claim(alive, KEY, HASH, 1001.0, 120.0)
        # Not REQUEST_IN_PROGRESS: the retry reports on the operation the dead one made.
        assert (claim.kind, claim.operation_id) == (idempotency.ClaimKind.REPLAY, "txn_1")
        other = await idempotency.claim(alive, KEY, b"x" * 32, 1001.0, 120.0)
        assert other.kind is idempotency.ClaimKind.REUSED
        # A money request looking at the key gets the same answers, without writing.
        looked = await idempotency.look(alive, KEY, HASH, 1001.0)
        assert looked is not None
        assert (looked.kind, looked.operation_id) == (idempotency.ClaimKind.REPLAY, "txn_1")
    finally:
        await alive.close()


async def test_a_recorded_key_replays_its_operation_or_refusal(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    refused = idempotency.Key("app", "Transfer", "req-2")
    try:
        assert await idempotency.look(db, KEY, HASH, 1000.0) is None  # unknown: it runs
        async with db.transaction() as tx:
            made = await idempotency.record_in(
                tx, KEY, HASH, 1000.0, operation_id="txn_1", response=None
            )
            no = await idempotency.record_in(
                tx, refused, HASH, 1000.0, operation_id=None, response=b"refusal"
            )
        assert (made.kind, no.kind) == (idempotency.ClaimKind.NEW, idempotency.ClaimKind.NEW)

        replay = await idempotency.look(db, KEY, HASH, 1001.0)
        refusal = await idempotency.look(db, refused, HASH, 1001.0)
        reused = await idempotency.look(db, KEY, b"x" * 32, 1001.0)

        assert replay == idempotency.Claim(idempotency.ClaimKind.REPLAY, None, "txn_1")
        assert refusal == idempotency.Claim(idempotency.ClaimKind.REPLAY, b"refusal", None)
        assert reused == idempotency.Claim(idempotency.ClaimKind.REUSED)
        # Recording again changes nothing and says what the key holds.
        async with db.transaction() as tx:
            again = await idempotency.record_in(
                tx, KEY, HASH, 1002.0, operation_id="txn_2", response=None
            )
        assert again == replay
        assert await idempotency.look(db, KEY, HASH, 1003.0) == replay
    finally:
        await db.close()


async def test_record_takes_over_a_dead_requests_key_unless_it_made_an_operation(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "w.db")
    other = idempotency.Key("app", "Transfer", "req-2")
    dead = await Database.open(path)
    await idempotency.claim(dead, KEY, HASH, 1000.0, 120.0)  # died before creating
    await idempotency.claim(dead, other, HASH, 1000.0, 120.0)
    await _set_operation(dead, "txn_1", other)  # died after creating txn_1
    await dead.close()

    alive = await Database.open(path)
    try:
        assert await idempotency.look(alive, KEY, HASH, 1001.0) is None  # it may run
        async with alive.transaction() as tx:
            taken = await idempotency.record_in(
                tx, KEY, HASH, 1001.0, operation_id="txn_2", response=None
            )
            kept = await idempotency.record_in(
                tx, other, HASH, 1001.0, operation_id="txn_3", response=None
            )
        assert taken.kind is idempotency.ClaimKind.NEW
        assert (kept.kind, kept.operation_id) == (idempotency.ClaimKind.REPLAY, "txn_1")
        # Decided now, so kept for the full retention from now, not from the dead claim.
        row = await alive.fetch_one(
            "SELECT created_at FROM idempotency_keys WHERE request_id = ?", (KEY.request_id,)
        )
        assert row is not None
        assert row["created_at"] == 1001.0
        looked = await idempotency.look(alive, KEY, HASH, 1002.0)
        assert looked == idempotency.Claim(idempotency.ClaimKind.REPLAY, None, "txn_2")
        looked = await idempotency.look(alive, other, HASH, 1002.0)
        assert looked is not None
        assert looked.operation_id == "txn_1"
    finally:
        await alive.close()


async def test_look_waits_for_an_open_transaction_and_never_sees_what_rolls_back(
    tmp_path: Path,
) -> None:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        with contextlib.suppress(RuntimeError):
            async with db.transaction() as tx:
                await idempotency.record_in(
                    tx, KEY, HASH, 1000.0, operation_id="txn_1", response=None
                )
                # Another request looks while this transaction is open (its coroutine
                # suspended here): the row it would read is not committed.
                looking = asyncio.ensure_future(idempotency.look(db, KEY, HASH, 1000.0))
                await asyncio.sleep(0.01)
                assert not looking.done()
                raise RuntimeError("rolled back")
        assert await looking is None

        async with db.transaction() as tx:
            await idempotency.record_in(tx, KEY, HASH, 1000.0, operation_id="txn_2", response=None)
            looking = asyncio.ensure_future(idempotency.look(db, KEY, HASH, 1000.0))
            await asyncio.sleep(0.01)
            assert not looking.done()
        looked = await looking
        assert looked is not None
        assert looked.operation_id == "txn_2"
    finally:
        await db.close()


async def _set_operation(db: Database, operation_id: str, key: idempotency.Key = KEY) -> None:
    """What the claim protocol's holder wrote once it had created its operation."""
    async with db.transaction() as tx:
        await tx.execute(
            """UPDATE idempotency_keys SET operation_id = ?
               WHERE caller = ? AND method = ? AND request_id = ?""",
            (operation_id, key.caller, key.method, key.request_id),
        )


async def test_purge_forgets_old_decided_keys_and_old_keys_whose_lease_ended(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "w.db")
    keys = {name: idempotency.Key("app", "Transfer", name) for name in ("a", "b", "c", "d")}
    dead = await Database.open(path)
    await idempotency.claim(dead, keys["a"], HASH, 1000.0, 120.0)  # running, lease over
    await _set_operation(dead, "txn_1", keys["a"])  # (a retry would be told about txn_1)
    await idempotency.claim(dead, keys["b"], HASH, 1000.0, 10**9)  # running, lease on
    await idempotency.claim(dead, keys["c"], HASH, 1000.0, 120.0)
    await idempotency.complete(dead, keys["c"], None)  # decided, old
    await idempotency.claim(dead, keys["d"], HASH, 9000.0, 120.0)
    await idempotency.complete(dead, keys["d"], None)  # decided, recent
    await dead.close()

    db = await Database.open(path)
    try:
        assert await idempotency.purge(db, older_than=5000.0) == 2
        rows = await db.fetch_all("SELECT request_id FROM idempotency_keys ORDER BY request_id")
        assert [row["request_id"] for row in rows] == ["b", "d"]
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
            await idempotency.claim(db, key, HASH, 1000.0, 120.0)
            await idempotency.complete(db, key, outcome)
        running = idempotency.Key("app", "UpgradeKyc", "running")
        await idempotency.claim(db, running, HASH, 1000.0, 120.0)
        idempotent = Idempotency(db, lambda: 1000.0, 120.0)

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
