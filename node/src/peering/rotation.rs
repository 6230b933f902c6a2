//! Key rotation: a new key announced to every peer, signed by the old one,
//! and a peer's announcement checked before its new key is pinned.

use super::*;

/// A key rotation refused (`reason`): on record as a security event, as it
/// may be a takeover attempt by a thief of a key.
pub(super) async fn rotation_refused(
    state: &NodeState,
    from: &Peer,
    presented_fingerprint: &str,
    reason: &str,
) {
    record_refusal(
        state,
        SecurityEvent {
            at_ms: state.now_ms(),
            surface: "federation".into(),
            reason: reason.into(),
            key_fingerprint: Some(presented_fingerprint.to_owned()),
            org_id: Some(from.org_id.to_string()),
            remote_addr: None,
            method: Some("Notify".into()),
        },
    )
    .await;
}

pub(super) fn verify_rotation(
    state: &NodeState,
    from: &Peer,
    presented_fingerprint: &str,
    signed: &pb::SignedKeyRotation,
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
    if r.recipient_org_id != state.org_id.as_str() {
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
    if r.new_public_key.len() > 1024 || fingerprint_spki(&r.new_public_key) == presented_fingerprint
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
            added_at_ms: state.now_ms(),
            valid_until_ms: None,
        },
        until,
    ))
}

pub struct Rotation {
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    pub old_valid_until_ms: i64,
    pub peers_notified: u32,
}

/// Makes a new key; every active peer is told, signed by the old key, and
/// keeps accepting the old one for the configured overlap.
pub async fn rotate_key(state: &NodeState) -> Result<Rotation> {
    let overlap_ms = (state.config.federation.key_overlap_secs as i64).saturating_mul(1000);
    let (old_fp, old_spki, new_fp, new_spki, until, certified) = {
        let mut identity = state
            .identity
            .write()
            .map_err(|_| Error::Internal(anyhow::anyhow!("identity lock poisoned")))?;
        let old_fp = identity.current().fingerprint().to_owned();
        let old_spki = identity.current().spki_der().to_vec();
        let until = identity.rotate(state.org_id.as_str(), overlap_ms)?;
        let new = identity.current();
        (
            old_fp,
            old_spki,
            new.fingerprint().to_owned(),
            new.spki_der().to_vec(),
            until,
            new.certified_key()?,
        )
    };
    state.current_key.set(certified);
    crate::audit::own_keys::remember_own_key(state).await?;
    crate::audit::record(
        state,
        &[crate::audit::AuditEntry::admin(
            state.now_ms(),
            "identity.rotate",
            "key",
            &new_fp,
        )],
    )
    .await;
    // If the process dies before this commits, the next start finds the
    // new key unannounced and announces it (`announce_rotation_if_missing`).
    let notices = rotation_notices(state, &old_fp, &old_spki, &new_spki, until).await?;
    state
        .store
        .enqueue_notices_with_meta(&notices, ANNOUNCED_KEY, &new_fp)
        .await?;
    state.outbox_wake.notify_one();
    tracing::info!(old = %old_fp, new = %new_fp, "identity key rotated");
    Ok(Rotation {
        old_fingerprint: old_fp,
        new_fingerprint: new_fp,
        old_valid_until_ms: until,
        peers_notified: notices.len() as u32,
    })
}

/// Where the fingerprint of the key peers were last told of is kept.
pub(super) const ANNOUNCED_KEY: &str = "announced_key";

/// At start: a rotation that reached the key files but not the database (the
/// process died in between) is announced now, signed with the key the peers
/// know, so they do not refuse the new one.
pub async fn announce_rotation_if_missing(state: &NodeState) -> Result<()> {
    let current = state.fingerprint()?;
    let announced = state.store.meta_init(ANNOUNCED_KEY, &current).await?;
    if announced == current {
        return Ok(());
    }
    let found = {
        let identity = state.identity()?;
        let new_spki = identity.current().spki_der().to_vec();
        identity
            .retired(state.now_ms())
            .find(|r| r.key.fingerprint() == announced)
            .map(|r| (r.key.spki_der().to_vec(), new_spki, r.valid_until_ms))
    };
    let Some((old_spki, new_spki, until)) = found else {
        tracing::error!(
            announced = %announced,
            current = %current,
            "the key peers know is gone and the new one was never announced: peers must be re-peered"
        );
        return Ok(());
    };
    let notices = rotation_notices(state, &announced, &old_spki, &new_spki, until).await?;
    state
        .store
        .enqueue_notices_with_meta(&notices, ANNOUNCED_KEY, &current)
        .await?;
    tracing::warn!(old = %announced, new = %current, peers = notices.len(), "announcing a key rotation interrupted by a crash");
    Ok(())
}

/// The signed announcements of a new key, one per peer that accepts our calls.
pub(super) async fn rotation_notices(
    state: &NodeState,
    old_fp: &str,
    old_spki: &[u8],
    new_spki: &[u8],
    until: i64,
) -> Result<Vec<NewNotice>> {
    let peers = state.store.list_peers().await?;
    let mut notices = Vec::new();
    // Peers that accept our calls: active ones, and those we suspended (they
    // still see us as active). A pending peering must be re-invited after a
    // rotation, since the other side refuses notices until it is approved.
    for peer in peers
        .iter()
        .filter(|p| matches!(p.state, PeerState::Active | PeerState::Suspended))
    {
        let payload = pb::KeyRotation {
            org_id: state.org_id.to_string(),
            recipient_org_id: peer.org_id.to_string(),
            new_public_key: new_spki.to_vec(),
            old_public_key: old_spki.to_vec(),
            issued_at: Some(to_timestamp(state.now_ms())),
            old_key_valid_until: Some(to_timestamp(until)),
        }
        .encode_to_vec();
        let (signature, new_key_signature) = {
            let identity = state.identity()?;
            let old = identity
                .key(old_fp)
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("old key vanished")))?;
            let new = identity.current();
            if new.spki_der() != new_spki {
                return Err(Error::Internal(anyhow::anyhow!(
                    "the key to announce is no longer current"
                )));
            }
            (
                old.sign_in(context::KEY_ROTATION, &payload)?,
                new.sign_in(context::KEY_ROTATION_NEW_KEY, &payload)?,
            )
        };
        notices.push(new_notice(
            state,
            &peer.org_id,
            pb::notify_request::Notice::KeyRotation(pb::SignedKeyRotation {
                payload,
                signature,
                new_key_signature,
            }),
            Some(old_fp.to_owned()),
        ));
    }
    Ok(notices)
}
