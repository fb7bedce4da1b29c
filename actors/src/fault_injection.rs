//! Test-only fault injection points, compiled only with the `fault-injection` feature (the
//! integration tests turn it on; no other build has it). Production code cannot arm them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The `event_type` that makes the enrich stage panic while [`FaultHooks::enrich_panics`] is
/// above zero. Only tests arm it.
pub const PANIC_EVENT_TYPE: &str = "__clickpipe_injected_panic__";

/// Test-only fault injection points. Production never arms them (all counters start at zero).
#[derive(Debug, Default)]
pub struct FaultHooks {
    /// How many more times the enrich stage panics on a batch holding a [`PANIC_EVENT_TYPE`] event.
    pub enrich_panics: AtomicUsize,
}

impl FaultHooks {
    /// Takes one armed panic, if any is left.
    pub fn take_enrich_panic(&self) -> bool {
        self.enrich_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
