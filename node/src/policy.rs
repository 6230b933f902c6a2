//! Per-peer policy: what may be sent to and accepted from each peer, on top
//! of each consent. Checked at both ends.

pub use crate::domain::policy::PeerPolicy;
use crate::error::{Error, Result};
use exitnet_proto::pb;

/// The policy for a peer: stored, or the default.
pub async fn for_peer(
    store: &dyn crate::store::Store,
    org: &crate::domain::OrgId,
) -> Result<(PeerPolicy, bool)> {
    use prost::Message;
    match store.meta_get(&format!("policy:{org}")).await? {
        Some(hex) => {
            let bytes = crate::domain::unhex(&hex)
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored policy: not hex")))?;
            let p =
                pb::PeerPolicy::decode(bytes.as_slice()).map_err(|e| Error::Internal(e.into()))?;
            Ok((
                PeerPolicy::from_pb(p)
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
    use prost::Message;
    store
        .meta_set(
            &format!("policy:{org}"),
            &crate::identity::hex(&p.to_pb().encode_to_vec()),
        )
        .await
}
