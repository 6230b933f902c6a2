//! What the client API tells agency systems about this node and its peers:
//! who we are, and which active peers offer what.

use crate::domain::{NeedArea, OrgProfile, PeerState, Service};
use crate::error::Result;
use crate::identity::IdentityCell;
use crate::store::PeerStore;
use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct Directory {
    profile: Arc<RwLock<OrgProfile>>,
    identity: Arc<IdentityCell>,
    peers: Arc<dyn PeerStore>,
}

/// Which peers a caller looks for.
#[derive(Debug, Default)]
pub struct PeerQuery {
    pub need_area: Option<NeedArea>,
    pub service: Option<Service>,
    pub accepting_only: bool,
}

impl Directory {
    pub fn new(
        profile: Arc<RwLock<OrgProfile>>,
        identity: Arc<IdentityCell>,
        peers: Arc<dyn PeerStore>,
    ) -> Self {
        Self {
            profile,
            identity,
            peers,
        }
    }

    /// This node's profile as it is now (an admin may have changed it).
    pub fn profile(&self) -> OrgProfile {
        match self.profile.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The fingerprint of the key this node signs with now.
    pub fn fingerprint(&self) -> Result<String> {
        Ok(self.identity.fingerprint()?)
    }

    /// Active peers we may exchange with, matching `q`.
    pub async fn peers(&self, q: &PeerQuery) -> Result<Vec<OrgProfile>> {
        Ok(self
            .peers
            .list_peers()
            .await?
            .into_iter()
            .filter(|p| p.state == PeerState::Active && p.exchange_allowed())
            .filter(|p| q.need_area.is_none_or(|a| p.profile.offers_need_area(a)))
            .filter(|p| q.service.is_none_or(|s| p.profile.services.contains(&s)))
            .filter(|p| !q.accepting_only || p.profile.accepting_referrals)
            .map(|p| p.profile)
            .collect())
    }
}
