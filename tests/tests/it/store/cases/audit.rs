//! The audit chain and refusals on record.

use super::*;

pub async fn security_events_newest_first(s: Arc<dyn Store>) {
    for (i, reason) in ["unknown_key", "peer_suspended", "no_client_certificate"]
        .iter()
        .enumerate()
    {
        s.record_security_event(
            &SecurityEvent {
                at_ms: NOW + i as i64,
                surface: "federation".into(),
                reason: (*reason).into(),
                key_fingerprint: Some("fp".into()),
                org_id: None,
                remote_addr: Some("127.0.0.1:1".into()),
                method: Some("Notify".into()),
            },
            1,
        )
        .await
        .unwrap();
    }
    let events = s.security_events(2).await.unwrap();
    let reasons: Vec<&str> = events.iter().map(|(e, _)| e.reason.as_str()).collect();
    assert_eq!(reasons, ["no_client_certificate", "peer_suspended"]);
    assert_eq!(events[0].0.org_id, None);
    // The same refusal again in the same minute, from another port of
    // the same host: counted in the first one's row.
    let again = SecurityEvent {
        at_ms: NOW,
        surface: "federation".into(),
        reason: "unknown_key".into(),
        key_fingerprint: Some("fp".into()),
        org_id: None,
        remote_addr: Some("127.0.0.1:2".into()),
        method: Some("Notify".into()),
    };
    assert_eq!(s.record_security_event(&again, 1).await.unwrap(), 2);
    // Repeats counted in memory are added as one number.
    assert_eq!(s.record_security_event(&again, 40).await.unwrap(), 42);
    let all = s.security_events(10).await.unwrap();
    assert_eq!(all.len(), 3);
    let (first, count) = all.iter().find(|(e, _)| e.reason == "unknown_key").unwrap();
    assert_eq!(*count, 42);
    assert_eq!(first.remote_addr.as_deref(), Some("127.0.0.1"));
    // A minute later: a row of its own.
    let later = SecurityEvent {
        at_ms: NOW + 60_000,
        ..again
    };
    assert_eq!(s.record_security_event(&later, 1).await.unwrap(), 1);
    // Pruned by age, then beyond the newest `keep`.
    assert_eq!(s.prune_security_events(NOW + 1, 100).await.unwrap(), 1);
    assert_eq!(s.prune_security_events(0, 2).await.unwrap(), 1);
    let left = s.security_events(10).await.unwrap();
    let reasons: Vec<&str> = left.iter().map(|(e, _)| e.reason.as_str()).collect();
    assert_eq!(reasons, ["unknown_key", "no_client_certificate"]);
}

pub async fn concurrent_audit_appends_form_one_chain(s: Arc<dyn Store>) {
    use exitnet_node::audit::{AuditEntry, AuditFilter, GENESIS, record_hash};
    // Eight writers at once (as several replicas would be): one gapless chain.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let e = AuditEntry::node(NOW, "ngo-a", "test.append", "test", &format!("w{w}-{i}"));
                s.append_audit(&[e.clone(), e.about("test.second", "test", "x")])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (head, head_hash) = s.audit_head().await.unwrap();
    assert_eq!(head, 160);
    let all = s
        .list_audit(&AuditFilter::default(), 0, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 160);
    let mut prev = GENESIS.to_vec();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1);
        assert_eq!(r.prev_hash, prev);
        assert_eq!(r.hash, record_hash(r.seq, &r.prev_hash, &r.entry));
        prev = r.hash.clone();
    }
    assert_eq!(head_hash, prev);
    // The two records of one append are adjacent.
    for pair in all.chunks(2) {
        assert_eq!(pair[0].entry.action, "test.append");
        assert_eq!(pair[1].entry.action, "test.second");
    }
    // Filters and paging.
    let f = AuditFilter {
        object_id: Some("w3-7".into()),
        ..AuditFilter::default()
    };
    let one = s.list_audit(&f, 0, 10).await.unwrap();
    assert_eq!(one.len(), 1);
    let page = s.list_audit(&AuditFilter::default(), 150, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [151, 152, 153, 154, 155]
    );
    let about = s
        .audit_for_objects(&["w3-7".into(), "nothing".into()])
        .await
        .unwrap();
    assert_eq!(about.len(), 1);
}
