"""The audit of operators' actions (migrations/sqlite/0012_admin_audit.sql): one row per
AdminService action, done or refused, never changed; a done one is also an event."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from wallet_service.store.database import Row, Source
from wallet_service.store.database import Transaction as DbTx
from wallet_service.store.events import append_event

# The event of a done action (its snapshot: the audit row).
ADMIN_ACTION = "ADMIN_ACTION"


class ActionType(enum.StrEnum):
    INQUIRE_ATTEMPT = "inquire_attempt"
    RESOLVE_FROZEN_OPERATION = "resolve_frozen_operation"
    RETRY_PARKED_CALLBACK = "retry_parked_callback"
    ACKNOWLEDGE_DRIFT = "acknowledge_drift"


class Outcome(enum.StrEnum):
    DONE = "done"
    REFUSED = "refused"


@dataclass(frozen=True)
class AdminAction:
    """One audit row: who did what to which target, why, and how it ended."""

    caller: str
    action: ActionType
    target: str
    reason: str
    request_id: str
    outcome: Outcome
    occurred_at: float
    detail: str = ""
    error_reason: str = ""  # a refusal's wallet.v1 reason
    result: dict[str, Any] = field(default_factory=dict)
    id: int = 0  # given by the database


_COLUMNS = (
    "id, caller, action, target, reason, request_id, outcome, detail, error_reason, "
    "result, occurred_at"
)


def _action(row: Row) -> AdminAction:
    return AdminAction(
        **{
            **row,
            "action": ActionType(row["action"]),
            "outcome": Outcome(row["outcome"]),
            "result": json.loads(row["result"]),
        }
    )


async def record_action(tx: DbTx, action: AdminAction) -> AdminAction:
    """Write ``action``'s row (and, when done, its event) in ``tx``; the row as stored."""
    row = await tx.fetch_one(
        """INSERT INTO admin_actions (caller, action, target, reason, request_id, outcome,
               detail, error_reason, result, occurred_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        (
            action.caller,
            action.action.value,
            action.target,
            action.reason,
            action.request_id,
            action.outcome.value,
            action.detail,
            action.error_reason,
            json.dumps(action.result),
            action.occurred_at,
        ),
    )
    assert row is not None
    stored = AdminAction(**{**asdict(action), "id": int(row["id"])})
    if stored.outcome is Outcome.DONE:
        await append_event(tx, ADMIN_ACTION, str(stored.id), snapshot(stored), stored.occurred_at)
    return stored


async def load_action(source: Source, action_id: int) -> AdminAction | None:
    row = await source.fetch_one(f"SELECT {_COLUMNS} FROM admin_actions WHERE id = ?", (action_id,))
    return None if row is None else _action(row)


async def actions_of(source: Source, target: str) -> list[AdminAction]:
    """Every action on ``target``, oldest first."""
    rows = await source.fetch_all(
        f"SELECT {_COLUMNS} FROM admin_actions WHERE target = ? ORDER BY id", (target,)
    )
    return [_action(row) for row in rows]


def snapshot(action: AdminAction) -> dict[str, Any]:
    data = asdict(action)
    data["action"] = action.action.value
    data["outcome"] = action.outcome.value
    return data


def action_from_snapshot(data: dict[str, Any]) -> AdminAction:
    return AdminAction(
        **{**data, "action": ActionType(data["action"]), "outcome": Outcome(data["outcome"])}
    )
