-- Case content in a referral's history (the texts of a decline, failure or
-- hold, an outcome) is sealed under the referral's data key, in `content`;
-- `detail` keeps only the codes (state, reasons). A purge deletes `content`
-- (and, at a recipient, the data key). Details written before this
-- migration are split by the node at its next start (meta
-- `history_sealed`).
ALTER TABLE referral_events ADD COLUMN content BLOB;
-- When the terms a referral travelled under end (inbound: the recipient
-- purges by itself then); NULL where not known yet (filled at start).
ALTER TABLE referrals ADD COLUMN expires_at BIGINT;
CREATE INDEX referrals_live_inbound ON referrals (expires_at) WHERE direction = 'inbound' AND purge_status = 'none';
