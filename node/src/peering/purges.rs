//! Purges outlive peerings: withdrawals go to a peer while any key of it is
//! pinned, whatever the state of the peering (the outbox lets them pass),
//! until the peer's purge receipts come or an administrator gives up on
//! them, which is recorded.

use super::Peering;
use crate::audit::AuditEntry;
use crate::domain::OrgId;
use crate::error::{Error, Result};

impl Peering {
    /// Referrals sent to `org` whose purge receipt has not come.
    pub async fn pending_at(&self, org: &OrgId) -> Result<i64> {
        Ok(self
            .store
            .pending_purges()
            .await?
            .into_iter()
            .find(|(peer, _, _)| peer == org.as_str())
            .map(|(_, n, _)| n)
            .unwrap_or(0))
    }

    /// The audit entry that says a revoke left purges pending (delivered on),
    /// recorded with the revoke.
    pub async fn on_revoke(&self, org: &OrgId) -> Result<Option<AuditEntry>> {
        let pending = self.pending_at(org).await?;
        Ok((pending > 0).then(|| {
            AuditEntry::admin(
                self.now_ms(),
                "peer.revoke.purges_pending",
                "peer",
                org.as_str(),
            )
            .with_peer(org.as_str())
            .result(&format!("pending:{pending}"))
        }))
    }

    /// The administrator gives up the purges pending at `org`, whose peering
    /// has ended: its queued withdrawals are dropped and the referrals' purge
    /// status becomes `abandoned`, recorded in the audit trail with the count.
    /// (Referrals withdrawn, notices dropped.)
    pub async fn abandon(&self, org: &OrgId) -> Result<(u64, u64)> {
        let peer = self
            .store
            .get_peer(org)
            .await?
            .ok_or(Error::NotFound("peer"))?;
        if !super::peering_ended(&peer) {
            return Err(Error::FailedPrecondition(format!(
                "the peering with {org} has not ended: its withdrawals are still delivered; give up purges only after `exitnetctl peer revoke {org}`"
            )));
        }
        let mut rows = Vec::new();
        for n in self.store.undelivered_notices_for(org, i64::MAX).await? {
            // One that no longer opens (say, sealed under a destroyed master
            // key generation) cannot be delivered either: it does not stop the
            // administrator from giving up the others.
            let req = match self.protocol.open_notice(&n.notice_id, &n.payload) {
                Ok(req) => req,
                Err(e) => {
                    tracing::warn!(peer = %org, notice = n.id, error = %e, "a queued notice does not open; left as it is");
                    continue;
                }
            };
            if crate::protocol::messages::is_withdrawal(&req) {
                rows.push(n.id);
            }
        }
        let pending = self.pending_at(org).await?;
        let audit =
            [
                AuditEntry::admin(self.now_ms(), "peer.purges_abandoned", "peer", org.as_str())
                    .with_peer(org.as_str())
                    .result(&format!("abandoned:{pending}")),
            ];
        let done = self
            .store
            .abandon_purges(org, &rows, &audit, self.now_ms())
            .await?;
        tracing::warn!(peer = %org, referrals = done.0, withdrawals = done.1, "pending purges abandoned by the administrator");
        Ok(done)
    }
}
