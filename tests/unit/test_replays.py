"""Retries answered from memory (flows/replays.py): what is kept, and what makes it go.

Every kept entry must be forgotten by the database change that could make it wrong: a
change of the operation's row (committed or rolled back), a purge of keys, or a change
that ended between the read and the keep.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wallet_service.domain.money import RideStatus, TxStatus, TxType
from wallet_service.domain.records import RidePayment, Transaction
from wallet_service.flows.replays import Answer, Replays
from wallet_service.store import idempotency
from wallet_service.store import money as rows
from wallet_service.store.database import Database

KEY = idempotency.Key("app", "Transfer", "req-1")
HASH = b"h" * 32
DONE = idempotency.Claim(idempotency.ClaimKind.REPLAY, None, "t-1")


@contextlib.asynccontextmanager
async def opened(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(str(tmp_path / "w.db"))
    try:
        async with db.transaction() as tx:
            await rows.insert_transaction(tx, _transaction("t-1"))
            await rows.insert_transaction(tx, _transaction("t-2"))
        yield db
    finally:
        await db.close()


async def test_a_kept_claim_answers_its_request_and_refuses_another(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        assert replays.claim(KEY, HASH) is None
        replays.keep_claim(KEY, HASH, DONE, replays.mark())
        assert replays.claim(KEY, HASH) == DONE
        other = replays.claim(KEY, b"x" * 32)
        assert other == idempotency.Claim(idempotency.ClaimKind.REUSED)
        # Only decided claims are kept: a duplicate in flight is not an answer.
        running = idempotency.Key("app", "Transfer", "req-2")
        replays.keep_claim(
            running, HASH, idempotency.Claim(idempotency.ClaimKind.IN_PROGRESS), replays.mark()
        )
        assert replays.claim(running, HASH) is None


async def test_a_purge_that_forgot_keys_forgets_every_kept_claim(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        async with db.transaction() as tx:
            await idempotency.record_in(tx, KEY, HASH, 1000.0, operation_id="t-1", response=None)
        replays.keep_claim(KEY, HASH, DONE, replays.mark())

        assert await idempotency.purge(db, older_than=500.0) == 0
        assert replays.claim(KEY, HASH) == DONE  # nothing was forgotten: still kept

        assert await idempotency.purge(db, older_than=2000.0) == 1
        # The key is gone from the database, so a retry must run afresh, not replay.
        assert replays.claim(KEY, HASH) is None


async def test_a_change_of_the_operation_forgets_its_answer_and_no_other(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        for id_ in ("t-1", "t-2"):
            replays.keep_answer(id_, Answer(_transaction(id_)), replays.mark())

        async with db.transaction() as tx:
            await rows.move_transaction(tx, "t-1", TxStatus.SUCCEEDED, 2.0)

        assert replays.answer("t-1") is None
        assert replays.answer("t-2") == Answer(_transaction("t-2"))


async def test_a_field_change_or_a_ride_move_forgets_the_answer_too(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        ride = _ride()
        async with db.transaction() as tx:
            await rows.insert_ride(tx, ride)
        operation = rows.ride_operation(ride.ride_id)
        replays.keep_answer("t-1", Answer(_transaction("t-1")), replays.mark())
        replays.keep_answer(operation, Answer(ride), replays.mark())

        async with db.transaction() as tx:
            await rows.set_transaction_fields(tx, "t-1", 2.0, frozen="a person has to look")
            await rows.move_ride(tx, ride.ride_id, RideStatus.CAPTURING, 2.0)

        assert replays.answer("t-1") is None
        assert replays.answer(operation) is None


async def test_a_move_the_table_refuses_changes_nothing_and_keeps_the_answer(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        async with db.transaction() as tx:
            await rows.move_transaction(tx, "t-1", TxStatus.FAILED, 2.0)
        failed: Answer[object] = Answer(failure=("INSUFFICIENT_FUNDS", "no money"))
        replays.keep_answer("t-1", failed, replays.mark())

        async with db.transaction() as tx:  # FAILED is terminal: the UPDATE changes no row
            assert await rows.move_transaction(tx, "t-1", TxStatus.SUCCEEDED, 3.0) is None

        assert replays.answer("t-1") == failed


async def test_a_change_rolled_back_forgets_the_answer_read_while_it_was_open(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        seen: list[Transaction | None] = []

        async def fails_after_a_change() -> None:
            async with db.transaction() as tx:
                await rows.move_transaction(tx, "t-1", TxStatus.SUCCEEDED, 2.0)
                # A plain read while the transaction is open sees its uncommitted row …
                seen.append(await rows.load_transaction(db, "t-1"))
                replays.keep_answer("t-1", Answer(seen[0]), replays.mark())
                raise RuntimeError("the transaction fails")

        with pytest.raises(RuntimeError):
            await fails_after_a_change()
        assert seen[0] is not None
        assert seen[0].status is TxStatus.SUCCEEDED
        # … which never happened: it must not be a retry's answer.
        assert replays.answer("t-1") is None


async def test_an_answer_read_before_a_change_ended_is_not_kept(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        mark = replays.mark()
        stale = await rows.load_transaction(db, "t-1")
        assert stale is not None
        async with db.transaction() as tx:  # meanwhile (the reader was suspended)
            await rows.move_transaction(tx, "t-1", TxStatus.SUCCEEDED, 2.0)
        replays.keep_answer("t-1", Answer(stale), mark)
        replays.keep_claim(KEY, HASH, DONE, mark)

        assert replays.answer("t-1") is None
        assert replays.claim(KEY, HASH) is None


async def test_the_oldest_entries_go_first_when_full(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db, kept=2)
        for n in range(3):
            key = idempotency.Key("app", "Transfer", f"req-{n}")
            replays.keep_claim(key, HASH, DONE, replays.mark())
            replays.keep_answer(f"t-{n}", Answer(None), replays.mark())

        assert [
            replays.claim(idempotency.Key("app", "Transfer", f"req-{n}"), HASH) for n in range(3)
        ] == [None, DONE, DONE]
        assert [replays.answer(f"t-{n}") for n in range(3)] == [None, Answer(None), Answer(None)]


def test_every_update_of_an_operations_row_is_in_a_function_that_names_it() -> None:
    """Replays forgets an answer only when the store names its operation: a new UPDATE of
    transactions or ride_payments elsewhere would leave stale answers in memory."""
    store = Path(rows.__file__).parent
    package = store.parent
    updates = [
        (path.relative_to(package).as_posix(), number)
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "UPDATE transactions" in line or "UPDATE ride_payments" in line
    ]
    source = Path(rows.__file__).read_text().splitlines()
    functions = {
        number: _function_around(source, number)
        for path, number in updates
        if path == "store/money.py"
    }
    assert [path for path, _ in updates] == ["store/money.py"] * 3, updates
    assert sorted(functions.values()) == ["move_ride", "move_transaction", "set_transaction_fields"]


def _function_around(source: list[str], number: int) -> str:
    for line in reversed(source[:number]):
        if line.startswith("async def "):
            return line.removeprefix("async def ").split("(")[0]
    raise AssertionError(f"line {number} is in no function")


def _transaction(id_: str) -> Transaction:
    return Transaction(
        id=id_,
        type=TxType.TRANSFER,
        status=TxStatus.PENDING,
        amount_idr=10_000,
        mobile_number="628111",
        create_time=1.0,
        update_time=1.0,
    )


def _ride() -> RidePayment:
    return RidePayment(
        ride_id="ride-1",
        status=RideStatus.AUTHORIZED,
        passenger="628111",
        held_amount_idr=10_000,
        expire_time=9e9,
        hold_transaction="t-2",
        create_time=1.0,
        update_time=1.0,
    )
