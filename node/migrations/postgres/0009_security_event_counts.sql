-- Refusals are aggregated: one row per minute, surface, reason, key, peer,
-- address (without the port) and method, with how many there were, so a
-- flood of refused calls from strangers cannot fill the disk (the first of
-- each minute is logged, the rest counted). Rows recorded before this
-- migration keep a NULL key and a count of 1.
ALTER TABLE security_events ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE security_events ADD COLUMN agg_key TEXT;
CREATE UNIQUE INDEX security_events_by_agg_key ON security_events (agg_key);
CREATE INDEX security_events_by_at ON security_events (at);
