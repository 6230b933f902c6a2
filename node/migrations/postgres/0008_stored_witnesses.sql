-- The witness this node signed for a peer's checkpoint, kept so that a
-- repeat of the same checkpoint is answered with the same witness (NULL for
-- checkpoints witnessed before this migration).
ALTER TABLE witnessed_checkpoints ADD COLUMN witness_payload BYTEA;
ALTER TABLE witnessed_checkpoints ADD COLUMN witness_signature BYTEA;
