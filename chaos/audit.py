"""The auditor: the service's database (read-only; SQLite or PostgreSQL, chaos/store.py)
against the sandbox's books and what the callers saw. Each check returns its violations;
an empty list is a pass.

Domain tables (forward-only statuses) are imported read-only from wallet_service.domain.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.store import Row
from chaos.watch import Watcher
from chaos.workload import OpRecord
from wallet_service.domain.money import RIDE_TRANSITIONS, TX_TRANSITIONS, RideStatus, TxStatus

MAX_LISTED = 500  # violations kept in the JSON result

FINAL_TX = {"SUCCEEDED", "FAILED", "REVERSED"}
OPEN_TX = {"PENDING", "PROCESSING"}
TRANSIENT_RIDE = {"AUTHORIZING", "CAPTURING", "VOIDING"}
# What a caller's answer said, and what the operation must end as.
SEEN_DONE = {"SUCCEEDED", "AUTHORIZED", "CAPTURED", "VOIDED"}
TOP_UP_TYPES = ("TOP_UP", "DRIVER_DEPOSIT")


@dataclass
class Check:
    key: str
    title: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "ok": self.ok,
            "checked": self.checked,
            "violations": len(self.violations),
            "list": self.violations[:MAX_LISTED],
        }


def canonical(local: str) -> str:
    return "62" + local[1:]


class Books:
    """The service's database, as read once (``Store.tables``)."""

    def __init__(self, tables: Mapping[str, list[Row]]) -> None:
        self.transactions = {r["id"]: r for r in tables["transactions"]}
        self.attempts = {r["reference"]: r for r in tables["attempts"]}
        self.attempts_of: dict[str, list[Row]] = defaultdict(list)
        for attempt in self.attempts.values():
            self.attempts_of[attempt["transaction_id"]].append(attempt)
        self.rides = {r["ride_id"]: r for r in tables["ride_payments"]}
        self.lines = tables["ledger_lines"]
        # In sequence order; on PostgreSQL, committed events the numbering step has not
        # reached yet follow, in the order they were written (``id``): the order the
        # next step will number them in.
        self.events = sorted(tables["events"], key=_event_order)
        self.unnumbered = [e for e in self.events if e["sequence"] is None]
        self.keys = {
            (r["caller"], r["method"], r["request_id"]): r for r in tables["idempotency_keys"]
        }
        self.callbacks = Counter(r["status"] for r in tables["callbacks"])
        self.top_ups = {
            r["kaspro_reference"]: r
            for r in self.transactions.values()
            if r["type"] in TOP_UP_TYPES
        }

    def balances(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for line in self.lines:
            totals[line["account"]] += line["amount_idr"]
        return dict(totals)


def _event_order(event: Row) -> tuple[bool, int, int]:
    sequence = event["sequence"]
    return (sequence is None, sequence or 0, event.get("id", 0))


@dataclass
class Sandbox:
    """What the sandbox says happened (its control endpoints)."""

    transactions: list[Row]
    journal: list[Row]
    balances: Row
    callbacks: list[Row]
    requests: list[Row]
    stats: Row

    def __post_init__(self) -> None:
        self.by_request = {t["requestId"]: t for t in self.transactions}
        self.moves: dict[str, list[Row]] = defaultdict(list)
        self.refunds: dict[str, list[Row]] = defaultdict(list)
        for entry in self.journal:
            target = self.refunds if entry["type"] == "REFUND" else self.moves
            target[entry["requestId"]].append(entry)


# Checks on the database alone: also run on the copy a SIGKILL left behind.


def ledger_violations(books: Books) -> list[str]:
    """Each transaction's lines, and each leg's, sum to zero."""
    found = []
    by_tx: dict[str, int] = defaultdict(int)
    by_leg: dict[str, int] = defaultdict(int)
    for line in books.lines:
        by_tx[line["transaction_id"]] += line["amount_idr"]
        by_leg[line["reference"]] += line["amount_idr"]
    found += [f"transaction {t} lines sum to {s}" for t, s in by_tx.items() if s]
    found += [f"leg {r} lines sum to {s}" for r, s in by_leg.items() if s]
    return found


def escrow_violations(books: Books) -> list[str]:
    """Escrow equals the open holds: per ride, and in total."""
    escrow_by_tx: dict[str, int] = defaultdict(int)
    total = 0
    for line in books.lines:
        if line["account"] == "escrow":
            escrow_by_tx[line["transaction_id"]] += line["amount_idr"]
            total += line["amount_idr"]
    found = []
    expected_total = 0
    for ride in books.rides.values():
        status = ride["status"]
        held = ride["held_amount_idr"]
        settle = ride["settle_transaction"]
        booked = escrow_by_tx.get(ride["hold_transaction"], 0) + (
            escrow_by_tx.get(settle, 0) if settle else 0
        )
        if status == "AUTHORIZED":
            expected = held
        elif status in ("CAPTURING", "VOIDING"):
            # The hold less the legs already paid out of escrow.
            expected = held + (escrow_by_tx.get(settle, 0) if settle else 0)
        else:  # AUTHORIZING, FAILED: nothing taken; CAPTURED, VOIDED, EXPIRED: all paid out
            expected = 0
        expected_total += expected
        if booked != expected:
            found.append(
                f"ride {ride['ride_id']} ({status}): escrow holds {booked}, expected {expected}"
            )
    if total != expected_total:
        found.append(f"escrow account {total} != open holds {expected_total}")
    return found


def event_violations(books: Books) -> list[str]:
    """Sequences 1..N without gaps; per transaction and ride, every status change in
    order along the forward-only tables, ending at the status in the table."""
    found = []
    sequences = [e["sequence"] for e in books.events if e["sequence"] is not None]
    if sequences != list(range(1, len(sequences) + 1)):
        missing = sorted(set(range(1, (max(sequences) if sequences else 0) + 1)) - set(sequences))
        found.append(f"event sequence has gaps: missing {missing[:10]}")
    history: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in books.events:
        if event["type"] not in ("TRANSACTION_UPDATED", "RIDE_PAYMENT_UPDATED"):
            continue
        snapshot = json.loads(event["snapshot"])
        history[(event["type"], event["subject_id"])].append(snapshot["status"])
    for tx in books.transactions.values():
        statuses = history.get(("TRANSACTION_UPDATED", tx["id"]), [])
        first = "SUCCEEDED" if tx["type"] in TOP_UP_TYPES else "PENDING"
        found += _walk(
            f"transaction {tx['id']} ({tx['type']})", statuses, first, tx["status"], _tx_step
        )
    for ride in books.rides.values():
        statuses = history.get(("RIDE_PAYMENT_UPDATED", ride["ride_id"]), [])
        found += _walk(
            f"ride {ride['ride_id']}", statuses, "AUTHORIZING", ride["status"], _ride_step
        )
    known = {("TRANSACTION_UPDATED", t) for t in books.transactions} | {
        ("RIDE_PAYMENT_UPDATED", r) for r in books.rides
    }
    found += [
        f"events for unknown {kind} {subject}"
        for kind, subject in history
        if (kind, subject) not in known
    ]
    return found


def _tx_step(a: str, b: str) -> bool:
    return TxStatus(b) in TX_TRANSITIONS[TxStatus(a)]


def _ride_step(a: str, b: str) -> bool:
    return RideStatus(b) in RIDE_TRANSITIONS[RideStatus(a)]


def _walk(name: str, statuses: list[str], first: str, final: str, step: Any) -> list[str]:
    if not statuses:
        return [f"{name}: no event at all (status {final})"]
    found = []
    if statuses[0] != first:
        found.append(f"{name}: first event {statuses[0]}, expected {first}")
    for a, b in itertools.pairwise(statuses):
        if a != b and not step(a, b):
            found.append(f"{name}: events go {a} -> {b}, not allowed ({' > '.join(statuses)})")
    if statuses[-1] != final:
        found.append(f"{name}: last event {statuses[-1]} but the table says {final}")
    return found


def database_checks(books: Books) -> list[str]:
    """What must hold at any instant, even the instant of a SIGKILL."""
    return ledger_violations(books) + escrow_violations(books) + event_violations(books)


# The audit after the run.


def audit(
    books: Books,
    sandbox: Sandbox,
    records: list[OpRecord],
    watcher: Watcher,
    crash_findings: list[list[str]],
) -> list[Check]:
    return [
        once(books, sandbox, records),
        known(books, sandbox),
        balances(books, sandbox),
        ledger(books),
        settled(books, sandbox),
        events(books, watcher),
        crashes(crash_findings),
        answers(records),
    ]


def _operation_tx(books: Books, record: OpRecord, operation: str) -> Row | None:
    if record.kind in ("authorize", "capture", "void"):
        ride = books.rides.get(operation.removeprefix("ride:"))
        if ride is None:
            return None
        if record.kind == "authorize":
            return books.transactions.get(ride["hold_transaction"])
        tx = books.transactions.get(ride["settle_transaction"])
        wanted = "RIDE_CAPTURE" if record.kind == "capture" else "RIDE_VOID"
        return tx if tx is not None and tx["type"] == wanted else None
    return books.transactions.get(operation)


def once(books: Books, sandbox: Sandbox, records: list[OpRecord]) -> Check:
    check = Check(
        "once",
        "every operation a caller saw succeed happened exactly once at the sandbox",
    )
    # Every leg the service booked moved money exactly once at KasPro; every leg it
    # failed moved nothing (or was refunded).
    for reference, attempt in books.attempts.items():
        moves, refunds = sandbox.moves.get(reference, []), sandbox.refunds.get(reference, [])
        if attempt["status"] == "succeeded":
            check.checked += 1
            if len(moves) != 1 or refunds:
                check.fail(
                    f"leg {reference} ({attempt['leg']}) booked once, sandbox moved it "
                    f"{len(moves)} time(s), refunded {len(refunds)}"
                )
            elif moves[0]["amount"] != attempt["amount_idr"]:
                check.fail(
                    f"leg {reference}: booked {attempt['amount_idr']}, sandbox moved "
                    f"{moves[0]['amount']}"
                )
        elif attempt["status"] == "failed":
            check.checked += 1
            if len(moves) != len(refunds) or len(moves) > 1:
                check.fail(
                    f"leg {reference} ({attempt['leg']}) failed at the service, sandbox moved "
                    f"it {len(moves)} time(s), refunded {len(refunds)}"
                )
    for record in records:
        if record.outcome == "ok" and record.kind == "topup":
            check.checked += 1
            top_up = books.top_ups.get(record.kaspro_reff_id)
            moves = sandbox.moves.get(record.kaspro_request_id, [])
            if top_up is None:
                check.fail(
                    f"top-up {record.kaspro_request_id} ({record.amount_idr} IDR, "
                    f"{record.op_id}) credited at the sandbox, unknown to the service"
                )
            elif top_up["amount_idr"] != record.amount_idr or len(moves) != 1:
                check.fail(
                    f"top-up {record.kaspro_request_id}: service {top_up['amount_idr']}, "
                    f"sandbox moved {len(moves)} time(s)"
                )
            continue
        if record.kind == "topup" or record.outcome not in ("ok", "refused"):
            continue
        check.checked += 1
        key = books.keys.get((record.caller, record.method, record.request_id))
        operation = key["operation_id"] if key else None
        if record.outcome == "refused":
            if operation is None:
                continue  # refused before anything was created
            tx = _operation_tx(books, record, operation)
            if tx is not None and tx["status"] != "FAILED":
                check.fail(
                    f"{record.op_id} {record.method} {record.request_id}: caller was refused "
                    f"({record.reason}) but the operation is {tx['status']}"
                )
            continue
        if operation is None:
            check.fail(
                f"{record.op_id} {record.method} {record.request_id}: caller saw "
                f"{record.status}, the service has no operation for the key"
            )
            continue
        tx = _operation_tx(books, record, operation)
        if tx is None:
            check.fail(
                f"{record.op_id} {record.method} {record.request_id}: caller saw "
                f"{record.status}, operation {operation} has no such transaction"
            )
            continue
        if record.transaction_id and record.transaction_id != tx["id"]:
            check.fail(
                f"{record.op_id}: caller was told transaction {record.transaction_id}, "
                f"the key points at {tx['id']}"
            )
        if record.status in SEEN_DONE and tx["status"] != "SUCCEEDED":
            check.fail(
                f"{record.op_id} {record.method} {record.request_id}: caller saw "
                f"{record.status}, the transaction ended {tx['status']}"
            )
        elif tx["status"] not in FINAL_TX:
            check.fail(
                f"{record.op_id} {record.method} {record.request_id}: caller saw "
                f"{record.status}, the transaction is still {tx['status']}"
            )
    return check


def known(books: Books, sandbox: Sandbox) -> Check:
    check = Check("known", "nothing happened at the sandbox that the service does not know about")
    for transaction in sandbox.transactions:
        check.checked += 1
        request_id = transaction["requestId"]
        if transaction["type"] == "TOPUP":
            if transaction["reffId"] not in books.top_ups:
                check.fail(
                    f"top-up {request_id} of {transaction['amount']} IDR to "
                    f"{transaction['mobileNumber']} (callback fault "
                    f"{transaction['callbackFault']}) is not in the service's books"
                )
            continue
        attempt = books.attempts.get(request_id)
        moved = len(sandbox.moves.get(request_id, [])) - len(sandbox.refunds.get(request_id, []))
        if attempt is None:
            check.fail(
                f"{transaction['type']} {request_id} ({transaction['status']}, moved {moved}) "
                "has no attempt at the service"
            )
        elif moved == 1 and attempt["status"] != "succeeded":
            check.fail(
                f"{transaction['type']} {request_id} moved money, the service's attempt is "
                f"{attempt['status']}"
            )
        elif moved == 0 and attempt["status"] == "succeeded":
            check.fail(
                f"{transaction['type']} {request_id} moved nothing (net), the service's "
                "attempt succeeded"
            )
    return check


def balances(books: Books, sandbox: Sandbox) -> Check:
    check = Check("balances", "the sandbox's balances equal the service's ledger")
    ledger_totals = books.balances()
    seen = set()
    for number, balance in sandbox.balances["subscribers"].items():
        account = f"subscriber:{canonical(number)}"
        seen.add(account)
        check.checked += 1
        if ledger_totals.get(account, 0) != balance:
            check.fail(
                f"{number}: sandbox {balance}, ledger {ledger_totals.get(account, 0)} "
                f"(off by {balance - ledger_totals.get(account, 0)})"
            )
    for account in ledger_totals:
        if account.startswith("subscriber:") and account not in seen:
            check.fail(f"{account} in the ledger is not a sandbox customer")
    for name in ("escrow", "merchant", "corporate"):
        check.checked += 1
        there = sandbox.balances["platform"].get(name, 0)
        if ledger_totals.get(name, 0) != there:
            check.fail(f"{name}: sandbox {there}, ledger {ledger_totals.get(name, 0)}")
    external = sandbox.balances["external"]
    check.checked += 2
    paid_out = external["bank"] + external["qris"] + external["retail"]
    booked_out = sum(
        ledger_totals.get(a, 0)
        for a in ("external:bank", "external:qris", "external:retail", "kaspro:fees")
    )
    if paid_out != booked_out:
        check.fail(
            f"paid out to bank/QRIS/retail (fees included): sandbox {paid_out}, ledger {booked_out}"
        )
    if external["va"] != -ledger_totals.get("external:va", 0):
        check.fail(
            f"VA top-ups: sandbox {external['va']}, ledger {-ledger_totals.get('external:va', 0)}"
        )
    return check


def ledger(books: Books) -> Check:
    check = Check("ledger", "every ledger transaction sums to zero; escrow equals the open holds")
    check.checked = len({line["transaction_id"] for line in books.lines}) + len(books.rides)
    check.violations = ledger_violations(books) + escrow_violations(books)
    return check


def settled(books: Books, sandbox: Sandbox) -> Check:
    check = Check("settled", "no transaction is left PROCESSING once the sandbox has settled it")
    for tx in books.transactions.values():
        check.checked += 1
        legs = books.attempts_of.get(tx["id"], [])
        there = {
            a["reference"]: sandbox.by_request.get(a["reference"], {}).get("status", "NOT FOUND")
            for a in legs
        }
        if tx["frozen"]:
            check.fail(f"transaction {tx['id']} ({tx['type']}) frozen for review: {tx['frozen']}")
        if tx["status"] in OPEN_TX:
            what = (
                "the sandbox settled it"
                if all(s != "PENDING" for s in there.values())
                else "the sandbox still has it PENDING"
            )
            check.fail(
                f"transaction {tx['id']} ({tx['type']}) still {tx['status']}, {what}: {there}"
            )
            continue
        for attempt in legs:
            status = there[attempt["reference"]]
            agree = {"succeeded": ("SUCCESS",), "failed": ("FAILED",)}.get(attempt["status"], ())
            if status not in agree:
                check.fail(
                    f"leg {attempt['reference']} of {tx['id']} ({tx['type']}) is "
                    f"{attempt['status']}, the sandbox says {status}"
                )
    for ride in books.rides.values():
        check.checked += 1
        if ride["status"] in TRANSIENT_RIDE:
            check.fail(f"ride {ride['ride_id']} left {ride['status']}")
    for transaction in sandbox.transactions:
        if transaction["status"] == "PENDING":
            check.fail(f"sandbox transaction {transaction['requestId']} still PENDING")
    return check


def events(books: Books, watcher: Watcher) -> Check:
    check = Check(
        "events",
        "the event stream has every state change, in order per operation, no sequence gaps",
    )
    check.checked = len(books.events)
    check.violations = event_violations(books)
    if books.unnumbered:
        # Every replica was stopped in order: nothing may be left for a watcher not to see.
        ids = [e["id"] for e in books.unnumbered[:10]]
        check.fail(f"{len(books.unnumbered)} committed event(s) never numbered, e.g. ids {ids}")
    by_sequence = {e["sequence"]: e["event_id"] for e in books.events if e["sequence"]}
    received: dict[int, str] = {}
    for sequence, event_id in watcher.arrived:
        if received.setdefault(sequence, event_id) != event_id:
            check.fail(f"WatchEvents gave two events for sequence {sequence}")
    missing = sorted(set(by_sequence) - set(received))
    if missing:
        check.fail(f"WatchEvents never delivered {len(missing)} event(s), e.g. {missing[:10]}")
    check.violations += [f"WatchEvents {g}" for g in watcher.gaps]
    check.violations += [f"WatchEvents {d}" for d in watcher.disorder]
    wrong = [s for s, e in received.items() if by_sequence.get(s) != e]
    if wrong:
        check.fail(f"WatchEvents events differ from the outbox at sequences {wrong[:10]}")
    return check


def crashes(findings: list[list[str]]) -> Check:
    check = Check(
        "crash", "at every SIGKILL the database alone was consistent (ledger, escrow, events)"
    )
    check.checked = len(findings)
    for n, found in enumerate(findings, 1):
        check.violations += [f"kill {n}: {v}" for v in found]
    return check


def answers(records: list[OpRecord]) -> Check:
    check = Check("answers", "callers only got answers the contract allows")
    check.checked = len(records)
    for record in records:
        if record.outcome == "unexpected":
            check.fail(f"{record.op_id} {record.method} {record.request_id}: {record.reason}")
        ended = f"{record.outcome} {record.status}".strip()
        check.violations += [
            f"{record.op_id} {record.method} {record.request_id}: INTERNAL, {message}"
            f" (retried; the caller ended with {ended})"
            for message in record.incidents
        ]
    return check
