-- When a pending attempt's step was last sent again (NULL: only when it was created).
-- "Not found" is only trusted, and the step sent again, once the last send cannot still
-- be on its way to KasPro (docs/kaspro.md, "When a step is sent again").
ALTER TABLE attempts ADD COLUMN last_sent_at REAL;
