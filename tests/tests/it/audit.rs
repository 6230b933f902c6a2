//! The audit trail across real nodes: records for every call, a chain that
//! names the first record changed or deleted, checkpoints a peer witnesses
//! (which catch a consistent rewrite), subject access, receipts verified
//! against the issuer's pinned key, and the auditor's query API.

use exitnet_node::audit::{AuditEntry, record_hash};
use exitnet_proto::pb;
use exitnet_proto::pb::audit_service_client::AuditServiceClient;
use exitnet_tests::fixtures::{
    NARRATIVE, clients, consent_request, peer_with, referral_request, start, wait_state,
};
use exitnet_tests::{Backend, NodeProcess, bearer, wait_until};
use serde_json::Value;
use std::time::Duration;
use tonic::Code;

/// Runs `$body` with `$pool` connected to the node's database, whichever
/// backend it is (the statements are the same on both).
macro_rules! on_db {
    ($url:expr, $pool:ident => $body:block) => {{
        let url: &str = $url;
        if url.starts_with("sqlite:") {
            let $pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let r = $body;
            $pool.close().await;
            r
        } else {
            let $pool = sqlx::PgPool::connect(url).await.unwrap();
            let r = $body;
            $pool.close().await;
            r
        }
    }};
}

/// The audit trail as `audit export` shows each record (JSON).
pub(crate) async fn export(n: &NodeProcess) -> Vec<Value> {
    let records = n.audit_records().await.unwrap();
    records.iter().map(exitnetctl::audit::record_json).collect()
}

pub(crate) fn has(
    records: &[Value],
    action: &str,
    object: &str,
    actor: &str,
    result: &str,
) -> bool {
    records.iter().any(|r| {
        r["action"] == action
            && (object.is_empty() || r["object_id"] == object)
            && (actor.is_empty() || r["actor"] == actor)
            && r["result"] == result
    })
}

async fn verify(n: &NodeProcess, local_only: bool) -> (bool, Value) {
    let mut args = vec!["audit", "verify", "--output", "json"];
    if local_only {
        args.push("--local-only");
    }
    let out = n.ctl(&args).await.unwrap();
    (out.success, out.json().unwrap())
}

fn first_failure(report: &Value) -> (u64, String) {
    let f = &report["failures"][0];
    (
        f["seq"].as_u64().unwrap(),
        f["reason"].as_str().unwrap().to_owned(),
    )
}

/// The checks of the issue, on `backend` for the audited node A.
async fn tamper_evidence(backend: Backend) {
    let a = start("ngo-a", backend).await;
    let b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, mut ar) = clients(&a).await;
    let mut ids = Vec::new();
    for client in ["client-1", "client-2"] {
        let consent = ac
            .record_consent(bearer(
                &alice,
                consent_request(&format!("c-{client}"), client),
            ))
            .await
            .unwrap()
            .into_inner()
            .consent
            .unwrap();
        let r = ar
            .create_referral(bearer(
                &alice,
                referral_request(
                    &format!("r-{client}"),
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
        wait_state(&ar, &alice, &r.referral_id, pb::ReferralState::Received).await;
        ids.push((consent.consent_id, r.referral_id));
    }

    // Subject access: all of client-1, nothing of client-2.
    let out = a.ctl(&["audit", "subject", "client-1"]).await.unwrap();
    assert!(out.success, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let text = out.stdout.clone();
    assert_eq!(doc["consents"].as_array().unwrap().len(), 1);
    assert_eq!(doc["consents"][0]["consent_id"], ids[0].0.as_str());
    assert_eq!(doc["referrals"].as_array().unwrap().len(), 1);
    let referral = &doc["referrals"][0];
    assert_eq!(referral["referral_id"], ids[0].1.as_str());
    assert_eq!(referral["summary"]["needs_narrative"], NARRATIVE);
    assert!(
        referral["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["issued_by"] == "prison-b")
    );
    let audited = doc["audit"].as_array().unwrap();
    assert!(audited.iter().any(|r| r["action"] == "consent.record"));
    assert!(audited.iter().any(|r| r["action"] == "referral.create"));
    assert!(audited.iter().any(|r| r["action"] == "receipt.delivery"));
    for other in [&ids[1].0, &ids[1].1] {
        assert!(!text.contains(other.as_str()), "client-2's {other} leaked");
    }
    assert!(!text.contains("client-2"));

    // Receipts: what B acknowledged, checked against B's pinned key.
    let out = a.ctl(&["receipt", "export", &ids[0].1]).await.unwrap();
    assert!(out.success, "{}", out.stderr);
    let file = a.dir.path().join("receipts.jsonl");
    std::fs::write(&file, &out.stdout).unwrap();
    let ok = a
        .ctl(&["receipt", "verify", file.to_str().unwrap()])
        .await
        .unwrap();
    assert!(ok.success, "{} {}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("VALID  delivery receipt by prison-b"));
    // One changed byte in what B signed, and it no longer verifies.
    let mut receipt: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64.decode(receipt["payload"].as_str().unwrap()).unwrap();
    let last = payload.len() - 1;
    payload[last] ^= 1;
    receipt["payload"] = Value::String(b64.encode(&payload));
    std::fs::write(&file, receipt.to_string()).unwrap();
    let bad = a
        .ctl(&["receipt", "verify", file.to_str().unwrap()])
        .await
        .unwrap();
    assert!(!bad.success);
    assert!(bad.stdout.contains("INVALID"), "{}", bad.stdout);

    // The auditor's query API; case managers are refused, and that is recorded.
    let dpo = a.dev_token("auditor", "dpo").await.unwrap();
    let mut audit_api = AuditServiceClient::new(a.api_channel().await.unwrap());
    let page = audit_api
        .list_audit_records(bearer(
            &dpo,
            pb::ListAuditRecordsRequest {
                action: "referral.create".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let next = audit_api
        .list_audit_records(bearer(
            &dpo,
            pb::ListAuditRecordsRequest {
                action: "referral.create".into(),
                page_size: 1,
                page_token: page.next_page_token,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.records.len(), 1);
    assert!(next.records[0].seq > page.records[0].seq);
    let e = audit_api
        .list_audit_records(bearer(&alice, pb::ListAuditRecordsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = audit_api
        .list_audit_records(bearer(
            &dpo,
            pb::ListAuditRecordsRequest {
                page_size: 5000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("page_size"));
    let records = export(&a).await;
    assert!(has(&records, "audit.query", "", "alice", "denied"));
    assert!(has(&records, "audit.query", "", "dpo", "ok"));

    // A checkpoint, witnessed by B; the trail verifies.
    let cp = a.admin().await.unwrap().create_checkpoint().await.unwrap();
    assert!(cp.seq > 0);
    let report = wait_until(
        "B to witness a checkpoint",
        Duration::from_secs(30),
        || async {
            // Every checkpoint we signed (the one just made among them) is
            // countersigned by B.
            let (ok, r) = verify(&a, false).await;
            let n = r["checkpoints"].as_u64()?;
            (ok && n >= 1
                && r["witnesses"].as_u64()? == n
                && r["peers"][0]["agreeing"].as_u64()? >= n)
                .then_some(r)
        },
    )
    .await
    .unwrap();
    assert_eq!(report["peers"][0]["org_id"], "prison-b");
    let witnessed = report["peers"][0]["held"].as_u64().unwrap();
    // The position of the checkpoint just made, which B holds.
    let w = cp.seq as i64;
    let url = a.database_url();

    // 1. One field of one record changed: verify names that record.
    let original: String = on_db!(&url, pool => {
        let row = sqlx::query("SELECT actor FROM audit_log WHERE seq = 3").fetch_one(&pool).await.unwrap();
        let actor: String = sqlx::Row::get(&row, "actor");
        sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3").execute(&pool).await.unwrap();
        actor
    });
    let (ok, r) = verify(&a, true).await;
    assert!(!ok);
    let (seq, reason) = first_failure(&r);
    assert_eq!(seq, 3, "{reason}");
    assert!(reason.contains("record 3 was changed"), "{reason}");
    on_db!(&url, pool => {
        sqlx::query("UPDATE audit_log SET actor = $1 WHERE seq = 3").bind(&original).execute(&pool).await.unwrap();
    });
    let (ok, r) = verify(&a, true).await;
    assert!(ok, "{r}");

    // 2. One record deleted: verify names it.
    on_db!(&url, pool => {
        sqlx::query("CREATE TABLE audit_saved AS SELECT * FROM audit_log WHERE seq = 5").execute(&pool).await.unwrap();
        sqlx::query("DELETE FROM audit_log WHERE seq = 5").execute(&pool).await.unwrap();
    });
    let (ok, r) = verify(&a, true).await;
    assert!(!ok);
    let (seq, reason) = first_failure(&r);
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("record 5 is missing"), "{reason}");
    on_db!(&url, pool => {
        sqlx::query("INSERT INTO audit_log SELECT * FROM audit_saved").execute(&pool).await.unwrap();
        sqlx::query("DROP TABLE audit_saved").execute(&pool).await.unwrap();
    });
    let (ok, r) = verify(&a, true).await;
    assert!(ok, "{r}");

    // 2b. The last record deleted, the head left as it was: verify says the
    // chain ends short of its head (or, if a record was appended meanwhile,
    // that the last one is missing).
    let last: i64 = on_db!(&url, pool => {
        sqlx::query("CREATE TABLE audit_saved AS SELECT * FROM audit_log WHERE seq = (SELECT seq FROM audit_head WHERE id = 1)").execute(&pool).await.unwrap();
        sqlx::query("DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_saved)").execute(&pool).await.unwrap();
        let row = sqlx::query("SELECT seq FROM audit_saved").fetch_one(&pool).await.unwrap();
        sqlx::Row::get::<i64, _>(&row, "seq")
    });
    let (ok, r) = verify(&a, true).await;
    assert!(!ok, "{r}");
    let (seq, reason) = first_failure(&r);
    assert_eq!(seq, last as u64, "{reason}");
    assert!(
        reason.contains("records were deleted") || reason.contains("is missing"),
        "{reason}"
    );
    on_db!(&url, pool => {
        sqlx::query("INSERT INTO audit_log SELECT * FROM audit_saved").execute(&pool).await.unwrap();
        sqlx::query("DROP TABLE audit_saved").execute(&pool).await.unwrap();
    });
    let (ok, r) = verify(&a, true).await;
    assert!(ok, "{r}");

    // 3. The history rewritten consistently from record 2 on (every hash
    // recomputed, the head moved, our own checkpoints and countersignatures
    // removed): the chain alone looks sound, the checkpoint B holds does not.
    on_db!(&url, pool => {
        let prev: Vec<u8> = sqlx::Row::get(
            &sqlx::query("SELECT prev_hash FROM audit_log WHERE seq = 2").fetch_one(&pool).await.unwrap(),
            "prev_hash",
        );
        let rows = sqlx::query(
            "SELECT seq, at, actor_kind, actor, role, on_behalf_of, action, object_type, object_id,
                    consent_id, peer_org, result FROM audit_log WHERE seq >= 2 AND seq <= $1 ORDER BY seq",
        )
        .bind(w)
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut prev = prev;
        for row in &rows {
            use sqlx::Row;
            let seq: i64 = row.get("seq");
            let mut e = AuditEntry {
                at_ms: row.get("at"),
                actor_kind: row.get("actor_kind"),
                actor: row.get("actor"),
                role: row.get("role"),
                on_behalf_of: row.get("on_behalf_of"),
                action: row.get("action"),
                object_type: row.get("object_type"),
                object_id: row.get("object_id"),
                consent_id: row.get("consent_id"),
                peer_org: row.get("peer_org"),
                result: row.get("result"),
            };
            if seq == 2 {
                e.actor = "someone-else".into();
            }
            let hash = record_hash(seq, &prev, &e);
            sqlx::query("UPDATE audit_log SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
                .bind(&e.actor)
                .bind(&prev)
                .bind(&hash)
                .bind(seq)
                .execute(&pool)
                .await
                .unwrap();
            prev = hash;
        }
        // What came after the witnessed position goes too (records of
        // checkpoints A witnessed for B, say), so the chain ends where B's
        // checkpoint is: a new checkpoint there is a fork B must refuse.
        sqlx::query("DELETE FROM audit_log WHERE seq > $1").bind(w).execute(&pool).await.unwrap();
        sqlx::query("UPDATE audit_head SET seq = $1, head_hash = $2 WHERE id = 1")
            .bind(w)
            .bind(&prev)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_witnesses").execute(&pool).await.unwrap();
        sqlx::query("DELETE FROM audit_checkpoints").execute(&pool).await.unwrap();
    });
    let (ok, r) = verify(&a, true).await;
    assert!(ok, "a consistent rewrite passes the local check: {r}");
    let (ok, r) = verify(&a, false).await;
    assert!(!ok, "{r}");
    let (seq, reason) = first_failure(&r);
    assert!(seq >= 2, "{reason}");
    assert!(reason.contains("witnessed by prison-b"), "{reason}");
    assert!(reason.contains("rewritten"), "{reason}");
    assert_eq!(r["peers"][0]["held"].as_u64().unwrap(), witnessed);

    // A new checkpoint for a position B witnessed before is a fork: B refuses
    // it and records it.
    // B keeps sending its own checkpoints, and A records witnessing each:
    // one arriving since the rewrite moved A's head past `w`. Then the
    // rewrite's end is restored (as the insider would) and tried again.
    // First B witnesses a checkpoint of the rewritten chain past `w` (an
    // audited read moves A's head): a fork below the latest checkpoint B
    // witnessed is caught too, not only one at it.
    audit_api
        .list_audit_records(bearer(&dpo, pb::ListAuditRecordsRequest::default()))
        .await
        .unwrap();
    let later = a.admin().await.unwrap().create_checkpoint().await.unwrap();
    assert!(later.seq as i64 > w, "{later:?}");
    wait_until(
        "B to witness a checkpoint past w",
        Duration::from_secs(30),
        || async {
            let n: i64 = on_db!(&url, pool => {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_witnesses WHERE seq > $1")
                    .bind(w)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                sqlx::Row::get(&row, "n")
            });
            (n > 0).then_some(())
        },
    )
    .await
    .unwrap();
    let checkpoint = || async { a.admin().await.unwrap().create_checkpoint().await.unwrap() };
    let mut fork = checkpoint().await;
    for _ in 0..5 {
        if fork.seq == w as u64 {
            break;
        }
        on_db!(&url, pool => {
            sqlx::query("DELETE FROM audit_log WHERE seq > $1").bind(w).execute(&pool).await.unwrap();
            sqlx::query("UPDATE audit_head SET seq = $1, head_hash = (SELECT hash FROM audit_log WHERE seq = $1) WHERE id = 1")
                .bind(w)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("DELETE FROM audit_witnesses").execute(&pool).await.unwrap();
            sqlx::query("DELETE FROM audit_checkpoints").execute(&pool).await.unwrap();
        });
        fork = checkpoint().await;
    }
    assert_eq!(fork.seq, w as u64, "{fork:?}");
    wait_until("B to record the fork", Duration::from_secs(60), || async {
        let events = b.admin().await.ok()?.security_events(0).await.ok()?;
        events
            .iter()
            .any(|e| e.reason == "audit_checkpoint_fork" && e.org_id == "ngo-a")
            .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tampering_is_caught_on_sqlite() {
    tamper_evidence(Backend::Sqlite).await;
}

#[tokio::test]
async fn tampering_is_caught_on_postgres() {
    tamper_evidence(Backend::Postgres).await;
}
