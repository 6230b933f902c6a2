-- The audit trail: a hash chain of records (identifiers, roles, actions,
-- results; never case content), written in the transaction of the action it
-- records. audit_head holds the chain's head; updating it serialises the
-- appends of concurrent transactions (and of several replicas).
CREATE TABLE audit_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    seq       BIGINT NOT NULL,
    head_hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, head_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor_kind   TEXT NOT NULL,
    actor        TEXT NOT NULL,
    role         TEXT NOT NULL,
    on_behalf_of TEXT NOT NULL,
    action       TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    consent_id   TEXT NOT NULL,
    peer_org     TEXT NOT NULL,
    result       TEXT NOT NULL,
    prev_hash    BYTEA NOT NULL,
    hash         BYTEA NOT NULL
);
CREATE INDEX audit_by_time ON audit_log (at);
CREATE INDEX audit_by_object ON audit_log (object_id);
CREATE INDEX audit_by_consent ON audit_log (consent_id);

-- Checkpoints this node signed, and the countersignatures peers returned.
CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY,
    head_hash BYTEA NOT NULL,
    at        BIGINT NOT NULL,
    payload   BYTEA NOT NULL,
    signature BYTEA NOT NULL
);
CREATE TABLE audit_witnesses (
    seq         BIGINT NOT NULL,
    witness_org TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (seq, witness_org)
);

-- Checkpoints of peers this node witnessed, kept as they were signed.
CREATE TABLE witnessed_checkpoints (
    org_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    head_hash   BYTEA NOT NULL,
    payload     BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, seq)
);
