//! Fixtures shared by the integration tests: a small network of real
//! nodes peered by their administrators' commands, the consent and referral
//! requests the tests send, and the waits and listings they read back.
//! A fixture that fails fails the test calling it, as a test step would, so
//! these unwrap like test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use exitnet_node::identity::{NodeKey, context};
use exitnet_proto::pb;
use exitnet_proto::pb::consent_service_client::ConsentServiceClient;
use exitnet_proto::pb::referral_service_client::ReferralServiceClient;
use prost::Message;
use std::time::Duration;

pub const NARRATIVE: &str =
    "Needs stable housing after release; motivated, attends mentoring weekly. Marker-7f3a.";

/// Three nodes: A (NGO) peered with B (prison and probation) and C
/// (mental health), built by `network`.
pub struct Net {
    pub a: NodeProcess,
    pub b: NodeProcess,
    pub c: NodeProcess,
}

pub async fn start(org: &str, backend: Backend) -> NodeProcess {
    NodeProcess::start(NodeSpec::new(org, backend))
        .await
        .unwrap()
}

/// A (NGO) peered with B (prison and probation) and C (mental health).
pub async fn network(backend: Backend) -> Net {
    let a = start("ngo-a", backend).await;
    let b = start("prison-b", backend).await;
    let c = start("health-c", backend).await;
    peer_with(&a, &b).await;
    peer_with(&a, &c).await;
    Net { a, b, c }
}

/// Peers `n` with `a` (invited by `a`, approved by both) and lets the needs
/// narrative through in both directions, as the tests send it.
pub async fn peer_with(a: &NodeProcess, n: &NodeProcess) {
    let mut admin_a = a.admin().await.unwrap();
    let code = admin_a.invite(0, "", "").await.unwrap().code;
    n.admin().await.unwrap().join(&code).await.unwrap();
    admin_a
        .set_peer_state(&n.spec.org_id, pb::PeerAction::Approve)
        .await
        .unwrap();
    a.wait_peer_state(&n.spec.org_id, "active", Some("active"))
        .await
        .unwrap();
    n.wait_peer_state(&a.spec.org_id, "active", Some("active"))
        .await
        .unwrap();
    allow_narrative(a, &n.spec.org_id).await;
    allow_narrative(n, &a.spec.org_id).await;
}

/// Lets the needs narrative through from `peer` (`peer policy
/// --allow-narrative`).
pub async fn allow_narrative(node: &NodeProcess, peer: &str) {
    set_narrative(node, peer, true).await;
}

/// Lets the needs narrative through from `peer`, or keeps it out.
pub async fn set_narrative(node: &NodeProcess, peer: &str, allowed: bool) {
    let mut admin = node.admin().await.unwrap();
    let mut policy = admin
        .peer_policy(peer)
        .await
        .unwrap()
        .policy
        .unwrap_or_default();
    let narrative = pb::DataCategory::NeedsNarrative as i32;
    policy.data_categories.retain(|c| *c != narrative);
    if allowed {
        policy.data_categories.push(narrative);
    }
    admin.set_peer_policy(peer, policy).await.unwrap();
}

pub fn in_a_year() -> exitnet_proto::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    exitnet_proto::Timestamp {
        seconds: now + 365 * 86400,
        nanos: 0,
    }
}

pub fn consent_request(id: &str, client: &str) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        request_id: id.into(),
        subject_ref: client.into(),
        terms: Some(pb::ConsentTerms {
            recipients: vec!["prison-b".into(), "health-c".into()],
            purposes: vec![
                pb::Purpose::ExitSupport as i32,
                pb::Purpose::ServiceProvision as i32,
            ],
            data_categories: vec![
                pb::DataCategory::AgeBand as i32,
                pb::DataCategory::RiskLevel as i32,
                pb::DataCategory::NeedsNarrative as i32,
            ],
            need_areas: vec![
                pb::NeedArea::FunctionalReintegration as i32,
                pb::NeedArea::MentalHealth as i32,
            ],
            legal_basis: Some(pb::LegalBasis {
                kind: pb::LegalBasisKind::Consent as i32,
                statute: String::new(),
            }),
            restrictions: vec![pb::Restriction::NoOnwardSharing as i32],
            valid_until: Some(in_a_year()),
            ..Default::default()
        }),
        collection_method: pb::CollectionMethod::Written as i32,
        witness: String::new(),
    }
}

pub fn referral_request(
    id: &str,
    consent: &str,
    to: &str,
    area: pb::NeedArea,
    service: pb::Service,
) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        request_id: id.into(),
        consent_id: consent.into(),
        recipient_org: to.into(),
        need_areas: vec![area as i32],
        services: vec![service as i32],
        urgency: pb::Urgency::Soon as i32,
        summary: Some(pb::CaseSummary {
            age_band: pb::AgeBand::AgeBand2534 as i32,
            risk_level: pb::RiskLevel::Moderate as i32,
            needs_narrative: NARRATIVE.into(),
            ..Default::default()
        }),
    }
}

/// Records `consent_request(request_id, client)` at `n` as `token`; its ID.
pub async fn recorded_consent(
    n: &NodeProcess,
    token: &str,
    request_id: &str,
    client: &str,
) -> String {
    let (mut c, _) = clients(n).await;
    c.record_consent(bearer(token, consent_request(request_id, client)))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id
}

/// Creates a housing referral `request_id` to `to` under `consent` at `n`
/// as `token`; its ID.
pub async fn created_referral(
    n: &NodeProcess,
    token: &str,
    request_id: &str,
    consent: &str,
    to: &str,
) -> String {
    let (_, mut r) = clients(n).await;
    r.create_referral(bearer(
        token,
        referral_request(
            request_id,
            consent,
            to,
            pb::NeedArea::FunctionalReintegration,
            pb::Service::Housing,
        ),
    ))
    .await
    .unwrap()
    .into_inner()
    .referral
    .unwrap()
    .referral_id
}

pub async fn clients(
    n: &NodeProcess,
) -> (
    ConsentServiceClient<tonic::transport::Channel>,
    ReferralServiceClient<tonic::transport::Channel>,
) {
    let ch = n.api_channel().await.unwrap();
    (
        ConsentServiceClient::new(ch.clone()),
        ReferralServiceClient::new(ch),
    )
}

pub async fn get(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
    id: &str,
) -> pb::Referral {
    r.get_referral(bearer(
        token,
        pb::GetReferralRequest {
            referral_id: id.into(),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .referral
    .unwrap()
}

pub async fn wait_state(
    r: &ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
    id: &str,
    state: pb::ReferralState,
) -> pb::Referral {
    wait_until(
        &format!("referral {id} to be {state:?}"),
        Duration::from_secs(30),
        || {
            let mut r = r.clone();
            async move {
                let got = r
                    .get_referral(bearer(
                        token,
                        pb::GetReferralRequest {
                            referral_id: id.into(),
                        },
                    ))
                    .await
                    .ok()?
                    .into_inner()
                    .referral?;
                (got.state == state as i32).then_some(got)
            }
        },
    )
    .await
    .unwrap()
}

pub async fn inbound(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<pb::Referral> {
    r.list_referrals(bearer(
        token,
        pb::ListReferralsRequest {
            direction: pb::Direction::Inbound as i32,
            page_size: 500,
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .referrals
}

/// Every referral ID the caller can list, page by page.
pub async fn all_ids(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Option<Vec<String>> {
    ids_in(r, token, pb::Direction::Unspecified).await
}

/// Every inbound referral ID at `n` that `token` may list, all pages.
pub async fn inbound_ids(n: &NodeProcess, token: &str) -> Vec<String> {
    let (_, mut r) = clients(n).await;
    ids_in(&mut r, token, pb::Direction::Inbound)
        .await
        .expect("listing inbound referrals")
}

pub async fn ids_in(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
    direction: pb::Direction,
) -> Option<Vec<String>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = r
            .list_referrals(bearer(
                token,
                pb::ListReferralsRequest {
                    direction: direction as i32,
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .ok()?
            .into_inner();
        all.extend(page.referrals.into_iter().map(|r| r.referral_id));
        if page.next_page_token.is_empty() {
            return Some(all);
        }
        page_token = page.next_page_token;
    }
}

/// Sends a hand-built, signed message to `to`, as `from_key` presenting itself.
pub async fn send_raw(
    to: &NodeProcess,
    key: &NodeKey,
    msg: &pb::FederationMessage,
) -> Result<pb::NotifyResponse, tonic::Status> {
    let payload = msg.encode_to_vec();
    let signature = key.sign_in(context::MESSAGE, &payload).unwrap();
    let pinned = vec![to.fingerprint().await.unwrap()];
    let mut client = exitnet_node::transport::client::connect(
        &to.federation_addr,
        Some(key),
        pinned,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    client
        .notify(pb::NotifyRequest {
            notice_id: msg.message_id.clone(),
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload,
                signature,
                batch: None,
            })),
        })
        .await
        .map(|r| r.into_inner())
}

/// Whether `needle` appears in the bytes of `node`'s SQLite database or WAL.
pub fn raw_db_contains(node: &NodeProcess, needle: &str) -> bool {
    ["exitnet.db", "exitnet.db-wal"].iter().any(|f| {
        std::fs::read(node.data_dir().join(f))
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}
