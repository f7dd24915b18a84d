-- The audit of operators' actions through the AdminService (store/audit.py,
-- docs/operations.md "Operator tools"): one row per action, done or refused, written in
-- the transaction of its effect where it has one in our database (acknowledging a drift,
-- resolving a frozen operation); an inquiry's or a callback retry's effect is the
-- engine's own transaction, and its row follows it. A row is never changed or deleted.
-- The action's idempotency key names its row (idempotency_keys.operation_id =
-- 'admin:<id>'), so a retry of the request answers from it.
CREATE TABLE admin_actions (
    id            INTEGER PRIMARY KEY,
    -- The caller name of the operator's token.
    caller        TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('inquire_attempt',
                      'resolve_frozen_operation', 'retry_parked_callback',
                      'acknowledge_drift')),
    -- transaction:<id>, attempt:<reference>, callback:<id> or drift:<id>.
    target        TEXT NOT NULL,
    -- The operator's words, required.
    reason        TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('done', 'refused')),
    -- What it did, or the refusal's message.
    detail        TEXT NOT NULL DEFAULT '',
    -- For a refusal: the wallet.v1 ErrorReason it was refused with.
    error_reason  TEXT NOT NULL DEFAULT '',
    -- What the action found, as JSON (an inquiry: KasPro's answer; a callback retry:
    -- the verdict), for the answer to a retry of the same request.
    result        TEXT NOT NULL DEFAULT '{}',
    occurred_at   REAL NOT NULL
);
CREATE INDEX admin_actions_by_target ON admin_actions (target, id);
