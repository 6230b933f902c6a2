//! Crypto-shredding beats backups (issue 17, item 5): a backup of a
//! receiver taken before a purge holds the purged referral's wrapped data
//! key; once the master-key generation it was wrapped under is destroyed
//! (rotation + retention later, moved on with `dev.clock_offset_secs`), no
//! key the node still holds opens any key of that backup, while the node's
//! own live content, rewrapped, still reads. On PostgreSQL the purged key
//! also leaves the table's file (VACUUM FULL), not only its live rows.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{NARRATIVE, clients, created_referral, peer_with, recorded_consent};
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::path::Path;
use std::time::Duration;

const DAY: u64 = 86_400;
/// A sealed value's generation mark and number (node/src/crypto.rs).
const HEADER: usize = 8;

/// Every master-key generation in a key directory, as a thief who copied it
/// now would have them.
fn generations(dir: &Path) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".key") {
            continue;
        }
        let text = match std::fs::read_to_string(e.path()) {
            Ok(t) => t,
            // Destroyed by the node between the listing and the read: not
            // there to be copied.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => panic!("reading {name}: {err}"),
        };
        let f: serde_json::Value = serde_json::from_str(&text).unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(f["key"].as_str().unwrap())
            .unwrap();
        out.push((name, key));
    }
    out.sort();
    out
}

/// Whether `key` opens the wrapped data key (bound to its ID), read with or
/// without the generation header.
fn opens(key: &[u8], key_id: &str, wrapped: &[u8]) -> bool {
    let try_open = |sealed: &[u8]| {
        if sealed.len() < NONCE_LEN {
            return false;
        }
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut buf = body.to_vec();
        k.open_in_place(
            Nonce::try_assume_unique_for_key(nonce).unwrap(),
            Aad::from(key_id.as_bytes()),
            &mut buf,
        )
        .is_ok()
    };
    try_open(wrapped) || (wrapped.len() > HEADER && try_open(&wrapped[HEADER..]))
}

/// `(key_id, wrapped)` of every data key in a database.
async fn data_keys(url: &str) -> Vec<(String, Vec<u8>)> {
    let q = "SELECT key_id, wrapped FROM data_keys ORDER BY key_id";
    let rows: Vec<(String, Vec<u8>)> = if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let r = sqlx::query_as(q).fetch_all(&pool).await.unwrap();
        pool.close().await;
        r
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let r = sqlx::query_as(q).fetch_all(&pool).await.unwrap();
        pool.close().await;
        r
    };
    rows
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn files_named(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_named(&entry.path(), pred));
        } else if pred(&name) {
            out.push(name);
        }
    }
    out
}

async fn get(node: &NodeProcess, token: &str, id: &str) -> pb::Referral {
    let (_, mut r) = clients(node).await;
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

/// The raw heap file of the data-key table (superuser: `pg_read_binary_file`),
/// after a checkpoint wrote the pages out.
async fn pg_table_file(url: &str) -> Vec<u8> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
    let (bytes,): (Vec<u8>,) =
        sqlx::query_as("SELECT pg_read_binary_file(pg_relation_filepath('data_keys'))")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    bytes
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn a_backup_is_shredded_after_rotation_plus_retention(backend: Backend) {
    let a = exitnet_tests::fixtures::start("ngo-a", backend).await;
    // Short knobs so the clock moves by days, not months.
    let spec = NodeSpec::new("prison-b", backend)
        .with_toml("[keys]\nrotation_days = 7\nbackup_retention_days = 14\n");
    let mut b = NodeProcess::start(spec).await.unwrap();
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (_, mut ar) = clients(&a).await;
    let consent = recorded_consent(&a, &alice, "c-shred", "client-1").await;
    let purged = created_referral(&a, &alice, "r-shred", &consent, "prison-b").await;
    let kept = created_referral(&a, &alice, "r-keep", &consent, "prison-b").await;
    for id in [&purged, &kept] {
        exitnet_tests::fixtures::wait_state(&ar, &alice, id, pb::ReferralState::Received).await;
    }

    // The key directory is not in the data directory, and the backup of the
    // data directory (and database) holds no master key.
    assert!(!b.key_dir().starts_with(b.data_dir()));
    b.stop().await.unwrap();
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&b.data_dir(), backup.path());
    let backed_up_keys = match backend {
        Backend::Postgres => data_keys(&b.database_url()).await,
        Backend::Sqlite => {
            data_keys(&format!(
                "sqlite://{}",
                backup.path().join("exitnet.db").display()
            ))
            .await
        }
    };
    b.restart().await.unwrap();
    let in_backup = files_named(backup.path(), &|n| {
        n == "master.key" || n.starts_with("generation-")
    });
    assert!(in_backup.is_empty(), "the backup holds {in_backup:?}");
    let purged_key = format!("referral:{purged}");
    let purged_wrapped = backed_up_keys
        .iter()
        .find(|(id, _)| *id == purged_key)
        .map(|(_, w)| w.clone())
        .unwrap();
    assert!(backed_up_keys.len() >= 2, "{backed_up_keys:?}");
    // Today whoever holds the backup and the key directory reads it: the
    // check below would see it.
    let today = generations(&b.key_dir());
    for (id, w) in &backed_up_keys {
        assert!(
            today.iter().any(|(_, k)| opens(k, id, w)),
            "{id} does not open today"
        );
    }

    // The purge.
    ar.withdraw_referral(bearer(
        &alice,
        pb::WithdrawReferralRequest {
            referral_id: purged.clone(),
        },
    ))
    .await
    .unwrap();
    wait_until("B's purge receipt at A", Duration::from_secs(60), || {
        let (ar, alice, id) = (ar.clone(), alice.clone(), purged.clone());
        async move {
            let mut ar = ar;
            let got = ar
                .get_referral(bearer(&alice, pb::GetReferralRequest { referral_id: id }))
                .await
                .ok()?
                .into_inner()
                .referral?;
            (got.purge_status == pb::PurgeStatus::Done as i32).then_some(())
        }
    })
    .await
    .unwrap();
    assert!(
        !data_keys(&b.database_url())
            .await
            .iter()
            .any(|(id, _)| *id == purged_key)
    );
    if backend == Backend::Postgres {
        // Not only gone from the live rows: gone from the table's file
        // (a plain VACUUM can leave the bytes of a deleted row in place).
        let url = b.database_url();
        wait_until(
            "the purged key out of the table file",
            Duration::from_secs(30),
            || {
                let (url, w) = (url.clone(), purged_wrapped.clone());
                async move { (!contains(&pg_table_file(&url).await, &w)).then_some(()) }
            },
        )
        .await
        .unwrap();
    }

    // A week later: rotated, the live keys rewrapped under generation 1.
    b.set_config(&format!("[dev]\nclock_offset_secs = {}", 8 * DAY))
        .unwrap();
    b.restart().await.unwrap();
    let keys = b.key_dir();
    let url = b.database_url();
    wait_until("rotation and rewrap", Duration::from_secs(30), || {
        let (keys, url) = (keys.clone(), url.clone());
        async move {
            let g1 = generations(&keys)
                .into_iter()
                .find(|(n, _)| n.contains("000001"))?;
            let live = data_keys(&url).await;
            live.iter()
                .all(|(id, w)| opens(&g1.1, id, w) && w.starts_with(b"EXg\x01\0\0\0\x01"))
                .then_some(())
        }
    })
    .await
    .unwrap();
    // Within the retention the old backup still reads (restorable, as promised).
    assert!(
        generations(&keys)
            .iter()
            .any(|(_, k)| opens(k, &purged_key, &purged_wrapped))
    );

    // Past rotation + retention: generation 0 is destroyed.
    b.set_config(&format!("[dev]\nclock_offset_secs = {}", 23 * DAY))
        .unwrap();
    b.restart().await.unwrap();
    wait_until("generation 0 destroyed", Duration::from_secs(30), || {
        let keys = keys.clone();
        async move { (!generations(&keys).iter().any(|(n, _)| n.contains("000000"))).then_some(()) }
    })
    .await
    .unwrap();
    // No key the node holds opens any key of the backup: the purged
    // referral, and everything else in it.
    let held = generations(&keys);
    assert!(!held.is_empty());
    for (id, w) in &backed_up_keys {
        for (name, k) in &held {
            assert!(!opens(k, id, w), "{name} still opens {id} in the backup");
        }
    }
    // The node itself lost nothing: the kept referral still reads.
    let live = get(&b, &bob, &kept).await;
    assert_eq!(
        live.summary.as_ref().map(|s| s.needs_narrative.as_str()),
        Some(NARRATIVE)
    );
    // The log line follows the file's deletion (and its audit record).
    wait_until("the destruction logged", Duration::from_secs(30), || {
        let logged = b.log().contains("destroyed master key generation 0");
        async move { logged.then_some(()) }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_backup_is_shredded_after_rotation_plus_retention_on_sqlite() {
    a_backup_is_shredded_after_rotation_plus_retention(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_backup_is_shredded_after_rotation_plus_retention_on_postgres() {
    a_backup_is_shredded_after_rotation_plus_retention(Backend::Postgres).await;
}

/// `exitnet-node run` on the node's configuration, expected to refuse to
/// start: what it said.
async fn refused(node: &NodeProcess) -> String {
    let run = tokio::process::Command::new(exitnet_tests::binary("exitnet-node").unwrap())
        .arg("run")
        .arg("--config")
        .arg(&node.config_path)
        .env_remove("EXITNET_CONFIG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the node started instead of refusing")
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `run` refuses a key directory or generation file others can read, and
/// says which path and the chmod that fixes it; a key directory inside the
/// data directory and a moved clock outside dev mode are refused too.
#[tokio::test]
async fn open_key_files_and_misplaced_keys_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut b = NodeProcess::start(NodeSpec::new("prison-b", Backend::Sqlite))
        .await
        .unwrap();
    b.stop().await.unwrap();
    let key_dir = b.key_dir();
    let g0 = key_dir.join("generation-000000.key");
    std::fs::set_permissions(&g0, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = refused(&b).await;
    assert!(
        said.contains(&format!("chmod 0600 {}", g0.display())),
        "{said}"
    );
    std::fs::set_permissions(&g0, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&key_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let said = refused(&b).await;
    assert!(
        said.contains(&format!("chmod 0700 {}", key_dir.display())),
        "{said}"
    );
    std::fs::set_permissions(&key_dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    b.set_config(&format!(
        "[keys]\ndir = {:?}",
        b.data_dir().join("keys").display().to_string()
    ))
    .unwrap();
    let said = refused(&b).await;
    assert!(said.contains("is inside the data directory"), "{said}");
    b.set_config(&format!(
        "[keys]\ndir = {:?}\n[auth]\nmode = \"oidc\"\n[dev]\nclock_offset_secs = 60",
        key_dir.display().to_string()
    ))
    .unwrap();
    let said = refused(&b).await;
    assert!(
        said.contains("it is refused unless auth.mode = \"dev\""),
        "{said}"
    );
    // Put right, it starts again.
    b.set_config("[auth]\nmode = \"dev\"\n[dev]\nclock_offset_secs = 0")
        .unwrap();
    b.restart().await.unwrap();
}

/// `exitnetctl identity rotate-master-key`: a new generation at once, every
/// live data key rewrapped under it before the answer, the content still
/// readable, and the rotation in the audit trail.
#[tokio::test]
async fn an_administrator_rotates_the_master_key_on_demand() {
    let a = exitnet_tests::fixtures::start("ngo-a", Backend::Sqlite).await;
    let mut b = exitnet_tests::fixtures::start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (_, ar) = clients(&a).await;
    let consent = recorded_consent(&a, &alice, "c-rotate", "client-1").await;
    let id = created_referral(&a, &alice, "r-rotate", &consent, "prison-b").await;
    exitnet_tests::fixtures::wait_state(&ar, &alice, &id, pb::ReferralState::Received).await;

    // A lost key directory: the node refuses to start (it would otherwise
    // make a new generation 0 and go on, unable to read what it holds),
    // though its data keys name generation 0 as the new directory's does.
    b.stop().await.unwrap();
    let keys = b.key_dir();
    let aside = keys.with_file_name("keys-aside");
    std::fs::rename(&keys, &aside).unwrap();
    let said = refused(&b).await;
    assert!(
        said.contains("opens the data keys in the database"),
        "{said}"
    );
    std::fs::remove_dir_all(&keys).unwrap();
    std::fs::rename(&aside, &keys).unwrap();
    b.restart().await.unwrap();
    assert!(get(&b, &bob, &id).await.summary.is_some());

    let r = b.admin().await.unwrap().rotate_master_key().await.unwrap();
    assert_eq!(r.generation, 1, "{r:?}");
    assert!(r.rewrapped >= 1, "{r:?}");
    assert_eq!(r.generations.len(), 2, "{r:?}");
    let g1 = generations(&b.key_dir())
        .into_iter()
        .find(|(n, _)| n.contains("000001"))
        .unwrap();
    let live = data_keys(&b.database_url()).await;
    assert!(!live.is_empty());
    for (key_id, w) in &live {
        assert!(
            w.starts_with(b"EXg\x01\0\0\0\x01") && opens(&g1.1, key_id, w),
            "{key_id}"
        );
    }
    assert_eq!(
        get(&b, &bob, &id).await.summary.map(|s| s.needs_narrative),
        Some(NARRATIVE.to_owned())
    );
    let audit = b.audit_records_of("master_key.rotate").await.unwrap();
    assert!(!audit.is_empty(), "no master_key.rotate record");
}
