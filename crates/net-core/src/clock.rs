//! [`Clock`]: the bus's event timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds that never go backwards within a bus: the wall clock read once at
/// start plus the monotonic time elapsed since, read from the CPU's time-stamp counter when it
/// is reliable (`quanta` calibrates it against the OS clock and falls back to the OS clock
/// otherwise). About a third of the cost of a `clock_gettime` call per event.
pub(crate) struct Clock {
    unix_ns_at_start: u64,
    clock: quanta::Clock,
    start: quanta::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.now();
        Self {
            unix_ns_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            clock,
            start,
        }
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.start);
        self.unix_ns_at_start
            .saturating_add(elapsed.as_nanos() as u64)
    }
}
