//! Audit checkpoints and witnesses: their payloads encoded (what is signed)
//! and read, and the signed forms to and from the wire.

use super::time::{from_timestamp, to_timestamp};
use crate::domain::audit::{Checkpoint, SignedCheckpoint, SignedWitness, Witnessing};
use exitnet_proto::pb;
use prost::Message;

/// The payload a checkpoint is signed as.
pub fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    pb::AuditCheckpoint {
        org_id: c.org_id.clone(),
        seq: c.seq,
        head_sha256: c.head_sha256.clone(),
        at: c.at_ms.map(to_timestamp),
        key_fingerprint: c.key_fingerprint.clone(),
    }
    .encode_to_vec()
}

/// A checkpoint's payload read, unchecked; `None` if it is not one.
pub fn decode_checkpoint(payload: &[u8]) -> Option<Checkpoint> {
    let c = pb::AuditCheckpoint::decode(payload).ok()?;
    Some(Checkpoint {
        at_ms: c.at.as_ref().map(from_timestamp),
        org_id: c.org_id,
        seq: c.seq,
        head_sha256: c.head_sha256,
        key_fingerprint: c.key_fingerprint,
    })
}

/// The payload a witness is signed as.
pub fn encode_witnessing(w: &Witnessing) -> Vec<u8> {
    pb::CheckpointWitness {
        checkpoint_sha256: w.checkpoint_sha256.clone(),
        signer_org: w.signer_org.clone(),
        seq: w.seq,
        witness_org: w.witness_org.clone(),
        at: w.at_ms.map(to_timestamp),
        key_fingerprint: w.key_fingerprint.clone(),
    }
    .encode_to_vec()
}

/// A witness's payload read, unchecked; `None` if it is not one.
pub fn decode_witnessing(payload: &[u8]) -> Option<Witnessing> {
    let w = pb::CheckpointWitness::decode(payload).ok()?;
    Some(Witnessing {
        at_ms: w.at.as_ref().map(from_timestamp),
        checkpoint_sha256: w.checkpoint_sha256,
        signer_org: w.signer_org,
        seq: w.seq,
        witness_org: w.witness_org,
        key_fingerprint: w.key_fingerprint,
    })
}

impl From<pb::SignedCheckpoint> for SignedCheckpoint {
    fn from(s: pb::SignedCheckpoint) -> Self {
        Self {
            payload: s.payload,
            signature: s.signature,
        }
    }
}

impl From<SignedCheckpoint> for pb::SignedCheckpoint {
    fn from(s: SignedCheckpoint) -> Self {
        Self {
            payload: s.payload,
            signature: s.signature,
        }
    }
}

impl From<pb::SignedWitness> for SignedWitness {
    fn from(s: pb::SignedWitness) -> Self {
        Self {
            payload: s.payload,
            signature: s.signature,
        }
    }
}

impl From<SignedWitness> for pb::SignedWitness {
    fn from(s: SignedWitness) -> Self {
        Self {
            payload: s.payload,
            signature: s.signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_as_written() {
        let c = Checkpoint {
            org_id: "org-a".into(),
            seq: 7,
            head_sha256: vec![1; 32],
            at_ms: Some(1_700_000_000_123),
            key_fingerprint: "fp".into(),
        };
        assert_eq!(decode_checkpoint(&encode_checkpoint(&c)), Some(c));
        let w = Witnessing {
            checkpoint_sha256: vec![2; 32],
            signer_org: "org-a".into(),
            seq: 7,
            witness_org: "org-b".into(),
            at_ms: Some(1_700_000_000_456),
            key_fingerprint: "fp-b".into(),
        };
        assert_eq!(decode_witnessing(&encode_witnessing(&w)), Some(w));
        // Anything else is not read as one.
        assert_eq!(decode_checkpoint(&[0xff, 0xff, 0xff]), None);
    }
}
