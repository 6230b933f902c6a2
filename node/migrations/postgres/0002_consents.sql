-- Consent records. The terms are the encoded exitnet.v1.ConsentTerms as
-- recorded; a consent is never changed except for its withdrawal time.
CREATE TABLE consents (
    consent_id        TEXT PRIMARY KEY,
    owner             TEXT NOT NULL,
    team              TEXT,
    request_key       TEXT NOT NULL,
    request_digest    BYTEA NOT NULL,
    subject_ref       TEXT NOT NULL,
    terms             BYTEA NOT NULL,
    collection_method TEXT NOT NULL,
    witness           TEXT NOT NULL,
    recorded_by       TEXT NOT NULL,
    recorded_at       BIGINT NOT NULL,
    valid_until       BIGINT NOT NULL,
    withdrawn_at      BIGINT,
    UNIQUE (owner, request_key)
);
CREATE INDEX consents_by_time ON consents (recorded_at, consent_id);
CREATE INDEX consents_by_subject ON consents (subject_ref);
