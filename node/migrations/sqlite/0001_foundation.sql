-- Node metadata (organisation ID, pseudonym secret …), one value per key.
CREATE TABLE node_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Invitations this node issued. The secret is kept only as a SHA-256 hash.
CREATE TABLE invitations (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    used_by     TEXT
);

-- Peers and their states. The profile is the encoded exitnet.v1.OrgProfile.
CREATE TABLE peers (
    org_id       TEXT PRIMARY KEY,
    profile      BLOB NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'revoked', 'rejected')),
    awaiting     TEXT NOT NULL CHECK (awaiting IN ('local', 'remote', 'none')),
    remote_state TEXT CHECK (remote_state IN ('pending', 'active', 'suspended', 'revoked', 'rejected')),
    endpoint     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_seen_at INTEGER
);

-- Keys pinned for peers; a retired key is accepted until valid_until.
CREATE TABLE peer_keys (
    fingerprint TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES peers (org_id) ON DELETE CASCADE,
    spki        BLOB NOT NULL,
    added_at    INTEGER NOT NULL,
    valid_until INTEGER
);
CREATE INDEX peer_keys_org ON peer_keys (org_id);

-- Outbox of notices to peers (state changes, profiles, key rotations).
CREATE TABLE peer_notices (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_id       TEXT NOT NULL UNIQUE,
    org_id          TEXT NOT NULL REFERENCES peers (org_id) ON DELETE CASCADE,
    payload         BLOB NOT NULL,
    present_key     TEXT,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    delivered_at    INTEGER,
    dropped_at      INTEGER
);
CREATE INDEX peer_notices_undelivered ON peer_notices (id) WHERE delivered_at IS NULL AND dropped_at IS NULL;

-- Notice IDs received from each peer, so a redelivery changes nothing.
CREATE TABLE seen_notices (
    org_id      TEXT NOT NULL,
    notice_id   TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, notice_id)
);

-- Refused calls: who, when, why. Never a payload.
CREATE TABLE security_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    surface         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    key_fingerprint TEXT,
    org_id          TEXT,
    remote_addr     TEXT,
    method          TEXT
);
