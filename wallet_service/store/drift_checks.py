"""The drift check's state (migrations/sqlite/0014_drift_checks.sql): which wallets are due
a comparison, which pass has claimed one, a difference seen and not yet confirmed; and the
reads a comparison makes (a wallet's ledger figures, what is in flight, escrow's holds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wallet_service.store.database import Source
from wallet_service.store.database import Transaction as DbTx

SUBSCRIBERS = "subscriber:%"
ESCROW = "escrow"
# Ride statuses whose hold is open: the passenger's money is (or is being) in escrow.
OPEN_RIDE_STATUSES = "('AUTHORIZING', 'AUTHORIZED', 'CAPTURING', 'VOIDING')"


@dataclass(frozen=True)
class Figures:
    """A ledger account as one snapshot read it: its balance and how many lines make it
    (a balance can come back to the same figure through new lines: the count tells)."""

    balance_idr: int
    lines: int


@dataclass(frozen=True)
class Difference:
    """A difference seen on an account and not cleared: our figure, theirs, since when."""

    since: float
    ours_idr: int
    theirs_idr: int


@dataclass(frozen=True)
class InFlight:
    """What is moving money and not booked yet, as one snapshot read it: customers
    (canonical numbers) with an open attempt or hold, the raw bodies of verified callbacks
    not applied yet, and the VA numbers and payment codes of top-ups still to confirm."""

    customers: frozenset[str]
    callback_bodies: tuple[bytes, ...]
    top_up_codes: tuple[str, ...]


async def note_activity(tx: DbTx, now: float, margin: float, first_look_back: float) -> int:
    """Mark due every customer wallet with ledger lines written since the last scan (less
    ``margin``: a transaction may commit a while after its lines' time) and newer than its
    last comparison less the margin; the scan then reaches ``now``. The first scan looks
    back ``first_look_back``. Returns how many wallets it marked."""
    row = await tx.fetch_one("SELECT scanned_to FROM drift_scan WHERE id = 1")
    since = now - first_look_back if row is None else float(row["scanned_to"]) - margin
    rows = await tx.fetch_all(
        "SELECT account, MAX(create_time) AS last_line FROM ledger_lines "
        "WHERE create_time >= ? AND account LIKE ? GROUP BY account",
        (since, SUBSCRIBERS),
    )
    marked = 0
    for line in rows:
        marked += await tx.execute(
            "INSERT INTO drift_checks (account, due_since) VALUES (?, ?) "
            "ON CONFLICT (account) DO UPDATE SET "
            "due_since = COALESCE(drift_checks.due_since, excluded.due_since) "
            "WHERE drift_checks.checked_at IS NULL OR drift_checks.checked_at < ?",
            (line["account"], now, float(line["last_line"]) + margin),
        )
    await tx.execute(
        "INSERT INTO drift_scan (id, scanned_to) VALUES (1, ?) "
        "ON CONFLICT (id) DO UPDATE SET scanned_to = excluded.scanned_to",
        (now,),
    )
    return marked


async def note_every_wallet(tx: DbTx, now: float) -> None:
    """Mark due every customer wallet we know: in the ledger, or linked here."""
    rows = await tx.fetch_all(
        "SELECT DISTINCT account FROM ledger_lines WHERE account LIKE ? UNION "
        "SELECT 'subscriber:' || mobile_number FROM customers WHERE linked_at IS NOT NULL",
        (SUBSCRIBERS,),
    )
    for row in rows:
        await tx.execute(
            "INSERT INTO drift_checks (account, due_since) VALUES (?, ?) "
            "ON CONFLICT (account) DO UPDATE SET "
            "due_since = COALESCE(drift_checks.due_since, excluded.due_since)",
            (row["account"], now),
        )


async def claim_wallets(
    tx: DbTx, token: str, now: float, until: float, recheck_before: float, limit: int | None
) -> list[str]:
    """Claim for the pass ``token``, until ``until``, up to ``limit`` (None: all) customer
    wallets not claimed by a live pass: those due, and those with a difference last
    compared before ``recheck_before`` (to confirm it, or to see it gone). Oldest first."""
    rows = await tx.fetch_all(
        "SELECT account FROM drift_checks WHERE account LIKE ? "
        "AND (claimed_until IS NULL OR claimed_until <= ?) "
        "AND (due_since IS NOT NULL OR (differs_since IS NOT NULL AND checked_at <= ?)) "
        "ORDER BY COALESCE(due_since, checked_at), account"
        + ("" if limit is None else f" LIMIT {int(limit)}"),
        (SUBSCRIBERS, now, recheck_before),
    )
    accounts = [str(row["account"]) for row in rows]
    for account in accounts:
        await tx.execute(
            "UPDATE drift_checks SET claimed_by = ?, claimed_until = ? WHERE account = ?",
            (token, until, account),
        )
    return accounts


async def difference_of(source: Source, account: str) -> Difference | None:
    row = await source.fetch_one(
        "SELECT differs_since, ours_idr, theirs_idr FROM drift_checks "
        "WHERE account = ? AND differs_since IS NOT NULL",
        (account,),
    )
    if row is None:
        return None
    return Difference(float(row["differs_since"]), int(row["ours_idr"]), int(row["theirs_idr"]))


async def finish_wallet(
    tx: DbTx, account: str, token: str, compared_at: float, difference: Difference | None
) -> bool:
    """Record the comparison that began at ``compared_at`` and release the claim; False
    (nothing written) when the claim is no longer ``token``'s (it lapsed and another
    pass took the wallet). Activity noted after the comparison began leaves it due."""
    return bool(
        await tx.execute(
            "UPDATE drift_checks SET claimed_by = NULL, claimed_until = NULL, checked_at = ?, "
            "due_since = CASE WHEN due_since <= ? THEN NULL ELSE due_since END, "
            "differs_since = ?, ours_idr = ?, theirs_idr = ? "
            "WHERE account = ? AND claimed_by = ?",
            (
                compared_at,
                compared_at,
                None if difference is None else difference.since,
                None if difference is None else difference.ours_idr,
                None if difference is None else difference.theirs_idr,
                account,
                token,
            ),
        )
    )


async def release_wallet(tx: DbTx, account: str, token: str, now: float) -> None:
    """Give a claimed wallet back uncompared: due for a later pass, behind the wallets
    due before ``now`` (one that can never be compared does not hold the others up)."""
    await tx.execute(
        "UPDATE drift_checks SET claimed_by = NULL, claimed_until = NULL, due_since = ? "
        "WHERE account = ? AND claimed_by = ?",
        (now, account, token),
    )


async def ledger_figures(source: Source, accounts: Sequence[str]) -> dict[str, Figures]:
    """Each account's balance and line count (an account without lines: zero, zero)."""
    found = {account: Figures(0, 0) for account in accounts}
    if not accounts:
        return found
    rows = await source.fetch_all(
        "SELECT account, CAST(COALESCE(SUM(amount_idr), 0) AS BIGINT) AS balance, "
        "COUNT(*) AS lines FROM ledger_lines "
        f"WHERE account IN ({', '.join('?' * len(accounts))}) GROUP BY account",
        tuple(accounts),
    )
    for row in rows:
        found[str(row["account"])] = Figures(int(row["balance"]), int(row["lines"]))
    return found


async def in_flight(source: Source) -> InFlight:
    """Everything moving money that the books do not show yet (each from a partial index)."""
    customers: set[str] = set()
    for row in await source.fetch_all(
        "SELECT transactions.mobile_number, transactions.counterparty FROM attempts "
        "JOIN transactions ON transactions.id = attempts.transaction_id "
        "WHERE attempts.status IN ('pending', 'processing')"
    ):
        customers.update((str(row["mobile_number"]), str(row["counterparty"])))
    for row in await source.fetch_all(
        f"SELECT passenger, driver FROM ride_payments WHERE status IN {OPEN_RIDE_STATUSES}"
    ):
        customers.update((str(row["passenger"]), str(row["driver"])))
    customers.discard("")
    callbacks = await source.fetch_all(
        "SELECT raw FROM callbacks WHERE status = 'parked' UNION ALL "
        "SELECT raw FROM callbacks WHERE status = 'received'"
    )
    checks = await source.fetch_all(
        "SELECT va_number, payment_code FROM top_up_checks WHERE status = 'waiting'"
    )
    return InFlight(
        customers=frozenset(customers),
        callback_bodies=tuple(bytes(row["raw"]) for row in callbacks),
        top_up_codes=tuple(
            code for row in checks for code in (row["va_number"], row["payment_code"]) if code
        ),
    )


async def settled_references(
    source: Source, request_ids: Sequence[str], reff_ids: Sequence[str]
) -> frozenset[str]:
    """Of ``request_ids``, the attempts already final; of ``reff_ids``, the top-ups already
    booked: a callback naming one of them can no longer change the books (a late
    duplicate, or a contradiction that freezes an operation and books nothing)."""
    found: set[str] = set()
    if request_ids:
        rows = await source.fetch_all(
            "SELECT reference FROM attempts WHERE status IN ('succeeded', 'failed') "
            f"AND reference IN ({', '.join('?' * len(request_ids))})",
            tuple(request_ids),
        )
        found.update(str(row["reference"]) for row in rows)
    if reff_ids:
        rows = await source.fetch_all(
            # From the top-ups' unique index (migration 0008's transactions_topup_reference).
            "SELECT kaspro_reference FROM transactions "
            "WHERE type IN ('TOP_UP', 'DRIVER_DEPOSIT') "
            f"AND kaspro_reference IN ({', '.join('?' * len(reff_ids))})",
            tuple(reff_ids),
        )
        found.update(str(row["kaspro_reference"]) for row in rows)
    return frozenset(found)


async def claim_escrow_check(tx: DbTx, now: float, every: float) -> bool:
    """Whether this pass checks escrow's holds: once per ``every`` across replicas."""
    await tx.execute(
        "INSERT INTO drift_checks (account) VALUES (?) ON CONFLICT (account) DO NOTHING",
        (ESCROW,),
    )
    return bool(
        await tx.execute(
            "UPDATE drift_checks SET checked_at = ? "
            "WHERE account = ? AND (checked_at IS NULL OR checked_at <= ?)",
            (now, ESCROW, now - every),
        )
    )


async def escrow_figures(tx: DbTx) -> tuple[int, int]:
    """(escrow's ledger balance, what the open holds say it must be), in one snapshot:
    an AUTHORIZED ride's hold, and a CAPTURING or VOIDING one's less the legs already paid
    out of escrow (each leg is booked with the ride's move, so the two always agree)."""
    row = await tx.fetch_one(
        "SELECT CAST(COALESCE(SUM(amount_idr), 0) AS BIGINT) AS balance FROM ledger_lines "
        "WHERE account = ?",
        (ESCROW,),
    )
    balance = 0 if row is None else int(row["balance"])
    held = 0
    settling: list[str] = []
    for ride in await tx.fetch_all(
        "SELECT status, held_amount_idr, settle_transaction FROM ride_payments "
        f"WHERE status IN {OPEN_RIDE_STATUSES}"
    ):
        if ride["status"] == "AUTHORIZING":
            continue  # nothing is in escrow until the hold leg succeeded
        held += int(ride["held_amount_idr"])
        if ride["settle_transaction"]:
            settling.append(str(ride["settle_transaction"]))
    if settling:
        paid = await tx.fetch_one(
            "SELECT CAST(COALESCE(SUM(amount_idr), 0) AS BIGINT) AS paid FROM ledger_lines "
            f"WHERE account = ? AND transaction_id IN ({', '.join('?' * len(settling))})",
            (ESCROW, *settling),
        )
        held += 0 if paid is None else int(paid["paid"])
    return balance, held
