-- Refusals of money RPCs were stored as "REASON\nmessage"; every RPC now stores a refusal
-- the same way: "E" and a JSON object (flows/idempotency.py).
UPDATE idempotency_keys
SET response = CAST('E' || json_object(
        'reason', substr(CAST(response AS TEXT), 1, instr(CAST(response AS TEXT), char(10)) - 1),
        'message', substr(CAST(response AS TEXT), instr(CAST(response AS TEXT), char(10)) + 1),
        'violations', json_array(),
        'metadata', json_object()) AS BLOB)
WHERE state = 'done' AND operation_id IS NULL AND response IS NOT NULL
  AND method IN ('Transfer', 'TipDriver', 'CashOut', 'PayQris', 'AuthorizeRidePayment',
                 'CaptureRidePayment', 'VoidRidePayment');
