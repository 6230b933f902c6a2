//! The calls the services make to a peer's federation port outside
//! delivery (which keeps connections of its own): asking which referrals
//! it withdrew, and which of our audit checkpoints it witnessed.

use super::Protocol;
use crate::domain::{JoinRequest, OrgProfile, Peer};
use crate::error::{Error, Result};
use exitnet_proto::pb;
use pb::federation_service_client::FederationServiceClient;
use tonic::transport::Channel;

/// A connection to one peer: our current key, the peer's pinned keys.
#[derive(Debug)]
pub struct PeerClient {
    inner: FederationServiceClient<Channel>,
}

impl PeerClient {
    /// A connection to `peer`, which must present one of its pinned keys.
    pub async fn connect(protocol: &Protocol, peer: &Peer) -> anyhow::Result<Self> {
        let pinned = protocol
            .store
            .peer_keys(&peer.org_id, protocol.now_ms())
            .await?
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        Self::connect_pinned(protocol, &peer.endpoint, pinned).await
    }

    /// A connection to `endpoint`, which must present a key of `pinned`
    /// (fingerprints): an inviter, before it is a peer.
    pub async fn connect_pinned(
        protocol: &Protocol,
        endpoint: &str,
        pinned: Vec<String>,
    ) -> anyhow::Result<Self> {
        // The key is cloned out of the lock: no lock is held across the call.
        let ours = protocol.identity()?.current().clone_key()?;
        let inner =
            crate::transport::client::connect(endpoint, Some(&ours), pinned, protocol.call_timeout)
                .await?;
        Ok(PeerClient { inner })
    }

    /// Asks the inviter to take us as a peer: its profile, checked.
    pub async fn join(&mut self, request: &JoinRequest) -> Result<OrgProfile> {
        let response = self
            .inner
            .join(request.to_pb())
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    Error::Unavailable(format!("the inviter did not answer: {}", s.message()))
                }
                _ => Error::FailedPrecondition(format!(
                    "the inviter refused the join: {}",
                    s.message()
                )),
            })?;
        let profile = response
            .into_inner()
            .profile
            .ok_or_else(|| Error::Unavailable("the inviter sent no profile".into()))?;
        OrgProfile::from_pb(profile)
            .map_err(|e| Error::Unavailable(format!("the inviter sent an invalid profile: {e}")))
    }

    /// Which of `referral_ids` (ours, sent to the peer) the peer holds as
    /// withdrawn; `None` when it cannot say (a peer of an older release).
    pub async fn list_withdrawn(
        &mut self,
        referral_ids: Vec<String>,
    ) -> anyhow::Result<Option<Vec<String>>> {
        match self
            .inner
            .list_withdrawn(pb::ListWithdrawnRequest { referral_ids })
            .await
        {
            Ok(r) => Ok(Some(r.into_inner().referral_ids)),
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
            Err(s) => Err(anyhow::anyhow!("ListWithdrawn: {}", s.code())),
        }
    }

    /// A page of the checkpoints of ours the peer witnessed, after `after_seq`.
    pub async fn witnessed_checkpoints(
        &mut self,
        after_seq: u64,
        limit: u32,
    ) -> anyhow::Result<Vec<crate::domain::audit::SignedCheckpoint>> {
        Ok(self
            .inner
            .list_witnessed_checkpoints(pb::ListWitnessedCheckpointsRequest { after_seq, limit })
            .await?
            .into_inner()
            .checkpoints
            .into_iter()
            .map(Into::into)
            .collect())
    }
}
