//! Dead-letter replay: `POST /replay` starts a job that reads the dead-letter topic up to its end
//! (as of the start), picks the records matching a filter and re-publishes them to the input
//! topic with `clickpipe.replay.count` incremented; `GET /replay/{id}` reports on it and
//! `DELETE /replay/{id}` cancels it.
//!
//! Loop guard: a dead letter whose `clickpipe.replay.count` already reached
//! `admin.replay_max_count` is skipped and counted, so a record that keeps failing stops coming
//! back. The pipeline copies the count of a replayed record into its new dead letter.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use clickpipe_actors::clients::aws::CredentialsProvider;
use clickpipe_actors::config::Config;
use clickpipe_actors::produce::{create_producer, AuthContext, MskAuth};
use clickpipe_actors::record::{replay_count, REPLAY_COUNT_HEADER};
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
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

/// Timeout of the job's metadata and watermark requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
        Ok(ReplayFilter {
            kinds,
            since_ms,
            until_ms,
            partition: self.partition,
            limit: self.limit,
            dry_run: self.dry_run.unwrap_or(false),
        })
    }
}

/// The lifecycle of a replay job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading and re-publishing.
    Running,
    /// Reached the end of the dead-letter topic (or the limit).
    Done,
    /// Cancelled by `DELETE /replay/{id}`.
    Cancelled,
    /// Stopped by an error (see `error`).
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
    errors: AtomicU64,
    cancel: AtomicBool,
    dry_run: bool,
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
    /// Records re-published to the input topic (in a dry run: that would be).
    pub replayed: u64,
    /// Matching records skipped by the loop guard.
    pub skipped: u64,
    /// Records whose re-publication failed.
    pub errors: u64,
    /// Whether nothing is published.
    pub dry_run: bool,
    /// Why the job failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReplayJob {
    /// Its report.
    pub fn report(&self) -> JobReport {
        JobReport {
            id: self.id.clone(),
            state: *self.state.lock(),
            scanned: self.scanned.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dry_run: self.dry_run,
            error: self.error.lock().clone(),
        }
    }

    /// Asks the job to stop; it finishes the record at hand.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn finish(&self, state: JobState, error: Option<String>) {
        let mut s = self.state.lock();
        if *s == JobState::Running {
            *s = state;
        }
        *self.error.lock() = error;
    }
}

/// The replay jobs of this process.
#[derive(Debug, Default)]
pub struct ReplayJobs {
    jobs: Mutex<HashMap<String, Arc<ReplayJob>>>,
}

impl ReplayJobs {
    /// The job `id`.
    pub fn get(&self, id: &str) -> Option<Arc<ReplayJob>> {
        self.jobs.lock().get(id).cloned()
    }

    /// Starts a job on its own thread; returns it.
    pub fn start(&self, config: Arc<Config>, filter: ReplayFilter) -> Arc<ReplayJob> {
        let id = format!("replay-{:016x}", rand::random::<u64>());
        let job = Arc::new(ReplayJob {
            id: id.clone(),
            state: Mutex::new(JobState::Running),
            error: Mutex::new(None),
            scanned: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            dry_run: filter.dry_run,
        });
        self.jobs.lock().insert(id.clone(), job.clone());
        let worker = job.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("clickpipe-{id}"))
            .spawn(move || {
                let result = run(&config, &filter, &worker);
                match result {
                    Ok(()) if worker.cancel.load(Ordering::Relaxed) => {
                        worker.finish(JobState::Cancelled, None)
                    }
                    Ok(()) => worker.finish(JobState::Done, None),
                    Err(e) => {
                        tracing::warn!(job = %worker.id, error = %e, "replay failed");
                        worker.finish(JobState::Failed, Some(e))
                    }
                }
                tracing::info!(report = ?worker.report(), "replay finished");
            });
        if let Err(e) = spawned {
            job.finish(
                JobState::Failed,
                Some(format!("cannot start the replay thread: {e}")),
            );
        }
        job
    }
}

fn header_str<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Reads the dead-letter topic up to its end as of now and re-publishes what matches.
fn run(config: &Config, filter: &ReplayFilter, job: &ReplayJob) -> Result<(), String> {
    let k = &config.kafka;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.client {
        cc.set(key, value);
    }
    cc.set("group.id", format!("clickpipe-{}", job.id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    clickpipe_actors::produce::apply_auth(k, &mut cc);
    // Its own credentials cache: the job runs on a thread of its own.
    let credentials = std::sync::Arc::new(CredentialsProvider::default());
    let context = AuthContext::new(MskAuth::for_config(k, credentials));
    let consumer: BaseConsumer<AuthContext> = cc
        .create_with_context(context.clone())
        .map_err(|e| format!("cannot create the replay consumer: {e}"))?;
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &k.brokers)
        .set("enable.idempotence", "true");
    for (key, value) in k.client.iter().chain(k.producer.iter()) {
        pc.set(key, value);
    }
    clickpipe_actors::produce::apply_auth(k, &mut pc);
    let producer = create_producer(&pc, context)
        .map_err(|e| format!("cannot create the replay producer: {e}"))?;

    let md = consumer
        .fetch_metadata(Some(&k.dlq_topic), REQUEST_TIMEOUT)
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
    // Read each partition from its start to its end as of now: what is dead-lettered while the
    // job runs (a replayed record failing again, say) is left for the next replay.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&k.dlq_topic, p, REQUEST_TIMEOUT)
            .map_err(|e| format!("cannot read the watermarks of {} [{p}]: {e}", k.dlq_topic))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(&k.dlq_topic, p, Offset::Offset(low))
                .map_err(|e| e.to_string())?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("cannot assign the dead-letter partitions: {e}"))?;

    let max = config.admin.replay_max_count;
    let mut pending = Vec::new();
    while !ends.is_empty() && !job.cancel.load(Ordering::Relaxed) {
        if filter
            .limit
            .is_some_and(|l| job.replayed.load(Ordering::Relaxed) >= l)
        {
            break;
        }
        let msg = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(job = %job.id, error = %e, "replay consumer error");
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
            continue;
        }
        if msg.offset() + 1 >= end {
            ends.remove(&p);
        }
        job.scanned.fetch_add(1, Ordering::Relaxed);
        let headers = msg.headers();
        let kind = header_str(headers, "clickpipe.error.kind").unwrap_or("");
        if filter.kinds.as_ref().is_some_and(|k| !k.contains(kind)) {
            continue;
        }
        let failed_at = header_str(headers, "clickpipe.failed_at")
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.timestamp_millis())
            .or_else(|| msg.timestamp().to_millis());
        if let Some(since) = filter.since_ms {
            if failed_at.is_none_or(|t| t < since) {
                continue;
            }
        }
        if let Some(until) = filter.until_ms {
            if failed_at.is_none_or(|t| t >= until) {
                continue;
            }
        }
        let count = replay_count(&msg);
        if count >= max {
            job.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        job.replayed.fetch_add(1, Ordering::Relaxed);
        if filter.dry_run {
            continue;
        }
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
            Ok(delivery) => pending.push(delivery),
            Err((e, _)) => {
                tracing::warn!(job = %job.id, error = %e, "replay produce failed");
                job.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if pending.len() >= 1000 {
            settle(&mut pending, job);
        }
    }
    settle(&mut pending, job);
    Ok(())
}

/// Waits for the outstanding deliveries and counts the failed ones.
fn settle(pending: &mut Vec<rdkafka::producer::DeliveryFuture>, job: &ReplayJob) {
    for d in pending.drain(..) {
        match futures::executor::block_on(d) {
            Ok(Ok(_)) => {}
            _ => {
                job.errors.fetch_add(1, Ordering::Relaxed);
                job.replayed.fetch_sub(1, Ordering::Relaxed);
            }
        }
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
        };
        let f = ok.validate().expect("valid");
        assert!(f.dry_run);
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
        assert!(
            base().validate().is_ok(),
            "an empty body replays everything"
        );
    }
}
