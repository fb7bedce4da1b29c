//! The replay jobs of this process: starting one (within `admin.replay_max_jobs`), its progress
//! and report, cancelling it, and forgetting the finished ones beyond [`KEEP_FINISHED`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::service::config::Config;
use actix_web::http::StatusCode;
use parking_lot::Mutex;
use serde::Serialize;

use super::request::ReplayFilter;
use super::run::{run, Outcome};
use crate::service::admin::error::ApiError;

/// Finished jobs kept for `GET /replay/{id}`; older finished ones are forgotten.
pub const KEEP_FINISHED: usize = 100;

/// Timeout of the job's metadata, watermark and committed-offset requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The lifecycle of a replay job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading and re-publishing (or waiting for another job of this instance that publishes).
    Running,
    /// Reached the end of the dead-letter topic (or the limit).
    Done,
    /// Cancelled by `DELETE /replay/{id}`.
    Cancelled,
    /// Stopped by an error or by its deadline (see `error`).
    Failed,
}

/// A replay job's progress.
#[derive(Debug)]
pub struct ReplayJob {
    pub(super) id: String,
    state: Mutex<JobState>,
    error: Mutex<Option<String>>,
    pub(super) scanned: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) already: AtomicU64,
    pub(super) errors: AtomicU64,
    cancel: AtomicBool,
    dry_run: bool,
    /// When it stops (None: never; `admin.replay_timeout_s` too large to add to now).
    deadline: Option<Instant>,
    pub(super) timeout_s: u64,
}

/// What `GET /replay/{id}` answers.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct JobReport {
    /// The job id.
    pub id: String,
    /// Where it is.
    pub state: JobState,
    /// Dead letters read.
    pub scanned: u64,
    /// Records re-published to the input topic (in a dry run: that would be). Once the job has
    /// ended: only those the broker acknowledged.
    pub replayed: u64,
    /// Matching records skipped by the loop guard.
    pub skipped: u64,
    /// Matching records left out because an earlier job already replayed them (always 0 with
    /// `"from": "beginning"`).
    pub already_replayed: u64,
    /// Records whose re-publication failed.
    pub errors: u64,
    /// Whether nothing is published.
    pub dry_run: bool,
    /// Why the job failed (an error, or its deadline), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReplayJob {
    /// Its report.
    pub fn report(&self) -> JobReport {
        JobReport {
            id: self.id.clone(),
            state: self.state(),
            scanned: self.scanned.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            already_replayed: self.already.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dry_run: self.dry_run,
            error: self.error.lock().clone(),
        }
    }

    /// Where it is.
    pub fn state(&self) -> JobState {
        *self.state.lock()
    }

    /// Asks the job to stop: it finishes the record at hand, withdraws what it has not sent to
    /// the broker yet and waits (a few seconds at most) for what it sent.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn finish(&self, state: JobState, error: Option<String>) {
        // The error first: a reader seeing the final state sees why.
        *self.error.lock() = error;
        let mut s = self.state.lock();
        if *s == JobState::Running {
            *s = state;
        }
    }

    /// Why it should stop now, if it should.
    pub(super) fn stop(&self) -> Option<Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            Some(Stop::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Stop::Deadline)
        } else {
            None
        }
    }

    /// A request timeout that does not run far past the deadline.
    pub(super) fn request_timeout(&self) -> Duration {
        match self.deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(500), REQUEST_TIMEOUT),
            None => REQUEST_TIMEOUT,
        }
    }
}

/// Why a job stops before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Cancelled,
    Deadline,
    Error,
}

/// The jobs of this process and the lock its publishing jobs take turns on.
#[derive(Debug, Default)]
pub(super) struct Registry {
    jobs: Mutex<Jobs>,
    pub(super) publishing: Mutex<()>,
}

#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Arc<ReplayJob>>,
    /// Ids of the finished jobs, oldest first.
    finished: VecDeque<String>,
}

impl Registry {
    /// Ends a job and files it with the finished ones, forgetting the oldest beyond
    /// [`KEEP_FINISHED`] — at once, so whoever sees the job ended sees the list pruned.
    fn conclude(&self, job: &ReplayJob, state: JobState, error: Option<String>) {
        let mut jobs = self.jobs.lock();
        job.finish(state, error);
        jobs.finished.push_back(job.id.clone());
        while jobs.finished.len() > KEEP_FINISHED {
            if let Some(old) = jobs.finished.pop_front() {
                jobs.by_id.remove(&old);
            }
        }
    }
}

/// The replay jobs of this process: the running ones and the latest [`KEEP_FINISHED`] finished
/// ones.
#[derive(Debug, Default)]
pub struct ReplayJobs {
    inner: Arc<Registry>,
}

impl ReplayJobs {
    /// The job `id` (None when unknown or forgotten).
    pub fn get(&self, id: &str) -> Option<Arc<ReplayJob>> {
        self.inner.jobs.lock().by_id.get(id).cloned()
    }

    /// Jobs held: the running ones and the finished ones still kept.
    pub fn len(&self) -> usize {
        self.inner.jobs.lock().by_id.len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a job on its own thread; returns it. 429 when `admin.replay_max_jobs` jobs are
    /// running already.
    pub fn start(
        &self,
        config: Arc<Config>,
        filter: ReplayFilter,
    ) -> Result<Arc<ReplayJob>, ApiError> {
        let max = config.admin.replay_max_jobs;
        let timeout_s = config.admin.replay_timeout_s;
        let id = format!("replay-{:016x}", rand::random::<u64>());
        let job = Arc::new(ReplayJob {
            id: id.clone(),
            state: Mutex::new(JobState::Running),
            error: Mutex::new(None),
            scanned: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            already: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            dry_run: filter.dry_run,
            deadline: Instant::now().checked_add(Duration::from_secs(timeout_s)),
            timeout_s,
        });
        {
            let mut jobs = self.inner.jobs.lock();
            let running = jobs
                .by_id
                .values()
                .filter(|j| j.state() == JobState::Running)
                .count();
            if running >= max as usize {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "{running} replay jobs are running, the most admin.replay_max_jobs \
                         ({max}) allows: wait for one to end or cancel one (DELETE /replay/{{id}})"
                    ),
                ));
            }
            jobs.by_id.insert(id.clone(), job.clone());
        }
        let worker = job.clone();
        let registry = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("clickpipe-{id}"))
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&config, &filter, &worker, &registry)
                }))
                .unwrap_or_else(|_| Outcome::Failed("the replay job panicked".into()));
                let (state, error) = match outcome {
                    Outcome::Done => (JobState::Done, None),
                    Outcome::Cancelled => (JobState::Cancelled, None),
                    Outcome::Failed(e) => {
                        tracing::warn!(job = %worker.id, error = %e, "replay failed");
                        (JobState::Failed, Some(e))
                    }
                };
                registry.conclude(&worker, state, error);
                tracing::info!(report = ?worker.report(), "replay finished");
            });
        if let Err(e) = spawned {
            self.inner.conclude(
                &job,
                JobState::Failed,
                Some(format!("cannot start the replay thread: {e}")),
            );
        }
        Ok(job)
    }
}
