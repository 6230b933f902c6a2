//! Rate and concurrency limits per caller, per peer and per remote address.
//! A token bucket per key (refilled continuously) and a semaphore per key for
//! calls in flight. Both maps are pruned of idle keys, so a flood of distinct
//! keys cannot grow them without bound.

use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Keys kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One kind of limit (callers, peers or addresses).
#[derive(Debug)]
pub struct Limiter {
    what: &'static str,
    per_sec: f64,
    burst: f64,
    max_in_flight: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Holds a call's place among the key's calls in flight; released on drop.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Limiter {
    /// `max_in_flight = 0` means no concurrency limit (rate only).
    pub fn new(what: &'static str, per_sec: u32, burst: u32, max_in_flight: u32) -> Self {
        Self {
            what,
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            max_in_flight: max_in_flight as usize,
            buckets: Mutex::default(),
            in_flight: Mutex::default(),
        }
    }

    /// Takes one token for `key`, or refuses.
    pub fn rate(&self, key: &str) -> Result<(), Error> {
        self.rate_n(key, 1)
    }

    /// Takes `n` tokens for `key` (a call that does the work of `n`), or
    /// refuses. More than the burst is allowed on a full bucket, which then
    /// owes the rest: the rate holds over time.
    pub fn rate_n(&self, key: &str, n: usize) -> Result<(), Error> {
        let n = n as f64;
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| Error::Internal(anyhow::anyhow!("limiter lock poisoned")))?;
        if buckets.len() > PRUNE_ABOVE {
            // Keys whose bucket has refilled hold no state worth keeping.
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens < n.min(self.burst) {
            return Err(Error::ResourceExhausted(format!(
                "rate limit: at most {} calls per second per {}; try again shortly",
                self.per_sec, self.what
            )));
        }
        b.tokens -= n;
        Ok(())
    }

    /// A place among `key`'s calls in flight, or a refusal.
    pub fn enter(&self, key: &str) -> Result<Permit, Error> {
        if self.max_in_flight == 0 {
            return Ok(Permit(None));
        }
        let sem = {
            let mut map = self
                .in_flight
                .lock()
                .map_err(|_| Error::Internal(anyhow::anyhow!("limiter lock poisoned")))?;
            if map.len() > PRUNE_ABOVE {
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            map.entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_in_flight)))
                .clone()
        };
        sem.try_acquire_owned()
            .map(|p| Permit(Some(p)))
            .map_err(|_| {
                Error::ResourceExhausted(format!(
                    "at most {} calls in flight per {}",
                    self.max_in_flight, self.what
                ))
            })
    }

    /// Both: the rate, then a place in flight.
    pub fn admit(&self, key: &str) -> Result<Permit, Error> {
        self.rate(key)?;
        self.enter(key)
    }
}

/// The node's limiters, built from `[limits]`.
#[derive(Debug)]
pub struct Limits {
    pub callers: Limiter,
    pub peers: Limiter,
    pub addresses: Limiter,
    /// Pending intake per peer, counted (`peering::quotas::intake`).
    intake: IntakeCounts,
    /// Repeated refusals, counted here between flushes.
    pub refusals: RefusalCounts,
    /// Strangers' keys, limited before they are looked up.
    pub unknown_keys: UnknownKeys,
}

impl Limits {
    /// Admits one more offer of `org` on the estimate of its pending intake
    /// if that is fresh and below `quota`; `None` when it must be counted.
    pub fn intake_estimate(&self, org: &str, quota: i64) -> Option<bool> {
        self.intake.admit(org, quota)
    }

    /// `org`'s pending intake, just counted.
    pub fn intake_counted(&self, org: &str, n: i64) {
        self.intake.counted(org, n);
    }

    /// The bucket of callers from `ip` that no peer's pinned key
    /// identifies (strangers), shared by their calls and by every new
    /// connection from `ip` (a handshake is the costliest thing a stranger
    /// can make us do): an address that has spent it gets no TLS handshake
    /// until it refills. A peer's calls never draw on it; its connections
    /// do, once each (they are kept for hours).
    pub fn stranger_bucket(ip: std::net::IpAddr) -> String {
        format!("stranger:{ip}")
    }

    /// Whether a new connection from `ip` may start its TLS handshake
    /// (taking a token if so).
    pub fn admit_connection(&self, ip: std::net::IpAddr) -> bool {
        self.addresses.rate(&Self::stranger_bucket(ip)).is_ok()
    }
}

// === Refusals counted in memory ===

/// Kinds of refusal (rows) tracked at once; beyond, each refusal is written
/// as it comes, so the map cannot grow without bound.
const MAX_REFUSAL_KINDS: usize = 10_000;

/// Refusals between flushes. The first of each kind (its aggregation key:
/// reason, key, address, minute…) is written at once, so it is durable and
/// logged; repeats are only counted here and added to that row by a flush
/// (`security::Refusals::flush`, every second and at shutdown). A flood then
/// costs one write per kind per second, not an fsync per refused call queued
/// with the peers' own writes. A crash loses at most a second of counts,
/// never the first of a kind.
#[derive(Debug, Default)]
pub struct RefusalCounts(Mutex<RefusalState>);

#[derive(Debug, Default)]
struct RefusalState {
    minute: i64,
    /// Kinds written this minute.
    written: std::collections::HashSet<String>,
    /// Repeats not yet added to their rows.
    pending: HashMap<String, (crate::store::SecurityEvent, i64)>,
}

impl RefusalCounts {
    /// True when `e` must be written now (the first of its kind this
    /// minute); otherwise it has been counted for the next flush.
    pub fn first_or_count(&self, e: &crate::store::SecurityEvent) -> bool {
        let Ok(mut s) = self.0.lock() else {
            return true;
        };
        let minute = e.at_ms.div_euclid(60_000);
        if minute != s.minute {
            // Keys name their minute: last minute's pending repeats still
            // go to last minute's rows.
            s.written.clear();
            s.minute = minute;
        }
        let key = e.aggregation_key();
        if !s.written.contains(&key) {
            if s.written.len() < MAX_REFUSAL_KINDS {
                s.written.insert(key);
            }
            return true;
        }
        s.pending.entry(key).or_insert_with(|| (e.clone(), 0)).1 += 1;
        false
    }

    /// The repeats counted since the last call, by kind.
    pub fn take(&self) -> Vec<(crate::store::SecurityEvent, i64)> {
        self.0
            .lock()
            .map(|mut s| s.pending.drain().map(|(_, v)| v).collect())
            .unwrap_or_default()
    }
}

// === Keys recently found pinned for no peer ===

/// How long a key found pinned for no peer is remembered.
const UNKNOWN_KEY_TTL_MS: i64 = 1_000;
/// Keys remembered at once; beyond, the oldest half is forgotten.
const MAX_UNKNOWN_KEYS: usize = 10_000;

/// Keys that were found pinned for no peer in the last second. A caller
/// presenting one is drawn from its address's bucket *before* its key is
/// looked up, so a stranger's flood past its rate costs no database work
/// (it queued with the peers' own reads). Nothing is refused on this
/// alone: within the rate the key is looked up as always, so a key pinned
/// meanwhile (on this replica or another) is admitted at once.
#[derive(Debug, Default)]
pub struct UnknownKeys(Mutex<HashMap<String, i64>>);

impl UnknownKeys {
    /// Whether `fingerprint` was found unknown within the last second.
    pub fn recently_unknown(&self, fingerprint: &str, now_ms: i64) -> bool {
        self.0.lock().is_ok_and(|m| {
            m.get(fingerprint)
                .is_some_and(|at| now_ms.saturating_sub(*at) < UNKNOWN_KEY_TTL_MS)
        })
    }

    /// `fingerprint` was just looked up and is pinned for no peer.
    pub fn note(&self, fingerprint: &str, now_ms: i64) {
        let Ok(mut m) = self.0.lock() else {
            return;
        };
        if m.len() >= MAX_UNKNOWN_KEYS {
            m.retain(|_, at| now_ms.saturating_sub(*at) < UNKNOWN_KEY_TTL_MS);
            if m.len() >= MAX_UNKNOWN_KEYS {
                m.clear();
            }
        }
        m.insert(fingerprint.to_owned(), now_ms);
    }
}

// === Per-peer quotas on what a peer can make us store ===

/// How long a peer's counted pending intake is trusted before it is
/// counted again (offers admitted meanwhile are added to it).
const RECOUNT: std::time::Duration = std::time::Duration::from_secs(1);

/// Per peer: its pending intake as last counted plus offers admitted since,
/// so the database is asked at most once a second per peer, and at once
/// when the estimate reaches the quota (offers may have been accepted).
#[derive(Debug, Default)]
struct IntakeCounts(Mutex<HashMap<String, (i64, Instant)>>);

impl IntakeCounts {
    /// Admits one more if the fresh estimate is below `quota`; `None` when
    /// it must be counted again.
    fn admit(&self, org: &str, quota: i64) -> Option<bool> {
        let mut m = self.0.lock().ok()?;
        let (n, at) = m.get_mut(org)?;
        if at.elapsed() > RECOUNT || *n >= quota {
            return None;
        }
        *n += 1;
        Some(true)
    }

    fn counted(&self, org: &str, n: i64) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() > PRUNE_ABOVE {
                m.retain(|_, (_, at)| at.elapsed() <= RECOUNT);
            }
            m.insert(org.to_owned(), (n, Instant::now()));
        }
    }
}

impl Limits {
    pub fn new(c: &crate::config::LimitsConfig) -> Self {
        Self {
            callers: Limiter::new(
                "caller",
                c.caller_calls_per_sec,
                c.caller_burst,
                c.caller_max_in_flight,
            ),
            peers: Limiter::new(
                "peer",
                c.peer_calls_per_sec,
                c.peer_burst,
                c.peer_max_in_flight,
            ),
            addresses: Limiter::new("address", c.address_calls_per_sec, c.address_burst, 0),
            intake: IntakeCounts::default(),
            refusals: RefusalCounts::default(),
            unknown_keys: UnknownKeys::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_remembered_for_a_second_and_bounded() {
        let k = UnknownKeys::default();
        assert!(!k.recently_unknown("fp", 0));
        k.note("fp", 1_000);
        assert!(k.recently_unknown("fp", 1_999));
        assert!(!k.recently_unknown("fp", 2_000));
        assert!(!k.recently_unknown("other", 1_000));
        for i in 0..MAX_UNKNOWN_KEYS + 5 {
            k.note(&format!("k{i}"), 5_000);
        }
        let len = k.0.lock().unwrap().len();
        assert!(len <= MAX_UNKNOWN_KEYS, "{len}");
    }

    #[test]
    fn the_first_refusal_of_a_kind_is_written_repeats_are_counted() {
        let c = RefusalCounts::default();
        let e = |at_ms: i64, reason: &str| crate::store::SecurityEvent {
            at_ms,
            surface: "federation".into(),
            reason: reason.into(),
            key_fingerprint: Some("fp".into()),
            org_id: None,
            remote_addr: Some("127.0.0.1:1".into()),
            method: Some("Notify".into()),
        };
        assert!(c.first_or_count(&e(0, "unknown_key")));
        for _ in 0..5 {
            assert!(!c.first_or_count(&e(10, "unknown_key")));
        }
        assert!(c.first_or_count(&e(20, "peer_suspended")), "another kind");
        assert!(
            c.first_or_count(&e(60_000, "unknown_key")),
            "another minute"
        );
        let taken = c.take();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].0.reason.as_str(), taken[0].1), ("unknown_key", 5));
        assert!(c.take().is_empty(), "taken once");
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::new("caller", 1, 3, 0);
        for _ in 0..3 {
            l.rate("a").unwrap();
        }
        let e = l.rate("a").unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)));
        // Another key has its own bucket.
        l.rate("b").unwrap();
    }

    #[test]
    fn a_call_of_many_counts_as_many() {
        let l = Limiter::new("peer", 1, 10, 0);
        l.rate_n("a", 8).unwrap();
        // Two left: a call of three waits.
        assert!(l.rate_n("a", 3).is_err());
        l.rate_n("a", 2).unwrap();
        assert!(l.rate("a").is_err());
        // More than the burst passes on a full bucket, and is owed.
        l.rate_n("b", 25).unwrap();
        assert!(l.rate("b").is_err());
    }

    #[test]
    fn connections_and_strangers_calls_share_an_address_bucket() {
        let config = crate::config::Config::load(None, &Default::default()).unwrap();
        let l = Limits::new(&config.limits);
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let burst = config.limits.address_burst;
        for _ in 0..burst - 1 {
            l.addresses.rate(&Limits::stranger_bucket(a)).unwrap();
        }
        assert!(l.admit_connection(a), "the last token");
        assert!(!l.admit_connection(a), "spent: no handshake");
        assert!(l.admit_connection(b), "another address has its own");
    }

    #[test]
    fn calls_in_flight_are_bounded_and_released() {
        let l = Limiter::new("peer", 1000, 1000, 2);
        let p1 = l.enter("x").unwrap();
        let _p2 = l.enter("x").unwrap();
        assert!(l.enter("x").is_err());
        drop(p1);
        assert!(l.enter("x").is_ok());
    }

    #[test]
    fn pending_intake_is_estimated_then_counted_again() {
        let c = IntakeCounts::default();
        // Never counted: count first.
        assert_eq!(c.admit("p", 3), None);
        c.counted("p", 2);
        assert_eq!(c.admit("p", 3), Some(true));
        // At the quota: counted again (some may have been accepted since).
        assert_eq!(c.admit("p", 3), None);
        assert_eq!(c.admit("q", 3), None, "each peer its own");
    }

    #[test]
    fn many_keys_are_pruned() {
        let l = Limiter::new("address", 1_000_000, 1, 0);
        for i in 0..(PRUNE_ABOVE + 10) {
            let _ = l.rate(&format!("k{i}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        l.rate("last").unwrap();
        assert!(l.buckets.lock().unwrap().len() < PRUNE_ABOVE);
    }
}
