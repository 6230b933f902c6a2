//! Peering: invitations, joining, the two administrators' approval, the
//! lifecycle, profiles and key rotation. Free of gRPC: the adapters in
//! `admin` and `federation` convert requests and call these functions.

pub mod invitation;

pub mod purges;
pub mod quotas;

use crate::crypto::sha256;
use crate::domain::{Awaiting, OrgId, OrgProfile, Peer, PeerAction, PeerState};
use crate::error::{Error, FieldError, Result};
use crate::identity::{context, fingerprint_spki, hex, verify_in};
use crate::state::NodeState;
use crate::store::{
    JoinRefusal, NewInvitation, NewNotice, NewPeer, PeerKey, PeerUpdate, SecurityEvent,
};
use crate::wire::time::{from_timestamp, to_timestamp};
use exitnet_proto::pb;
use prost::Message;

pub const DEFAULT_INVITATION_SECS: u64 = 24 * 3600;
pub const MAX_INVITATION_SECS: u64 = 30 * 24 * 3600;
/// Longest overlap a peer may ask us to keep accepting its old key.
pub const MAX_KEY_OVERLAP_MS: i64 = 90 * 24 * 3600 * 1000;

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    crate::crypto::random_bytes().map_err(Error::Internal)
}

/// Words in the verification code: 11 bits each (BIP-39 English list).
pub const VERIFICATION_WORDS: usize = 12;

/// The words a verification code is made of (BIP-39 English, 2048 words).
pub fn verification_word_list() -> &'static [&'static str] {
    bip39::Language::English.word_list()
}

/// The code both administrators read to each other: derived from both keys,
/// so it is the same on both sides and differs if either key was swapped.
///
/// 12 words of 11 bits (132 bits) from SHA-256 over both fingerprints. A
/// man in the middle who swaps both keys chooses both inputs, so what he
/// needs is a collision of the two sides' codes: about 2^66 key generations
/// (see docs/trust.md), not 2^15 as with the former 9 digits (30 bits).
pub fn verification_code(fp_a: &str, fp_b: &str) -> String {
    let (lo, hi) = if fp_a <= fp_b {
        (fp_a, fp_b)
    } else {
        (fp_b, fp_a)
    };
    let d = sha256(format!("exitnet-verify-v2:{lo}:{hi}").as_bytes());
    let words = bip39::Language::English.word_list();
    // Bits of the digest, 11 at a time, most significant first.
    (0..VERIFICATION_WORDS)
        .map(|i| {
            let bit = i * 11;
            let chunk = u32::from_be_bytes([d[bit / 8], d[bit / 8 + 1], d[bit / 8 + 2], 0]);
            let index = (chunk >> (32 - 11 - bit % 8)) & 0x7ff;
            words[index as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new notice ID: unique, and carrying nothing about its content.
pub fn new_notice_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn new_notice(
    state: &NodeState,
    org: &OrgId,
    body: pb::notify_request::Notice,
    present_key: Option<String>,
) -> NewNotice {
    let notice_id = new_notice_id();
    let payload = pb::NotifyRequest {
        notice_id: notice_id.clone(),
        notice: Some(body),
    }
    .encode_to_vec();
    NewNotice {
        notice_id,
        org_id: org.clone(),
        payload,
        present_key,
        now_ms: state.now_ms(),
    }
}

// === Invitations and joining ===

pub struct CreatedInvitation {
    pub code: String,
    pub invitation_id: String,
    pub expires_at_ms: i64,
}

pub async fn create_invitation(
    state: &NodeState,
    expires_in_secs: u64,
    endpoint: Option<String>,
    note: String,
) -> Result<CreatedInvitation> {
    let secs = if expires_in_secs == 0 {
        DEFAULT_INVITATION_SECS
    } else {
        expires_in_secs
    };
    if secs > MAX_INVITATION_SECS {
        return Err(FieldError::new("expires_in_seconds", "at most 30 days").into());
    }
    let endpoint = match endpoint.filter(|e| !e.is_empty()) {
        Some(e) => {
            crate::domain::endpoint_check("endpoint", &e)?;
            e
        }
        None => state.advertised_endpoint(),
    };
    crate::domain::bounded_text("note", &note, 200)?;
    let secret = random_bytes::<32>()?;
    let id = hex(&random_bytes::<12>()?);
    let now = state.now_ms();
    let expires_at_ms = now + (secs as i64) * 1000;
    state
        .store
        .create_invitation(&NewInvitation {
            id: id.clone(),
            secret_hash: sha256(&secret),
            expires_at_ms,
            note,
            created_at_ms: now,
        })
        .await?;
    let profile = state.profile();
    let code = {
        let identity = state.identity()?;
        let key = identity.current();
        invitation::encode(
            &invitation::Invitation {
                invitation_id: id.clone(),
                org_id: state.org_id.clone(),
                org_name: profile.name.clone(),
                endpoint,
                key_fingerprint: key.fingerprint().to_owned(),
                public_key: key.spki_der().to_vec(),
                secret: secret.to_vec(),
                expires_at_ms,
            },
            key,
        )?
    };
    tracing::info!(invitation_id = %id, "invitation created");
    Ok(CreatedInvitation {
        code,
        invitation_id: id,
        expires_at_ms,
    })
}

/// This node joins the inviter named in `code`. Running it is this
/// administrator's approval; the inviter's administrator decides next.
pub async fn join(state: &NodeState, code: &str) -> Result<Peer> {
    let inv = invitation::decode(code)?;
    if inv.org_id == state.org_id {
        return Err(FieldError::new("code", "this is our own invitation").into());
    }
    if inv.expires_at_ms <= state.now_ms() {
        return Err(Error::FailedPrecondition(
            "the invitation has expired".into(),
        ));
    }
    // Checked before the inviter is called, so that a join that cannot be
    // recorded here does not use up the invitation there.
    if let Some(existing) = state.store.get_peer(&inv.org_id).await? {
        refuse_rejoin(&existing)?;
    }
    let request = pb::JoinRequest {
        invitation_id: inv.invitation_id.clone(),
        secret: inv.secret.clone(),
        profile: Some(state.profile().to_pb()),
        endpoint: state.advertised_endpoint(),
        protocol_version: exitnet_proto::PROTOCOL_VERSION,
    };
    let mut client = {
        // The key is cloned out of the lock: no lock is held across the call.
        let ours = state.identity()?.current().clone_key()?;
        crate::transport::client::connect(
            &inv.endpoint,
            Some(&ours),
            vec![inv.key_fingerprint.clone()],
            state.call_timeout(),
        )
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach the inviter: {e:#}")))?
    };
    let response = client.join(request).await.map_err(|s| match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            Error::Unavailable(format!("the inviter did not answer: {}", s.message()))
        }
        _ => Error::FailedPrecondition(format!("the inviter refused the join: {}", s.message())),
    })?;
    let pb::JoinResponse {
        profile,
        protocol_version: _,
    } = response.into_inner();
    let profile = OrgProfile::from_pb(
        profile.ok_or_else(|| Error::Unavailable("the inviter sent no profile".into()))?,
    )
    .map_err(|e| Error::Unavailable(format!("the inviter sent an invalid profile: {e}")))?;
    if profile.org_id != inv.org_id {
        return Err(Error::Unavailable(
            "the inviter answered with another organisation ID".into(),
        ));
    }
    let now = state.now_ms();
    state
        .store
        .insert_peer(&NewPeer {
            profile,
            state: PeerState::Pending,
            awaiting: Awaiting::Remote,
            remote_state: Some(PeerState::Pending),
            endpoint: inv.endpoint.clone(),
            key: PeerKey {
                fingerprint: inv.key_fingerprint.clone(),
                spki_der: inv.public_key.clone(),
                added_at_ms: now,
                valid_until_ms: None,
            },
            now_ms: now,
        })
        .await?;
    tracing::info!(peer = %inv.org_id, "joined; waiting for the inviter's approval");
    state
        .store
        .get_peer(&inv.org_id)
        .await?
        .ok_or(Error::NotFound("peer"))
}

/// Whether the peering with `p` has ended on either side: then a new
/// invitation and join replace it (the record is updated in place, its keys
/// replaced; referral messages still queued for the peer stay queued and go
/// out once the new peering is active).
pub fn peering_ended(p: &Peer) -> bool {
    p.state.is_final() || p.remote_state.is_some_and(PeerState::is_final)
}

/// A join of an organisation we already have a record of: allowed only if
/// that peering has ended, else refused saying what to do.
fn refuse_rejoin(existing: &Peer) -> Result<()> {
    if peering_ended(existing) {
        return Ok(());
    }
    let org = &existing.org_id;
    let remote = existing
        .remote_state
        .map(PeerState::as_str)
        .unwrap_or("unknown");
    let what = match (existing.state, existing.awaiting) {
        (PeerState::Pending, Awaiting::Remote) => format!(
            "a join of {org} already waits for their administrator's approval; ask them to run `exitnetctl peer approve`"
        ),
        (PeerState::Pending, _) => format!(
            "{org} already asked to join and waits for your approval (`exitnetctl peer approve {org}` or `peer reject {org}`)"
        ),
        _ => format!(
            "already peered with {org} (here {}, their view {remote})",
            existing.state.as_str()
        ),
    };
    Err(Error::FailedPrecondition(format!(
        "{what}. A new invitation replaces only a peering that has ended: to peer anew, first run `exitnetctl peer revoke {org}` here, then join again"
    )))
}

/// A join request at the inviter, from a caller that presented `spki`.
pub async fn accept_join(
    state: &NodeState,
    spki: &[u8],
    req: pb::JoinRequest,
) -> Result<OrgProfile> {
    let pb::JoinRequest {
        invitation_id,
        secret,
        profile,
        endpoint,
        protocol_version: _,
    } = req;
    let profile =
        OrgProfile::from_pb(profile.ok_or_else(|| FieldError::new("profile", "required"))?)
            .map_err(|e| e.within("profile"))?;
    crate::domain::endpoint_check("endpoint", &endpoint)?;
    if invitation_id.is_empty() || invitation_id.len() > 64 {
        return Err(FieldError::new("invitation_id", "must be 1 to 64 characters").into());
    }
    if secret.len() != invitation::SECRET_BYTES {
        return Err(FieldError::new("secret", "must be 32 bytes").into());
    }
    if profile.org_id == state.org_id {
        return Err(FieldError::new("profile.org_id", "is this node's own ID").into());
    }
    let now = state.now_ms();
    let fingerprint = fingerprint_spki(spki);
    let outcome = state
        .store
        .accept_join(
            &invitation_id,
            &sha256(&secret),
            &NewPeer {
                profile: profile.clone(),
                state: PeerState::Pending,
                awaiting: Awaiting::Local,
                // Running `join` was the other administrator's approval.
                remote_state: Some(PeerState::Pending),
                endpoint,
                key: PeerKey {
                    fingerprint: fingerprint.clone(),
                    spki_der: spki.to_vec(),
                    added_at_ms: now,
                    valid_until_ms: None,
                },
                now_ms: now,
            },
        )
        .await?;
    match outcome {
        Ok(()) => {
            crate::audit::record(
                state,
                &[crate::audit::AuditEntry::peer(
                    state.now_ms(),
                    profile.org_id.as_str(),
                    "peer.join_request",
                    "invitation",
                    &invitation_id,
                )],
            )
            .await;
            tracing::info!(peer = %profile.org_id, "join request recorded; waiting for approval");
            Ok(state.profile())
        }
        Err(refusal) => Err(join_refused(refusal)),
    }
}

fn join_refused(r: JoinRefusal) -> Error {
    match r {
        // One answer for unknown, wrong-secret, used and expired: a prober
        // learns nothing about which invitations exist.
        JoinRefusal::UnknownInvitation
        | JoinRefusal::WrongSecret
        | JoinRefusal::AlreadyUsed
        | JoinRefusal::Expired => Error::PermissionDenied(
            "invitation not valid (unknown, used, expired or wrong secret)".into(),
        ),
        JoinRefusal::OrgAlreadyPeered => {
            Error::AlreadyExists("this organisation is already a peer".into())
        }
        JoinRefusal::KeyAlreadyPinned => {
            Error::AlreadyExists("this key is already pinned for a peer".into())
        }
    }
}

/// The reason code recorded for a refused join.
pub fn join_refusal_reason(e: &Error, fallback: &'static str) -> &'static str {
    match e {
        Error::PermissionDenied(_) => "invitation_invalid",
        Error::AlreadyExists(_) => "already_peered",
        Error::InvalidArgument(_) => "invalid_join_request",
        _ => fallback,
    }
}

// === The lifecycle ===

/// An administrator's decision; the peer is told through the outbox.
pub async fn decide(state: &NodeState, org: &OrgId, action: PeerAction) -> Result<Peer> {
    let peer = state
        .store
        .get_peer(org)
        .await?
        .ok_or(Error::NotFound("peer"))?;
    let next = action.apply(peer.state, peer.awaiting)?;
    let mut update = PeerUpdate {
        expected_state: Some(peer.state),
        state: Some(next),
        awaiting: Some(Awaiting::None),
        notices: vec![new_notice(
            state,
            org,
            pb::notify_request::Notice::State(next.to_pb() as i32),
            None,
        )],
        audit: vec![
            crate::audit::AuditEntry::admin(
                state.now_ms(),
                &format!("peer.{}", next.as_str()),
                "peer",
                org.as_str(),
            )
            .with_peer(org.as_str()),
        ],
        now_ms: state.now_ms(),
        ..Default::default()
    };
    if next == PeerState::Revoked {
        // Their withdrawals are still delivered: say so in the record.
        update.audit.extend(purges::on_revoke(state, org).await?);
    }
    // Read before the change: the keys whose connections a revoke closes.
    let keys = if next == PeerState::Revoked {
        state.store.peer_keys(org, 0).await?
    } else {
        Vec::new()
    };
    if !state.store.update_peer(org, &update).await? {
        return Err(Error::FailedPrecondition(
            "the peer changed meanwhile; try again".into(),
        ));
    }
    if next == PeerState::Revoked {
        // Connections to and from the peer end now, not when they idle out;
        // what is still owed to it (the revoke notice, withdrawals) goes out
        // on a new one.
        let fingerprints: Vec<String> = keys.into_iter().map(|k| k.fingerprint).collect();
        let closed = state.peer_channels.close_peer(org.as_str(), &fingerprints);
        tracing::info!(peer = %org, connections = closed, "connections to the revoked peer closed");
    }
    state.outbox_wake.notify_one();
    tracing::info!(peer = %org, from = peer.state.as_str(), to = next.as_str(), "peer state changed");
    state
        .store
        .get_peer(org)
        .await?
        .ok_or(Error::NotFound("peer"))
}

/// Whether a caller in this state may send notices at all.
pub fn may_notify(peer: &Peer) -> std::result::Result<(), &'static str> {
    match (peer.state, peer.awaiting) {
        (PeerState::Active, _) => Ok(()),
        // We joined them and wait for their administrator's answer.
        (PeerState::Pending, Awaiting::Remote) => Ok(()),
        (PeerState::Pending, _) => Err("peer_pending"),
        (PeerState::Suspended, _) => Err("peer_suspended"),
        (PeerState::Revoked, _) => Err("peer_revoked"),
        (PeerState::Rejected, _) => Err("peer_rejected"),
    }
}

/// A notice from an authenticated peer. Applied once per notice ID.
pub async fn receive_notice(
    state: &NodeState,
    from: &Peer,
    presented_fingerprint: &str,
    req: pb::NotifyRequest,
) -> Result<()> {
    let pb::NotifyRequest { notice_id, notice } = req;
    if notice_id.is_empty()
        || notice_id.len() > 64
        || !notice_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(
            FieldError::new("notice_id", "must be 1 to 64 printable ASCII characters").into(),
        );
    }
    let now = state.now_ms();
    let mut update = PeerUpdate {
        now_ms: now,
        ..Default::default()
    };
    match notice.ok_or_else(|| FieldError::new("notice", "required"))? {
        pb::notify_request::Notice::Message(_) | pb::notify_request::Notice::Checkpoint(_) => {
            // Referral messages and checkpoints have handlers of their own.
            return Err(FieldError::new("notice", "not a peering notice").into());
        }
        pb::notify_request::Notice::State(s) => {
            let s = PeerState::from_pb("state", s)?;
            update.remote_state = Some(s);
            if from.state == PeerState::Pending && from.awaiting == Awaiting::Remote {
                match s {
                    PeerState::Active => {
                        // They approved: we are active, and tell them we are.
                        update.expected_state = Some(PeerState::Pending);
                        update.state = Some(PeerState::Active);
                        update.awaiting = Some(Awaiting::None);
                        update.notices.push(new_notice(
                            state,
                            &from.org_id,
                            pb::notify_request::Notice::State(pb::PeerState::Active as i32),
                            None,
                        ));
                    }
                    PeerState::Rejected | PeerState::Revoked => {
                        update.expected_state = Some(PeerState::Pending);
                        update.state = Some(s);
                        update.awaiting = Some(Awaiting::None);
                    }
                    _ => {}
                }
            } else if from.state == PeerState::Pending {
                return Err(Error::PermissionDenied("peer_pending".into()));
            }
        }
        pb::notify_request::Notice::Profile(p) => {
            if from.state != PeerState::Active {
                return Err(Error::PermissionDenied("peer_pending".into()));
            }
            let p = OrgProfile::from_pb(p).map_err(|e| e.within("profile"))?;
            if p.org_id != from.org_id {
                return Err(FieldError::new(
                    "profile.org_id",
                    "must be the sender's own organisation ID",
                )
                .into());
            }
            update.profile = Some(p);
        }
        pb::notify_request::Notice::KeyRotation(signed) => {
            if from.state != PeerState::Active {
                return Err(Error::PermissionDenied("peer_pending".into()));
            }
            let (key, old_valid_until) =
                match verify_rotation(state, from, presented_fingerprint, &signed) {
                    Ok(v) => v,
                    Err(e) => {
                        // A refused rotation may be a takeover attempt by
                        // a thief of an old key: on record.
                        rotation_refused(
                            state,
                            from,
                            presented_fingerprint,
                            "key_rotation_refused",
                        )
                        .await;
                        return Err(e);
                    }
                };
            update.add_key = Some(key);
            update.retire_other_keys_at_ms = Some(old_valid_until.min(now + MAX_KEY_OVERLAP_MS));
            // Only from the newest key, also when two rotations race.
            update.expected_newest_key = Some(from.key_fingerprint.clone());
        }
    }
    let what = if update.add_key.is_some() {
        "peer.notice.key_rotation".to_owned()
    } else if update.profile.is_some() {
        "peer.notice.profile".to_owned()
    } else {
        format!(
            "peer.notice.state.{}",
            update.remote_state.map(PeerState::as_str).unwrap_or("none")
        )
    };
    update.audit.push(crate::audit::AuditEntry::peer(
        state.now_ms(),
        from.org_id.as_str(),
        &what,
        "peer",
        from.org_id.as_str(),
    ));
    let applied = state
        .store
        .apply_notice_once(&from.org_id, &notice_id, &update)
        .await?;
    if !applied && let Some(key) = &update.add_key {
        // Not applied: a repeat of this notice (its key is pinned), or
        // another rotation from the same key won the race. The loser is told
        // so, and it is on record: one of the two may be a thief's.
        let pinned = state.store.peer_keys(&from.org_id, state.now_ms()).await?;
        if !pinned.iter().any(|k| k.fingerprint == key.fingerprint) {
            rotation_refused(
                state,
                from,
                presented_fingerprint,
                "key_rotation_superseded",
            )
            .await;
            return Err(Error::FailedPrecondition(
                "key_rotation.old_public_key: another rotation from this key was applied first"
                    .into(),
            ));
        }
    }
    if applied {
        if !update.notices.is_empty() {
            state.outbox_wake.notify_one();
        }
        tracing::info!(peer = %from.org_id, "notice applied");
    }
    Ok(())
}

/// A key rotation refused (`reason`): on record as a security event, as it
/// may be a takeover attempt by a thief of a key.
async fn rotation_refused(
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

fn verify_rotation(
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

// === Key rotation and profile ===

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
const ANNOUNCED_KEY: &str = "announced_key";

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
async fn rotation_notices(
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

/// At start: if the configured profile differs from the one last announced,
/// queue it for every active peer.
pub async fn announce_profile_if_changed(state: &NodeState) -> Result<()> {
    let mut profile = state.profile();
    let mut comparable = profile.clone();
    comparable.updated_at_ms = 0;
    let digest = hex(&sha256(&comparable.to_pb().encode_to_vec()));
    let previous = state.store.meta_get("announced_profile_digest").await?;
    let stored_at = state.store.meta_get("profile_updated_at").await?;
    if previous.as_deref() == Some(digest.as_str()) {
        if let Some(at) = stored_at.and_then(|s| s.parse().ok()) {
            profile.updated_at_ms = at;
            if let Ok(mut p) = state.profile.write() {
                p.updated_at_ms = at;
            }
        }
        return Ok(());
    }
    let now = state.now_ms();
    if let Ok(mut p) = state.profile.write() {
        p.updated_at_ms = now;
    }
    profile.updated_at_ms = now;
    let peers = state.store.list_peers().await?;
    let notices: Vec<NewNotice> = peers
        .iter()
        .filter(|p| p.state == PeerState::Active)
        .map(|p| {
            new_notice(
                state,
                &p.org_id,
                pb::notify_request::Notice::Profile(profile.to_pb()),
                None,
            )
        })
        .collect();
    state.store.enqueue_notices(&notices).await?;
    state
        .store
        .meta_set("announced_profile_digest", &digest)
        .await?;
    state
        .store
        .meta_set("profile_updated_at", &now.to_string())
        .await?;
    state.outbox_wake.notify_one();
    Ok(())
}

/// Records a refused call: who, when, why; never the payload. Repeats of a
/// kind already written this minute are only counted in memory and added
/// by `flush_refusals` (`limits::RefusalCounts`).
pub async fn record_refusal(state: &NodeState, event: SecurityEvent) {
    if !state.limits.refusals.first_or_count(&event) {
        return;
    }
    match state.store.record_security_event(&event, 1).await {
        // The first of its kind this minute is logged; the rest are counted
        // in its row (a flood must not fill the disk through the log either).
        Ok(1) => tracing::warn!(
            surface = %event.surface,
            reason = %event.reason,
            key = event.key_fingerprint.as_deref().map(|f| &f[..f.len().min(16)]).unwrap_or("-"),
            peer = event.org_id.as_deref().unwrap_or("-"),
            remote = event.remote_host().as_deref().unwrap_or("-"),
            method = event.method.as_deref().unwrap_or("-"),
            "call refused (more like it this minute are counted, not logged)"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "could not record a security event"),
    }
}

/// How often repeated refusals counted in memory are written.
pub const REFUSAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Adds the refusals counted since the last flush to their rows.
pub async fn flush_refusals(state: &NodeState) {
    for (event, n) in state.limits.refusals.take() {
        if let Err(e) = state.store.record_security_event(&event, n).await {
            tracing::error!(error = %e, "could not record security events");
        }
    }
}

/// Flushes counted refusals every `REFUSAL_FLUSH`, and once more at stop.
pub async fn run_refusal_flush(
    state: std::sync::Arc<NodeState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REFUSAL_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => flush_refusals(&state).await,
            _ = stop.changed() => break,
        }
    }
    flush_refusals(&state).await;
}

/// A client of `peer`'s federation port: our current key, its pinned keys.
pub async fn connect_to_peer(
    state: &NodeState,
    peer: &Peer,
) -> anyhow::Result<
    exitnet_proto::pb::federation_service_client::FederationServiceClient<
        tonic::transport::Channel,
    >,
> {
    let pinned = state
        .store
        .peer_keys(&peer.org_id, state.now_ms())
        .await?
        .into_iter()
        .map(|k| k.fingerprint)
        .collect();
    let ours = state.identity()?.current().clone_key()?;
    crate::transport::client::connect(&peer.endpoint, Some(&ours), pinned, state.call_timeout())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_code_carries_132_bits_of_both_keys() {
        let (a, b) = (hex(&[0xa5; 32]), hex(&[0x3c; 32]));
        let code = verification_code(&a, &b);
        assert_eq!(code, verification_code(&b, &a), "the same on both sides");
        let list = bip39::Language::English.word_list();
        let words: Vec<&str> = code.split(' ').collect();
        assert_eq!(words.len(), VERIFICATION_WORDS);
        // Each word is one of 2048 (11 bits) and together they are the first
        // 132 bits of the digest: at least 80 bits, none wasted.
        let mut bits = String::new();
        for w in &words {
            let i = list.iter().position(|l| l == w).unwrap();
            bits.push_str(&format!("{i:011b}"));
        }
        assert!(bits.len() >= 128);
        let (lo, hi) = if a <= b { (&a, &b) } else { (&b, &a) };
        let d = sha256(format!("exitnet-verify-v2:{lo}:{hi}").as_bytes());
        let digest_bits: String = d.iter().map(|b| format!("{b:08b}")).collect();
        assert_eq!(bits, digest_bits[..132]);
        // Any other key gives another code.
        assert_ne!(code, verification_code(&a, &hex(&[0x3d; 32])));
    }
}
