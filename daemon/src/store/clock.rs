//! The store's clock: wall-clock milliseconds (due times, leases, breakers'
//! cool-downs, retention are wall times, shared between instances) that
//! never go backwards within the process.
//!
//! When the system clock steps back (an NTP correction, a VM resumed, an
//! operator's `date -s`), reading it as is would strand everything already
//! scheduled: a retry due in 30 s would wait the step's length more. So
//! the clock carries on from where it was, at half the monotonic clock's
//! pace, until the wall clock has caught up with it (twice the step's
//! length): what was due falls due at most twice as late, never a step
//! later, and the clock is the system's again afterwards. It says so once
//! per step. A step forward is taken as it is (what was due falls due
//! sooner; nothing waits).

use std::sync::Mutex;
use std::time::Instant;

/// How far behind the carried time the wall clock may read before it is a
/// step (wall and monotonic clocks drift apart by far less than this).
const STEP_MS: i64 = 1_000;

/// A wall clock that never goes back (see the module's docs).
pub struct SteadyClock {
    wall: fn() -> i64,
    /// The last answer, when it was given, and whether the wall clock is
    /// behind it (a step said, not yet caught up).
    last: Mutex<Option<(i64, Instant, bool)>>,
}

impl SteadyClock {
    pub const fn new(wall: fn() -> i64) -> SteadyClock {
        SteadyClock {
            wall,
            last: Mutex::new(None),
        }
    }

    /// Milliseconds since the Unix epoch, never less than a previous
    /// answer of this clock.
    pub fn now_ms(&self) -> i64 {
        let wall = (self.wall)();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = match *last {
            Some((then, at, behind)) => {
                // At half pace while behind, so the wall clock catches up.
                let pace = if behind { 2 } else { 1 };
                let carried = then.saturating_add(at.elapsed().as_millis() as i64 / pace);
                if wall.saturating_add(STEP_MS) < carried {
                    if !behind {
                        tracing::warn!(
                            behind_ms = carried - wall,
                            "the system clock stepped back; due times and cool-downs carry on from where they were, at half pace, until it catches up"
                        );
                    }
                    *last = Some((carried, Instant::now(), true));
                    return carried;
                }
                if behind {
                    tracing::info!(
                        "the system clock caught up with the time carried since it stepped back"
                    );
                }
                wall.max(then)
            }
            None => wall,
        };
        *last = Some((now, Instant::now(), false));
        now
    }
}

/// The system clock in milliseconds since the Unix epoch.
pub fn system_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    static WALL: AtomicI64 = AtomicI64::new(0);

    fn wall() -> i64 {
        WALL.load(Ordering::SeqCst)
    }

    #[test]
    fn a_step_back_is_carried_over_and_a_step_forward_taken() {
        let clock = SteadyClock::new(wall);
        WALL.store(10_000_000, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 10_000_000);
        // An hour back: the clock carries on from where it was.
        WALL.store(10_000_000 - 3_600_000, Ordering::SeqCst);
        let carried = clock.now_ms();
        assert!(carried >= 10_000_000, "{carried}");
        assert!(clock.now_ms() >= carried);
        // Drift within a second is not a step: the wall time is taken, and
        // never below an answer already given.
        WALL.store(10_000_000 + 5_000, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 10_005_000);
        WALL.store(10_005_000 - 500, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 10_005_000);
        // Forward: taken as it is.
        WALL.store(20_000_000, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 20_000_000);
        // Back again, then the wall clock catches up with the carried time
        // (which moves at half pace): the system's time again.
        WALL.store(19_999_000 - 60_000, Ordering::SeqCst);
        let carried = clock.now_ms();
        assert!(carried >= 20_000_000, "{carried}");
        WALL.store(20_000_000 + 60_000, Ordering::SeqCst);
        assert_eq!(clock.now_ms(), 20_060_000);
    }
}
