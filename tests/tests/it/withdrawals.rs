//! Withdrawals reach every recipient, even a suspended or revoked peer:
//! they (and their purge receipts) pass while any key of the peer is
//! pinned; everything else stays held or refused as before. A revoke with
//! purges pending says so and keeps delivering them until the receipts come
//! or the administrator gives up, which is recorded.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{
    clients, created_referral, inbound_ids, peer_with, recorded_consent, start, wait_state,
};
use exitnet_tests::{NodeProcess, bearer, wait_until};
use std::time::Duration;

type Referrals = pb::referral_service_client::ReferralServiceClient<tonic::transport::Channel>;

async fn withdraw(r: &mut Referrals, token: &str, id: &str) {
    r.withdraw_referral(bearer(
        token,
        pb::WithdrawReferralRequest {
            referral_id: id.into(),
        },
    ))
    .await
    .unwrap();
}

async fn referral(r: &mut Referrals, token: &str, id: &str) -> pb::Referral {
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

/// Waits until `n` holds the referral `id` with purge status `status`.
async fn wait_purge(n: &NodeProcess, token: &str, id: &str, status: pb::PurgeStatus) {
    let (_, r) = clients(n).await;
    wait_until(
        &format!("{} to see the purge of {id} {status:?}", n.spec.org_id),
        Duration::from_secs(60),
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
                (got.purge_status == status as i32).then_some(())
            }
        },
    )
    .await
    .unwrap();
}

/// Referrals `ids` from A have arrived at B.
async fn wait_received(b: &NodeProcess, bob: &str, ids: &[&str]) {
    wait_until("the referrals at B", Duration::from_secs(30), || async {
        let at_b = inbound_ids(b, bob).await;
        ids.iter()
            .all(|id| at_b.iter().any(|x| x == id))
            .then_some(())
    })
    .await
    .unwrap();
}

/// The peer as `peer show` reports it.
async fn pending_notices(n: &NodeProcess, org: &str) -> u64 {
    n.peer(org).await.unwrap().unwrap()["pending_notices"]
        .as_u64()
        .unwrap_or(0)
}

/// The actions of the audit trail, one per line.
async fn audit_actions(n: &NodeProcess) -> String {
    let records = n.audit_records().await.unwrap();
    records.iter().map(|r| format!("{}\n", r.action)).collect()
}

#[tokio::test]
async fn a_withdrawal_reaches_a_peer_while_either_side_suspends() {
    let a = start("ngo-a", exitnet_tests::Backend::Sqlite).await;
    let b = start("prison-b", exitnet_tests::Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let consent = recorded_consent(&a, &alice, "c-w", "client-w").await;
    let r1 = created_referral(&a, &alice, "w-1", &consent, "prison-b").await;
    let r2 = created_referral(&a, &alice, "w-2", &consent, "prison-b").await;
    let r3 = created_referral(&a, &alice, "w-3", &consent, "prison-b").await;
    wait_received(&b, &bob, &[&r1, &r2, &r3]).await;
    let (_, mut ar) = clients(&a).await;
    let (_, mut br) = clients(&b).await;

    // A suspends B. B accepts r3: its status change is held (B knows it
    // is suspended), as every referral message but a withdrawal is.
    a.peer_action("prison-b", pb::PeerAction::Suspend)
        .await
        .unwrap();
    b.wait_peer_state("ngo-a", "active", Some("suspended"))
        .await
        .unwrap();
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: r3.clone(),
        },
    ))
    .await
    .unwrap();
    // A withdraws r1: the withdrawal reaches B anyway, B purges, and its
    // signed purge receipt comes back.
    withdraw(&mut ar, &alice, &r1).await;
    wait_purge(&a, &alice, &r1, pb::PurgeStatus::Done).await;
    let at_b = referral(&mut br, &bob, &r1).await;
    assert_eq!(at_b.purge_status, pb::PurgeStatus::Done as i32);
    assert!(at_b.summary.is_none(), "purged at B");
    // Meanwhile the status change waits at B, and A still sees r3 as received.
    assert!(pending_notices(&b, "ngo-a").await >= 1);
    assert_eq!(
        referral(&mut ar, &alice, &r3).await.state,
        pb::ReferralState::Received as i32,
        "B's status change is held while suspended"
    );

    // A resumes: the held status change arrives.
    a.peer_action("prison-b", pb::PeerAction::Resume)
        .await
        .unwrap();
    let (_, ar2) = clients(&a).await;
    wait_state(&ar2, &alice, &r3, pb::ReferralState::Accepted).await;

    // The other way round: B suspends A. B starts work on r3: held at B.
    // A withdraws r2: it reaches B all the same.
    b.peer_action("ngo-a", pb::PeerAction::Suspend)
        .await
        .unwrap();
    a.wait_peer_state("prison-b", "active", Some("suspended"))
        .await
        .unwrap();
    br.start_referral(bearer(
        &bob,
        pb::StartReferralRequest {
            referral_id: r3.clone(),
        },
    ))
    .await
    .unwrap();
    // A suspended peer's withdrawal of a referral B never held from it is
    // refused, and B stores nothing for it: no receipt, no audit row.
    let a_key = exitnet_node::identity::NodeKey::read(
        &a.data_dir().join("identity"),
        &a.fingerprint().await.unwrap(),
    )
    .unwrap();
    let mut forged = exitnet_tests::peer::offer("ngo-a", "prison-b");
    forged.body = Some(pb::federation_message::Body::Withdrawal(
        pb::ReferralWithdrawal {
            referral_id: uuid::Uuid::new_v4().to_string(),
            cause: pb::WithdrawalCause::SenderWithdrew as i32,
        },
    ));
    let refused = exitnet_tests::fixtures::send_raw(&b, &a_key, &forged)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(!audit_actions(&b).await.contains("nothing_held"));
    withdraw(&mut ar, &alice, &r2).await;
    wait_purge(&a, &alice, &r2, pb::PurgeStatus::Done).await;
    wait_purge(&b, &bob, &r2, pb::PurgeStatus::Done).await;
    assert_eq!(
        referral(&mut ar, &alice, &r3).await.state,
        pb::ReferralState::Accepted as i32,
        "B's status change is held while B suspends us"
    );
    b.peer_action("ngo-a", pb::PeerAction::Resume)
        .await
        .unwrap();
    wait_state(&ar2, &alice, &r3, pb::ReferralState::InProgress).await;
}

#[tokio::test]
async fn a_revoke_keeps_delivering_pending_withdrawals_until_receipts_or_giving_up() {
    let a = start("ngo-a", exitnet_tests::Backend::Sqlite).await;
    let mut b = start("prison-b", exitnet_tests::Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let consent = recorded_consent(&a, &alice, "c-r", "client-r").await;
    let r1 = created_referral(&a, &alice, "r-1", &consent, "prison-b").await;
    let r2 = created_referral(&a, &alice, "r-2", &consent, "prison-b").await;
    let r3 = created_referral(&a, &alice, "r-3", &consent, "prison-b").await;
    wait_received(&b, &bob, &[&r1, &r2, &r3]).await;
    let (_, mut ar) = clients(&a).await;

    // B is down: the withdrawal of r1 waits. A revokes: the revoke says a
    // purge is pending and that it is still delivered, and so does the audit.
    b.stop().await.unwrap();
    withdraw(&mut ar, &alice, &r1).await;
    let out = a
        .ctl(&["peer", "revoke", "prison-b", "--yes"])
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("1 purge(s) pending at prison-b: their withdrawals are still delivered"),
        "{}",
        out.stderr
    );
    assert!(
        audit_actions(&a)
            .await
            .contains("peer.revoke.purges_pending")
    );
    // Giving up needs the peering to have ended: it has; but first B comes
    // back, and the withdrawal (only it) reaches B: B purges, A records
    // the purge receipt.
    b.restart().await.unwrap();
    wait_purge(&a, &alice, &r1, pb::PurgeStatus::Done).await;
    let (_, mut br) = clients(&b).await;
    let at_b = referral(&mut br, &bob, &r1).await;
    assert_eq!(at_b.purge_status, pb::PurgeStatus::Done as i32);
    assert!(at_b.summary.is_none());
    let receipts = a.admin().await.unwrap().receipts(&r1).await.unwrap();
    // B's delivery receipt and its purge receipt.
    assert_eq!(
        receipts
            .iter()
            .filter(|r| r.issued_by == "prison-b")
            .count(),
        2,
        "B's purge receipt is kept: {receipts:?}"
    );
    // B's status changes are not taken from a revoked peer: B (told of the
    // revoke) holds its acceptance of r3, and A never sees it.
    b.wait_peer_state("ngo-a", "active", Some("revoked"))
        .await
        .unwrap();
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: r3.clone(),
        },
    ))
    .await
    .unwrap();

    // B goes down again; r2's withdrawal is pending. The administrator
    // gives up: recorded, reported, and nothing is queued for B any more.
    b.stop().await.unwrap();
    withdraw(&mut ar, &alice, &r2).await;
    let out = a
        .ctl(&["peer", "abandon-purges", "prison-b", "--yes"])
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("gave up 1 purge(s) pending at prison-b"),
        "{}",
        out.stdout
    );
    wait_purge(&a, &alice, &r2, pb::PurgeStatus::Abandoned).await;
    assert!(audit_actions(&a).await.contains("peer.purges_abandoned"));
    let report = a.admin().await.unwrap().report_purges().await.unwrap();
    assert!(
        report
            .iter()
            .any(|p| p.referral_id == r2 && p.status == pb::PurgeStatus::Abandoned as i32),
        "{report:?}"
    );
    assert_eq!(pending_notices(&a, "prison-b").await, 0);
    assert_eq!(
        referral(&mut ar, &alice, &r3).await.state,
        pb::ReferralState::Received as i32,
        "nothing but withdrawals crosses a revoked peering"
    );
}

#[tokio::test]
async fn giving_up_purges_needs_the_peering_to_have_ended() {
    let a = start("ngo-a", exitnet_tests::Backend::Sqlite).await;
    let b = start("prison-b", exitnet_tests::Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let out = a
        .ctl(&["peer", "abandon-purges", "prison-b", "--yes"])
        .await
        .unwrap();
    assert!(!out.success);
    assert!(
        out.stderr.contains("has not ended") && out.stderr.contains("peer revoke prison-b"),
        "{}",
        out.stderr
    );
    assert!(!audit_actions(&a).await.contains("peer.purges_abandoned"));
}
