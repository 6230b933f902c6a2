//! A key rotation on the wire: the announcement of a new key, signed by the
//! old one and (proof of possession) by the new one, and a peer's
//! announcement checked before its new key is pinned.

use super::Protocol;
use crate::domain::{OrgId, Peer, SignedRotation};
use crate::error::{Error, FieldError, Result};
use crate::identity::{NodeKey, context, fingerprint_spki, verify_in};
use crate::store::PeerKey;
use crate::wire::time::{from_timestamp, to_timestamp};
use exitnet_proto::pb;
use prost::Message;

/// `from`'s announcement of `new`, to `to`, signed by both keys; the old one
/// stays valid until `until`.
pub fn announcement(
    from: &OrgId,
    to: &OrgId,
    old: &NodeKey,
    new: &NodeKey,
    now_ms: i64,
    until: i64,
) -> Result<SignedRotation> {
    let payload = pb::KeyRotation {
        org_id: from.to_string(),
        recipient_org_id: to.to_string(),
        new_public_key: new.spki_der().to_vec(),
        old_public_key: old.spki_der().to_vec(),
        issued_at: Some(to_timestamp(now_ms)),
        old_key_valid_until: Some(to_timestamp(until)),
    }
    .encode_to_vec();
    Ok(SignedRotation {
        signature: old.sign_in(context::KEY_ROTATION, &payload)?,
        new_key_signature: new.sign_in(context::KEY_ROTATION_NEW_KEY, &payload)?,
        payload,
    })
}

impl Protocol {
    /// Checks `from`'s announcement, made over a call with the key
    /// `presented_fingerprint`: the key to pin and until when the old one stays
    /// valid.
    pub fn verify_rotation(
        &self,
        from: &Peer,
        presented_fingerprint: &str,
        signed: &SignedRotation,
    ) -> Result<(PeerKey, i64)> {
        let r = pb::KeyRotation::decode(signed.payload.as_slice())
            .map_err(|_| FieldError::new("key_rotation.payload", "malformed"))?;
        let field = |f: &str, rule: &str| {
            Error::from(FieldError::new(
                format!("key_rotation.{f}"),
                rule.to_owned(),
            ))
        };
        if r.org_id != from.org_id.as_str() {
            return Err(field("org_id", "must be the sender's organisation ID"));
        }
        if r.recipient_org_id != self.org_id.as_str() {
            return Err(field("recipient_org_id", "is not this node"));
        }
        if fingerprint_spki(&r.old_public_key) != presented_fingerprint {
            return Err(field(
                "old_public_key",
                "must be the key the call was made with",
            ));
        }
        // Only the newest key may name its successor: whoever stole an older
        // key (still accepted during its overlap) cannot override the owner's
        // rotation, nor retire the key it introduced.
        if presented_fingerprint != from.key_fingerprint {
            return Err(field(
                "old_public_key",
                "must be the newest key pinned for the sender",
            ));
        }
        if !verify_in(
            context::KEY_ROTATION,
            &r.old_public_key,
            &signed.payload,
            &signed.signature,
        ) {
            return Err(field("signature", "does not verify with the old key"));
        }
        // The new key must itself be a usable P-256 key.
        if r.new_public_key.len() > 1024
            || fingerprint_spki(&r.new_public_key) == presented_fingerprint
        {
            return Err(field("new_public_key", "must be a new key"));
        }
        if <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
            x509_parser::error::X509Error,
        >>::from_der(&r.new_public_key)
        .is_err()
        {
            return Err(field("new_public_key", "is not a SubjectPublicKeyInfo"));
        }
        // Proof of possession: the new key signs too, so no one can announce a
        // key they do not hold (someone else's, to take their place).
        if !verify_in(
            context::KEY_ROTATION_NEW_KEY,
            &r.new_public_key,
            &signed.payload,
            &signed.new_key_signature,
        ) {
            return Err(field(
                "new_key_signature",
                "does not verify with the new key",
            ));
        }
        let until = r
            .old_key_valid_until
            .as_ref()
            .map(from_timestamp)
            .ok_or_else(|| field("old_key_valid_until", "required"))?;
        Ok((
            PeerKey {
                fingerprint: fingerprint_spki(&r.new_public_key),
                spki_der: r.new_public_key,
                added_at_ms: self.now_ms(),
                valid_until_ms: None,
            },
            until,
        ))
    }
}
