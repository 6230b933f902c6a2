-- Leases: several replicas of one node (on one PostgreSQL database) share the
-- work of delivery; a delivery task holds the lease of its peer while it runs
-- and renews it, so no two replicas send to one peer at once. A replica that
-- dies loses its leases when they expire, and another takes over.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
