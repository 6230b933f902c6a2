//! One storage suite, written once, run against both backends.

use exitnet_node::config::DatabaseUrl;
use exitnet_node::domain::{NeedArea, Service, Urgency};
use exitnet_node::store::Store;
use exitnet_tests::TestDatabase;
use std::sync::Arc;

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = exitnet_node::store::open(&DatabaseUrl::new(url))
        .await
        .unwrap();
    (dir, store)
}

async fn pg_store() -> (TestDatabase, Arc<dyn Store>) {
    let db = TestDatabase::create().await.unwrap();
    let store = exitnet_node::store::open(&DatabaseUrl::new(db.url.clone()))
        .await
        .unwrap();
    (db, store)
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = super::sqlite_store().await;
                    assert_eq!(store.backend(), "sqlite");
                    super::cases::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_db, store) = super::pg_store().await;
                    assert_eq!(store.backend(), "postgres");
                    super::cases::$name(store).await;
                }
            )*
        }
    };
}

store_suite!(
    meta_values_are_kept,
    invitation_is_single_use_and_checked,
    concurrent_joins_with_one_invitation_admit_one,
    a_live_peer_or_pinned_key_cannot_join_twice,
    keys_expire_after_their_overlap,
    updates_respect_the_expected_state,
    notices_apply_once,
    outbox_keeps_order_and_counts,
    security_events_newest_first,
    consents_are_idempotent_scoped_and_paged,
    scheduler_finds_expired_consents_and_retention,
    concurrent_audit_appends_form_one_chain,
    receipts_are_accepted_together_and_once,
    offers_are_received_together_and_once,
    lookups_see_every_change_at_once,
    creates_are_stored_together_and_once,
    a_clients_key_goes_with_its_last_referral,
    a_peering_ended_on_either_side_gives_way_keeping_referral_messages,
);

/// A state, purge status or code (need area, service, urgency) this build
/// does not know (a database written by a newer release, or tampered with)
/// makes reading the referral an error, never a value taken for another.
mod unknown_values {
    use super::*;

    /// Changes every referral row behind the store's back.
    async fn tamper(url: &str, sql: &'static str) {
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    async fn tamper_and_read(s: Arc<dyn Store>, url: &str) {
        super::cases::one_referral(&s).await;
        for sql in [
            "UPDATE referrals SET state = 'archived'",
            "UPDATE referrals SET state = 'accepted', purge_status = 'shredded'",
            "UPDATE referrals SET purge_status = 'none', need_areas = 'mental_health,astrology'",
            "UPDATE referrals SET need_areas = 'mental_health', urgency = 'yesterday'",
            "UPDATE referrals SET urgency = 'routine', services = 'housing,teleportation'",
        ] {
            tamper(url, sql).await;
            let e = s.get_referral("r1").await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{sql}");
            let listed = s
                .list_referrals(
                    &exitnet_node::store::ListScope::All,
                    &Default::default(),
                    None,
                    10,
                )
                .await;
            assert!(listed.is_err(), "{sql}");
        }
        tamper(url, "UPDATE referrals SET services = 'housing'").await;
        let r = s.get_referral("r1").await.unwrap().unwrap();
        assert_eq!(
            (r.need_areas, r.services, r.urgency),
            (
                vec![NeedArea::MentalHealth],
                vec![Service::Housing],
                Urgency::Routine
            )
        );
        // An event whose detail names a failure reason this build does not
        // know (field 5, value 99) cannot be read either.
        assert!(s.referral_history("r1").await.is_ok());
        let detail = if url.starts_with("sqlite:") {
            "UPDATE referral_events SET detail = X'2863'"
        } else {
            "UPDATE referral_events SET detail = '\\x2863'::bytea"
        };
        tamper(url, detail).await;
        let e = s.referral_history("r1").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn on_sqlite() {
        let (dir, s) = sqlite_store().await;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        tamper_and_read(s, &url).await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let (db, s) = pg_store().await;
        tamper_and_read(s, &db.url).await;
    }
}

mod cases;
