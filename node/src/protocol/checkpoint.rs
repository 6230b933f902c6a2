//! Audit checkpoints between nodes: ours signed and queued for a peer, a
//! peer's opened and checked against its pinned keys, countersigned by us,
//! and a peer's countersignature of ours checked.

use super::Protocol;
use crate::crypto::sha256;
use crate::domain::OrgId;
use crate::domain::audit::{Checkpoint, SignedCheckpoint, SignedWitness, Witnessing};
use crate::error::{Error, FieldError, Result};
use crate::identity::{context, verify_stored};
use crate::store::{NewNotice, NoticeKind, PeerKey, Route};
use crate::wire::checkpoint::{
    decode_checkpoint, decode_witnessing, encode_checkpoint, encode_witnessing,
};
use exitnet_proto::pb;
use prost::Message;

/// Our signed checkpoint, with the key that signed it (fingerprint and
/// public key, to be remembered).
pub struct OwnCheckpoint {
    pub signed: SignedCheckpoint,
    pub fingerprint: String,
    pub spki: Vec<u8>,
}

impl Protocol {
    /// Signs a checkpoint of our chain: `seq` records, the last hashing to
    /// `head_hash`, at `at_ms`.
    pub fn sign_checkpoint(&self, seq: i64, head_hash: &[u8], at_ms: i64) -> Result<OwnCheckpoint> {
        let identity = self.identity()?;
        let key = identity.current();
        let payload = encode_checkpoint(&Checkpoint {
            org_id: self.org_id.to_string(),
            seq: seq as u64,
            head_sha256: head_hash.to_vec(),
            at_ms: Some(at_ms),
            key_fingerprint: key.fingerprint().to_owned(),
        });
        let signature = key.sign_in(context::CHECKPOINT, &payload)?;
        Ok(OwnCheckpoint {
            signed: SignedCheckpoint { payload, signature },
            fingerprint: key.fingerprint().to_owned(),
            spki: key.spki_der().to_vec(),
        })
    }

    /// Our checkpoint as a notice for `org`.
    pub fn checkpoint_notice(
        &self,
        org: OrgId,
        signed: &SignedCheckpoint,
        at_ms: i64,
    ) -> NewNotice {
        let id = super::messages::new_notice_id();
        NewNotice {
            notice_id: id.clone(),
            org_id: org,
            payload: pb::NotifyRequest {
                notice_id: id,
                notice: Some(pb::notify_request::Notice::Checkpoint(
                    signed.clone().into(),
                )),
            }
            .encode_to_vec(),
            present_key: None,
            route: Route {
                kind: NoticeKind::Checkpoint,
                referral_id: None,
            },
            now_ms: at_ms,
        }
    }

    /// Our countersignature of `peer`'s checkpoint number `seq`, at `now`.
    pub fn sign_witness(
        &self,
        peer: &OrgId,
        signed: &SignedCheckpoint,
        seq: u64,
        now: i64,
    ) -> Result<SignedWitness> {
        let identity = self.identity()?;
        let key = identity.current();
        let payload = encode_witnessing(&Witnessing {
            checkpoint_sha256: sha256(&signed.payload),
            signer_org: peer.to_string(),
            seq,
            witness_org: self.org_id.to_string(),
            at_ms: Some(now),
            key_fingerprint: key.fingerprint().to_owned(),
        });
        Ok(SignedWitness {
            signature: key.sign_in(context::WITNESS, &payload)?,
            payload,
        })
    }

    /// Checks `peer`'s witness `w` of our checkpoint `sent` against `keys`,
    /// the peer's keys valid when the witness says it was made (`keys_at`
    /// looks them up). What it says, and when.
    pub fn check_witness(
        &self,
        peer: &OrgId,
        sent: &SignedCheckpoint,
        w: &SignedWitness,
        keys: &[PeerKey],
    ) -> Result<Witnessing> {
        let bad = |rule: &str| Error::Unavailable(format!("the peer's witness is invalid: {rule}"));
        let wp = read_witnessing(w)?;
        if !keys
            .iter()
            // Also re-checks stored witnesses (audit verify), which may predate
            // contexts.
            .any(|k| verify_stored(context::WITNESS, &k.spki_der, &w.payload, &w.signature))
        {
            return Err(bad("signature"));
        }
        if wp.checkpoint_sha256 != sha256(&sent.payload)
            || wp.witness_org != peer.as_str()
            || wp.signer_org != self.org_id.as_str()
        {
            return Err(bad("it is not for this checkpoint"));
        }
        Ok(wp)
    }
}

/// A witness's payload, with the time it names (required).
pub fn read_witnessing(w: &SignedWitness) -> Result<Witnessing> {
    let bad = |rule: &str| Error::Unavailable(format!("the peer's witness is invalid: {rule}"));
    let wp = decode_witnessing(&w.payload).ok_or_else(|| bad("malformed"))?;
    if wp.at_ms.is_none() {
        return Err(bad("no time"));
    }
    Ok(wp)
}

/// A checkpoint's payload, unchecked (one we hold already).
pub fn read_checkpoint(payload: &[u8]) -> Option<Checkpoint> {
    decode_checkpoint(payload)
}

/// Decodes and checks a peer's checkpoint against the keys pinned for it.
pub fn open_checkpoint(
    from: &OrgId,
    keys: &[Vec<u8>],
    signed: &SignedCheckpoint,
) -> Result<Checkpoint> {
    if !keys
        .iter()
        // A checkpoint made before signatures carried their context may
        // still be pushed (it waits for witnesses); only its signer calls.
        .any(|k| verify_stored(context::CHECKPOINT, k, &signed.payload, &signed.signature))
    {
        return Err(Error::PermissionDenied(
            "checkpoint.signature: not signed by the calling peer's key".into(),
        ));
    }
    let cp = decode_checkpoint(&signed.payload)
        .ok_or_else(|| FieldError::new("checkpoint.payload", "not an AuditCheckpoint"))?;
    if cp.org_id != from.as_str() {
        return Err(Error::PermissionDenied(
            "checkpoint.org_id: not the calling peer".into(),
        ));
    }
    if cp.seq == 0 || cp.seq > i64::MAX as u64 {
        return Err(FieldError::new("checkpoint.seq", "must be between 1 and 2^63-1").into());
    }
    if cp.head_sha256.len() != 32 {
        return Err(FieldError::new("checkpoint.head_sha256", "must be 32 bytes").into());
    }
    if cp.at_ms.is_none() {
        return Err(FieldError::new("checkpoint.at", "required").into());
    }
    Ok(cp)
}
