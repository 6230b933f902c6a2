//! Where the node reads the time, so that tests can move it. Services read
//! the clock each service holds (the one given to `Application::build_with_clock`);
//! pure functions below them take the time as an argument; the master-key
//! generations have a clock of their own (`dev.clock_offset_secs`). Audit
//! records take their time from their writer. Still on the wall clock:
//! bearer-token validity (`auth`: tokens are issued on the provider's real
//! time), the identity key's file timestamps (`identity`), `config check`
//! and the demo (`exitnet-demo`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch, UTC.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::domain::time::now_ms()
    }
}

/// The system's clock moved ahead by a fixed offset: `dev.clock_offset_secs`,
/// which the configuration refuses unless `auth.mode = "dev"` (loopback
/// only), so that an integration test can let a real node live "days later".
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    offset_ms: i64,
}

impl OffsetClock {
    pub fn new(offset_secs: u64) -> Self {
        Self {
            offset_ms: i64::try_from(offset_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        }
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        crate::domain::time::now_ms().saturating_add(self.offset_ms)
    }
}

/// A clock that stands still until it is set or advanced (unit tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(ms)))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock a node runs with: the system's, or with `dev.clock_offset_secs`
/// the system's moved ahead.
pub fn for_node(offset_secs: u64) -> Arc<dyn Clock> {
    if offset_secs == 0 {
        Arc::new(SystemClock)
    } else {
        Arc::new(OffsetClock::new(offset_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_and_offset_clocks() {
        let c = ManualClock::at(1_000);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set(7);
        assert_eq!(c.now_ms(), 7);
        let ahead = OffsetClock::new(86_400).now_ms() - SystemClock.now_ms();
        assert!((86_399_000..=86_401_000).contains(&ahead), "{ahead}");
    }
}
