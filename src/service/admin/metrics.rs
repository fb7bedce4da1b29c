//! `GET /metrics`: the Prometheus text exposition of the metric table
//! ([`crate::service::metrics`]).

use super::AdminState;
use crate::service::metrics::{prometheus, Sources};

/// Renders every metric.
pub(super) fn render(state: &AdminState) -> String {
    prometheus(&Sources {
        stats: &state.stats,
        status: &state.status,
        uptime: state.started.elapsed(),
        zip_cache: state
            .pipeline
            .as_ref()
            .map(|p| p.zip_cache_hits_and_misses()),
    })
}
