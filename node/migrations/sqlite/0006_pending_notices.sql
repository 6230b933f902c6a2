-- What is still to be delivered, per peer: the delivery task's queue and the
-- count shown with each peer are read on every referral, so they come from
-- this (small) index instead of a scan of every undelivered notice.
CREATE INDEX peer_notices_pending ON peer_notices (org_id, id) WHERE delivered_at IS NULL AND dropped_at IS NULL;
