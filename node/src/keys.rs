//! Rotation and destruction of master-key generations, so that crypto-
//! shredding also beats backups. Every `keys.rotation_days` a new generation
//! becomes current and the live data keys (and sealed outbox payloads) are
//! rewrapped under it; a generation is destroyed `keys.backup_retention_days`
//! after it was replaced. A backup taken at time t holds data keys wrapped
//! under the generation current at t, which is replaced by t + rotation and
//! destroyed by t + rotation + retention: after that no key that still exists
//! opens it. A referral purged at p was only in backups taken before p, so it
//! is unreadable in every backup by p + rotation + retention.

use crate::audit::Audit;
use crate::clock::Clock;
use crate::config::KeysConfig;
use crate::crypto::MasterKey;
use crate::crypto::SEALED_PREFIX;
use crate::domain::OrgId;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
const PAGE: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub rotation_ms: i64,
    pub retention_ms: i64,
}

impl Policy {
    pub fn from_config(k: &KeysConfig) -> Self {
        let days = |d: u64| i64::try_from(d).unwrap_or(i64::MAX).saturating_mul(DAY_MS);
        Self {
            rotation_ms: days(k.rotation_days),
            retention_ms: days(k.backup_retention_days),
        }
    }
}

/// What is due at `now_ms`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// The current generation is `rotation` old.
    pub rotate: bool,
    /// Generations replaced at least `retention` ago.
    pub destroy: Vec<u32>,
}

/// `generations`: `(number, created_at_ms)`, oldest first. A generation is
/// replaced when the next one held was created.
pub fn due(generations: &[(u32, i64)], now_ms: i64, policy: Policy) -> Due {
    let Some(&(_, current_created)) = generations.last() else {
        return Due::default();
    };
    Due {
        rotate: now_ms.saturating_sub(current_created) >= policy.rotation_ms,
        destroy: generations
            .windows(2)
            .filter(|w| now_ms.saturating_sub(w[1].1) >= policy.retention_ms)
            .map(|w| w[0].0)
            .collect(),
    }
}

/// One pass over everything sealed under the master key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrapped {
    /// Now under the current generation.
    pub rewrapped: u64,
    /// Still under an older generation (changed meanwhile; next pass).
    pub left: u64,
    /// Under a generation no longer held: unreadable for good.
    pub unopenable: u64,
}

/// The master key's generations kept: rotated on schedule (or by an
/// administrator), everything rewrapped under the current one, old ones
/// destroyed once no backup needs them.
#[derive(Clone)]
pub struct MasterKeys {
    org_id: OrgId,
    policy: Policy,
    store: Arc<dyn Store>,
    master_key: Arc<MasterKey>,
    audit: Audit,
    /// The node's clock, for audit records.
    clock: Arc<dyn Clock>,
    /// The generations' own clock (`dev.clock_offset_secs` moves it).
    key_clock: Arc<dyn Clock>,
}

impl MasterKeys {
    pub fn new(
        org_id: OrgId,
        config: &crate::config::KeysConfig,
        store: Arc<dyn Store>,
        master_key: Arc<MasterKey>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        key_clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            org_id,
            policy: Policy::from_config(config),
            store,
            master_key,
            audit,
            clock,
            key_clock,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The generations held: number and when each was made.
    pub fn generations(&self) -> Vec<(u32, i64)> {
        self.master_key.generations()
    }

    /// Rotation, rewrapping, destruction and (PostgreSQL) compaction of the
    /// data-key table, every `interval`, until `stop`.
    pub async fn run(self, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        // At start: values an older process or a restored backup left under
        // older generations are rewrapped.
        let mut pending = true;
        loop {
            if let Err(e) = self.tick(&mut pending).await {
                tracing::warn!(error = %e, "master key maintenance");
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Rewraps every data key and sealed outbox payload not under the current
    /// generation. Each is replaced only if unchanged meanwhile, so a purge
    /// that deletes a key during the pass wins.
    pub async fn rewrap_all(&self) -> anyhow::Result<Rewrapped> {
        let key = &self.master_key;
        let store = &self.store;
        let mut out = Rewrapped::default();
        let mut count = |resealed: anyhow::Result<Option<Vec<u8>>>| match resealed {
            Ok(v) => v,
            Err(_) => {
                out.unopenable += 1;
                None
            }
        };
        let mut results = Vec::new();
        let mut after = String::new();
        loop {
            let page = store.wrapped_data_keys(&after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            for (id, wrapped) in &page {
                if let Some(new) = count(key.reseal(id, wrapped)) {
                    results.push(store.rewrap_data_key(id, wrapped, &new).await?);
                }
            }
            tokio::task::yield_now().await;
        }
        let mut after_id = 0;
        loop {
            let page = store.sealed_notices(after_id, PAGE).await?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            after_id = *last;
            for (id, notice_id, payload) in &page {
                let sealed = payload.strip_prefix(SEALED_PREFIX).unwrap_or(payload);
                if let Some(new) = count(key.reseal(notice_id, sealed)) {
                    let mut with_prefix = SEALED_PREFIX.to_vec();
                    with_prefix.extend(new);
                    results.push(store.reseal_notice(*id, payload, &with_prefix).await?);
                }
            }
            tokio::task::yield_now().await;
        }
        for done in results {
            if done {
                out.rewrapped += 1;
            } else {
                out.left += 1;
            }
        }
        Ok(out)
    }

    pub async fn tick(&self, pending: &mut bool) -> anyhow::Result<()> {
        let clock = self.key_clock.as_ref();
        let key = &self.master_key;
        // Generations another replica created or destroyed.
        key.reload()?;
        let now = clock.now_ms();
        let due = due(&key.generations(), now, self.policy);
        if due.rotate {
            let g = key.rotate(now)?;
            self.audit("master_key.rotate", g).await;
            *pending = true;
        }
        if *pending || !due.destroy.is_empty() {
            let r = self.rewrap_all().await?;
            if r.rewrapped > 0 {
                tracing::info!(
                    count = r.rewrapped,
                    generation = key.current_generation()?,
                    "rewrapped data keys and queued payloads under the current master key generation"
                );
            }
            if r.unopenable > 0 {
                tracing::warn!(
                    count = r.unopenable,
                    "data keys or queued payloads are sealed under a master key generation this node no longer holds: unreadable"
                );
            }
            *pending = r.left > 0;
            if r.left == 0 {
                for g in due.destroy {
                    key.destroy(g)?;
                    self.audit("master_key.destroy", g).await;
                    tracing::warn!(
                        generation = g,
                        "destroyed master key generation {g}, replaced more than keys.backup_retention_days ago: \
                     backups taken while it was current can no longer be read"
                    );
                }
            }
        }
        if self.store.compact_data_keys().await? {
            tracing::debug!("rewrote the data-key table without the deleted keys");
        }
        Ok(())
    }

    pub(crate) async fn audit(&self, action: &str, generation: u32) {
        self.audit
            .record(&[crate::audit::AuditEntry::node(
                self.now_ms(),
                self.org_id.as_str(),
                action,
                "master_key_generation",
                &generation.to_string(),
            )])
            .await;
    }

    /// An administrator's rotation (`exitnetctl identity rotate-master-key`):
    /// a new generation now, everything rewrapped under it before the answer.
    /// The schedule counts from it; the generation it replaced is destroyed
    /// `backup_retention_days` from now.
    pub async fn rotate_now(&self) -> anyhow::Result<(u32, Rewrapped)> {
        let key = &self.master_key;
        key.reload()?;
        let g = key.rotate(self.key_clock.now_ms())?;
        self.audit
            .record(&[crate::audit::AuditEntry::admin(
                self.now_ms(),
                "master_key.rotate",
                "master_key_generation",
                &g.to_string(),
            )])
            .await;
        let r = self.rewrap_all().await?;
        Ok((g, r))
    }
}

/// Refuses to start on a database whose data keys no generation held
/// opens (a lost or wrong key directory), rather than go on unable to read
/// what it holds and sealing new content under a new key.
pub async fn check_opens(
    state_store: &dyn crate::store::Store,
    key: &MasterKey,
) -> anyhow::Result<()> {
    let sample = state_store.wrapped_data_keys("", 20).await?;
    // Opened, not only looked at: a new key directory numbers from 0 too.
    if sample.is_empty() || sample.iter().any(|(id, w)| key.open_direct(id, w).is_ok()) {
        return Ok(());
    }
    anyhow::bail!(
        "no master key generation in the key directory {} opens the data keys in the database \
         (generations held: {:?}). Point keys.dir at this node's key directory (restore it from its \
         own backup), or, for a database restored from a backup older than \
         keys.backup_retention_days, know that its content cannot be read any more",
        key.key_dir().display(),
        key.generations().iter().map(|g| g.0).collect::<Vec<_>>()
    )
}

/// The data key the pseudonym key is sealed under: a data key like the
/// others, so rotation rewraps it and it outlives every generation.
pub const PSEUDONYM_KEY_ID: &str = "node:pseudonym";
const PSEUDONYM_SEALED: &str = "pseudonym_key_sealed";
/// Where nodes before this kept it, in plain hex: moved and emptied.
const PSEUDONYM_PLAIN: &str = "pseudonym_key";

/// The node's pseudonym key (pairwise pseudonyms, consent references, the
/// kept digest of a forgotten client reference), shared by the replicas
/// through the database but sealed there, so that a database backup alone
/// does not let anyone test guessed client references against the digests.
pub async fn pseudonym_key(
    store: &dyn crate::store::Store,
    key: &MasterKey,
    now_ms: i64,
) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let wrapped = match store.find_data_key(PSEUDONYM_KEY_ID).await? {
        Some(w) => w,
        None => {
            let fresh = key.new_wrapped_data_key(PSEUDONYM_KEY_ID)?;
            store.data_key(PSEUDONYM_KEY_ID, &fresh, now_ms).await?
        }
    };
    let open = |sealed: &str| -> anyhow::Result<Vec<u8>> {
        let sealed = crate::domain::unhex(sealed).context("stored pseudonym key: not hex")?;
        key.open(PSEUDONYM_KEY_ID, &wrapped, PSEUDONYM_SEALED, &sealed)
            .context("opening the pseudonym key")
    };
    if let Some(sealed) = store.meta_get(PSEUDONYM_SEALED).await? {
        return open(&sealed);
    }
    // First start, or the first since it was kept in plain: sealed now. Two
    // replicas at once agree on whichever value was stored first.
    let plain = store
        .meta_get(PSEUDONYM_PLAIN)
        .await?
        .filter(|v| !v.is_empty());
    let value = match &plain {
        Some(hex) => crate::domain::unhex(hex).context("stored pseudonym key: not hex")?,
        None => crate::crypto::random_bytes::<32>()?.to_vec(),
    };
    let sealed = key.seal(PSEUDONYM_KEY_ID, &wrapped, PSEUDONYM_SEALED, &value)?;
    let kept = store
        .meta_init(PSEUDONYM_SEALED, &crate::domain::hex(&sealed))
        .await?;
    let opened = open(&kept)?;
    if plain.is_some() {
        store.meta_set(PSEUDONYM_PLAIN, "").await?;
        store.after_purge().await?;
        tracing::info!("the pseudonym key is sealed under the master key now");
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::crypto::KeySources;

    const POLICY: Policy = Policy {
        rotation_ms: 30 * DAY_MS,
        retention_ms: 14 * DAY_MS,
    };

    #[test]
    fn what_is_due_when() {
        assert_eq!(due(&[], 0, POLICY), Due::default());
        let one = [(0, 0)];
        assert!(!due(&one, 30 * DAY_MS - 1, POLICY).rotate);
        assert!(due(&one, 30 * DAY_MS, POLICY).rotate);
        // Generation 0 was replaced on day 30: kept until day 44.
        let two = [(0, 0), (1, 30 * DAY_MS)];
        assert_eq!(
            due(&two, 44 * DAY_MS - 1, POLICY).destroy,
            Vec::<u32>::new()
        );
        assert_eq!(due(&two, 44 * DAY_MS, POLICY).destroy, vec![0]);
        let three = [(0, 0), (1, 30 * DAY_MS), (2, 60 * DAY_MS)];
        assert_eq!(due(&three, 74 * DAY_MS, POLICY).destroy, vec![0, 1]);
        // A clock set back destroys nothing and rotates nothing.
        assert_eq!(due(&three, 0, POLICY), Due::default());
    }

    /// The bound the docs state, walked day by day with a manual clock: a
    /// backup's generation is gone by rotation + retention after it was
    /// taken, and never before retention.
    #[test]
    fn a_backup_is_unreadable_after_rotation_plus_retention() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(0);
        let key = MasterKey::load(KeySources {
            inline: None,
            file: None,
            data_dir: &dir.path().join("data"),
            key_dir: &dir.path().join("keys"),
            now_ms: clock.now_ms(),
        })
        .unwrap();
        // The "backup": a data key wrapped on day 3.
        clock.set(3 * DAY_MS);
        let backup = key.new_wrapped_data_key("k").unwrap();
        let mut readable_until = None;
        for day in 3..=120 {
            clock.set(day * DAY_MS);
            let d = due(&key.generations(), clock.now_ms(), POLICY);
            if d.rotate {
                key.rotate(clock.now_ms()).unwrap();
            }
            for g in d.destroy {
                key.destroy(g).unwrap();
            }
            if key.reseal("k", &backup).is_err() && readable_until.is_none() {
                readable_until = Some(day);
            }
        }
        let gone = readable_until.unwrap();
        assert!(gone - 3 >= 14, "kept at least the retention: day {gone}");
        assert!(
            gone - 3 <= 30 + 14,
            "gone within rotation + retention: day {gone}"
        );
        assert_eq!(gone, 44);
        // Generations held at the end: the current one and those within retention.
        assert!(key.generations().len() <= 2, "{:?}", key.generations());
    }
}
