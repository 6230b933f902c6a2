-- A sender's data keys are its clients' (key_id 'subject:…'), shared by
-- their referrals: one is destroyed when the last referral whose content is
-- kept under it is purged, which looks up the live referrals by key.
CREATE INDEX referrals_live_by_key ON referrals (key_id) WHERE purge_status = 'none';
