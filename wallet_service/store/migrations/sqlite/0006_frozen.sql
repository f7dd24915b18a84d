-- Operations frozen for review are counted on every /metrics scrape (an alert): the
-- partial index holds only them, so the count never reads the whole table.
CREATE INDEX transactions_frozen ON transactions (id) WHERE frozen != '';

-- What callbacks.status means since this version (0002 describes the rest): 'frozen',
-- the callback contradicted what we asked or an earlier final answer, and froze the
-- transaction; 'ignored', a non-final word for a final attempt, or a further answer
-- for a transaction already frozen (kept as evidence on the attempt, never applied).
