//! Watching referrals: each change reaches those who may see it.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{clients, consent_request, network, referral_request};
use exitnet_tests::{Backend, bearer};
use std::time::Duration;

#[tokio::test]
async fn watching_referrals_shows_each_change_to_those_who_may_see_it() {
    let net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let mallory = net.a.dev_token("case_manager", "mallory").await.unwrap();
    let (mut ac, mut ar) = clients(&net.a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-w", "client-w")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    let mut watch = ar
        .clone()
        .watch_referrals(bearer(&alice, pb::WatchReferralsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut other = ar
        .clone()
        .watch_referrals(bearer(&mallory, pb::WatchReferralsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let r = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "w-1",
                &consent.consent_id,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&(pb::ReferralState::Received as i32)) {
        let msg = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let got = msg.referral.unwrap();
        assert_eq!(got.referral_id, r.referral_id);
        seen.push(got.state);
    }
    assert_eq!(seen.first(), Some(&(pb::ReferralState::Requested as i32)));
    // Another case manager's watch shows nothing of Alice's referral.
    let quiet = tokio::time::timeout(Duration::from_millis(500), other.message()).await;
    assert!(quiet.is_err(), "mallory saw {quiet:?}");
}
