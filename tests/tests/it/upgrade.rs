//! The upgrade runbook (docs/operations.md), exercised: databases made by the
//! previous release are migrated forward by this build with nothing lost.
//!
//! `tests/fixtures/upgrade-4b70e80/` holds the data directories of the three
//! demo organisations as release 4b70e80 left them (`exitnet-node demo
//! --keep-running`, then SIGKILL: an unclean stop), and in each
//! `expected.json` what that release's `exitnetctl` listed: peers, consents,
//! referrals (states, purge status, history, content) and the audit chain's
//! length. `tests/fixtures/README.md` says how they were made.

use crate::referrals::clients;
use exitnet_proto::pb;
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer};
use serde_json::Value;
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/upgrade-4b70e80");

/// Copies a fixture into a data directory, private as the node keeps it.
fn install(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            install(&entry.path(), &target);
        } else if entry.file_name() != "expected.json" {
            std::fs::copy(entry.path(), &target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

fn code_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

async fn upgraded(org: &str) {
    let fixture = Path::new(FIXTURES).join(org);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    // A node of this build, stopped; its data directory replaced by the old
    // release's; started again: it migrates.
    let mut node = NodeProcess::start(NodeSpec::new(org, Backend::Sqlite))
        .await
        .unwrap()
        .unwrap();
    node.stop().await.unwrap();
    std::fs::remove_dir_all(node.data_dir()).unwrap();
    install(&fixture, &node.data_dir());
    node.restart()
        .await
        .unwrap_or_else(|e| panic!("{org}: this build did not start on the old data: {e}"));

    // The audit chain, from its first record, still verifies.
    let out = node
        .ctl(&["audit", "verify", "--local-only", "--output", "json"])
        .await
        .unwrap();
    assert!(out.success, "{org}: {}{}", out.stdout, out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        report["records"].as_u64().unwrap() >= expected["audit_records"].as_u64().unwrap(),
        "{org}: records were lost: {report}"
    );

    // The peers, as they were.
    let peers = node.ctl_json(&["peer", "list"]).await.unwrap();
    let mut got: Vec<(String, String)> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["org_id"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = serde_json::from_value(expected["peers"].clone()).unwrap();
    assert_eq!(got, want, "{org}: peers");

    // Consents and referrals as a supervisor sees them: all of them, with
    // content that still decrypts under the old release's keys.
    let sup = node.dev_token("supervisor", "sup").await.unwrap();
    let (mut consents, mut referrals) = clients(&node).await;
    let mut got: Vec<(String, bool)> = consents
        .list_consents(bearer(
            &sup,
            pb::ListConsentsRequest {
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .consents
        .into_iter()
        .map(|c| (c.consent_id, c.withdrawn_at.is_some()))
        .collect();
    got.sort();
    let want: Vec<(String, bool)> = serde_json::from_value(expected["consents"].clone()).unwrap();
    assert_eq!(got, want, "{org}: consents");

    let listed = referrals
        .list_referrals(bearer(
            &sup,
            pb::ListReferralsRequest {
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .referrals;
    let want = expected["referrals"].as_array().unwrap();
    assert_eq!(listed.len(), want.len(), "{org}: referrals");
    for w in want {
        let id = w["referral_id"].as_str().unwrap();
        let r = referrals
            .get_referral(bearer(
                &sup,
                pb::GetReferralRequest {
                    referral_id: id.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap();
        let direction = code_name(r.direction().as_str_name(), "DIRECTION_");
        let state = code_name(r.state().as_str_name(), "REFERRAL_STATE_");
        let purge = code_name(r.purge_status().as_str_name(), "PURGE_STATUS_");
        assert_eq!(direction, w["direction"], "{org} {id}");
        assert_eq!(state, w["state"], "{org} {id}");
        assert_eq!(purge, w["purge_status"], "{org} {id}");
        let history: Vec<String> = r
            .history
            .iter()
            .map(|h| code_name(h.state().as_str_name(), "REFERRAL_STATE_"))
            .collect();
        let want_history: Vec<String> = serde_json::from_value(w["history"].clone()).unwrap();
        assert_eq!(history, want_history, "{org} {id}: history");
        let narrative = r.summary.as_ref().map(|s| s.needs_narrative.clone());
        assert_eq!(
            narrative.as_deref(),
            w["needs_narrative"].as_str(),
            "{org} {id}: content"
        );
    }
}

#[tokio::test]
async fn the_previous_release_is_migrated_forward_with_nothing_lost() {
    for org in ["exit-ngo", "probation-service", "trauma-clinic"] {
        upgraded(org).await;
    }
}
