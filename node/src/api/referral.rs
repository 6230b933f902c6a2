//! gRPC adapter for `ReferralService`.

use super::SignIn;
use crate::auth::Principal;
use crate::domain::referral::Transition;
use crate::domain::{DeclineReason, FailureReason, OrgId, ReferralState};
use crate::error::FieldError;
use crate::referrals::{NewReferral, Referrals};
use crate::signals::ChangeFeed;
use crate::store::{ReferralFilter, ReferralRecord};
use crate::wire::change as changes;
use exitnet_proto::pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct ReferralApi {
    sign_in: SignIn,
    referrals: Referrals,
    /// Referral IDs that changed, for watchers.
    changes: Arc<ChangeFeed>,
}

impl ReferralApi {
    pub fn new(sign_in: SignIn, referrals: Referrals, changes: Arc<ChangeFeed>) -> Self {
        Self {
            sign_in,
            referrals,
            changes,
        }
    }

    /// The referral the caller has just acted on.
    async fn out(&self, r: &ReferralRecord, p: &Principal) -> Result<pb::Referral, Status> {
        Ok(self.referrals.view_after_action(p, r).await?.try_into()?)
    }

    /// A receiver's state change: the caller is authenticated first, then
    /// the request read as `(referral_id, transition)` and checked.
    async fn transition<T>(
        &self,
        request: Request<T>,
        read: impl FnOnce(T) -> Result<(String, Transition), FieldError>,
    ) -> Result<pb::Referral, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let (id, transition) = read(request.into_inner())?;
        let transition = transition.checked("text", "outcome")?;
        let r = self.referrals.act(&p, &id, transition).await?;
        self.out(&r, &p).await
    }
}

#[tonic::async_trait]
impl pb::referral_service_server::ReferralService for ReferralApi {
    async fn create_referral(
        &self,
        request: Request<pb::CreateReferralRequest>,
    ) -> Result<Response<pb::CreateReferralResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let new = NewReferral::from_pb(request.into_inner())?;
        let referral = self.referrals.create_and_view(&p, new).await?;
        Ok(Response::new(pb::CreateReferralResponse {
            referral: Some(referral.try_into()?),
        }))
    }

    async fn get_referral(
        &self,
        request: Request<pb::GetReferralRequest>,
    ) -> Result<Response<pb::GetReferralResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let (r, view) = self
            .referrals
            .get(&p, &request.into_inner().referral_id)
            .await?;
        Ok(Response::new(pb::GetReferralResponse {
            referral: Some(view_of(&self.referrals, &r, view).await?),
        }))
    }

    async fn list_referrals(
        &self,
        request: Request<pb::ListReferralsRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let pb::ListReferralsRequest {
            direction,
            state,
            peer_org,
            page_size,
            page_token,
        } = request.into_inner();
        let filter = ReferralFilter {
            outbound: match pb::Direction::try_from(direction) {
                Ok(pb::Direction::Unspecified) => None,
                Ok(pb::Direction::Outbound) => Some(true),
                Ok(pb::Direction::Inbound) => Some(false),
                Err(_) => {
                    return Err(
                        FieldError::new("direction", format!("unknown value {direction}")).into(),
                    );
                }
            },
            state: ReferralState::from_pb_optional("state", state)?.map(|s| s.as_str().to_owned()),
            peer_org: if peer_org.is_empty() {
                None
            } else {
                Some(OrgId::parse("peer_org", &peer_org)?.to_string())
            },
        };
        let page = self
            .referrals
            .list(&p, filter, page_size, &page_token)
            .await?;
        let mut out = Vec::with_capacity(page.referrals.len());
        for (r, view) in &page.referrals {
            out.push(view_of(&self.referrals, r, *view).await?);
        }
        Ok(Response::new(pb::ListReferralsResponse {
            referrals: out,
            next_page_token: page.next_page_token,
        }))
    }

    async fn accept_referral(
        &self,
        request: Request<pb::AcceptReferralRequest>,
    ) -> Result<Response<pb::AcceptReferralResponse>, Status> {
        let r = self
            .transition(request, |r| Ok((r.referral_id, Transition::Accept)))
            .await?;
        Ok(Response::new(pb::AcceptReferralResponse {
            referral: Some(r),
        }))
    }

    async fn decline_referral(
        &self,
        request: Request<pb::DeclineReferralRequest>,
    ) -> Result<Response<pb::DeclineReferralResponse>, Status> {
        let r = self
            .transition(request, |r| {
                let reason = DeclineReason::from_pb("reason", r.reason)?;
                let t = Transition::Decline {
                    reason,
                    text: r.text,
                };
                Ok((r.referral_id, t))
            })
            .await?;
        Ok(Response::new(pb::DeclineReferralResponse {
            referral: Some(r),
        }))
    }

    async fn start_referral(
        &self,
        request: Request<pb::StartReferralRequest>,
    ) -> Result<Response<pb::StartReferralResponse>, Status> {
        let r = self
            .transition(request, |r| Ok((r.referral_id, Transition::Start)))
            .await?;
        Ok(Response::new(pb::StartReferralResponse {
            referral: Some(r),
        }))
    }

    async fn hold_referral(
        &self,
        request: Request<pb::HoldReferralRequest>,
    ) -> Result<Response<pb::HoldReferralResponse>, Status> {
        let r = self
            .transition(request, |r| {
                Ok((r.referral_id, Transition::Hold { text: r.text }))
            })
            .await?;
        Ok(Response::new(pb::HoldReferralResponse {
            referral: Some(r),
        }))
    }

    async fn complete_referral(
        &self,
        request: Request<pb::CompleteReferralRequest>,
    ) -> Result<Response<pb::CompleteReferralResponse>, Status> {
        let r = self
            .transition(request, |r| {
                let outcome = changes::outcome("outcome", r.outcome)?;
                Ok((r.referral_id, Transition::Complete { outcome }))
            })
            .await?;
        Ok(Response::new(pb::CompleteReferralResponse {
            referral: Some(r),
        }))
    }

    async fn fail_referral(
        &self,
        request: Request<pb::FailReferralRequest>,
    ) -> Result<Response<pb::FailReferralResponse>, Status> {
        let r = self
            .transition(request, |r| {
                let reason = FailureReason::from_pb("reason", r.reason)?;
                let t = Transition::Fail {
                    reason,
                    text: r.text,
                };
                Ok((r.referral_id, t))
            })
            .await?;
        Ok(Response::new(pb::FailReferralResponse {
            referral: Some(r),
        }))
    }

    async fn withdraw_referral(
        &self,
        request: Request<pb::WithdrawReferralRequest>,
    ) -> Result<Response<pb::WithdrawReferralResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let r = self
            .referrals
            .withdraw(&p, &request.into_inner().referral_id)
            .await?;
        Ok(Response::new(pb::WithdrawReferralResponse {
            referral: Some(self.out(&r, &p).await?),
        }))
    }

    async fn reassign_referral(
        &self,
        request: Request<pb::ReassignReferralRequest>,
    ) -> Result<Response<pb::ReassignReferralResponse>, Status> {
        let (p, _permit) = self.sign_in.authenticate(&request).await?;
        let pb::ReassignReferralRequest {
            referral_id,
            owner,
            team,
        } = request.into_inner();
        let team = Some(team).filter(|t| !t.is_empty());
        let r = self
            .referrals
            .reassign(&p, &referral_id, &owner, team)
            .await?;
        Ok(Response::new(pb::ReassignReferralResponse {
            referral: Some(self.out(&r, &p).await?),
        }))
    }

    type WatchReferralsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchReferralsResponse, Status>> + Send>>;

    async fn watch_referrals(
        &self,
        request: Request<pb::WatchReferralsRequest>,
    ) -> Result<Response<Self::WatchReferralsStream>, Status> {
        let (p, permit) = self.sign_in.authenticate(&request).await?;
        let credentials = super::WatchCredentials::of(&request, &p);
        let mut changes = self.changes.subscribe();
        let (referrals, sign_in) = (self.referrals.clone(), self.sign_in.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            // A watch holds one of the caller's places in flight while it lasts.
            let _permit = permit;
            // It lasts no longer than the caller's token, nor past a check
            // the token no longer passes.
            let ended = credentials.ended(&sign_in);
            tokio::pin!(ended);
            // First what the caller may see now, then each change as it happens.
            if let Ok(page) = referrals.list(&p, ReferralFilter::default(), 500, "").await {
                for (r, view) in &page.referrals {
                    let Ok(v) = view_of(&referrals, r, *view).await else {
                        continue;
                    };
                    if tx
                        .send(Ok(pb::WatchReferralsResponse { referral: Some(v) }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            loop {
                // A watcher that went away ends the task (and frees its place).
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    status = &mut ended => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    n = changes.recv() => n,
                };
                let id = match next {
                    Ok(id) => id,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(
                                "the watcher fell behind; watch again",
                            )))
                            .await;
                        return;
                    }
                    Err(_) => return,
                };
                // Only what this caller may see; nothing about the others.
                let Ok(Some((r, view))) = referrals.get_if_visible(&p, &id).await else {
                    continue;
                };
                let Ok(v) = view_of(&referrals, &r, view).await else {
                    continue;
                };
                if tx
                    .send(Ok(pb::WatchReferralsResponse { referral: Some(v) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A referral as the wire shows it to a caller with `view`.
async fn view_of(
    referrals: &Referrals,
    r: &ReferralRecord,
    view: crate::access::View,
) -> Result<pb::Referral, crate::error::Error> {
    referrals.view(r, view).await?.try_into()
}
