//! gRPC adapter for `ConsentService`.

use super::authenticate;
use crate::access::View;
use crate::consents::{self, NewConsent};
use crate::state::NodeState;
use exitnet_proto::pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ConsentApi {
    state: Arc<NodeState>,
}

impl ConsentApi {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentApi {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        let (p, _permit) = authenticate(&self.state, &request).await?;
        let new = NewConsent::from_pb(request.into_inner(), self.state.now_ms())?;
        let c = consents::record(&self.state, &p, new).await?;
        Ok(Response::new(pb::RecordConsentResponse {
            consent: Some(c.to_pb(true)),
        }))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        let (p, _permit) = authenticate(&self.state, &request).await?;
        let (c, view) = consents::get(&self.state, &p, &request.into_inner().consent_id).await?;
        Ok(Response::new(pb::GetConsentResponse {
            consent: Some(c.to_pb(view == View::Full)),
        }))
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let (p, _permit) = authenticate(&self.state, &request).await?;
        let pb::ListConsentsRequest {
            subject_ref,
            page_size,
            page_token,
        } = request.into_inner();
        let page = consents::list(&self.state, &p, &subject_ref, page_size, &page_token).await?;
        let full = page.view == View::Full;
        Ok(Response::new(pb::ListConsentsResponse {
            consents: page.consents.iter().map(|c| c.to_pb(full)).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        let (p, _permit) = authenticate(&self.state, &request).await?;
        let (c, n) = consents::withdraw(&self.state, &p, &request.into_inner().consent_id).await?;
        Ok(Response::new(pb::WithdrawConsentResponse {
            consent: Some(c.to_pb(true)),
            recipients_notified: n,
        }))
    }
}
