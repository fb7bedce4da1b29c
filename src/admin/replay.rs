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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use chrono::DateTime;
use clickpipe_actors::clients::aws::CredentialsProvider;
use clickpipe_actors::config::Config;
use clickpipe_actors::produce::{
    create_producer, AuthContext, MskAuth, Producer as ReplayProducer,
};
use clickpipe_actors::record::{replay_count, REPLAY_COUNT_HEADER};
use futures::FutureExt;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer, PurgeConfig};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// Dead-letter kinds a replay can select.
pub const KINDS: [&str; 4] = [
    "invalid_event",
    "lookup_failed",
    "inference_failed",
    "output_failed",
];

/// Where the dead letters whose `clickpipe.error.kind` is none of [`KINDS`] are remembered (a
/// job without a `kinds` filter replays them too).
const OTHER_KIND: &str = "other";

/// Every kind the memory of a partition tracks.
const ALL_KEYS: [&str; 5] = [KINDS[0], KINDS[1], KINDS[2], KINDS[3], OTHER_KIND];

/// Finished jobs kept for `GET /replay/{id}`; older finished ones are forgotten.
pub const KEEP_FINISHED: usize = 100;

/// Timeout of the job's metadata, watermark and committed-offset requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Deliveries a job has outstanding at most.
const MAX_PENDING: usize = 1000;

/// How often a running job records what was acknowledged so far.
const COMMIT_INTERVAL: Duration = Duration::from_secs(2);

/// How long a stopping job (cancelled, past its deadline, failed) waits for the deliveries
/// already sent to the broker before it gives up on knowing their outcome.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Largest offset metadata a job commits (brokers refuse more than `offset.metadata.max.bytes`,
/// 4096 by default).
const MAX_METADATA: usize = 3000;

/// The consumer group holding what replay jobs replayed: `clickpipe-replay-<kafka.group_id>`.
pub fn replay_group(config: &Config) -> String {
    format!("clickpipe-replay-{}", config.kafka.group_id)
}

/// Body of `POST /replay`. Every field is optional.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Dead-letter kinds to replay (default: all).
    pub kinds: Option<Vec<String>>,
    /// Only dead letters written at or after this RFC 3339 time (`clickpipe.failed_at`).
    pub since: Option<String>,
    /// Only dead letters written before this RFC 3339 time.
    pub until: Option<String>,
    /// Only this partition of the dead-letter topic.
    pub partition: Option<i32>,
    /// Replay at most this many records.
    pub limit: Option<u64>,
    /// Count what would be replayed without publishing anything.
    pub dry_run: Option<bool>,
    /// `last` (default): leave out the dead letters earlier jobs already replayed; `beginning`:
    /// read the whole topic and replay them again.
    pub from: Option<String>,
}

/// A validated [`ReplayRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayFilter {
    kinds: Option<HashSet<String>>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    partition: Option<i32>,
    limit: Option<u64>,
    dry_run: bool,
    from_beginning: bool,
}

fn rfc3339_ms(field: &str, value: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::bad_field(field, format!("not an RFC 3339 time: {e}")))
}

impl ReplayRequest {
    /// Checks the request; a bad value is a 400 naming its field.
    pub fn validate(&self) -> Result<ReplayFilter, ApiError> {
        let kinds = match &self.kinds {
            None => None,
            Some(k) if k.is_empty() => {
                return Err(ApiError::bad_field(
                    "kinds",
                    "must name at least one kind (leave it out for all)",
                ))
            }
            Some(k) => {
                if let Some(bad) = k.iter().find(|k| !KINDS.contains(&k.as_str())) {
                    return Err(ApiError::bad_field(
                        "kinds",
                        format!("unknown kind {bad:?}; kinds are {}", KINDS.join(", ")),
                    ));
                }
                Some(k.iter().cloned().collect())
            }
        };
        let since_ms = self
            .since
            .as_deref()
            .map(|v| rfc3339_ms("since", v))
            .transpose()?;
        let until_ms = self
            .until
            .as_deref()
            .map(|v| rfc3339_ms("until", v))
            .transpose()?;
        if let (Some(s), Some(u)) = (since_ms, until_ms) {
            if u <= s {
                return Err(ApiError::bad_field("until", "must be after `since`"));
            }
        }
        if self.partition.is_some_and(|p| p < 0) {
            return Err(ApiError::bad_field("partition", "must be 0 or more"));
        }
        if self.limit == Some(0) {
            return Err(ApiError::bad_field("limit", "must be at least 1"));
        }
        let from_beginning = match self.from.as_deref() {
            None | Some("last") => false,
            Some("beginning") => true,
            Some(other) => {
                return Err(ApiError::bad_field(
                    "from",
                    format!(
                        "{other:?} is neither \"last\" (after what earlier jobs replayed) nor \
                         \"beginning\" (replay again)"
                    ),
                ))
            }
        };
        Ok(ReplayFilter {
            kinds,
            since_ms,
            until_ms,
            partition: self.partition,
            limit: self.limit,
            dry_run: self.dry_run.unwrap_or(false),
            from_beginning,
        })
    }
}

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
    id: String,
    state: Mutex<JobState>,
    error: Mutex<Option<String>>,
    scanned: AtomicU64,
    replayed: AtomicU64,
    skipped: AtomicU64,
    already: AtomicU64,
    errors: AtomicU64,
    cancel: AtomicBool,
    dry_run: bool,
    /// When it stops (None: never; `admin.replay_timeout_s` too large to add to now).
    deadline: Option<Instant>,
    timeout_s: u64,
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
    fn stop(&self) -> Option<Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            Some(Stop::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Stop::Deadline)
        } else {
            None
        }
    }

    /// A request timeout that does not run far past the deadline.
    fn request_timeout(&self) -> Duration {
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
enum Stop {
    Cancelled,
    Deadline,
    Error,
}

/// The jobs of this process and the lock its publishing jobs take turns on.
#[derive(Debug, Default)]
struct Registry {
    jobs: Mutex<Jobs>,
    publishing: Mutex<()>,
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

fn header_str<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The memory key of a `clickpipe.error.kind`.
fn kind_key(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or(OTHER_KIND)
}

// ---------------------------------------------------------------------------------------------
// What earlier jobs replayed

/// The dead letters of one partition earlier jobs handled. An offset is handled for a kind when
/// the record there is not of that kind, or was replayed (acknowledged), or was refused by the
/// loop guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Handled {
    /// Every offset below it is handled for every kind.
    base: i64,
    /// Above `base`, per kind: sorted, disjoint, non-adjacent half-open ranges.
    kinds: BTreeMap<&'static str, Vec<(i64, i64)>>,
}

impl Handled {
    /// Adds `[from, to)` to what is handled for `kind`.
    fn insert(&mut self, kind: &'static str, from: i64, to: i64) {
        let from = from.max(self.base);
        if to <= from {
            return;
        }
        let ranges = self.kinds.entry(kind).or_default();
        // Fast path: jobs mostly append.
        if let Some(last) = ranges.last_mut() {
            if from >= last.0 && from <= last.1 {
                last.1 = last.1.max(to);
                return;
            }
        }
        if ranges.last().is_none_or(|last| from > last.1) {
            ranges.push((from, to));
            return;
        }
        // The ranges touching [from, to) merge with it.
        let first = ranges.partition_point(|r| r.1 < from);
        let past = ranges.partition_point(|r| r.0 <= to);
        let (mut lo, mut hi) = (from, to);
        if first < past {
            lo = lo.min(ranges[first].0);
            hi = hi.max(ranges[past - 1].1);
        }
        ranges.splice(first..past, [(lo, hi)]);
    }

    /// Whether `offset` is handled for `kind`.
    fn contains(&self, kind: &str, offset: i64) -> bool {
        offset < self.base
            || self.kinds.get(kind).is_some_and(|ranges| {
                let i = ranges.partition_point(|r| r.1 <= offset);
                ranges.get(i).is_some_and(|r| r.0 <= offset)
            })
    }

    /// The first offset at or after `from` not handled for `kind`.
    fn first_unhandled(&self, kind: &str, from: i64) -> i64 {
        let at = from.max(self.base);
        self.kinds
            .get(kind)
            .and_then(|ranges| {
                let i = ranges.partition_point(|r| r.1 <= at);
                ranges.get(i).filter(|r| r.0 <= at).map(|r| r.1)
            })
            .unwrap_or(at)
    }

    /// Adds everything `other` handles.
    fn union(&mut self, other: &Handled) {
        self.base = self.base.max(other.base);
        for (kind, ranges) in &other.kinds {
            for (from, to) in ranges {
                self.insert(kind, *from, *to);
            }
        }
        self.normalize(0);
    }

    /// Moves `base` up to the first offset not handled for some kind (and at least to `low`,
    /// the partition's first offset) and drops the ranges below it.
    fn normalize(&mut self, low: i64) {
        self.base = self.base.max(low);
        let base = self.base;
        self.base = ALL_KEYS
            .iter()
            .map(|k| self.first_unhandled(k, base))
            .min()
            .unwrap_or(base);
        let base = self.base;
        for ranges in self.kinds.values_mut() {
            ranges.retain(|r| r.1 > base);
            if let Some(first) = ranges.first_mut() {
                first.0 = first.0.max(base);
            }
        }
        self.kinds.retain(|_, ranges| !ranges.is_empty());
    }

    /// The highest offset it mentions (exclusive).
    fn top(&self) -> i64 {
        self.kinds
            .values()
            .filter_map(|r| r.last().map(|r| r.1))
            .max()
            .unwrap_or(self.base)
            .max(self.base)
    }

    /// The offset metadata: `v1 kind=a..b,c..d …` (half-open ranges above the committed offset).
    fn encode(&self) -> String {
        let mut out = String::from("v1");
        for (kind, ranges) in &self.kinds {
            out.push(' ');
            out.push_str(kind);
            out.push('=');
            let parts: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}..{b}")).collect();
            out.push_str(&parts.join(","));
        }
        out
    }

    /// Reads a committed offset and its metadata. Metadata that is empty (e.g. after
    /// `kafka-consumer-groups --reset-offsets`) or not ours means: everything below the offset is
    /// handled, nothing above it.
    fn decode(offset: i64, metadata: &str) -> Handled {
        let base = Handled {
            base: offset.max(0),
            kinds: BTreeMap::new(),
        };
        let mut words = metadata.split_whitespace();
        match words.next() {
            None => return base,
            Some("v1") => {}
            Some(_) => {
                tracing::warn!(
                    metadata,
                    "replay memory: metadata not understood; using the offset only"
                );
                return base;
            }
        }
        let mut out = base.clone();
        for word in words {
            let parsed = word.split_once('=').and_then(|(kind, ranges)| {
                let kind = ALL_KEYS.iter().find(|k| **k == kind)?;
                let ranges: Option<Vec<(i64, i64)>> = ranges
                    .split(',')
                    .map(|r| {
                        let (a, b) = r.split_once("..")?;
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((*kind, ranges?))
            });
            let Some((kind, ranges)) = parsed else {
                tracing::warn!(
                    metadata,
                    "replay memory: metadata not understood; using the offset only"
                );
                return base;
            };
            for (a, b) in ranges {
                out.insert(kind, a, b);
            }
        }
        out.normalize(0);
        out
    }

    /// Shrinks the encoding to at most `max` bytes by closing the smallest gaps between ranges of
    /// a kind (the dead letters in a closed gap count as replayed: only `"from": "beginning"`
    /// reaches them then). Returns how many gaps were closed.
    fn compact(&mut self, max: usize) -> usize {
        let mut closed = 0;
        loop {
            let len = self.encode().len();
            let ranges: usize = self.kinds.values().map(Vec::len).sum();
            if len <= max || ranges <= self.kinds.len() {
                break;
            }
            // Close about as many gaps as the excess needs, the smallest first.
            let per_range = len / ranges + 1;
            let want = ((len - max) / per_range).max(1);
            let mut gaps: Vec<(i64, &'static str, usize)> = self
                .kinds
                .iter()
                .flat_map(|(kind, ranges)| {
                    ranges
                        .windows(2)
                        .enumerate()
                        .map(move |(i, w)| (w[1].0 - w[0].1, *kind, i))
                })
                .collect();
            gaps.sort_unstable();
            let mut close: HashMap<&'static str, HashSet<usize>> = HashMap::new();
            for (_, kind, i) in gaps.into_iter().take(want) {
                close.entry(kind).or_default().insert(i);
                closed += 1;
            }
            for (kind, gaps) in close {
                if let Some(ranges) = self.kinds.get_mut(kind) {
                    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
                    for (i, r) in ranges.iter().enumerate() {
                        match merged.last_mut() {
                            // Gap i lies between ranges i and i + 1.
                            Some(last) if i > 0 && gaps.contains(&(i - 1)) => last.1 = r.1,
                            _ => merged.push(*r),
                        }
                    }
                    *ranges = merged;
                }
            }
        }
        if closed > 0 {
            self.normalize(0);
        }
        closed
    }
}

/// What a job does with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not selected by the filter.
    Unmatched,
    /// Selected, but an earlier job replayed it.
    Already,
    /// Selected, refused by the loop guard.
    Guarded,
    /// To re-publish.
    Publish,
}

/// A job's bookkeeping, free of Kafka: what it reads, what it decides, what it has handled.
#[derive(Debug)]
struct Plan<'a> {
    filter: &'a ReplayFilter,
    max_count: u32,
    /// The kinds the job selects.
    keys: Vec<&'static str>,
    /// What earlier jobs handled, as loaded at the start (then as last committed).
    stored: HashMap<i32, Handled>,
    /// What this job handled.
    marks: HashMap<i32, Handled>,
    /// The next offset each partition is expected to deliver.
    next: HashMap<i32, i64>,
    /// Whether `marks` grew since the last commit.
    dirty: bool,
}

impl<'a> Plan<'a> {
    fn new(filter: &'a ReplayFilter, max_count: u32, stored: HashMap<i32, Handled>) -> Self {
        let keys = match &filter.kinds {
            None => ALL_KEYS.to_vec(),
            Some(k) => KINDS
                .iter()
                .copied()
                .filter(|kind| k.contains(*kind))
                .collect(),
        };
        Plan {
            filter,
            max_count,
            keys,
            stored,
            marks: HashMap::new(),
            next: HashMap::new(),
            dirty: false,
        }
    }

    /// Where the job starts reading partition `p` (whose first offset is `low`).
    fn start(&mut self, p: i32, low: i64) -> i64 {
        let start = if self.filter.from_beginning {
            low
        } else {
            let handled = self.stored.get(&p).cloned().unwrap_or_default();
            self.keys
                .iter()
                .map(|k| handled.first_unhandled(k, low))
                .min()
                .unwrap_or(low)
        };
        self.next.insert(p, start);
        start
    }

    /// Marks `[from, to)` handled for every selected kind except `except`.
    fn mark_others(&mut self, p: i32, from: i64, to: i64, except: Option<&str>) {
        if to <= from {
            return;
        }
        let marks = self.marks.entry(p).or_default();
        for k in &self.keys {
            if Some(*k) != except {
                marks.insert(k, from, to);
            }
        }
        self.dirty = true;
    }

    /// The job read the dead letter at `offset` of partition `p`.
    fn read(
        &mut self,
        p: i32,
        offset: i64,
        kind: &str,
        failed_at: Option<i64>,
        count: u32,
    ) -> Verdict {
        // Offsets skipped over hold no record (transaction markers, compacted away).
        let next = self.next.get(&p).copied().unwrap_or(offset);
        self.mark_others(p, next.min(offset), offset, None);
        self.next.insert(p, offset + 1);
        let key = kind_key(kind);
        // For every other selected kind, this record is one less to replay.
        self.mark_others(p, offset, offset + 1, Some(key));
        if !self.keys.contains(&key) {
            return Verdict::Unmatched;
        }
        if let Some(since) = self.filter.since_ms {
            if failed_at.is_none_or(|t| t < since) {
                return Verdict::Unmatched;
            }
        }
        if let Some(until) = self.filter.until_ms {
            if failed_at.is_none_or(|t| t >= until) {
                return Verdict::Unmatched;
            }
        }
        if !self.filter.from_beginning
            && self.stored.get(&p).is_some_and(|h| h.contains(key, offset))
        {
            return Verdict::Already;
        }
        if count >= self.max_count {
            self.marks
                .entry(p)
                .or_default()
                .insert(key, offset, offset + 1);
            self.dirty = true;
            return Verdict::Guarded;
        }
        Verdict::Publish
    }

    /// The job read partition `p` up to `end` (exclusive): what follows its last record holds
    /// none.
    fn reached_end(&mut self, p: i32, end: i64) {
        if let Some(next) = self.next.get(&p).copied() {
            self.mark_others(p, next, end, None);
            self.next.insert(p, end.max(next));
        }
    }

    /// The broker acknowledged the re-publication of the dead letter at `offset`.
    fn acked(&mut self, p: i32, key: &'static str, offset: i64) {
        self.marks
            .entry(p)
            .or_default()
            .insert(key, offset, offset + 1);
        self.dirty = true;
    }

    /// What to commit for partition `p`: what is stored (`current`, freshly read) with this
    /// job's marks, moved up to the partition's first offset `low`.
    fn merged(&self, p: i32, current: &Handled, low: i64) -> Handled {
        let mut out = current.clone();
        if let Some(marks) = self.marks.get(&p) {
            out.union(marks);
        }
        out.normalize(low);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The job

/// How a job ended.
#[derive(Debug)]
enum Outcome {
    Done,
    Cancelled,
    Failed(String),
}

/// A re-publication the broker has not answered yet.
struct Pending {
    partition: i32,
    key: &'static str,
    offset: i64,
    delivery: DeliveryFuture,
}

/// What became of the deliveries a stopping job gave up on.
#[derive(Debug, Default)]
struct Withdrawn {
    /// Not sent to the broker: not published.
    unsent: u64,
    /// Sent, outcome unknown: maybe published, not remembered.
    unknown: u64,
}

/// A job with its Kafka clients.
struct Replay<'a> {
    config: &'a Config,
    job: &'a ReplayJob,
    consumer: BaseConsumer<AuthContext>,
    producer: Option<ReplayProducer>,
    group: String,
    /// First offset of each partition read, as of the start.
    lows: HashMap<i32, i64>,
    /// Partitions whose stored memory was found stale (the topic was re-created): ignored.
    stale: HashSet<i32>,
    pending: Vec<Pending>,
    withdrawn: Withdrawn,
}

/// Reads the dead-letter topic up to its end as of now and re-publishes what matches.
fn run(config: &Config, filter: &ReplayFilter, job: &ReplayJob, registry: &Registry) -> Outcome {
    match run_inner(config, filter, job, registry) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    }
}

fn run_inner(
    config: &Config,
    filter: &ReplayFilter,
    job: &ReplayJob,
    registry: &Registry,
) -> Result<Outcome, String> {
    let k = &config.kafka;
    let group = replay_group(config);
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.client {
        cc.set(key, value);
    }
    cc.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // It never joins the group; this bounds how long a commit waits for an unavailable
        // coordinator.
        .set("session.timeout.ms", "10000");
    clickpipe_actors::produce::apply_auth(k, &mut cc);
    // Its own credentials cache: the job runs on a thread of its own.
    let credentials = std::sync::Arc::new(CredentialsProvider::default());
    let context = AuthContext::new(MskAuth::for_config(k, credentials));
    let consumer: BaseConsumer<AuthContext> = cc
        .create_with_context(context.clone())
        .map_err(|e| format!("cannot create the replay consumer: {e}"))?;

    let md = consumer
        .fetch_metadata(Some(&k.dlq_topic), job.request_timeout())
        .map_err(|e| format!("cannot read the metadata of {}: {e}", k.dlq_topic))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == k.dlq_topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .filter(|p| filter.partition.is_none_or(|want| want == *p))
        .collect();
    if let Some(p) = filter.partition {
        if partitions.is_empty() {
            return Err(format!("{} has no partition {p}", k.dlq_topic));
        }
    }
    // Read each partition up to its end as of now: what is dead-lettered while the job runs (a
    // replayed record failing again, say) is left for the next replay.
    let mut lows: HashMap<i32, i64> = HashMap::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&k.dlq_topic, p, job.request_timeout())
            .map_err(|e| format!("cannot read the watermarks of {} [{p}]: {e}", k.dlq_topic))?;
        if high > low {
            lows.insert(p, low);
            ends.insert(p, high);
        }
    }
    if ends.is_empty() {
        return Ok(Outcome::Done);
    }

    // Jobs that publish take turns, so that the second one sees what the first replayed.
    let _turn = if filter.dry_run {
        None
    } else {
        loop {
            if let Some(turn) = registry.publishing.try_lock_for(Duration::from_millis(200)) {
                break Some(turn);
            }
            match job.stop() {
                Some(Stop::Cancelled) => return Ok(Outcome::Cancelled),
                Some(_) => {
                    return Ok(Outcome::Failed(deadline_message(
                        job,
                        &Withdrawn::default(),
                    )))
                }
                None => {}
            }
        }
    };

    let mut replay = Replay {
        config,
        job,
        consumer,
        producer: None,
        group,
        lows,
        stale: HashSet::new(),
        pending: Vec::new(),
        withdrawn: Withdrawn::default(),
    };
    let stored = replay.load(&ends)?;
    let mut plan = Plan::new(filter, config.admin.replay_max_count, stored);
    // The broker forgets a group's offsets `offsets.retention.minutes` after their commit:
    // a job that publishes commits the memory it read again, to keep it.
    plan.dirty = !filter.dry_run && !plan.stored.is_empty();
    let mut tpl = TopicPartitionList::new();
    let mut partitions: Vec<i32> = ends.keys().copied().collect();
    partitions.sort_unstable();
    for p in partitions {
        let low = replay.lows.get(&p).copied().unwrap_or(0);
        let end = ends.get(&p).copied().unwrap_or(low);
        let start = plan.start(p, low);
        if start >= end {
            ends.remove(&p);
            continue;
        }
        tpl.add_partition_offset(&k.dlq_topic, p, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
    }
    if ends.is_empty() {
        // Nothing new: the memory is still committed again, to keep it.
        if let Err(e) = replay.commit(&mut plan, 1) {
            tracing::warn!(job = %job.id, error = %e, "replay: cannot refresh its memory");
        }
        return Ok(Outcome::Done);
    }
    if !filter.dry_run {
        let mut pc = ClientConfig::new();
        pc.set("bootstrap.servers", &k.brokers)
            .set("enable.idempotence", "true");
        for (key, value) in k.client.iter().chain(k.producer.iter()) {
            pc.set(key, value);
        }
        clickpipe_actors::produce::apply_auth(k, &mut pc);
        replay.producer = Some(
            create_producer(&pc, context)
                .map_err(|e| format!("cannot create the replay producer: {e}"))?,
        );
    }
    replay
        .consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot assign the dead-letter partitions: {e}"))?;

    let scanned = replay.scan(&mut plan, &mut ends);
    let mut stop = match &scanned {
        Ok(stop) => *stop,
        Err(_) => Some(Stop::Error),
    };
    // Wait for what was sent (the job's deadline bounds the wait); a stopping job withdraws.
    if let Some(late) = replay.wind_down(&mut plan, stop) {
        stop = stop.or(Some(late));
    }
    let committed = replay.commit(&mut plan, 3);
    let w = &replay.withdrawn;
    Ok(match (scanned, stop, committed) {
        (Err(e), _, c) => Outcome::Failed(with_commit_note(e, w, c.err())),
        (Ok(_), Some(Stop::Deadline), c) => {
            Outcome::Failed(with_commit_note(deadline_message(job, w), w, c.err()))
        }
        (Ok(_), _, Err(e)) => Outcome::Failed(with_commit_note(String::new(), w, Some(e))),
        (Ok(_), Some(Stop::Cancelled), Ok(())) => Outcome::Cancelled,
        (Ok(_), _, Ok(())) => Outcome::Done,
    })
}

/// The error of a job stopped by its deadline.
fn deadline_message(job: &ReplayJob, w: &Withdrawn) -> String {
    let mut m = format!(
        "stopped at its deadline (admin.replay_timeout_s = {}) after scanning {} dead letters",
        job.timeout_s,
        job.scanned.load(Ordering::Relaxed)
    );
    if w.unsent > 0 {
        m.push_str(&format!(
            "; {} not yet sent were withdrawn and are left for the next job",
            w.unsent
        ));
    }
    m
}

/// Adds to `message` what a stopped job could not account for and a failed commit.
fn with_commit_note(mut message: String, w: &Withdrawn, commit: Option<String>) -> String {
    if w.unknown > 0 {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!(
            "{} sent without an answer from the broker may have been published and may be \
             published again by a later job",
            w.unknown
        ));
    }
    if let Some(e) = commit {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!(
            "could not record what was replayed (a later job may publish it again): {e}"
        ));
    }
    message
}

impl Replay<'_> {
    /// What earlier jobs handled, per partition of `ends` (their end as of now).
    fn load(&mut self, ends: &HashMap<i32, i64>) -> Result<HashMap<i32, Handled>, String> {
        let current = self.fetch_committed(ends.keys().copied())?;
        let mut stored = HashMap::new();
        for (p, handled) in current {
            let end = ends.get(&p).copied().unwrap_or(0);
            if handled.top() > end {
                // Beyond the end of the partition: the topic was re-created since.
                tracing::warn!(
                    group = %self.group, partition = p, end, top = handled.top(),
                    "replay memory is past the end of the dead-letter partition; ignoring it"
                );
                self.stale.insert(p);
                continue;
            }
            stored.insert(p, handled);
        }
        Ok(stored)
    }

    /// The committed memory of `partitions` (a partition with nothing committed is absent).
    fn fetch_committed(
        &self,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<HashMap<i32, Handled>, String> {
        let topic = &self.config.kafka.dlq_topic;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, self.job.request_timeout())
            .map_err(|e| {
                format!(
                    "cannot read what earlier jobs replayed (group {}): {e}",
                    self.group
                )
            })?;
        let mut out = HashMap::new();
        for e in committed.elements() {
            if let Err(err) = e.error() {
                return Err(format!(
                    "cannot read what earlier jobs replayed on {topic} [{}] (group {}): {err}",
                    e.partition(),
                    self.group
                ));
            }
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), Handled::decode(o, e.metadata()));
            }
        }
        Ok(out)
    }

    /// Reads up to the ends; returns why it stopped early, if it did.
    fn scan(
        &mut self,
        plan: &mut Plan<'_>,
        ends: &mut HashMap<i32, i64>,
    ) -> Result<Option<Stop>, String> {
        let config = self.config;
        let k = &config.kafka;
        let filter = plan.filter;
        let mut last_commit = Instant::now();
        while !ends.is_empty() {
            if let Some(stop) = self.job.stop() {
                return Ok(Some(stop));
            }
            if filter
                .limit
                .is_some_and(|l| self.job.replayed.load(Ordering::Relaxed) >= l)
            {
                break;
            }
            self.reap(plan);
            if plan.dirty && last_commit.elapsed() >= COMMIT_INTERVAL {
                if let Err(e) = self.commit(plan, 1) {
                    tracing::warn!(job = %self.job.id, error = %e, "replay: cannot record progress");
                }
                last_commit = Instant::now();
            }
            if self.pending.len() >= MAX_PENDING {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let msg = match self.consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // Caught up with what the partition lets read now: its end, or (an open
                    // transaction) less; what is left is left for the next job.
                    if let Some(end) = ends.remove(&p) {
                        let reached = self.position(p).map_or(0, |pos| pos.min(end));
                        plan.reached_end(p, reached);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(job = %self.job.id, error = %e, "replay consumer error");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let p = msg.partition();
            let Some(end) = ends.get(&p).copied() else {
                continue;
            };
            if msg.offset() >= end {
                ends.remove(&p);
                plan.reached_end(p, end);
                continue;
            }
            self.job.scanned.fetch_add(1, Ordering::Relaxed);
            let headers = msg.headers();
            let kind = header_str(headers, "clickpipe.error.kind").unwrap_or("");
            let failed_at = header_str(headers, "clickpipe.failed_at")
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.timestamp_millis())
                .or_else(|| msg.timestamp().to_millis());
            let count = replay_count(&msg);
            let verdict = plan.read(p, msg.offset(), kind, failed_at, count);
            if msg.offset() + 1 >= end {
                ends.remove(&p);
                plan.reached_end(p, end);
            }
            match verdict {
                Verdict::Unmatched => continue,
                Verdict::Already => {
                    self.job.already.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Verdict::Guarded => {
                    self.job.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Verdict::Publish => {}
            }
            self.job.replayed.fetch_add(1, Ordering::Relaxed);
            let Some(producer) = &self.producer else {
                continue; // a dry run
            };
            let next = (count + 1).to_string();
            let headers = OwnedHeaders::new().insert(Header {
                key: REPLAY_COUNT_HEADER,
                value: Some(next.as_str()),
            });
            let mut record = FutureRecord::to(&k.input_topic)
                .payload(msg.payload().unwrap_or_default())
                .headers(headers);
            if let Some(key) = msg.key() {
                record = record.key(key);
            }
            match producer.send_result(record) {
                Ok(delivery) => self.pending.push(Pending {
                    partition: p,
                    key: kind_key(kind),
                    offset: msg.offset(),
                    delivery,
                }),
                Err((e, _)) => {
                    tracing::warn!(job = %self.job.id, error = %e, "replay produce failed");
                    self.job.errors.fetch_add(1, Ordering::Relaxed);
                    self.job.replayed.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Ok(None)
    }

    /// The consumer's position in partition `p`.
    fn position(&self, p: i32) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        match positions
            .find_partition(&self.config.kafka.dlq_topic, p)?
            .offset()
        {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// Takes in the answered deliveries: acknowledged ones count as replayed.
    fn reap(&mut self, plan: &mut Plan<'_>) {
        let job = self.job;
        let withdrawn = &mut self.withdrawn;
        self.pending.retain_mut(|d| {
            let Some(result) = (&mut d.delivery).now_or_never() else {
                return true;
            };
            match result {
                Ok(Ok(_)) => plan.acked(d.partition, d.key, d.offset),
                Ok(Err((e, _))) => {
                    job.replayed.fetch_sub(1, Ordering::Relaxed);
                    match e.rdkafka_error_code() {
                        Some(RDKafkaErrorCode::PurgeQueue) => withdrawn.unsent += 1,
                        Some(RDKafkaErrorCode::PurgeInflight) => withdrawn.unknown += 1,
                        _ => {
                            tracing::warn!(job = %job.id, error = %e, "replay delivery failed");
                            job.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(_canceled) => {
                    job.replayed.fetch_sub(1, Ordering::Relaxed);
                    withdrawn.unknown += 1;
                }
            }
            false
        });
    }

    /// Waits for the outstanding deliveries: until the deadline normally; a stopping job
    /// withdraws what it has not sent and waits [`STOP_GRACE`] for the rest. Returns the reason
    /// it had to stop waiting, if it did.
    fn wind_down(&mut self, plan: &mut Plan<'_>, stop: Option<Stop>) -> Option<Stop> {
        // A dry run has no producer, so nothing to wait for.
        let producer = self.producer.clone()?;
        let mut late = None;
        let mut grace_until = None;
        if stop.is_some() {
            producer.purge(PurgeConfig::default().queue());
            grace_until = Some(Instant::now() + STOP_GRACE);
        }
        loop {
            self.reap(plan);
            if self.pending.is_empty() {
                return late;
            }
            match grace_until {
                Some(g) if Instant::now() >= g => break,
                Some(_) => {}
                None => {
                    if let Some(s) = self.job.stop() {
                        late = Some(s);
                        producer.purge(PurgeConfig::default().queue());
                        grace_until = Some(Instant::now() + STOP_GRACE);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Give up on the answers of what was sent.
        producer.purge(PurgeConfig::default().queue().inflight());
        let until = Instant::now() + Duration::from_secs(1);
        while !self.pending.is_empty() && Instant::now() < until {
            self.reap(plan);
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in self.pending.drain(..) {
            self.job.replayed.fetch_sub(1, Ordering::Relaxed);
            self.withdrawn.unknown += 1;
        }
        late
    }

    /// Records what the job handled in the replay group (merged with what is committed there
    /// now), trying `attempts` times.
    fn commit(&mut self, plan: &mut Plan<'_>, attempts: u32) -> Result<(), String> {
        if plan.filter.dry_run || !plan.dirty {
            return Ok(());
        }
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            match self.try_commit(plan) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_commit(&mut self, plan: &mut Plan<'_>) -> Result<(), String> {
        let topic = &self.config.kafka.dlq_topic;
        let mut partitions: Vec<i32> = plan
            .marks
            .keys()
            .chain(plan.stored.keys())
            .copied()
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let current = self.fetch_committed(partitions.iter().copied())?;
        let mut tpl = TopicPartitionList::new();
        let mut merged = HashMap::new();
        for p in partitions {
            let base = if self.stale.contains(&p) {
                // What is committed predates the topic: only this job's marks count.
                plan.stored.get(&p).cloned().unwrap_or_default()
            } else {
                current.get(&p).cloned().unwrap_or_default()
            };
            let low = self.lows.get(&p).copied().unwrap_or(0);
            let mut handled = plan.merged(p, &base, low);
            let closed = handled.compact(MAX_METADATA);
            if closed > 0 {
                tracing::warn!(
                    partition = p, closed,
                    "replay memory too large: gaps between replayed ranges closed (\"from\": \"beginning\" reaches them)"
                );
            }
            let mut elem = tpl.add_partition(topic, p);
            elem.set_offset(Offset::Offset(handled.base))
                .map_err(|e| format!("{topic} [{p}]: {e}"))?;
            elem.set_metadata(handled.encode());
            merged.insert(p, handled);
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| format!("commit to group {}: {e}", self.group))?;
        for (p, handled) in merged {
            // What this job committed is the memory from now on, stale or not.
            self.stale.remove(&p);
            plan.stored.insert(p, handled);
        }
        plan.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_validated_field_by_field() {
        let ok = ReplayRequest {
            kinds: Some(vec!["inference_failed".into()]),
            since: Some("2026-11-25T00:00:00Z".into()),
            until: Some("2026-11-26T00:00:00Z".into()),
            partition: Some(0),
            limit: Some(10),
            dry_run: Some(true),
            from: Some("beginning".into()),
        };
        let f = ok.validate().expect("valid");
        assert!(f.dry_run);
        assert!(f.from_beginning);
        assert_eq!(f.limit, Some(10));
        let field = |r: ReplayRequest| r.validate().err().and_then(|e| e.field);
        let base = ReplayRequest::default;
        assert_eq!(
            field(ReplayRequest {
                kinds: Some(vec!["nope".into()]),
                ..base()
            }),
            Some("kinds".into())
        );
        assert_eq!(
            field(ReplayRequest {
                kinds: Some(vec![]),
                ..base()
            }),
            Some("kinds".into())
        );
        assert_eq!(
            field(ReplayRequest {
                since: Some("yesterday".into()),
                ..base()
            }),
            Some("since".into())
        );
        assert_eq!(
            field(ReplayRequest {
                since: Some("2026-11-26T00:00:00Z".into()),
                until: Some("2026-11-25T00:00:00Z".into()),
                ..base()
            }),
            Some("until".into())
        );
        assert_eq!(
            field(ReplayRequest {
                partition: Some(-1),
                ..base()
            }),
            Some("partition".into())
        );
        assert_eq!(
            field(ReplayRequest {
                limit: Some(0),
                ..base()
            }),
            Some("limit".into())
        );
        assert_eq!(
            field(ReplayRequest {
                from: Some("start".into()),
                ..base()
            }),
            Some("from".into())
        );
        let last = ReplayRequest {
            from: Some("last".into()),
            ..base()
        };
        assert!(!last.validate().expect("valid").from_beginning);
        let everything = base().validate().expect("an empty body replays everything");
        assert!(
            !everything.from_beginning,
            "the default is after the last job"
        );
    }

    #[test]
    fn handled_ranges_merge_and_answer() {
        let mut h = Handled::default();
        h.insert("invalid_event", 10, 12);
        h.insert("invalid_event", 14, 16);
        h.insert("invalid_event", 12, 14); // joins the two
        assert_eq!(h.kinds["invalid_event"], vec![(10, 16)]);
        h.insert("invalid_event", 3, 5);
        h.insert("invalid_event", 20, 21);
        h.insert("invalid_event", 4, 11); // overlaps two
        assert_eq!(h.kinds["invalid_event"], vec![(3, 16), (20, 21)]);
        assert!(h.contains("invalid_event", 3));
        assert!(h.contains("invalid_event", 15));
        assert!(!h.contains("invalid_event", 16));
        assert!(!h.contains("lookup_failed", 3));
        assert_eq!(h.first_unhandled("invalid_event", 0), 0);
        assert_eq!(h.first_unhandled("invalid_event", 5), 16);
        assert_eq!(h.first_unhandled("invalid_event", 20), 21);
        assert_eq!(h.first_unhandled("lookup_failed", 5), 5);
    }

    #[test]
    fn the_base_moves_once_every_kind_is_handled() {
        let mut h = Handled::default();
        for k in KINDS {
            h.insert(k, 0, 10);
        }
        h.normalize(0);
        assert_eq!(h.base, 0, "the other kind is not handled yet");
        h.insert(OTHER_KIND, 0, 7);
        h.normalize(0);
        assert_eq!(h.base, 7);
        assert_eq!(h.kinds.len(), 4, "ranges above the base stay");
        assert!(h.kinds.values().all(|r| r == &vec![(7, 10)]));
        // The partition's first offset moves it too (older dead letters are gone).
        h.normalize(20);
        assert_eq!(h.base, 20);
        assert!(h.kinds.is_empty());
    }

    #[test]
    fn the_memory_round_trips_through_offset_metadata() {
        let mut h = Handled {
            base: 5,
            ..Handled::default()
        };
        h.insert("inference_failed", 7, 9);
        h.insert("inference_failed", 12, 40);
        h.insert("lookup_failed", 6, 8);
        let text = h.encode();
        assert_eq!(text, "v1 inference_failed=7..9,12..40 lookup_failed=6..8");
        assert_eq!(Handled::decode(h.base, &text), h);
        // Empty metadata (an operator's --reset-offsets) or not ours: the offset alone.
        let plain = Handled {
            base: 30,
            ..Handled::default()
        };
        assert_eq!(Handled::decode(30, ""), plain);
        assert_eq!(Handled::decode(30, "something else"), plain);
        assert_eq!(Handled::decode(30, "v1 inference_failed=x..9"), plain);
        assert_eq!(Handled::decode(30, "v1 nonsense=1..9"), plain);
        assert_eq!(Handled::decode(-1, "").base, 0);
    }

    #[test]
    fn compaction_keeps_the_metadata_under_the_broker_limit() {
        let mut h = Handled::default();
        for i in 0..2000i64 {
            // Gaps of growing size: the smallest close first.
            h.insert("inference_failed", i * 1000, i * 1000 + 999 - (i % 7));
        }
        assert!(h.encode().len() > MAX_METADATA);
        let covered = h.clone();
        let closed = h.compact(MAX_METADATA);
        assert!(closed > 0);
        assert!(h.encode().len() <= MAX_METADATA, "{}", h.encode().len());
        // Nothing handled before is unhandled now.
        for (a, b) in &covered.kinds["inference_failed"] {
            assert!(h.contains("inference_failed", *a) && h.contains("inference_failed", b - 1));
        }
    }

    fn filter(body: serde_json::Value) -> ReplayFilter {
        serde_json::from_value::<ReplayRequest>(body)
            .expect("request")
            .validate()
            .expect("valid")
    }

    #[test]
    fn a_second_job_leaves_out_what_the_first_replayed() {
        let all = filter(serde_json::json!({}));
        let mut first = Plan::new(&all, 3, HashMap::new());
        assert_eq!(first.start(0, 0), 0);
        for o in 0..4 {
            assert_eq!(first.read(0, o, "invalid_event", None, 0), Verdict::Publish);
        }
        first.reached_end(0, 4);
        // Only 0..3 acknowledged: 3 is left for the next job.
        for o in 0..3 {
            first.acked(0, "invalid_event", o);
        }
        let stored = first.merged(0, &Handled::default(), 0);
        assert_eq!(stored.base, 3);

        let mut second = Plan::new(&all, 3, HashMap::from([(0, stored.clone())]));
        assert_eq!(
            second.start(0, 0),
            3,
            "starts after what the first replayed"
        );
        assert_eq!(
            second.read(0, 3, "invalid_event", None, 0),
            Verdict::Publish
        );

        let again = filter(serde_json::json!({"from": "beginning"}));
        let mut third = Plan::new(&again, 3, HashMap::from([(0, stored)]));
        assert_eq!(third.start(0, 0), 0);
        assert_eq!(third.read(0, 0, "invalid_event", None, 0), Verdict::Publish);
    }

    #[test]
    fn a_job_of_one_kind_leaves_the_other_kinds_to_later_jobs() {
        let inference = filter(serde_json::json!({"kinds": ["inference_failed"]}));
        let mut first = Plan::new(&inference, 3, HashMap::new());
        first.start(0, 0);
        let kinds = [
            "lookup_failed",
            "inference_failed",
            "lookup_failed",
            "inference_failed",
        ];
        for (o, kind) in kinds.iter().enumerate() {
            let v = first.read(0, o as i64, kind, None, 0);
            if *kind == "inference_failed" {
                assert_eq!(v, Verdict::Publish);
                first.acked(0, "inference_failed", o as i64);
            } else {
                assert_eq!(v, Verdict::Unmatched);
            }
        }
        first.reached_end(0, 4);
        let stored = first.merged(0, &Handled::default(), 0);
        assert_eq!(stored.base, 0, "lookup failures are not replayed yet");

        let all = filter(serde_json::json!({}));
        let mut second = Plan::new(&all, 3, HashMap::from([(0, stored.clone())]));
        assert_eq!(second.start(0, 0), 0);
        let verdicts: Vec<Verdict> = kinds
            .iter()
            .enumerate()
            .map(|(o, kind)| second.read(0, o as i64, kind, None, 0))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Publish,
                Verdict::Already,
                Verdict::Publish,
                Verdict::Already
            ]
        );
        // A job of the kind already replayed starts past it.
        let mut third = Plan::new(&inference, 3, HashMap::from([(0, stored)]));
        assert_eq!(third.start(0, 0), 4);
    }

    #[test]
    fn dead_letters_outside_the_window_stay_replayable() {
        let since = filter(serde_json::json!({"since": "2026-01-01T00:00:00Z"}));
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .ok()
        };
        let mut first = Plan::new(&since, 3, HashMap::new());
        first.start(0, 0);
        assert_eq!(
            first.read(0, 0, "inference_failed", t("2025-12-31T00:00:00Z"), 0),
            Verdict::Unmatched
        );
        assert_eq!(
            first.read(0, 1, "inference_failed", t("2026-01-02T00:00:00Z"), 0),
            Verdict::Publish
        );
        first.acked(0, "inference_failed", 1);
        // The loop guard's refusals count as handled: no later job reads them again.
        assert_eq!(
            first.read(0, 2, "inference_failed", t("2026-01-02T00:00:00Z"), 3),
            Verdict::Guarded
        );
        first.reached_end(0, 3);
        let stored = first.merged(0, &Handled::default(), 0);
        assert_eq!(stored.base, 0);
        assert!(stored.contains("inference_failed", 1));
        assert!(stored.contains("inference_failed", 2));
        assert!(
            !stored.contains("inference_failed", 0),
            "left for a later job"
        );
    }

    #[test]
    fn a_dry_run_or_an_unacknowledged_record_is_not_remembered() {
        let all = filter(serde_json::json!({}));
        let mut job = Plan::new(&all, 3, HashMap::new());
        job.start(0, 0);
        assert_eq!(job.read(0, 0, "output_failed", None, 0), Verdict::Publish);
        job.reached_end(0, 1);
        let stored = job.merged(0, &Handled::default(), 0);
        assert!(!stored.contains("output_failed", 0));
        assert_eq!(stored.base, 0);
    }

    #[test]
    fn unknown_kinds_are_replayed_only_without_a_kind_filter() {
        assert_eq!(kind_key("inference_failed"), "inference_failed");
        assert_eq!(kind_key(""), OTHER_KIND);
        assert_eq!(kind_key("weird"), OTHER_KIND);
        let one = filter(serde_json::json!({"kinds": ["invalid_event"]}));
        let mut job = Plan::new(&one, 3, HashMap::new());
        job.start(0, 0);
        assert_eq!(job.read(0, 0, "", None, 0), Verdict::Unmatched);
        let all = filter(serde_json::json!({}));
        let mut job = Plan::new(&all, 3, HashMap::new());
        job.start(0, 0);
        assert_eq!(job.read(0, 0, "", None, 0), Verdict::Publish);
    }
}
