//! The client API for agency systems: thin gRPC adapters over the domain.

use crate::domain::{NeedArea, PeerState, Service};
use crate::error::Error;
use crate::state::NodeState;
use exitnet_proto::pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Largest message an agency system may send.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

pub struct NodeApi {
    state: Arc<NodeState>,
}

impl NodeApi {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeApi {
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::GetNodeInfoResponse>, Status> {
        Ok(Response::new(pb::GetNodeInfoResponse {
            profile: Some(self.state.profile().to_pb()),
            protocol_version: exitnet_proto::PROTOCOL_VERSION,
            key_fingerprint: self.state.fingerprint().map_err(Error::from)?,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}

pub struct DirectoryApi {
    state: Arc<NodeState>,
}

impl DirectoryApi {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let pb::ListPeersRequest {
            need_area,
            service,
            accepting_only,
        } = request.into_inner();
        let need_area = NeedArea::from_pb_optional("need_area", need_area).map_err(Error::from)?;
        let service = Service::from_pb_optional("service", service).map_err(Error::from)?;
        let peers = self.state.store.list_peers().await?;
        let peers = peers
            .into_iter()
            .filter(|p| p.state == PeerState::Active && p.exchange_allowed())
            .filter(|p| need_area.is_none_or(|a| p.profile.offers_need_area(a)))
            .filter(|p| service.is_none_or(|s| p.profile.services.contains(&s)))
            .filter(|p| !accepting_only || p.profile.accepting_referrals)
            .map(|p| p.profile.to_pb())
            .collect();
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }
}
