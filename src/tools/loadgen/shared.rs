//! The counters and timings the producing, collecting and sampling halves of a run share.

use std::cell::{Cell, RefCell};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::producer::DeliveryFuture;
use tokio::time::Instant;

use super::report::Sample;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// State the producing, collecting and sampling halves of a run share (same task, no locking).
pub(super) struct Shared {
    /// The run's time origin: just before the first send.
    pub(super) origin: Instant,
    /// When each event was handed to the producer, microseconds after `origin`, by sequence.
    pub(super) sent_at: RefCell<Vec<u64>>,
    pub(super) sent: Cell<u64>,
    pub(super) acked: Cell<u64>,
    pub(super) delivery_errors: Cell<u64>,
    /// Set once every delivery is settled.
    pub(super) produced_at: Cell<Option<Instant>>,
    pub(super) predictions: Cell<u64>,
    pub(super) dead_letters: Cell<u64>,
    /// Distinct events seen on either topic.
    pub(super) accounted: Cell<u64>,
    /// When the latest new result arrived.
    pub(super) last_result: Cell<Option<Instant>>,
    /// Set when the collector is done.
    pub(super) finished: Cell<bool>,
    pub(super) timeline: RefCell<Vec<Sample>>,
}

impl Shared {
    pub(super) fn new(count: u64) -> Shared {
        Shared {
            origin: Instant::now(),
            sent_at: RefCell::new(vec![u64::MAX; usize::try_from(count).unwrap_or(0)]),
            sent: Cell::new(0),
            acked: Cell::new(0),
            delivery_errors: Cell::new(0),
            produced_at: Cell::new(None),
            predictions: Cell::new(0),
            dead_letters: Cell::new(0),
            accounted: Cell::new(0),
            last_result: Cell::new(None),
            finished: Cell::new(false),
            timeline: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn settle(
        &self,
        result: <DeliveryFuture as std::future::Future>::Output,
        first_error: &mut Option<String>,
    ) {
        match result {
            Ok(Ok(_)) => self.acked.set(self.acked.get() + 1),
            Ok(Err((e, _))) => {
                self.delivery_errors.set(self.delivery_errors.get() + 1);
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                self.delivery_errors.set(self.delivery_errors.get() + 1);
                first_error.get_or_insert_with(|| "delivery canceled (producer gone)".into());
            }
        }
    }

    /// Notes that event `seq` was handed to the producer now.
    pub(super) fn mark_sent(&self, seq: u64) {
        let us = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        let mut sent_at = self.sent_at.borrow_mut();
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| sent_at.get_mut(i)) {
            *slot = us;
        }
    }

    /// Latency of event `seq` if received now, microseconds.
    pub(super) fn latency_us(&self, seq: u64, received: Instant) -> Option<u64> {
        let sent = *self.sent_at.borrow().get(usize::try_from(seq).ok()?)?;
        if sent == u64::MAX {
            return None;
        }
        let at = u64::try_from(received.duration_since(self.origin).as_micros()).ok()?;
        Some(at.saturating_sub(sent))
    }

    pub(super) fn sample(&self) -> Sample {
        let acked = self.acked.get();
        Sample {
            unix_ms: wall_ms(),
            t_s: self.origin.elapsed().as_secs_f64(),
            sent: self.sent.get(),
            acked,
            predictions: self.predictions.get(),
            dead_letters: self.dead_letters.get(),
            lag: acked.saturating_sub(self.accounted.get()),
        }
    }

    pub(super) fn outputs(&self) -> String {
        format!(
            " | out {} dlq {}",
            self.predictions.get(),
            self.dead_letters.get()
        )
    }
}
