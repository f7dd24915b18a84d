"""Retries answered from memory (flows/replays.py): what is kept, and what makes it go.

Every kept entry must be forgotten by the database change that could make it wrong: a
change of the operation's row (committed or rolled back), a purge of keys, or a change
that ended between the read and the keep.
"""

from __future__ import annotations

import contextlib
import re
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
        failed = Answer(failure=("INSUFFICIENT_FUNDS", "no money"))
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


async def test_nothing_read_while_a_transaction_is_open_is_kept(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        replays = Replays(db)
        async with db.transaction() as tx:
            # A row inserted and not yet committed names no change; a plain read sees it.
            await rows.insert_transaction(tx, _transaction("t-3"))
            seen = await rows.load_transaction(db, "t-3")
            replays.keep_answer("t-3", Answer(seen), replays.mark())
            replays.keep_claim(KEY, HASH, DONE, replays.mark())

        assert replays.answer("t-3") is None
        assert replays.claim(KEY, HASH) is None


async def test_a_bound_below_one_is_refused(tmp_path: Path) -> None:
    async with opened(tmp_path) as db:
        with pytest.raises(ValueError, match="at least 1"):
            Replays(db, kept=0)


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


def test_every_write_a_kept_entry_depends_on_is_in_a_function_that_tells_replays() -> None:
    """Replays forgets an answer only when the store names its operation, and claims only
    on a purge: a new way of changing those rows elsewhere would leave stale answers."""
    package = Path(rows.__file__).parents[1]
    writers: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        for found in WRITE.finditer(text):
            table = (found["table"] or found["upserted"]).lower()
            where = f"{path.relative_to(package).as_posix()}:"
            writers.setdefault(table, set()).add(where + _function_around(text, found.start()))

    assert writers["transactions"] == {
        "store/money.py:move_transaction",
        "store/money.py:set_transaction_fields",
    }
    assert writers["ride_payments"] == {"store/money.py:move_ride"}
    # Of these only purge and rewrite_outcomes delete or change a decided key (both tell
    # Replays); record_in takes over a running key, which no kept claim comes from;
    # claim_in, complete and release are the onboarding RPCs' (api/idempotent.py).
    assert writers["idempotency_keys"] == {
        "store/idempotency.py:rewrite_outcomes",
        "store/idempotency.py:record_in",
        "store/idempotency.py:claim_in",
        "store/idempotency.py:complete",
        "store/idempotency.py:release",
        "store/idempotency.py:purge",
    }


# Any statement that changes or deletes rows of these tables (a plain INSERT adds a row
# no answer was kept for): UPDATE, DELETE, REPLACE, or an upsert's DO UPDATE.
WRITE = re.compile(
    r"\b(?:UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM|REPLACE\s+INTO|INSERT\s+OR\s+REPLACE\s+INTO)"
    r"\s+(?P<table>transactions|ride_payments|idempotency_keys)\b"
    r"|\bINSERT\s+INTO\s+(?P<upserted>transactions|ride_payments|idempotency_keys)\b"
    r"[^;\"']*?\bON\s+CONFLICT\b",  # within one string literal
    re.IGNORECASE | re.DOTALL,
)


def _function_around(text: str, offset: int) -> str:
    for line in reversed(text[:offset].splitlines()):
        if line.startswith(("async def ", "def ")):
            return line.split("def ", 1)[1].split("(")[0]
    raise AssertionError(f"offset {offset} is in no function")


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
