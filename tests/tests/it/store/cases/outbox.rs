//! The outbox: order, counts, retries.

use super::*;

pub async fn outbox_keeps_order_and_counts(s: Arc<dyn Store>) {
    s.insert_peer(&new_peer("prison-b", "fb", Awaiting::Remote))
        .await
        .unwrap();
    s.insert_peer(&new_peer("health-c", "fc", Awaiting::Remote))
        .await
        .unwrap();
    // Each notice's route is kept beside it: delivery reads it there, not
    // from the (sealed) payload.
    let withdrawal = Route {
        kind: NoticeKind::Withdrawal,
        referral_id: Some("r-7".into()),
    };
    s.enqueue_notices(&[
        notice("a1", "prison-b"),
        notice("c1", "health-c"),
        NewNotice {
            route: withdrawal.clone(),
            ..notice("a2", "prison-b")
        },
    ])
    .await
    .unwrap();
    let due = s.undelivered_notices(10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|n| n.notice_id.as_str()).collect();
    assert_eq!(ids, ["a1", "c1", "a2"]);
    assert_eq!(due[0].payload, b"a1".to_vec());
    let routes: Vec<Option<Route>> = due.iter().map(|n| n.route.clone()).collect();
    assert_eq!(
        routes,
        [
            Some(Route::peering()),
            Some(Route::peering()),
            Some(withdrawal.clone())
        ]
    );
    let for_b = s
        .undelivered_notices_for(&org("prison-b"), 10)
        .await
        .unwrap();
    assert_eq!(for_b[1].route, Some(withdrawal));
    s.notice_failed(due[0].id, NOW + 500, "unreachable")
        .await
        .unwrap();
    s.notice_failed(due[0].id, NOW + 900, "unreachable")
        .await
        .unwrap();
    let first = &s.undelivered_notices(1).await.unwrap()[0];
    assert_eq!((first.attempts, first.next_attempt_at_ms), (2, NOW + 900));
    s.notice_delivered(due[0].id, NOW).await.unwrap();
    s.notice_dropped(due[1].id, NOW, "peering ended")
        .await
        .unwrap();
    let left: Vec<String> = s
        .undelivered_notices(10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.notice_id)
        .collect();
    assert_eq!(left, vec!["a2".to_string()]);
    assert_eq!(
        s.get_peer(&org("prison-b"))
            .await
            .unwrap()
            .unwrap()
            .pending_notices,
        1
    );
    assert_eq!(
        s.get_peer(&org("health-c"))
            .await
            .unwrap()
            .unwrap()
            .pending_notices,
        0
    );
}
