//! Invitations, peers, their pinned keys and the notices they sent us.
//!
//! `PeerStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use super::rows::row_to_peer;
use super::shared::*;
use crate::domain::{OrgId, Peer};
use crate::error::Result;
use crate::store::sql::{PEER_SELECT, peer_select_uncounted};
use crate::store::{JoinRefusal, NewInvitation, NewPeer, PeerKey, PeerUpdate};
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::PeerStore for S {
    async fn create_invitation(&self, inv: &NewInvitation) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO invitations (id, secret_hash, expires_at, note, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&inv.id)
        .bind(&inv.secret_hash)
        .bind(inv.expires_at_ms)
        .bind(&inv.note)
        .bind(inv.created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn accept_join(
        &self,
        invitation_id: &str,
        secret_hash: &[u8],
        peer: &NewPeer,
    ) -> Result<std::result::Result<(), JoinRefusal>> {
        use subtle::ConstantTimeEq;
        let _invalidate = self.cache.invalidate_on_drop();
        let mut tx = self.begin_write().await?;
        let row =
            sqlx::query("SELECT secret_hash, expires_at, used_at FROM invitations WHERE id = $1")
                .bind(invitation_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(Err(JoinRefusal::UnknownInvitation));
        };
        let stored: Vec<u8> = row.try_get("secret_hash")?;
        if !bool::from(stored.as_slice().ct_eq(secret_hash)) {
            return Ok(Err(JoinRefusal::WrongSecret));
        }
        let used_at: Option<i64> = row.try_get("used_at")?;
        if used_at.is_some() {
            return Ok(Err(JoinRefusal::AlreadyUsed));
        }
        let expires_at: i64 = row.try_get("expires_at")?;
        if expires_at <= peer.now_ms {
            return Ok(Err(JoinRefusal::Expired));
        }
        // The same node joining again (with the same key) while its
        // first join still waits for our approval: it lost its own
        // record (a crash between our answer and its commit), so its
        // new join replaces the pending one.
        sqlx::query(
            "DELETE FROM peers WHERE org_id = $1 AND state = 'pending' AND awaiting = 'local'
             AND EXISTS (SELECT 1 FROM peer_keys k WHERE k.org_id = peers.org_id AND k.fingerprint = $2)",
        )
        .bind(peer.profile.org_id.as_str())
        .bind(&peer.key.fingerprint)
        .execute(&mut *tx)
        .await?;
        if live_peer_exists(&mut tx, peer.profile.org_id.as_str()).await? {
            return Ok(Err(JoinRefusal::OrgAlreadyPeered));
        }
        if live_owner_of_key(&mut tx, &peer.key.fingerprint)
            .await?
            .is_some()
        {
            return Ok(Err(JoinRefusal::KeyAlreadyPinned));
        }
        // Conditional on still being unused: of concurrent joins with
        // one invitation, exactly one marks it.
        let marked = sqlx::query(
            "UPDATE invitations SET used_at = $1, used_by = $2 WHERE id = $3 AND used_at IS NULL",
        )
        .bind(peer.now_ms)
        .bind(peer.profile.org_id.as_str())
        .bind(invitation_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked != 1 {
            return Ok(Err(JoinRefusal::AlreadyUsed));
        }
        insert_peer_rows(&mut tx, peer).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn insert_peer(&self, peer: &NewPeer) -> Result<()> {
        let _invalidate = self.cache.invalidate_on_drop();
        let mut tx = self.begin_write().await?;
        if live_peer_exists(&mut tx, peer.profile.org_id.as_str()).await? {
            return Err(crate::error::Error::AlreadyExists(format!(
                "peer {} is already recorded",
                peer.profile.org_id
            )));
        }
        if live_owner_of_key(&mut tx, &peer.key.fingerprint)
            .await?
            .is_some()
        {
            return Err(crate::error::Error::AlreadyExists(
                "that key is already pinned for another peer".into(),
            ));
        }
        insert_peer_rows(&mut tx, peer).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_peer(&self, org: &OrgId) -> Result<Option<Peer>> {
        let sql = sqlx::AssertSqlSafe(format!("{PEER_SELECT} WHERE p.org_id = $1"));
        let row = sqlx::query(sql)
            .bind(org.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_peer).transpose()
    }

    async fn peer_for_exchange(&self, org: &OrgId) -> Result<Option<Peer>> {
        if let Some(hit) = self.cache.peer(org.as_str()) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket();
        let sql = sqlx::AssertSqlSafe(format!("{} WHERE p.org_id = $1", peer_select_uncounted()));
        let row = sqlx::query(sql)
            .bind(org.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let peer = row.as_ref().map(row_to_peer).transpose()?;
        if let Some(ticket) = ticket {
            self.cache.put_peer(ticket, org.as_str(), peer.clone());
        }
        Ok(peer)
    }

    async fn list_peers(&self) -> Result<Vec<Peer>> {
        let sql = sqlx::AssertSqlSafe(format!("{PEER_SELECT} ORDER BY p.org_id"));
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_peer).collect()
    }

    async fn find_peer_by_key(&self, fingerprint: &str, now_ms: i64) -> Result<Option<Peer>> {
        if let Some(hit) = self.cache.peer_by_key(fingerprint, now_ms) {
            return Ok(hit);
        }
        let ticket = self.cache.ticket();
        let sql = sqlx::AssertSqlSafe(
            format!(
                "{} JOIN peer_keys pk ON pk.org_id = p.org_id
             WHERE pk.fingerprint = $1 AND (pk.valid_until IS NULL OR pk.valid_until > $2)",
                peer_select_uncounted()
            )
            .replacen("SELECT ", "SELECT pk.valid_until AS key_valid_until, ", 1),
        );
        let row = sqlx::query(sql)
            .bind(fingerprint)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        let peer = row.as_ref().map(row_to_peer).transpose()?;
        if let Some(ticket) = ticket {
            let valid_until_ms = match &row {
                Some(r) => r.try_get("key_valid_until")?,
                None => None,
            };
            self.cache.put_peer_by_key(
                ticket,
                fingerprint,
                crate::store::cache::KeyEntry {
                    peer: peer.clone(),
                    valid_until_ms,
                },
            );
        }
        Ok(peer)
    }

    async fn peer_keys(&self, org: &OrgId, now_ms: i64) -> Result<Vec<PeerKey>> {
        // All of the peer's keys are read (and kept), those valid at
        // `now_ms` returned: a retired key drops out as its time passes.
        let valid = |keys: Vec<PeerKey>| -> Vec<PeerKey> {
            keys.into_iter()
                .filter(|k| k.valid_until_ms.is_none_or(|v| v > now_ms))
                .collect()
        };
        if let Some(all) = self.cache.keys(org.as_str()) {
            return Ok(valid(all));
        }
        let ticket = self.cache.ticket();
        let rows = sqlx::query(
            "SELECT fingerprint, spki, added_at, valid_until FROM peer_keys
             WHERE org_id = $1 ORDER BY added_at DESC, fingerprint",
        )
        .bind(org.as_str())
        .fetch_all(&self.pool)
        .await?;
        let all = rows
            .iter()
            .map(|r| {
                Ok(PeerKey {
                    fingerprint: r.try_get("fingerprint")?,
                    spki_der: r.try_get("spki")?,
                    added_at_ms: r.try_get("added_at")?,
                    valid_until_ms: r.try_get("valid_until")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(ticket) = ticket {
            self.cache.put_keys(ticket, org.as_str(), all.clone());
        }
        Ok(valid(all))
    }

    async fn update_peer(&self, org: &OrgId, update: &PeerUpdate) -> Result<bool> {
        let _invalidate = self.cache.invalidate_on_drop();
        let mut tx = self.begin_write().await?;
        let applied = apply_update(&mut tx, org, update).await?;
        if applied {
            append_audit_tx(&mut tx, &update.audit).await?;
            tx.commit().await?;
        }
        Ok(applied)
    }

    async fn apply_notice_once(
        &self,
        org: &OrgId,
        notice_id: &str,
        update: &PeerUpdate,
    ) -> Result<bool> {
        let _invalidate = self.cache.invalidate_on_drop();
        let mut tx = self.begin_write().await?;
        let fresh = sqlx::query(
            "INSERT INTO seen_notices (org_id, notice_id, received_at) VALUES ($1, $2, $3)
             ON CONFLICT (org_id, notice_id) DO NOTHING",
        )
        .bind(org.as_str())
        .bind(notice_id)
        .bind(update.now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(false);
        }
        // A notice that no longer fits the state is remembered as seen and ignored.
        let applied = apply_update(&mut tx, org, update).await?;
        if applied {
            append_audit_tx(&mut tx, &update.audit).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn touch_peer(&self, org: &OrgId, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE peers SET last_seen_at = $1 WHERE org_id = $2")
            .bind(now_ms)
            .bind(org.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.cache.touched(org.as_str(), now_ms);
        Ok(())
    }
}
