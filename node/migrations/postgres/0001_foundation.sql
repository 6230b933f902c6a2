-- Node metadata (organisation ID, pseudonym secret …), one value per key.
CREATE TABLE node_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Invitations this node issued. The secret is kept only as a SHA-256 hash.
CREATE TABLE invitations (
    id          TEXT PRIMARY KEY,
    secret_hash BYTEA NOT NULL,
    expires_at  BIGINT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
);

-- Peers and their states. The profile is the encoded exitnet.v1.OrgProfile.
CREATE TABLE peers (
    org_id       TEXT PRIMARY KEY,
    profile      BYTEA NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'revoked', 'rejected')),
    awaiting     TEXT NOT NULL CHECK (awaiting IN ('local', 'remote', 'none')),
    remote_state TEXT CHECK (remote_state IN ('pending', 'active', 'suspended', 'revoked', 'rejected')),
    endpoint     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    last_seen_at BIGINT
);

-- Keys pinned for peers; a retired key is accepted until valid_until.
CREATE TABLE peer_keys (
    fingerprint TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES peers (org_id) ON DELETE CASCADE,
    spki        BYTEA NOT NULL,
    added_at    BIGINT NOT NULL,
    valid_until BIGINT
);
CREATE INDEX peer_keys_org ON peer_keys (org_id);

-- Outbox of notices to peers (state changes, profiles, key rotations).
CREATE TABLE peer_notices (
    id              BIGSERIAL PRIMARY KEY,
    notice_id       TEXT NOT NULL UNIQUE,
    org_id          TEXT NOT NULL REFERENCES peers (org_id) ON DELETE CASCADE,
    payload         BYTEA NOT NULL,
    present_key     TEXT,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    delivered_at    BIGINT,
    dropped_at      BIGINT
);
CREATE INDEX peer_notices_undelivered ON peer_notices (id) WHERE delivered_at IS NULL AND dropped_at IS NULL;

-- Notice IDs received from each peer, so a redelivery changes nothing.
CREATE TABLE seen_notices (
    org_id      TEXT NOT NULL,
    notice_id   TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, notice_id)
);

-- Refused calls: who, when, why. Never a payload.
CREATE TABLE security_events (
    id              BIGSERIAL PRIMARY KEY,
    at              BIGINT NOT NULL,
    surface         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    key_fingerprint TEXT,
    org_id          TEXT,
    remote_addr     TEXT,
    method          TEXT
);
