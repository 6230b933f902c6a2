//! What nearly every call reads and almost nothing writes: which peer holds a
//! key (every federation call), a peer's state and keys (every referral sent
//! and every receipt checked) and the node's settings, among them each
//! peer's policy (every referral, both ways). Kept in memory only where this
//! process is the database's only user (SQLite); with PostgreSQL, other
//! replicas change the same rows, so every lookup goes to the database.
//!
//! Consistency: every store method that writes these rows invalidates the
//! cache when it ends, after its commit (`Invalidate`, a guard, so no path
//! can skip it). A lookup stores what it read only if no invalidation came
//! between its start and its end, so a value read before a change is never
//! kept after it. A call that starts after a change (a suspension, say) was
//! committed and returned therefore sees it.

use super::PeerKey;
use crate::domain::Peer;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Entries per map at most: unknown keys are remembered too (each refusal
/// would otherwise cost a read), so the map is bounded.
const MAX_ENTRIES: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct ReadCache {
    enabled: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    by_key: HashMap<String, KeyEntry>,
    by_org: HashMap<String, Option<Peer>>,
    keys: HashMap<String, Vec<PeerKey>>,
    meta: HashMap<String, Option<String>>,
}

#[derive(Debug, Clone)]
pub(super) struct KeyEntry {
    pub peer: Option<Peer>,
    /// When the key stops being accepted (a key retired by a rotation).
    pub valid_until_ms: Option<i64>,
}

/// Where a lookup started: its value is stored only if nothing changed since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket(u64);

impl ReadCache {
    /// A cache that keeps nothing (a database shared with other processes).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A cache for a database only this process writes.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps are only ever replaced whole or extended: a panic while
        // holding the lock leaves nothing half-done worth refusing.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a lookup; `None` when the cache is off.
    pub fn ticket(&self) -> Option<Ticket> {
        self.enabled.then(|| Ticket(self.lock().generation))
    }

    /// What `pick` finds, if the cache is on.
    fn read<T>(&self, pick: impl FnOnce(&Inner) -> Option<T>) -> Option<T> {
        if !self.enabled {
            return None;
        }
        pick(&self.lock())
    }

    /// Keeps what a lookup read, unless something changed since it started.
    fn keep<V>(
        &self,
        ticket: Ticket,
        map: impl FnOnce(&mut Inner) -> &mut HashMap<String, V>,
        key: &str,
        value: V,
    ) {
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return;
        }
        let map = map(&mut inner);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key.to_owned(), value);
    }

    /// The peer holding `fingerprint`, if known and still valid at `now_ms`.
    pub fn peer_by_key(&self, fingerprint: &str, now_ms: i64) -> Option<Option<Peer>> {
        self.read(|i| {
            let e = i.by_key.get(fingerprint)?;
            e.valid_until_ms
                .is_none_or(|v| v > now_ms)
                .then(|| e.peer.clone())
        })
    }

    pub fn put_peer_by_key(&self, ticket: Ticket, fingerprint: &str, entry: KeyEntry) {
        self.keep(ticket, |i| &mut i.by_key, fingerprint, entry);
    }

    pub fn peer(&self, org: &str) -> Option<Option<Peer>> {
        self.read(|i| i.by_org.get(org).cloned())
    }

    pub fn put_peer(&self, ticket: Ticket, org: &str, peer: Option<Peer>) {
        self.keep(ticket, |i| &mut i.by_org, org, peer);
    }

    /// All the keys pinned for a peer, retired ones included.
    pub fn keys(&self, org: &str) -> Option<Vec<PeerKey>> {
        self.read(|i| i.keys.get(org).cloned())
    }

    pub fn put_keys(&self, ticket: Ticket, org: &str, keys: Vec<PeerKey>) {
        self.keep(ticket, |i| &mut i.keys, org, keys);
    }

    pub fn meta(&self, key: &str) -> Option<Option<String>> {
        self.read(|i| i.meta.get(key).cloned())
    }

    pub fn put_meta(&self, ticket: Ticket, key: &str, value: Option<String>) {
        self.keep(ticket, |i| &mut i.meta, key, value);
    }

    /// A peer was seen: the kept copies say so (last seen is shown, and
    /// decides when it is written next), nothing else is forgotten.
    pub fn touched(&self, org: &str, at_ms: i64) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        if let Some(Some(p)) = inner.by_org.get_mut(org) {
            p.last_seen_at_ms = Some(at_ms);
        }
        for e in inner.by_key.values_mut() {
            if let Some(p) = e.peer.as_mut().filter(|p| p.org_id.as_str() == org) {
                p.last_seen_at_ms = Some(at_ms);
            }
        }
    }

    /// Forgets everything; lookups under way do not store what they read.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.by_key.clear();
        inner.by_org.clear();
        inner.keys.clear();
        inner.meta.clear();
    }

    /// A guard that invalidates when dropped: declared before a method's
    /// transaction, it runs after the commit (or the rollback), on every path.
    pub fn invalidate_on_drop(&self) -> Invalidate<'_> {
        Invalidate(self)
    }
}

pub(super) struct Invalidate<'a>(&'a ReadCache);

impl Drop for Invalidate<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let c = ReadCache::enabled();
        let t = c.ticket().unwrap();
        c.invalidate();
        c.put_meta(t, "k", Some("old".into()));
        assert_eq!(c.meta("k"), None);
        let t = c.ticket().unwrap();
        c.put_meta(t, "k", Some("new".into()));
        assert_eq!(c.meta("k"), Some(Some("new".into())));
        {
            let _g = c.invalidate_on_drop();
            assert_eq!(c.meta("k"), Some(Some("new".into())));
        }
        assert_eq!(c.meta("k"), None);
    }

    #[test]
    fn a_retired_key_is_looked_up_again_and_a_disabled_cache_keeps_nothing() {
        let c = ReadCache::enabled();
        let t = c.ticket().unwrap();
        c.put_peer_by_key(
            t,
            "fp",
            KeyEntry {
                peer: None,
                valid_until_ms: Some(100),
            },
        );
        assert!(c.peer_by_key("fp", 99).is_some());
        assert!(c.peer_by_key("fp", 100).is_none());
        let d = ReadCache::disabled();
        assert!(d.ticket().is_none());
        assert!(d.meta("k").is_none());
    }
}
