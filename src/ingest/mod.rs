//! `clickpipe ingest`: tails an Elasticsearch / OpenSearch index into `kafka.input_topic`.
//!
//! Every poll (each `ingest.poll_interval_ms` once caught up) reads, in (timestamp, tiebreaker)
//! order, page by page with `search_after` — inside a point in time when the cluster has one —
//! first the documents of the overlap window `[cursor − ingest.overlap_ms, cursor)` not sent yet
//! (the ids sent inside the window are remembered and left out of that search), then everything
//! from the cursor on, skipping by id what was sent already. Each page is written to Kafka
//! with the idempotent producer; once the broker acknowledged it, the checkpoint (cursor and the
//! ids in the window) is stored in Redis. So a restart resumes with no gap and repeats at most
//! the page that was in flight; a document that becomes visible later than `overlap_ms` behind
//! the newest one sent is missed (use an ingest-time field as `timestamp_field` when event times
//! can be late).
//!
//! A document becomes an input event as it is, with `event_id` = `_id` when it has none, keyed by
//! its `session_id`. One the pipeline would reject goes to the dead-letter topic as
//! `invalid_event` (stage `ingest`) instead, and tailing goes on. While Kafka does not
//! acknowledge, the tailer waits (no new search): backpressure.

pub mod checkpoint;
pub mod http;
pub mod search;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::service::config::{Config, PitMode, StartFrom};
use anyhow::Context as _;
use chrono::Utc;
use clickpipe_actors::dlq::{headers, write, Letter};
use clickpipe_actors::error::{bounded, ErrorKind, Retry, Stage, MAX_MESSAGE_BYTES};
use clickpipe_actors::event::decode;
use clickpipe_actors::event::rfc3339;
use clickpipe_actors::kafka::auth::{AuthContext, MskAuth};
use clickpipe_actors::kafka::produce::{create_producer, deliver, Producer};
use clickpipe_actors::metrics::Histogram;
use parking_lot::Mutex;
use rdkafka::message::OwnedHeaders;
use serde_json::Value;
use tokio::sync::watch;

use checkpoint::{Checkpoint, Store};
use search::{Hit, Pit, PitApi, SearchClient, Span};

/// The most ids the late pass lists for the server to leave out (Elasticsearch's default
/// `index.max_terms_count` is 65,536).
const MAX_EXCLUDED_IDS: usize = 10_000;

/// What the tailer did, for `/status` and `/metrics`.
#[derive(Debug)]
pub struct IngestStats {
    /// Documents written to the input topic.
    pub documents: AtomicU64,
    /// Documents written to the dead-letter topic.
    pub dead_letters: AtomicU64,
    /// Documents read again inside the overlap window and skipped (sent already).
    pub skipped: AtomicU64,
    /// Polls made.
    pub polls: AtomicU64,
    /// Failed searches and checkpoint writes.
    pub errors: AtomicU64,
    /// Timestamp (epoch ms) of the newest document sent; 0 before the first.
    pub newest_ms: AtomicI64,
    /// The last poll found nothing more to read.
    pub caught_up: AtomicBool,
    /// Seconds from a document's timestamp to the broker's acknowledgement of it.
    pub lag: Histogram,
    /// The point-in-time API in use (`opensearch`, `elasticsearch` or `none`).
    pub pit: Mutex<&'static str>,
    /// The last error, if the last attempt failed.
    pub last_error: Mutex<Option<String>>,
}

impl Default for IngestStats {
    fn default() -> Self {
        IngestStats {
            documents: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            newest_ms: AtomicI64::new(0),
            caught_up: AtomicBool::new(false),
            lag: Histogram::latency(),
            pit: Mutex::new("none"),
            last_error: Mutex::new(None),
        }
    }
}

impl IngestStats {
    /// Counts failed attempt number `attempt` (from 1) with its `error`, and returns the backoff
    /// before the next one: from `initial`, doubling up to `max`, with jitter.
    fn failed(&self, attempt: u32, error: String, initial: Duration, max: Duration) -> Duration {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error);
        clickpipe_actors::clients::backoff(attempt, initial, max)
    }
}

/// Runs `clickpipe ingest` — the tailer and its HTTP endpoint on `ingest.listen` — until
/// `shutdown` completes; the page in flight is then finished and checkpointed.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let stats = Arc::new(IngestStats::default());
    let state = http::IngestState {
        stats: stats.clone(),
        config: config.clone(),
    };
    let handle =
        crate::server::spawn_http(http::routes(state), &config.ingest.listen, "ingest.listen")?;
    let (tx, rx) = watch::channel(false);
    let mut tail = actix_rt::spawn(run(config, stats, rx));
    let result = tokio::select! {
        r = &mut tail => r,
        () = shutdown => {
            tracing::info!("stopping: finishing the page in flight");
            let _ = tx.send(true);
            tail.await
        }
    };
    handle.stop(true).await;
    result.context("the tailer panicked")?
}

/// Calls `f` until the cluster answers: failures to reach it (and 5xx, 429) are retried with
/// backoff and counted; an answer — success or a refusal — is returned. None when `stop` turned
/// true meanwhile.
async fn until_reachable<T, F, Fut>(
    stats: &IngestStats,
    stop: &watch::Receiver<bool>,
    mut f: F,
) -> Option<Result<T, clickpipe_actors::error::ClientError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, clickpipe_actors::error::ClientError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if e.retry != Retry::Never => {
                attempt += 1;
                let wait = stats.failed(
                    attempt,
                    e.message.clone(),
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                );
                tracing::warn!(error = %e, ?wait, "cannot reach the search cluster; retrying");
                let mut stop = stop.clone();
                tokio::select! {
                    () = actix_rt::time::sleep(wait) => {}
                    _ = stop.changed() => return None,
                }
            }
            answer => return Some(answer),
        }
    }
}

/// The tailer.
struct Tailer {
    cfg: Arc<Config>,
    client: SearchClient,
    producer: Producer,
    store: Store,
    checkpoint: Checkpoint,
    pit_api: PitApi,
    stats: Arc<IngestStats>,
    stop: watch::Receiver<bool>,
}

/// Runs the tailer until `stop` turns true (the page in flight is finished and checkpointed
/// first). Returns an error for what retrying cannot cure (a refused query, bad credentials).
pub async fn run(
    cfg: Arc<Config>,
    stats: Arc<IngestStats>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = SearchClient::new(&cfg.ingest)?;
    let credentials = Arc::new(clickpipe_actors::clients::aws::CredentialsProvider::default());
    let producer = create_producer(
        &clickpipe_actors::kafka::client::pipeline_producer(&cfg.kafka),
        AuthContext::new(MskAuth::for_config(&cfg.kafka, credentials)),
    )
    .context("cannot create the Kafka producer")?;
    let mut store = Store::new(&cfg.redis, &cfg.ingest.checkpoint_key)?;
    let checkpoint = match store.load().await? {
        Some(c) => {
            tracing::info!(cursor_ms = ?c.cursor_ms, window = c.seen.len(), "resuming from the checkpoint");
            c.not_after(Utc::now().timestamp_millis())
        }
        None if cfg.ingest.start_from == StartFrom::Now => {
            Checkpoint::starting_at(Utc::now().timestamp_millis())
        }
        None => Checkpoint::default(),
    };
    let unreachable = || {
        anyhow::anyhow!(
            "cannot reach {}",
            clickpipe_actors::config::mask_url(&cfg.ingest.url)
        )
    };
    let pit_api = match cfg.ingest.pit {
        PitMode::Never => PitApi::None,
        PitMode::Always => {
            let Some(api) = until_reachable(&stats, &stop, || client.detect_pit()).await else {
                return Ok(());
            };
            match api.map_err(|e| unreachable().context(e.message))? {
                PitApi::None => anyhow::bail!(
                    "invalid config key `ingest.pit`: always, but {} opens no point in time",
                    clickpipe_actors::config::mask_url(&cfg.ingest.url)
                ),
                api => api,
            }
        }
        PitMode::Auto => {
            // auto: no point in time while the cluster sorts on the tiebreaker field (a search
            // less per poll, and none of the snapshot's cost); one when it refuses to (as
            // Elasticsearch 8 does for `_id`).
            let everything = Span::default();
            let probe = || client.page(&everything, None, None, 1);
            let Some(probe) = until_reachable(&stats, &stop, probe).await else {
                return Ok(());
            };
            match probe {
                Ok(_) => PitApi::None,
                // Only a refusal about sorting calls for a point in time; a missing index or bad
                // credentials are reported as they are.
                Err(refusal)
                    if !["sort", "fielddata", "_id"]
                        .iter()
                        .any(|w| refusal.message.contains(w)) =>
                {
                    return Err(anyhow::anyhow!("{}", refusal.message))
                        .context("the cluster refused the search");
                }
                Err(refusal) => {
                    let Some(api) = until_reachable(&stats, &stop, || client.detect_pit()).await
                    else {
                        return Ok(());
                    };
                    match api.map_err(|e| unreachable().context(e.message))? {
                        PitApi::None => anyhow::bail!(
                            "invalid config key `ingest.tiebreaker_field`: the cluster refuses to \
                             sort on `{}` and opens no point in time ({}); name a unique keyword \
                             field such as event_id",
                            cfg.ingest.tiebreaker_field,
                            refusal.message
                        ),
                        api => {
                            tracing::info!(reason = %refusal.message,
                                "sorting on the tiebreaker field refused; using a point in time");
                            api
                        }
                    }
                }
            }
        }
    };
    *stats.pit.lock() = match pit_api {
        PitApi::None => "none",
        PitApi::OpenSearch => "opensearch",
        PitApi::Elasticsearch => "elasticsearch",
    };
    tracing::info!(index = %cfg.ingest.index, pit = *stats.pit.lock(), "tailing");
    let mut tailer = Tailer {
        cfg,
        client,
        producer,
        store,
        checkpoint,
        pit_api,
        stats,
        stop,
    };
    tailer.run().await
}

impl Tailer {
    async fn run(&mut self) -> anyhow::Result<()> {
        let interval = self.cfg.ingest.poll_interval_ms.get();
        let mut failures = 0u32;
        while !*self.stop.borrow() {
            self.stats.polls.fetch_add(1, Ordering::Relaxed);
            let wait = match self.poll().await {
                Ok(more) => {
                    failures = 0;
                    *self.stats.last_error.lock() = None;
                    self.stats.caught_up.store(!more, Ordering::Relaxed);
                    if more {
                        continue;
                    }
                    interval
                }
                Err(e) if e.retry == Retry::Never => {
                    return Err(anyhow::anyhow!("{e}")).context("the cluster refused the search");
                }
                Err(e) => {
                    failures += 1;
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    *self.stats.last_error.lock() = Some(e.message.clone());
                    let wait = clickpipe_actors::clients::backoff(
                        failures,
                        Duration::from_millis(200),
                        Duration::from_secs(10),
                    );
                    tracing::warn!(error = %e, ?wait, "search failed; retrying");
                    wait
                }
            };
            let mut stop = self.stop.clone();
            tokio::select! {
                () = actix_rt::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// One poll, in two passes. The late pass: documents in `[cursor − overlap, cursor)` not
    /// sent yet — one search that leaves out the ids sent inside the window, so it is usually
    /// empty. The new pass: everything from the cursor on, page by page to its end (a pass that
    /// stopped early would start over from the cursor and could re-read the same pages forever
    /// when many documents share one timestamp); documents sharing the cursor's timestamp are
    /// read again and skipped by id. Ok(true) when it stopped (on the stop signal) with more to
    /// read.
    async fn poll(&mut self) -> Result<bool, clickpipe_actors::error::ClientError> {
        let mut pit = match self.pit_api {
            PitApi::None => None,
            api => Some(self.client.open_pit(api).await?),
        };
        let result = self.passes(&mut pit).await;
        if let Some(pit) = &pit {
            self.client.close_pit(pit).await;
        }
        result
    }

    async fn passes(
        &mut self,
        pit: &mut Option<Pit>,
    ) -> Result<bool, clickpipe_actors::error::ClientError> {
        let overlap = self.cfg.ingest.overlap_ms.ms() as i64;
        let mut more = false;
        if let (Some(floor), Some(cursor)) =
            (self.checkpoint.floor(overlap), self.checkpoint.cursor_ms)
        {
            let sent: Vec<String> = self
                .checkpoint
                .seen
                .iter()
                .filter(|(_, ts)| **ts < cursor)
                .map(|(id, _)| id.clone())
                .collect();
            // Past this many ids the window is read again whole, skipping by id (same result,
            // more documents on the wire).
            let exclude: Vec<&str> = if sent.len() <= MAX_EXCLUDED_IDS {
                sent.iter().map(String::as_str).collect()
            } else {
                Vec::new()
            };
            let late = Span {
                from_ms: Some(floor),
                before_ms: Some(cursor),
                exclude: &exclude,
            };
            more |= self.pages(&late, pit).await?;
        }
        let new = Span {
            from_ms: self.checkpoint.cursor_ms,
            ..Span::default()
        };
        more |= self.pages(&new, pit).await?;
        Ok(more)
    }

    /// Reads `span` page by page to its end and sends what is new. Ok(true) when the stop signal
    /// ended it with more to read.
    async fn pages(
        &mut self,
        span: &Span<'_>,
        pit: &mut Option<Pit>,
    ) -> Result<bool, clickpipe_actors::error::ClientError> {
        let size = self.cfg.ingest.page_size;
        let mut after: Option<Vec<Value>> = None;
        loop {
            let (hits, new_id) = self
                .client
                .page(span, after.as_deref(), pit.as_ref(), size)
                .await?;
            if let (Some(id), Some(p)) = (new_id, pit.as_mut()) {
                *p = match p {
                    Pit::OpenSearch(_) => Pit::OpenSearch(id),
                    Pit::Elasticsearch(_) => Pit::Elasticsearch(id),
                };
            }
            let n = hits.len();
            after = hits.last().map(|h| h.sort.clone());
            if n > 0 {
                self.send(hits).await;
            }
            if n < size {
                return Ok(false);
            }
            if *self.stop.borrow() {
                return Ok(true);
            }
        }
    }

    /// Writes the page's new documents (events or dead letters), waits for every
    /// acknowledgement, then moves the checkpoint past the whole page and stores it. A dead letter
    /// is always written (minimal when the topic refuses it whole and truncated), so no document
    /// stops the tailer, and none is skipped silently.
    async fn send(&mut self, hits: Vec<Hit>) {
        let cfg = &self.cfg;
        let producer = &self.producer;
        let stats = &self.stats;
        let fresh: Vec<&Hit> = hits
            .iter()
            .filter(|h| self.checkpoint.is_new(&h.id))
            .collect();
        stats
            .skipped
            .fetch_add((hits.len() - fresh.len()) as u64, Ordering::Relaxed);
        let limits = clickpipe_actors::event::Limits::of(&cfg.kafka, &cfg.features);
        let now = Utc::now();
        let limits = &limits;
        let sends = fresh.iter().map(|hit| async move {
            let (value, key) = event_of(hit);
            let result = match decode(&value, limits, now) {
                Ok(_) => deliver(
                    producer,
                    &cfg.kafka.input_topic,
                    Some(key.as_bytes()),
                    &value,
                    source_headers(cfg, hit, OwnedHeaders::new_with_capacity(2)),
                )
                .await
                .map_err(|e| format!("the broker refused the event: {e}")),
                Err(reason) => Err(reason),
            };
            match result {
                Ok(()) => {
                    stats.documents.fetch_add(1, Ordering::Relaxed);
                    let lag_ms = (Utc::now().timestamp_millis() - hit.ts_ms).max(0);
                    stats.lag.observe(lag_ms as f64 / 1000.0);
                }
                Err(reason) => dead_letter(cfg, producer, hit, &value, &reason, stats).await,
            }
        });
        futures::future::join_all(sends).await;
        let overlap = cfg.ingest.overlap_ms.ms() as i64;
        for h in &hits {
            self.checkpoint.sent(&h.id, h.ts_ms, now.timestamp_millis());
        }
        self.checkpoint.prune(overlap);
        if let Some(last) = hits.last() {
            self.checkpoint.last_sort = last.sort.clone();
        }
        if let Some(newest) = self.checkpoint.cursor_ms {
            stats.newest_ms.store(newest, Ordering::Relaxed);
        }
        // No next page before the checkpoint is stored: "a crash repeats at most one page" holds
        // while Redis is down too (the tailer waits, as it does for Kafka).
        let mut attempt = 0;
        while let Err(e) = self.store.save(&self.checkpoint).await {
            attempt += 1;
            let wait = stats.failed(
                attempt,
                format!("{e:#}"),
                Duration::from_millis(100),
                Duration::from_secs(5),
            );
            tracing::warn!(error = %format!("{e:#}"), ?wait, "cannot store the checkpoint; retrying");
            if *self.stop.borrow() {
                break;
            }
            actix_rt::time::sleep(wait).await;
        }
    }
}

/// The event a document becomes (its `_source`, with `event_id` = `_id` when absent) and its key
/// (`session_id`, else `_id`).
pub fn event_of(hit: &Hit) -> (Vec<u8>, String) {
    let mut doc = hit.source.clone();
    doc.entry("event_id")
        .or_insert_with(|| Value::String(hit.id.clone()));
    let key = match doc.get("session_id") {
        Some(Value::String(s)) => s.clone(),
        _ => hit.id.clone(),
    };
    let value = serde_json::to_vec(&doc).unwrap_or_default();
    (value, key)
}

fn source_headers(cfg: &Config, hit: &Hit, h: OwnedHeaders) -> OwnedHeaders {
    let h = headers::with(h, headers::SOURCE_INDEX, &cfg.ingest.index);
    headers::with(h, headers::SOURCE_ID, &hit.id)
}

/// Writes a document the pipeline would reject to the dead-letter topic (truncated, or minimal,
/// when the broker refuses it whole: see [`clickpipe_actors::dlq::write`]).
async fn dead_letter(
    cfg: &Config,
    producer: &Producer,
    hit: &Hit,
    value: &[u8],
    reason: &str,
    stats: &IngestStats,
) {
    let failed_at = rfc3339(Utc::now());
    let reason = bounded(reason, MAX_MESSAGE_BYTES);
    let why = |h: OwnedHeaders| {
        headers::why(
            h,
            ErrorKind::InvalidEvent.as_str(),
            &reason,
            Stage::Ingest.as_str(),
        )
    };
    let whole = why(source_headers(cfg, hit, OwnedHeaders::new_with_capacity(8)));
    let letter = Letter {
        key: Some(hit.id.as_bytes()),
        payload: value,
        headers: headers::when(whole, 1, &failed_at),
        minimal: why(source_headers(cfg, hit, OwnedHeaders::new_with_capacity(6))),
    };
    let form = write(producer, &cfg.kafka.dlq_topic, letter).await;
    stats.dead_letters.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(id = %hit.id, %reason, ?form, "document dead-lettered");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hit(id: &str, source: Value) -> Hit {
        Hit {
            id: id.into(),
            ts_ms: 0,
            source: source.as_object().cloned().unwrap_or_default(),
            sort: vec![],
        }
    }

    #[test]
    fn a_document_becomes_an_event_keyed_by_session_with_its_id_as_event_id() {
        let (value, key) = event_of(&hit(
            "doc-1",
            json!({"@timestamp": "2026-11-26T00:00:00Z", "session_id": "s1", "user_id": "u"}),
        ));
        let v: Value = serde_json::from_slice(&value).expect("json");
        assert_eq!(v["event_id"], "doc-1");
        assert_eq!(v["@timestamp"], "2026-11-26T00:00:00Z");
        assert_eq!(key, "s1");
        let (value, key) = event_of(&hit("doc-2", json!({"event_id": "e9"})));
        let v: Value = serde_json::from_slice(&value).expect("json");
        assert_eq!(v["event_id"], "e9", "an event_id of its own is kept");
        assert_eq!(key, "doc-2", "no session: keyed by _id");
    }
}
