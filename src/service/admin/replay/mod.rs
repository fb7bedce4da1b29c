//! Dead-letter replay: `POST /replay` starts a job that reads the dead-letter topic up to its end
//! (as of the start), picks the records matching a filter and re-publishes them to the input
//! topic with `clickpipe.replay.count` incremented; `GET /replay/{id}` reports on it and
//! `DELETE /replay/{id}` cancels it.
//!
//! Loop guard: a dead letter whose `clickpipe.replay.count` already reached
//! `admin.replay_max_count` is skipped and counted, so a record that keeps failing stops coming
//! back. The pipeline copies the count of a replayed record into its new dead letter.
//!
//! Memory: what the jobs replayed is kept in the Kafka consumer group
//! `clickpipe-replay-<kafka.group_id>` (see [`replay_group`]), per dead-letter partition, so a
//! job — in this process or after a restart — does not re-publish a dead letter an earlier job
//! already replayed (unless asked to with `"from": "beginning"`). The committed offset of a
//! partition is where a job with no filter starts: every dead letter below it was replayed (or
//! refused by the loop guard) for every kind. Above it, the offset metadata lists, per kind, the
//! ranges of offsets already handled for that kind (`v1 inference_failed=12..40,52..60`), so a
//! job replaying one kind, or one time window, leaves the others to later jobs. An offset only
//! counts as replayed once the broker acknowledged its re-publication; a dry run records nothing.
//!
//! Bounds: at most `admin.replay_max_jobs` jobs run at once (beyond: 429); the jobs of a process
//! that publish run one at a time (a second waits for the first, `running` meanwhile), so two of
//! them never publish the same dead letter; a job stops at its deadline
//! (`admin.replay_timeout_s`) as `failed`; the latest [`KEEP_FINISHED`] finished jobs are kept
//! for `GET /replay/{id}`, older ones are forgotten (404).
//!
//! Layout: `request` (the body of `POST /replay` and its validation), `jobs` (the jobs of this
//! process: bounds, progress, reports, forgetting the finished ones), `run` (the job thread: its
//! Kafka clients, its turn to publish, how it ends), `scan` (reading, re-publishing, the broker's
//! answers), `plan` (the job's bookkeeping, free of Kafka), `memory` (the replayed ranges and
//! their offset-metadata encoding) and `store` (loading and committing them in the replay
//! group).

use crate::service::config::Config;

mod jobs;
mod memory;
mod plan;
mod request;
mod run;
mod scan;
mod store;

pub use jobs::{JobReport, JobState, ReplayJob, ReplayJobs, KEEP_FINISHED};
pub use request::{ReplayFilter, ReplayRequest};

/// Dead-letter kinds a replay can select.
pub const KINDS: [&str; 4] = [
    "invalid_event",
    "lookup_failed",
    "inference_failed",
    "output_failed",
];

/// The consumer group holding what replay jobs replayed: `clickpipe-replay-<kafka.group_id>`.
pub fn replay_group(config: &Config) -> String {
    format!("clickpipe-replay-{}", config.kafka.group_id)
}
