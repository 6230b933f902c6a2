//! gRPC adapter for `ConsentService`.

use super::SignIn;
use crate::access::View;
use crate::consents::{Consents, NewConsent};
use exitnet_proto::pb;
use tonic::{Request, Response, Status};

pub struct ConsentApi {
    sign_in: SignIn,
    consents: Consents,
}

impl ConsentApi {
    pub fn new(sign_in: SignIn, consents: Consents) -> Self {
        Self { sign_in, consents }
    }
}

#[tonic::async_trait]
impl pb::consent_service_server::ConsentService for ConsentApi {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let new = NewConsent::from_pb(request.into_inner(), self.consents.now_ms())?;
        let c = self.consents.record(&p, new).await?;
        Ok(Response::new(pb::RecordConsentResponse {
            consent: Some(c.to_pb(true)),
        }))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let (c, view) = self
            .consents
            .get(&p, &request.into_inner().consent_id)
            .await?;
        Ok(Response::new(pb::GetConsentResponse {
            consent: Some(c.to_pb(view == View::Full)),
        }))
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let pb::ListConsentsRequest {
            subject_ref,
            page_size,
            page_token,
        } = request.into_inner();
        let page = self
            .consents
            .list(&p, &subject_ref, page_size, &page_token)
            .await?;
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
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let (c, n) = self
            .consents
            .withdraw(&p, &request.into_inner().consent_id)
            .await?;
        Ok(Response::new(pb::WithdrawConsentResponse {
            consent: Some(c.to_pb(true)),
            recipients_notified: n,
        }))
    }
}
