-- A receipt signed in a batch keeps its inclusion proof (an encoded
-- exitnet.v1.BatchProof); NULL for a receipt signed alone.
ALTER TABLE receipts ADD COLUMN batch BLOB;
