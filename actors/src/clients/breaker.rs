//! A circuit breaker for the model endpoint, shared by every partition of a process (they all call
//! the same model). Closed: calls go through; `threshold` consecutive transient failures open it.
//! Open: calls are refused until `open_for` has passed. Half-open: one probe is let through; its
//! success closes the circuit, its failure opens it again. The probe is a [`ProbeGuard`]: however
//! the probing call ends — an answer, an error, or its future dropped by a drain, seek or restart —
//! the guard gives the probe back, so the breaker never stays half-open with nobody probing.

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
#[derive(Debug)]
pub enum Admission<'a> {
    /// Go ahead.
    Call,
    /// Go ahead as the half-open probe; dropping the guard ends the probe.
    Probe(ProbeGuard<'a>),
    /// Refused: the circuit is open (or a probe is under way); ask again after this long.
    Wait(Duration),
}

/// The half-open probe in progress. Report its outcome with [`CircuitBreaker::success`] or
/// [`CircuitBreaker::failure`]; when dropped (after either, or without: a non-retryable answer,
/// a cancelled future), a breaker still half-open lets the next caller probe.
#[derive(Debug)]
#[must_use = "dropping the guard ends the probe"]
pub struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        let mut i = self.breaker.inner.lock();
        if i.state == BreakerState::HalfOpen {
            i.probing = false;
        }
    }
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
    pub fn admit(&self) -> Admission<'_> {
        let mut i = self.inner.lock();
        match i.state {
            BreakerState::Closed => Admission::Call,
            BreakerState::Open => {
                let elapsed = i.opened_at.elapsed();
                if elapsed >= self.open_for {
                    i.state = BreakerState::HalfOpen;
                    i.probing = true;
                    Admission::Probe(ProbeGuard { breaker: self })
                } else {
                    Admission::Wait(self.open_for - elapsed)
                }
            }
            BreakerState::HalfOpen if !i.probing => {
                i.probing = true;
                Admission::Probe(ProbeGuard { breaker: self })
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

    /// A breaker that opened on one failure and whose delay has passed: the next caller probes.
    fn tripped_breaker() -> CircuitBreaker {
        let b = CircuitBreaker::new(1, Duration::from_millis(10));
        b.failure();
        std::thread::sleep(Duration::from_millis(12));
        b
    }

    #[test]
    fn opens_after_the_threshold_probes_after_the_delay_and_closes_on_success() {
        let b = CircuitBreaker::new(3, Duration::from_millis(30));
        assert!(matches!(b.admit(), Admission::Call));
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Admission::Wait(_)));
        std::thread::sleep(Duration::from_millis(35));
        let probe = b.admit();
        assert!(matches!(probe, Admission::Probe(_)));
        assert!(
            matches!(b.admit(), Admission::Wait(_)),
            "one probe at a time"
        );
        b.success();
        drop(probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(matches!(b.admit(), Admission::Call));
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let b = tripped_breaker();
        let probe = b.admit();
        assert!(matches!(probe, Admission::Probe(_)));
        b.failure();
        drop(probe);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Admission::Wait(_)));
    }

    #[test]
    fn a_probe_that_ends_without_an_outcome_lets_the_next_caller_probe() {
        // The probing call answered something non-retryable, or its future was dropped by a
        // drain, a seek or a restart: nobody reports; the breaker must not stay half-open with
        // its probe taken forever.
        let b = tripped_breaker();
        let probe = b.admit();
        assert!(matches!(probe, Admission::Probe(_)));
        assert!(matches!(b.admit(), Admission::Wait(_)));
        drop(probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(
            matches!(b.admit(), Admission::Probe(_)),
            "the next caller probes"
        );
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
