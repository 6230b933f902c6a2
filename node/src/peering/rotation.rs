//! Key rotation: a new key announced to every peer, signed by the old one,
//! and a peer's announcement checked before its new key is pinned.

use super::*;

impl Peering {
    /// A key rotation refused (`reason`): on record as a security event, as it
    /// may be a takeover attempt by a thief of a key.
    pub(super) async fn rotation_refused(
        &self,
        from: &Peer,
        presented_fingerprint: &str,
        reason: &str,
    ) {
        self.refusals
            .record(SecurityEvent {
                at_ms: self.now_ms(),
                surface: "federation".into(),
                reason: reason.into(),
                key_fingerprint: Some(presented_fingerprint.to_owned()),
                org_id: Some(from.org_id.to_string()),
                remote_addr: None,
                method: Some("Notify".into()),
            })
            .await;
    }

    /// Makes a new key; every active peer is told, signed by the old key, and
    /// keeps accepting the old one for the configured overlap.
    pub async fn rotate_key(&self) -> Result<Rotation> {
        let overlap_ms = (self.config.federation.key_overlap_secs as i64).saturating_mul(1000);
        let (old_fp, new_fp, new_spki, until, certified) = {
            let mut identity = self
                .identity
                .write()
                .map_err(|_| Error::Internal(anyhow::anyhow!("identity lock poisoned")))?;
            let old_fp = identity.current().fingerprint().to_owned();
            let until = identity.rotate(self.org_id.as_str(), overlap_ms)?;
            let new = identity.current();
            (
                old_fp,
                new.fingerprint().to_owned(),
                new.spki_der().to_vec(),
                until,
                new.certified_key()?,
            )
        };
        self.current_key.set(certified);
        self.protocol.remember_own_key().await?;
        self.audit
            .record(&[crate::audit::AuditEntry::admin(
                self.now_ms(),
                "identity.rotate",
                "key",
                &new_fp,
            )])
            .await;
        // If the process dies before this commits, the next start finds the
        // new key unannounced and announces it (`announce_rotation_if_missing`).
        let notices = self.rotation_notices(&old_fp, &new_spki, until).await?;
        self.store
            .enqueue_notices_with_meta(&notices, ANNOUNCED_KEY, &new_fp)
            .await?;
        self.outbox.wake();
        tracing::info!(old = %old_fp, new = %new_fp, "identity key rotated");
        Ok(Rotation {
            old_fingerprint: old_fp,
            new_fingerprint: new_fp,
            old_valid_until_ms: until,
            peers_notified: notices.len() as u32,
        })
    }

    /// At start: a rotation that reached the key files but not the database (the
    /// process died in between) is announced now, signed with the key the peers
    /// know, so they do not refuse the new one.
    pub async fn announce_rotation_if_missing(&self) -> Result<()> {
        let current = self.fingerprint()?;
        let announced = self.store.meta_init(ANNOUNCED_KEY, &current).await?;
        if announced == current {
            return Ok(());
        }
        let found = {
            let identity = self.identity()?;
            let new_spki = identity.current().spki_der().to_vec();
            identity
                .retired(self.now_ms())
                .find(|r| r.key.fingerprint() == announced)
                .map(|r| (new_spki, r.valid_until_ms))
        };
        let Some((new_spki, until)) = found else {
            tracing::error!(
                announced = %announced,
                current = %current,
                "the key peers know is gone and the new one was never announced: peers must be re-peered"
            );
            return Ok(());
        };
        let notices = self.rotation_notices(&announced, &new_spki, until).await?;
        self.store
            .enqueue_notices_with_meta(&notices, ANNOUNCED_KEY, &current)
            .await?;
        tracing::warn!(old = %announced, new = %current, peers = notices.len(), "announcing a key rotation interrupted by a crash");
        Ok(())
    }

    /// The signed announcements of a new key, one per peer that accepts our calls.
    pub(super) async fn rotation_notices(
        &self,
        old_fp: &str,
        new_spki: &[u8],
        until: i64,
    ) -> Result<Vec<NewNotice>> {
        let peers = self.store.list_peers().await?;
        let mut notices = Vec::new();
        // Peers that accept our calls: active ones, and those we suspended (they
        // still see us as active). A pending peering must be re-invited after a
        // rotation, since the other side refuses notices until it is approved.
        for peer in peers
            .iter()
            .filter(|p| matches!(p.state, PeerState::Active | PeerState::Suspended))
        {
            let signed = {
                let identity = self.identity()?;
                let old = identity
                    .key(old_fp)
                    .ok_or_else(|| Error::Internal(anyhow::anyhow!("old key vanished")))?;
                let new = identity.current();
                if new.spki_der() != new_spki {
                    return Err(Error::Internal(anyhow::anyhow!(
                        "the key to announce is no longer current"
                    )));
                }
                crate::protocol::rotation::announcement(
                    &self.org_id,
                    &peer.org_id,
                    old,
                    new,
                    self.now_ms(),
                    until,
                )?
            };
            notices.push(self.protocol.peering_notice(
                &peer.org_id,
                &PeeringNotice::KeyRotation(signed),
                Some(old_fp.to_owned()),
            ));
        }
        Ok(notices)
    }
}

pub struct Rotation {
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    pub old_valid_until_ms: i64,
    pub peers_notified: u32,
}

/// Where the fingerprint of the key peers were last told of is kept.
pub(super) const ANNOUNCED_KEY: &str = "announced_key";
