//! Peering: invitations and joins (`joining`), the two administrators'
//! approval, the lifecycle, profiles, key rotation (`rotation`). The adapters in `admin` and `federation`
//! call these functions; the notices peers exchange about their peering are
//! still read here in their wire form (issue 18).

mod joining;
mod rotation;

pub mod purges;

use crate::audit::Audit;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::sha256;
use crate::domain::{Awaiting, OrgId, OrgProfile, Peer, PeerAction, PeerState, PeeringNotice};
use crate::error::{Error, FieldError, Result};
use crate::identity::{Identity, IdentityCell};
use crate::identity::{fingerprint_spki, hex};
use crate::protocol::{Protocol, invitation};
use crate::security::Refusals;
use crate::signals::OutboxSignal;
use crate::store::Store;
use crate::store::{
    JoinRefusal, NewInvitation, NewNotice, NewPeer, PeerKey, PeerUpdate, SecurityEvent,
};
use crate::tls::CurrentKey;
use crate::transport::client::Channels;
use std::sync::{Arc, RwLock, RwLockReadGuard};

pub use joining::*;
pub use rotation::*;

/// The peering service: invitations and joins, the administrators'
/// decisions, the notices peers send about the peering, our profile and key
/// announced to them.
#[derive(Clone)]
pub struct Peering {
    org_id: OrgId,
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Our keys: a rotation replaces the current one in place.
    identity: Arc<IdentityCell>,
    /// The certificate the federation listener presents.
    current_key: Arc<CurrentKey>,
    profile: Arc<RwLock<OrgProfile>>,
    /// The federation endpoint peers are told to use.
    advertised: String,
    /// Wakes the notice sender.
    outbox: Arc<OutboxSignal>,
    /// Connections to peers (a revoke closes them).
    peer_channels: Arc<Channels>,
    protocol: Protocol,
    refusals: Refusals,
    audit: Audit,
}

/// What the peering service is built from.
pub struct PeeringParts {
    pub org_id: OrgId,
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub identity: Arc<IdentityCell>,
    pub current_key: Arc<CurrentKey>,
    pub profile: Arc<RwLock<OrgProfile>>,
    pub advertised: String,
    pub outbox: Arc<OutboxSignal>,
    pub peer_channels: Arc<Channels>,
    pub protocol: Protocol,
    pub refusals: Refusals,
    pub audit: Audit,
}

impl Peering {
    pub fn new(p: PeeringParts) -> Self {
        Self {
            org_id: p.org_id,
            config: p.config,
            store: p.store,
            clock: p.clock,
            identity: p.identity,
            current_key: p.current_key,
            profile: p.profile,
            advertised: p.advertised,
            outbox: p.outbox,
            peer_channels: p.peer_channels,
            protocol: p.protocol,
            refusals: p.refusals,
            audit: p.audit,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn identity(&self) -> anyhow::Result<RwLockReadGuard<'_, Identity>> {
        self.identity.read()
    }

    fn fingerprint(&self) -> anyhow::Result<String> {
        self.identity.fingerprint()
    }

    /// Our profile as it is now.
    pub fn profile(&self) -> OrgProfile {
        match self.profile.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn advertised_endpoint(&self) -> String {
        self.advertised.clone()
    }
}

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

// === Invitations and joining ===

// === The lifecycle ===

impl Peering {
    /// An administrator's decision; the peer is told through the outbox.
    pub async fn decide(&self, org: &OrgId, action: PeerAction) -> Result<Peer> {
        let peer = self
            .store
            .get_peer(org)
            .await?
            .ok_or(Error::NotFound("peer"))?;
        let next = action.apply(peer.state, peer.awaiting)?;
        let mut update = PeerUpdate {
            expected_state: Some(peer.state),
            state: Some(next),
            awaiting: Some(Awaiting::None),
            notices: vec![
                self.protocol
                    .peering_notice(org, &PeeringNotice::State(next), None),
            ],
            audit: vec![
                crate::audit::AuditEntry::admin(
                    self.now_ms(),
                    &format!("peer.{}", next.as_str()),
                    "peer",
                    org.as_str(),
                )
                .with_peer(org.as_str()),
            ],
            now_ms: self.now_ms(),
            ..Default::default()
        };
        if next == PeerState::Revoked {
            // Their withdrawals are still delivered: say so in the record.
            update.audit.extend(self.on_revoke(org).await?);
        }
        // Read before the change: the keys whose connections a revoke closes.
        let keys = if next == PeerState::Revoked {
            self.store.peer_keys(org, 0).await?
        } else {
            Vec::new()
        };
        if !self.store.update_peer(org, &update).await? {
            return Err(Error::FailedPrecondition(
                "the peer changed meanwhile; try again".into(),
            ));
        }
        if next == PeerState::Revoked {
            // Connections to and from the peer end now, not when they idle out;
            // what is still owed to it (the revoke notice, withdrawals) goes out
            // on a new one.
            let fingerprints: Vec<String> = keys.into_iter().map(|k| k.fingerprint).collect();
            let closed = self.peer_channels.close_peer(org.as_str(), &fingerprints);
            tracing::info!(peer = %org, connections = closed, "connections to the revoked peer closed");
        }
        self.outbox.wake();
        tracing::info!(peer = %org, from = peer.state.as_str(), to = next.as_str(), "peer state changed");
        self.store
            .get_peer(org)
            .await?
            .ok_or(Error::NotFound("peer"))
    }

    /// A notice from an authenticated peer. Applied once per notice ID.
    pub async fn receive_notice(
        &self,
        from: &Peer,
        presented_fingerprint: &str,
        notice_id: &str,
        notice: PeeringNotice,
    ) -> Result<()> {
        if notice_id.is_empty()
            || notice_id.len() > 64
            || !notice_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(
                FieldError::new("notice_id", "must be 1 to 64 printable ASCII characters").into(),
            );
        }
        let now = self.now_ms();
        let mut update = PeerUpdate {
            now_ms: now,
            ..Default::default()
        };
        match notice {
            PeeringNotice::State(s) => {
                update.remote_state = Some(s);
                if from.state == PeerState::Pending && from.awaiting == Awaiting::Remote {
                    match s {
                        PeerState::Active => {
                            // They approved: we are active, and tell them we are.
                            update.expected_state = Some(PeerState::Pending);
                            update.state = Some(PeerState::Active);
                            update.awaiting = Some(Awaiting::None);
                            update.notices.push(self.protocol.peering_notice(
                                &from.org_id,
                                &PeeringNotice::State(PeerState::Active),
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
            PeeringNotice::Profile(p) => {
                if from.state != PeerState::Active {
                    return Err(Error::PermissionDenied("peer_pending".into()));
                }
                if p.org_id != from.org_id {
                    return Err(FieldError::new(
                        "profile.org_id",
                        "must be the sender's own organisation ID",
                    )
                    .into());
                }
                update.profile = Some(p);
            }
            PeeringNotice::KeyRotation(signed) => {
                if from.state != PeerState::Active {
                    return Err(Error::PermissionDenied("peer_pending".into()));
                }
                let (key, old_valid_until) =
                    match self
                        .protocol
                        .verify_rotation(from, presented_fingerprint, &signed)
                    {
                        Ok(v) => v,
                        Err(e) => {
                            // A refused rotation may be a takeover attempt by
                            // a thief of an old key: on record.
                            self.rotation_refused(
                                from,
                                presented_fingerprint,
                                "key_rotation_refused",
                            )
                            .await;
                            return Err(e);
                        }
                    };
                update.add_key = Some(key);
                update.retire_other_keys_at_ms =
                    Some(old_valid_until.min(now + MAX_KEY_OVERLAP_MS));
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
            self.now_ms(),
            from.org_id.as_str(),
            &what,
            "peer",
            from.org_id.as_str(),
        ));
        let applied = self
            .store
            .apply_notice_once(&from.org_id, notice_id, &update)
            .await?;
        if !applied && let Some(key) = &update.add_key {
            // Not applied: a repeat of this notice (its key is pinned), or
            // another rotation from the same key won the race. The loser is told
            // so, and it is on record: one of the two may be a thief's.
            let pinned = self.store.peer_keys(&from.org_id, self.now_ms()).await?;
            if !pinned.iter().any(|k| k.fingerprint == key.fingerprint) {
                self.rotation_refused(from, presented_fingerprint, "key_rotation_superseded")
                    .await;
                return Err(Error::FailedPrecondition(
                    "key_rotation.old_public_key: another rotation from this key was applied first"
                        .into(),
                ));
            }
        }
        if applied {
            if !update.notices.is_empty() {
                self.outbox.wake();
            }
            tracing::info!(peer = %from.org_id, "notice applied");
        }
        Ok(())
    }

    /// At start: if the configured profile differs from the one last announced,
    /// queue it for every active peer.
    pub async fn announce_profile_if_changed(&self) -> Result<()> {
        let mut profile = self.profile();
        let mut comparable = profile.clone();
        comparable.updated_at_ms = 0;
        let digest = hex(&sha256(&comparable.encoded()));
        let previous = self.store.meta_get("announced_profile_digest").await?;
        let stored_at = self.store.meta_get("profile_updated_at").await?;
        if previous.as_deref() == Some(digest.as_str()) {
            if let Some(at) = stored_at.and_then(|s| s.parse().ok()) {
                profile.updated_at_ms = at;
                if let Ok(mut p) = self.profile.write() {
                    p.updated_at_ms = at;
                }
            }
            return Ok(());
        }
        let now = self.now_ms();
        if let Ok(mut p) = self.profile.write() {
            p.updated_at_ms = now;
        }
        profile.updated_at_ms = now;
        let peers = self.store.list_peers().await?;
        let notices: Vec<NewNotice> = peers
            .iter()
            .filter(|p| p.state == PeerState::Active)
            .map(|p| {
                self.protocol.peering_notice(
                    &p.org_id,
                    &PeeringNotice::Profile(profile.clone()),
                    None,
                )
            })
            .collect();
        self.store.enqueue_notices(&notices).await?;
        self.store
            .meta_set("announced_profile_digest", &digest)
            .await?;
        self.store
            .meta_set("profile_updated_at", &now.to_string())
            .await?;
        self.outbox.wake();
        Ok(())
    }
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

// === Key rotation and profile ===

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
