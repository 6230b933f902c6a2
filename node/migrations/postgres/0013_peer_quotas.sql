-- Per-peer quotas (limits.peer_max_pending_intake, limits.peer_checkpoints_per_day)
-- are checked on every offer and checkpoint a peer sends: both counts are
-- read from an index, not a scan of the table.
CREATE INDEX referrals_pending_intake ON referrals (peer_org, state) WHERE direction = 'inbound';
CREATE INDEX witnessed_checkpoints_by_received ON witnessed_checkpoints (org_id, received_at);
