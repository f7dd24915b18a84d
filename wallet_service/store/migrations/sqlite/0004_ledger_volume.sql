-- The monthly-volume check sums one account's ledger lines of the last 30 days on every
-- transfer: with the amount in the index the sum reads the index alone, not each line.
-- It replaces ledger_by_account, of which it is an extension.
CREATE INDEX ledger_by_account_volume ON ledger_lines (account, create_time, amount_idr);
DROP INDEX ledger_by_account;
