//! The upgrade runbook (docs/operations.md), exercised: databases made by the
//! previous release are migrated forward by this build with nothing lost.
//!
//! `tests/fixtures/upgrade-4b70e80/` holds the data directories of the three
//! demo organisations as release 4b70e80 left them (`exitnet-node demo
//! --keep-running`, then SIGKILL: an unclean stop), and in each
//! `expected.json` what that release's `exitnetctl` listed: peers, consents,
//! referrals (states, purge status, history, content) and the audit chain's
//! length. `tests/fixtures/README.md` says how they were made.

use exitnet_proto::pb;
use exitnet_tests::fixtures::clients;
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

async fn upgraded(org: &str) -> (NodeProcess, Value) {
    let fixture = Path::new(FIXTURES).join(org);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    // A node of this build, stopped; its data directory replaced by the old
    // release's (which kept its master key inside it, and had no key
    // directory); started again: it migrates.
    let mut node = NodeProcess::start(NodeSpec::new(org, Backend::Sqlite))
        .await
        .unwrap();
    node.stop().await.unwrap();
    std::fs::remove_dir_all(node.data_dir()).unwrap();
    std::fs::remove_dir_all(node.key_dir()).unwrap();
    install(&fixture, &node.data_dir());
    let old_key_file = node.data_dir().join("identity").join("master.key");
    let old_key = std::fs::read_to_string(&old_key_file).unwrap();
    let old_pseudonym_key = {
        use sqlx::{Connection, Row};
        let url = format!("sqlite://{}?mode=ro", fixture.join("exitnet.db").display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let v: String = sqlx::query("SELECT value FROM node_meta WHERE key = 'pseudonym_key'")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get("value");
        v
    };
    node.restart()
        .await
        .unwrap_or_else(|e| panic!("{org}: this build did not start on the old data: {e}"));

    // The old master key left the data directory (so data backups no longer
    // hold it) and is generation 0 in the key directory, with a log line.
    assert!(
        !old_key_file.exists(),
        "{org}: the master key is still in the data directory"
    );
    let generation_0: Value = serde_json::from_str(
        &std::fs::read_to_string(node.key_dir().join("generation-000000.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(generation_0["key"].as_str(), Some(old_key.trim()), "{org}");
    assert!(
        node.log()
            .contains("moved the master key out of the data directory"),
        "{org}: {}",
        node.log()
    );
    assert_as_before(&node, org, &expected).await;
    // The old release kept the pseudonym key in plain in the database: it
    // is sealed under the master key now, and no file holds it in plain
    // (a database backup alone cannot test guessed client references).
    exitnet_tests::wait_until(
        &format!("{org}: no plain pseudonym key in the files"),
        std::time::Duration::from_secs(30),
        || async {
            (!crate::purge::file_holds(&node.data_dir(), &old_pseudonym_key)).then_some(())
        },
    )
    .await
    .unwrap();
    (node, expected)
}

/// What the old release listed, this build lists too.
async fn assert_as_before(node: &NodeProcess, org: &str, expected: &Value) {
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
    let (mut consents, mut referrals) = clients(node).await;
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
        // A purged referral holds no content at either end, also the
        // sender's copy the old release kept.
        let want_narrative = if purge == "done" {
            None
        } else {
            w["needs_narrative"].as_str()
        };
        assert_eq!(narrative.as_deref(), want_narrative, "{org} {id}: content");
        // The old release kept the outcome note in plaintext in the history:
        // now sealed, it still reads while the referral is live.
        if state == "completed" {
            let note = r.history.iter().find_map(|h| h.outcome.as_ref());
            assert_eq!(
                note.map(|o| o.note.as_str()),
                Some(OLD_NOTE),
                "{org} {id}: the outcome"
            );
        }
    }
    // …and no longer in plaintext in any file of the data directory (once
    // the write-ahead log is checkpointed: polled).
    exitnet_tests::wait_until(
        &format!("{org}: no plaintext note in the files"),
        std::time::Duration::from_secs(30),
        || async { (!crate::purge::file_holds(&node.data_dir(), OLD_NOTE)).then_some(()) },
    )
    .await
    .unwrap();
}

/// The outcome note the old release's demo reported, in plaintext in its
/// history (`referral_events.detail`).
const OLD_NOTE: &str = "Twelve sessions of trauma-focused CBT.";

#[tokio::test]
async fn the_previous_release_is_migrated_forward_with_nothing_lost() {
    for org in ["exit-ngo", "probation-service", "trauma-clinic"] {
        upgraded(org).await;
    }
}

/// After the upgrade the old key (generation 0) is rotated out like any
/// other: its data keys are rewrapped, and once it is destroyed the old
/// content still reads (under generation 1).
#[tokio::test]
async fn the_old_master_key_is_rotated_out_and_destroyed_with_nothing_lost() {
    let org = "trauma-clinic";
    let (mut node, expected) = upgraded(org).await;
    let day = 86_400;
    // Past the rotation (default 30 days): generation 1, everything rewrapped.
    node.set_config(&format!("[dev]\nclock_offset_secs = {}", 31 * day))
        .unwrap();
    node.restart().await.unwrap();
    let keys = node.key_dir();
    exitnet_tests::wait_until("generation 1", std::time::Duration::from_secs(30), || {
        let keys = keys.clone();
        async move { keys.join("generation-000001.key").exists().then_some(()) }
    })
    .await
    .unwrap();
    // Past the retention (default 30 days) after that: generation 0 is destroyed.
    node.set_config(&format!("[dev]\nclock_offset_secs = {}", 62 * day))
        .unwrap();
    node.restart().await.unwrap();
    exitnet_tests::wait_until(
        "generation 0 destroyed",
        std::time::Duration::from_secs(30),
        || {
            let keys = keys.clone();
            // The log line follows the file's deletion (and its audit record).
            let logged = node.log().contains("destroyed master key generation 0");
            async move { (logged && !keys.join("generation-000000.key").exists()).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert_as_before(&node, org, &expected).await;
}
