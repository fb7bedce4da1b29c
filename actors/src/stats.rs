//! Process-wide counters, shared by every actor through an `Arc` (no globals). The admin API and the
//! run summary read them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ErrorKind;

/// Counters of a running pipeline.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from the input topic.
    pub records_in: AtomicU64,
    /// Output records acknowledged by the broker.
    pub outputs: AtomicU64,
    /// Dead letters acknowledged, by kind.
    pub invalid_event: AtomicU64,
    /// Dead letters of kind `lookup_failed`.
    pub lookup_failed: AtomicU64,
    /// Dead letters of kind `inference_failed`.
    pub inference_failed: AtomicU64,
    /// Dead letters of kind `output_failed`.
    pub output_failed: AtomicU64,
    /// Model requests sent (batches, successful or not).
    pub model_batches: AtomicU64,
    /// Events scored by the model.
    pub model_events: AtomicU64,
}

impl Stats {
    /// The counter of dead letters of `kind`.
    pub fn dead_letters(&self, kind: ErrorKind) -> &AtomicU64 {
        match kind {
            ErrorKind::InvalidEvent => &self.invalid_event,
            ErrorKind::LookupFailed => &self.lookup_failed,
            ErrorKind::InferenceFailed => &self.inference_failed,
            ErrorKind::OutputFailed => &self.output_failed,
        }
    }

    /// All dead letters.
    pub fn dead_letters_total(&self) -> u64 {
        [
            ErrorKind::InvalidEvent,
            ErrorKind::LookupFailed,
            ErrorKind::InferenceFailed,
            ErrorKind::OutputFailed,
        ]
        .iter()
        .map(|k| self.dead_letters(*k).load(Ordering::Relaxed))
        .sum()
    }
}
