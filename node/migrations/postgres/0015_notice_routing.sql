-- What delivery needs to route a notice without opening its sealed payload:
-- its kind and, for a referral message, the referral it belongs to (messages
-- of one referral keep their order). NULL in rows queued before: delivery
-- reads those from the payload, as it did.
ALTER TABLE peer_notices ADD COLUMN kind TEXT;
ALTER TABLE peer_notices ADD COLUMN referral_id TEXT;
