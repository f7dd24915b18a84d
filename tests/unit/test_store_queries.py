"""Queries on every money call read indexes, not tables: they stay cheap as data grows."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from wallet_service.domain.money import RideStatus, TxStatus, TxType
from wallet_service.domain.records import RidePayment, Transaction
from wallet_service.store import callbacks, ledger, rides, transactions
from wallet_service.store.sqlite import SqliteDatabase
from wallet_service.store.sqlite import SqliteTransaction as DbTx


async def test_the_monthly_volume_is_summed_from_an_index_alone(tmp_path: Path) -> None:
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        plan = await db.fetch_all(f"EXPLAIN QUERY PLAN {ledger.VOLUME_SQL}", ("acct", 0.0))
        details = " ".join(row["detail"] for row in plan)
        assert "COVERING INDEX ledger_by_account_volume" in details

        async with db.transaction() as tx:
            for n, amount in enumerate([5_000, -2_000, 700]):
                await tx.execute(
                    "INSERT INTO transactions (id, type, status, amount_idr, mobile_number, "
                    "create_time, update_time) VALUES (?, 'TRANSFER', 'SUCCEEDED', 1, 'm', 1, 1)",
                    (f"t{n}",),
                )
                await tx.execute(
                    "INSERT INTO ledger_lines (transaction_id, reference, account, amount_idr, "
                    "create_time) VALUES (?, ?, 'acct', ?, ?)",
                    (f"t{n}", f"r{n}", amount, 100.0 + n),
                )
        assert await ledger.volume_since(db, "acct", 0.0) == 7_700
        assert await ledger.volume_since(db, "acct", 101.0) == 2_700
        assert await ledger.volume_since(db, "other", 0.0) == 0
    finally:
        await db.close()


async def test_a_transactions_ride_payment_is_read_by_its_key_not_by_a_scan(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "w.db")
    await (await SqliteDatabase.open_file(path)).close()  # the schema
    # A connection of the test's own, to see every statement run on it.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    tx = DbTx(conn, "test")
    try:
        hold, capture, tip = (
            _transaction(TxType.RIDE_HOLD, "t-hold"),
            _transaction(TxType.RIDE_CAPTURE, "t-capture"),
            _transaction(TxType.TIP, "t-tip"),
        )
        stray = _transaction(TxType.RIDE_VOID, "t-stray")  # names the ride, is not its
        nameless = replace(_transaction(TxType.RIDE_HOLD, "t-nameless"), ride_id="")
        ride = RidePayment(
            ride_id="ride-1",
            status=RideStatus.CAPTURING,
            passenger="628111",
            held_amount_idr=10_000,
            expire_time=9e9,
            hold_transaction=hold.id,
            settle_transaction=capture.id,
            create_time=1.0,
            update_time=1.0,
        )
        voided = replace(ride, ride_id="ride-2", settle_transaction="t-void")
        void = replace(_transaction(TxType.RIDE_VOID, "t-void"), ride_id="ride-2")
        await rides.insert_ride(tx, ride)
        await rides.insert_ride(tx, voided)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        found = [await rides.ride_of_transaction(tx, t) for t in (hold, capture, void)]
        missing = [await rides.ride_of_transaction(tx, t) for t in (tip, nameless, stray)]
        conn.set_trace_callback(None)
        plans = [
            " ".join(row["detail"] for row in await tx.fetch_all(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in statements
        ]

        assert found == [ride, ride, voided]
        assert missing == [None, None, None]
        # The tip is not a ride payment's, the nameless one names none: neither is read.
        assert len(statements) == 4
        assert all("SEARCH ride_payments USING INDEX" in plan for plan in plans), plans
    finally:
        conn.close()


async def test_parked_callbacks_come_from_their_index_in_arrival_order(tmp_path: Path) -> None:
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        plan = await db.fetch_all(f"EXPLAIN QUERY PLAN {callbacks.PARKED_CALLBACKS_SQL}", (0.0, 10))
        details = " ".join(row["detail"] for row in plan)
        assert "USING INDEX callbacks_parked" in details
        assert "SCAN callbacks" not in details

        states = [("parked", 50.0), ("applied", None), ("rejected", 10.0), ("parked", 500.0)]
        states.append(("parked", 5.0))  # due soonest, received last
        due = []
        for n, (status, next_try_at) in enumerate(states):
            callback_id = await callbacks.store_callback(db, b"{}", "", "", float(n))
            async with db.transaction() as tx:
                await callbacks.mark_callback(tx, callback_id, status, next_try_at=next_try_at)
            if status == "parked" and next_try_at is not None and next_try_at <= 100.0:
                due.append(callback_id)

        rows = await callbacks.parked_callbacks(db, 100.0, 10)
        assert [row["id"] for row in rows] == due  # received first, tried first
        assert [row["id"] for row in await callbacks.parked_callbacks(db, 100.0, 2)] == due[:2]
    finally:
        await db.close()


async def test_callbacks_never_applied_come_from_their_index_once_old_enough(
    tmp_path: Path,
) -> None:
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        plan = await db.fetch_all(
            f"EXPLAIN QUERY PLAN {callbacks.UNAPPLIED_CALLBACKS_SQL}", (0.0, 0.0, 10)
        )
        details = " ".join(row["detail"] for row in plan)
        assert "USING INDEX callbacks_unapplied" in details
        assert "SCAN callbacks" not in details

        stored = [await callbacks.store_callback(db, b"{}", "", "", float(n)) for n in range(4)]
        async with db.transaction() as tx:
            await callbacks.mark_callback(tx, stored[1], "applied")
        # Stored at 0, 1, 2, 3; at 10, those stored by 2.5 are old enough; 1 was applied.
        rows = await callbacks.unapplied_callbacks(db, 10.0, 2.5, 10)
        assert [row["id"] for row in rows] == [stored[0], stored[2]]
        assert await callbacks.claim_unapplied_callback(db, stored[0], 10.0, 2.5, 40.0)
        assert not await callbacks.claim_unapplied_callback(db, stored[0], 10.0, 2.5, 40.0)
        assert not await callbacks.claim_unapplied_callback(db, stored[1], 10.0, 2.5, 40.0)
        assert not await callbacks.claim_unapplied_callback(db, stored[3], 10.0, 2.5, 40.0)
        rows = await callbacks.unapplied_callbacks(db, 10.0, 2.5, 10)
        assert [row["id"] for row in rows] == [stored[2]]  # the claimed one waits
        rows = await callbacks.unapplied_callbacks(db, 40.0, 2.5, 10)
        assert [row["id"] for row in rows] == [stored[0], stored[2]]  # its claim lapsed
    finally:
        await db.close()


def _transaction(type_: TxType, id_: str) -> Transaction:
    return Transaction(
        id=id_,
        type=type_,
        status=TxStatus.PENDING,
        amount_idr=10_000,
        mobile_number="628111",
        ride_id="ride-1",
        create_time=1.0,
        update_time=1.0,
    )


async def test_frozen_operations_are_counted_from_their_index_alone(tmp_path: Path) -> None:
    """/metrics counts them on every scrape: the partial index holds only frozen ones."""
    db = await SqliteDatabase.open_file(str(tmp_path / "w.db"))
    try:
        plan = await db.fetch_all(f"EXPLAIN QUERY PLAN {transactions.FROZEN_COUNT_SQL}")
        details = " ".join(row["detail"] for row in plan)
        assert "INDEX transactions_frozen" in details, details

        async with db.transaction() as tx:
            for n, why in enumerate(["", "amount differs", "", "KasPro contradicted itself"]):
                await tx.execute(
                    "INSERT INTO transactions (id, type, status, amount_idr, mobile_number, "
                    "frozen, create_time, update_time) "
                    "VALUES (?, 'CASH_OUT', 'PROCESSING', 1, 'm', ?, 1, 1)",
                    (f"t{n}", why),
                )
        assert await transactions.frozen_count(db) == 2
    finally:
        await db.close()
