"""The drift check: on every replica, now and then, KasPro's balance of each customer
wallet with recent activity against our ledger, and escrow against the open holds. A
difference is a drift (store/drifts.py): recorded with both figures, logged, cleared when
the books agree again; never "fixed" by a ledger line (docs/operations.md, "Drift").

A comparison is meaningful only when nothing moves the wallet's money while it is made:
KasPro's balance and our ledger cannot be read at once. So a pass reads, for its claimed
wallets, what is in flight and the ledger; asks KasPro; reads both again; and compares only
a wallet with nothing in flight either time and the same ledger both times. What it cannot
see — a callback of a top-up KasPro credited that has not reached us yet — it tells from a
drift by time: a difference is recorded only when the same difference is seen again at
least ``confirm_seconds`` later (KasPro retries its callbacks; docs/kaspro.md)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from wallet_service.config import Config
from wallet_service.domain.phone import MobileNumber, parse_mobile_number
from wallet_service.kaspro import KasProCallbackInvalid, KasProClient, KasProError, parse_callback
from wallet_service.logs import new_trace_id, traced
from wallet_service.store.database import Database, Isolation
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.drift_checks import (
    ESCROW,
    Difference,
    Figures,
    InFlight,
    claim_escrow_check,
    claim_wallets,
    difference_of,
    escrow_figures,
    finish_wallet,
    in_flight,
    ledger_figures,
    note_activity,
    note_every_wallet,
    release_wallet,
    settled_references,
)
from wallet_service.store.drifts import Drift, DriftKind, clear_drift, record_drift

log = logging.getLogger(__name__)

# Every transaction of the check: its reads need only be consistent with each other, and
# what it writes is its own rows, by compare-and-set or unique key. At SERIALIZABLE its
# wide reads (every open attempt, ride and parked callback) would take predicate locks
# that money transactions then conflict with.
SNAPSHOT = Isolation.SNAPSHOT

SUBSCRIBER = "subscriber:"
# KasPro inquiries of one pass at once.
CONCURRENT_INQUIRIES = 8
# Ledger lines are timed when their transaction runs and seen when it commits, a moment
# later: each scan reads again this far back, so a line that committed late is not missed
# (and a wallet active this shortly before its comparison is compared once more).
COMMIT_MARGIN_SECONDS = 10.0


@dataclass
class PassReport:
    """What one pass did: wallets compared and skipped, differences seen, drifts recorded
    (new or seen again) and cleared, and whether it checked escrow."""

    compared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    differences: dict[str, tuple[int, int]] = field(default_factory=dict)
    recorded: list[Drift] = field(default_factory=list)
    cleared: list[Drift] = field(default_factory=list)
    escrow_checked: bool = False


@dataclass(frozen=True)
class _Snapshot:
    flight: InFlight
    figures: dict[str, Figures]


@dataclass(frozen=True)
class _Verdict:
    """A comparison's outcome as written: the difference kept, the drift recorded or
    cleared; ``lost`` when another pass had taken the wallet meanwhile (nothing written)."""

    difference: Difference | None = None
    recorded: Drift | None = None
    cleared: Drift | None = None
    lost: bool = False


class DriftCheck:
    def __init__(
        self,
        db: Database,
        kaspro: KasProClient,
        clock: Callable[[], float],
        *,
        interval_seconds: float,
        batch: int,
        confirm_seconds: float,
        inquiry_timeout_seconds: float,
    ) -> None:
        self._db = db
        self._kaspro = kaspro
        self._clock = clock
        self._interval = interval_seconds
        self._batch = batch
        self._confirm = confirm_seconds
        self._inquiry_timeout = inquiry_timeout_seconds
        # A claim outlasts the longest pass: its inquiries in rounds, each within its
        # timeout. Should one lapse all the same, the late pass writes nothing.
        rounds = -(-batch // CONCURRENT_INQUIRIES)
        self._claim_seconds = (rounds + 2) * inquiry_timeout_seconds + COMMIT_MARGIN_SECONDS
        self._slots = asyncio.Semaphore(CONCURRENT_INQUIRIES)

    @classmethod
    def configured(
        cls,
        db: Database,
        kaspro: KasProClient,
        clock: Callable[[], float],
        config: Config,
        *,
        confirm_seconds: float | None = None,
    ) -> DriftCheck:
        """The check as ``config`` sets it (a replica's; chaos's final sweep confirms at
        once, ``confirm_seconds=0``)."""
        return cls(
            db,
            kaspro,
            clock,
            interval_seconds=config.drift_check_interval_seconds,
            batch=config.drift_check_batch,
            confirm_seconds=(
                config.drift_confirm_seconds if confirm_seconds is None else confirm_seconds
            ),
            inquiry_timeout_seconds=config.kaspro_timeout_seconds,
        )

    async def run_once(self, *, every_wallet: bool = False) -> PassReport:
        """One pass: escrow's holds (once per interval across replicas), then a batch of
        the customer wallets due. ``every_wallet``: every wallet we know, due or not, all
        in this pass, and escrow whenever it was last checked (the end of a chaos run)."""
        report = PassReport()
        await self._check_escrow(report, every=0.0 if every_wallet else self._interval)
        if every_wallet:
            await self._db.run(lambda tx: note_every_wallet(tx, self._clock()), SNAPSHOT)
        else:
            await self._db.run(
                lambda tx: note_activity(tx, self._clock(), COMMIT_MARGIN_SECONDS, self._interval),
                SNAPSHOT,
            )
        token = f"{self._db.incarnation}:{secrets.token_hex(6)}"

        def claim(tx: DbTx) -> Awaitable[list[str]]:
            now = self._clock()
            recheck_before = now - max(self._confirm, self._interval)
            return claim_wallets(
                tx,
                token,
                now,
                now + self._claim_seconds,
                recheck_before,
                # The sweep takes every wallet; the periodic pass a bounded batch.
                None if every_wallet else self._batch,
            )

        accounts = await self._db.run(claim, SNAPSHOT)
        if accounts:
            await self._compare(accounts, token, report)
        return report

    async def run_forever(self) -> None:
        while True:
            try:
                with traced(new_trace_id()):  # each pass's lines under a trace of its own
                    await self.run_once()
            except Exception:
                log.exception("drift check pass failed; trying again next interval")
            await asyncio.sleep(self._interval)

    async def _check_escrow(self, report: PassReport, every: float) -> None:
        """Escrow's ledger balance against the open holds: the database alone, in one
        transaction, so nothing in flight can come between the two figures."""

        async def check(tx: DbTx) -> tuple[bool, int, int, Drift | None, Drift | None]:
            now = self._clock()
            if not await claim_escrow_check(tx, now, every):
                return False, 0, 0, None, None
            ours, holds = await escrow_figures(tx)
            if ours == holds:
                return True, ours, holds, None, await clear_drift(tx, ESCROW, DriftKind.HOLDS, now)
            drift = await record_drift(tx, ESCROW, DriftKind.HOLDS, ours, holds, now)
            return True, ours, holds, drift, None

        checked, ours, holds, recorded, cleared = await self._db.run(check, SNAPSHOT)
        report.escrow_checked = checked
        if ours != holds:
            report.differences[ESCROW] = (ours, holds)
        self._tell(ESCROW, ours, holds, recorded, cleared, report, what="the open holds")

    async def _compare(self, accounts: list[str], token: str, report: PassReport) -> None:
        compared_at = self._clock()
        before = await self._db.run(lambda tx: _snapshot(tx, accounts), SNAPSHOT)
        busy = _busy(accounts, before.flight)
        quiet = [a for a in accounts if a not in busy]
        balances = dict(
            zip(
                quiet,
                await asyncio.gather(*(self._inquire(a) for a in quiet)),
                strict=True,
            )
        )
        after = await self._db.run(lambda tx: _snapshot(tx, accounts), SNAPSHOT)
        busy |= _busy(accounts, after.flight)
        for account in accounts:
            theirs = balances.get(account)
            ours = after.figures[account]
            if theirs is None or account in busy or ours != before.figures[account]:
                # Something moved (or KasPro did not answer): no comparison this time.
                await self._db.run(
                    functools.partial(self._release, account=account, token=token), SNAPSHOT
                )
                report.skipped.append(account)
                continue
            verdict = await self._db.run(
                functools.partial(
                    self._judge,
                    account=account,
                    token=token,
                    compared_at=compared_at,
                    ours=ours.balance_idr,
                    theirs=theirs,
                ),
                SNAPSHOT,
            )
            if verdict.lost:
                report.skipped.append(account)
                continue
            report.compared.append(account)
            if ours.balance_idr != theirs:
                report.differences[account] = (ours.balance_idr, theirs)
            self._tell(
                account,
                ours.balance_idr,
                theirs,
                verdict.recorded,
                verdict.cleared,
                report,
                what="KasPro's balance",
            )

    async def _release(self, tx: DbTx, account: str, token: str) -> None:
        await release_wallet(tx, account, token, self._clock())

    async def _judge(
        self, tx: DbTx, account: str, token: str, compared_at: float, ours: int, theirs: int
    ) -> _Verdict:
        """Write one comparison: the books agree (the drift, if any, cleared), or a
        difference, recorded once the same one was seen ``confirm_seconds`` before."""
        now = self._clock()
        if ours == theirs:
            if not await finish_wallet(tx, account, token, compared_at, None):
                return _Verdict(lost=True)
            return _Verdict(cleared=await clear_drift(tx, account, DriftKind.BALANCE, now))
        previous = await difference_of(tx, account)
        same = previous is not None and previous.theirs_idr - previous.ours_idr == theirs - ours
        since = previous.since if previous is not None and same else now
        difference = Difference(since, ours, theirs)
        if not await finish_wallet(tx, account, token, compared_at, difference):
            return _Verdict(lost=True)
        if same and now - since >= self._confirm:
            recorded = await record_drift(tx, account, DriftKind.BALANCE, ours, theirs, now)
            return _Verdict(difference=difference, recorded=recorded)
        return _Verdict(difference=difference)

    async def _inquire(self, account: str) -> int | None:
        """KasPro's balance of a customer wallet; None when it cannot be had now."""
        mobile = _mobile(account)
        async with self._slots:
            try:
                found = await self._kaspro.account_inquiry(mobile, timeout=self._inquiry_timeout)
            except KasProError as exc:
                log.info("drift check: no balance of %s from KasPro now (%s)", mobile.masked, exc)
                return None
        return found.balance.available_idr

    def _tell(
        self,
        account: str,
        ours: int,
        theirs: int,
        recorded: Drift | None,
        cleared: Drift | None,
        report: PassReport,
        *,
        what: str,
    ) -> None:
        """Log a drift recorded (WARNING) or cleared, after its transaction committed."""
        shown = _shown(account)
        if recorded is not None:
            report.recorded.append(recorded)
            log.warning(
                "drift %d on %s: %s is %d IDR, our ledger %d IDR (%+d), open since %.0f",
                recorded.id,
                shown,
                what,
                theirs,
                ours,
                theirs - ours,
                recorded.detected_at,
            )
        if cleared is not None:
            report.cleared.append(cleared)
            log.info("drift %d on %s cleared: the figures agree again", cleared.id, shown)


async def _snapshot(tx: DbTx, accounts: list[str]) -> _Snapshot:
    """What is in flight and the accounts' ledger figures, in one transaction."""
    flight = await in_flight(tx)
    live = await _live_callbacks(tx, flight.callback_bodies)
    return _Snapshot(
        dataclasses.replace(flight, callback_bodies=live), await ledger_figures(tx, accounts)
    )


async def _live_callbacks(tx: DbTx, bodies: Iterable[bytes]) -> tuple[bytes, ...]:
    """The stored callbacks not applied yet that may still move money: not those naming
    an attempt already final or a top-up already booked (a replica killed between
    storing a callback and applying it leaves one, applied a minute later as a
    duplicate: it must not keep its wallet from being compared meanwhile)."""
    parsed = []
    for raw in bodies:
        with contextlib.suppress(KasProCallbackInvalid):
            parsed.append((raw, parse_callback(raw)))
    if not parsed:
        return ()
    settled = await settled_references(
        tx, [c.request_id for _, c in parsed], [c.reff_id for _, c in parsed]
    )
    return tuple(
        raw for raw, c in parsed if c.request_id not in settled and c.reff_id not in settled
    )


def _busy(accounts: Iterable[str], flight: InFlight) -> set[str]:
    """The accounts whose money something in flight may move."""
    numbers = set(flight.customers)
    for raw in flight.callback_bodies:
        with contextlib.suppress(KasProCallbackInvalid):
            named = parse_callback(raw).mobile_number
            if named is not None:
                numbers.add(named.canonical)
    busy = set()
    for account in accounts:
        mobile = _mobile(account)
        if mobile.canonical in numbers or any(
            code.endswith(mobile.national) for code in flight.top_up_codes
        ):
            busy.add(account)
    return busy


def _mobile(account: str) -> MobileNumber:
    return parse_mobile_number(account.removeprefix(SUBSCRIBER))


def _shown(account: str) -> str:
    """The account as logs show it: a customer's number masked."""
    if account.startswith(SUBSCRIBER):
        return SUBSCRIBER + _mobile(account).masked
    return account
