//! A circuit breaker for the model endpoint, shared by every partition of a process (they all call
//! the same model). Closed: calls go through; `threshold` consecutive transient failures open it.
//! Open: calls are refused until `open_for` has passed. Half-open: one probe is let through; its
//! success closes the circuit, its failure opens it again.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// One probe call is allowed.
    HalfOpen,
}

impl BreakerState {
    /// The name shown in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    probing: bool,
}

/// The circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    inner: Mutex<Inner>,
    threshold: u32,
    open_for: Duration,
}

/// What the breaker says about a call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Call,
    /// Go ahead as the half-open probe.
    Probe,
    /// Refused: the circuit is open (or a probe is under way); ask again after this long.
    Wait(Duration),
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        CircuitBreaker {
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                probing: false,
            }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// Whether a call may be made now.
    pub fn admit(&self) -> Admission {
        let mut i = self.inner.lock();
        match i.state {
            BreakerState::Closed => Admission::Call,
            BreakerState::Open => {
                let elapsed = i.opened_at.elapsed();
                if elapsed >= self.open_for {
                    i.state = BreakerState::HalfOpen;
                    i.probing = true;
                    Admission::Probe
                } else {
                    Admission::Wait(self.open_for - elapsed)
                }
            }
            BreakerState::HalfOpen if !i.probing => {
                i.probing = true;
                Admission::Probe
            }
            BreakerState::HalfOpen => {
                Admission::Wait(self.open_for.min(Duration::from_millis(100)))
            }
        }
    }

    /// A call succeeded: the circuit closes.
    pub fn success(&self) {
        let mut i = self.inner.lock();
        if i.state != BreakerState::Closed {
            tracing::info!("model circuit closed");
        }
        i.state = BreakerState::Closed;
        i.failures = 0;
        i.probing = false;
    }

    /// A call failed transiently.
    pub fn failure(&self) {
        let mut i = self.inner.lock();
        i.failures = i.failures.saturating_add(1);
        let open = match i.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => i.failures >= self.threshold,
            BreakerState::Open => false,
        };
        i.probing = false;
        if open {
            if i.state == BreakerState::Closed {
                tracing::warn!(failures = i.failures, "model circuit opened");
            }
            i.state = BreakerState::Open;
            i.opened_at = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_after_the_delay_and_closes_on_success() {
        let b = CircuitBreaker::new(3, Duration::from_millis(30));
        assert_eq!(b.admit(), Admission::Call);
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Admission::Wait(_)));
        std::thread::sleep(Duration::from_millis(35));
        assert_eq!(b.admit(), Admission::Probe);
        assert!(
            matches!(b.admit(), Admission::Wait(_)),
            "one probe at a time"
        );
        b.success();
        assert_eq!(
            (b.state(), b.admit()),
            (BreakerState::Closed, Admission::Call)
        );
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let b = CircuitBreaker::new(1, Duration::from_millis(10));
        b.failure();
        std::thread::sleep(Duration::from_millis(12));
        assert_eq!(b.admit(), Admission::Probe);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Admission::Wait(_)));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = CircuitBreaker::new(2, Duration::from_secs(1));
        b.failure();
        b.success();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
