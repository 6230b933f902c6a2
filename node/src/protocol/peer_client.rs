//! The calls the services make to a peer's federation port outside
//! delivery (which keeps connections of its own): asking which referrals
//! it withdrew, and which of our audit checkpoints it witnessed.

use crate::domain::Peer;
use crate::state::NodeState;
use exitnet_proto::pb;
use pb::federation_service_client::FederationServiceClient;
use tonic::transport::Channel;

/// A connection to one peer: our current key, the peer's pinned keys.
#[derive(Debug)]
pub struct PeerClient {
    inner: FederationServiceClient<Channel>,
}

impl PeerClient {
    pub async fn connect(state: &NodeState, peer: &Peer) -> anyhow::Result<Self> {
        let pinned = state
            .store
            .peer_keys(&peer.org_id, state.now_ms())
            .await?
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        let ours = state.identity()?.current().clone_key()?;
        let inner = crate::transport::client::connect(
            &peer.endpoint,
            Some(&ours),
            pinned,
            state.call_timeout(),
        )
        .await?;
        Ok(PeerClient { inner })
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
    ) -> anyhow::Result<Vec<pb::SignedCheckpoint>> {
        Ok(self
            .inner
            .list_witnessed_checkpoints(pb::ListWitnessedCheckpointsRequest { after_seq, limit })
            .await?
            .into_inner()
            .checkpoints)
    }
}
