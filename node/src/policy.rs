//! Per-peer policy: what may be sent to and accepted from each peer, on top
//! of each consent. Checked at both ends.

pub use crate::domain::policy::PeerPolicy;
use crate::error::{Error, Result};

/// The policy for a peer: stored, or the default.
pub async fn for_peer(
    store: &dyn crate::store::Store,
    org: &crate::domain::OrgId,
) -> Result<(PeerPolicy, bool)> {
    match store.meta_get(&format!("policy:{org}")).await? {
        Some(hex) => {
            let bytes = crate::domain::unhex(&hex)
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored policy: not hex")))?;
            Ok((
                PeerPolicy::decode_stored(&bytes)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("stored policy: {e}")))?,
                true,
            ))
        }
        None => Ok((PeerPolicy::default(), false)),
    }
}

pub async fn set_for_peer(
    store: &dyn crate::store::Store,
    org: &crate::domain::OrgId,
    p: &PeerPolicy,
) -> Result<()> {
    store
        .meta_set(
            &format!("policy:{org}"),
            &crate::identity::hex(&p.encoded()),
        )
        .await
}
