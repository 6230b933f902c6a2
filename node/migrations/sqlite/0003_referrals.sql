-- Referrals, both directions. Case content (summary) is the encoded
-- exitnet.v1.CaseSummary; a purge sets it to NULL and keeps the tombstone
-- (IDs, times, states).
CREATE TABLE referrals (
    referral_id    TEXT PRIMARY KEY,
    direction      TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    peer_org       TEXT NOT NULL,
    owner          TEXT NOT NULL,
    team           TEXT,
    request_key    TEXT,
    request_digest BLOB,
    consent_id     TEXT,
    pseudonym      TEXT NOT NULL,
    need_areas     TEXT NOT NULL,
    services       TEXT NOT NULL,
    urgency        TEXT NOT NULL,
    -- Sealed (AES-256-GCM) under the data key key_id.
    key_id         TEXT NOT NULL,
    summary        BLOB,
    terms          BLOB NOT NULL,
    state          TEXT NOT NULL,
    purge_status   TEXT NOT NULL,
    purged_at      INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (owner, request_key)
);
CREATE INDEX referrals_by_time ON referrals (created_at, referral_id);
CREATE INDEX referrals_by_consent ON referrals (consent_id);

-- Every state change, in order: the closed loop's history.
CREATE TABLE referral_events (
    referral_id TEXT NOT NULL REFERENCES referrals (referral_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    by_org      TEXT NOT NULL,
    -- Who at this node made the change; never sent to a peer.
    actor       TEXT NOT NULL,
    detail      BLOB NOT NULL,
    PRIMARY KEY (referral_id, seq)
);

-- Receipts: those we signed for messages we received (returned again on a
-- redelivery), and those peers signed for messages we sent (kept as proof).
CREATE TABLE receipts (
    message_id  TEXT NOT NULL,
    issued_by   TEXT NOT NULL,
    -- The other party: the sender of the message a receipt acknowledges.
    counterpart TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     BLOB NOT NULL,
    signature   BLOB NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (message_id, issued_by, counterpart)
);
CREATE INDEX receipts_by_referral ON receipts (referral_id);

-- Data keys of case content, wrapped by the master key (kept outside the
-- database). Deleting one makes its content unreadable, also in old backups.
CREATE TABLE data_keys (
    key_id     TEXT PRIMARY KEY,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
