//! Supervision in clickpipe, in one place. actix restarts an actor only when it stops and does
//! not supervise panics at all; this module supplies what the actor tree uses instead: the
//! restart intensity ([`RestartTracker`]), the failure report ([`ChildFailed`]) and the backoff.
//! The policies each actor follows:
//!
//! | term | meaning | where |
//! | --- | --- | --- |
//! | restart policy **permanent** | always restarted when it fails | stage actors of a partition |
//! | restart policy **transient** | restarted only when it fails abnormally (panic, error), not when it stops normally | partition actors (a revoked partition stops normally and is not restarted) |
//! | restart policy **never** | not restarted; its failure escalates to its supervisor | the consumer-group and dead-letter actors (the root escalates to the process: exit non-zero) |
//! | strategy **one-for-one** | a failed child is restarted alone | the root, across partitions |
//! | strategy **one-for-all** | all children are restarted together | a partition over its stages: in-flight records are dropped together and re-read from the last committed offset, so state stays consistent |
//! | **intensity** | at most `max_restarts` within `window`; one more and the supervisor gives up | partition: paused and reported failed; root: the process exits with code 3 |
//! | **backoff** | exponential with full jitter between restarts, `initial` doubling up to `max` | every restart |
//!
//! Lifecycle hooks: a stage's failure (a panic caught in its handler or its work) is reported to its
//! partition as [`ChildFailed`]; the partition restarts its stages (one-for-all) after a backoff,
//! from the last committed offset, or gives up when the intensity is exceeded and reports to the
//! root, which counts partition failures against its own intensity.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::Message;

/// How many restarts a supervisor allows within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within `window`.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

/// Counts restarts in a sliding window and says when the intensity is exceeded.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    intensity: Intensity,
    recent: VecDeque<Instant>,
    total: u64,
}

impl RestartTracker {
    /// A tracker for `intensity`.
    pub fn new(intensity: Intensity) -> Self {
        RestartTracker {
            intensity,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a failure at `now`. Returns true while a restart is allowed, false once the
    /// intensity is exceeded.
    pub fn record(&mut self, now: Instant) -> bool {
        self.total += 1;
        self.recent.push_back(now);
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > self.intensity.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.len() as u32 <= self.intensity.max_restarts
    }

    /// Failures within the current window.
    pub fn in_window(&self, now: Instant) -> u32 {
        self.recent
            .iter()
            .filter(|t| now.duration_since(**t) <= self.intensity.window)
            .count() as u32
    }

    /// Failures ever recorded.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Why a child failed, reported to its supervisor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ChildFailed {
    /// The child's name (e.g. the stage).
    pub child: crate::error::Stage,
    /// What happened (a panic message, an error).
    pub reason: String,
}

/// The message of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracker allowing `max_restarts` within `window_s` seconds.
    fn tracker(max_restarts: u32, window_s: u64) -> RestartTracker {
        RestartTracker::new(Intensity {
            max_restarts,
            window: Duration::from_secs(window_s),
        })
    }

    #[test]
    fn allows_max_restarts_within_the_window_then_refuses() {
        let mut t = tracker(2, 10);
        let t0 = Instant::now();
        assert!(t.record(t0));
        assert!(t.record(t0 + Duration::from_secs(1)));
        assert!(
            !t.record(t0 + Duration::from_secs(2)),
            "third within 10 s exceeds 2"
        );
        assert_eq!(t.total(), 3);
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let mut t = tracker(1, 5);
        let t0 = Instant::now();
        assert!(t.record(t0));
        assert!(
            t.record(t0 + Duration::from_secs(6)),
            "the first one left the window"
        );
        assert_eq!(t.in_window(t0 + Duration::from_secs(6)), 1);
    }

    #[test]
    fn panic_payloads_become_messages() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).expect_err("panicked");
        assert_eq!(panic_message(caught.as_ref()), "boom 7");
    }
}
