//! `clickpipe sink s3`: keeps the output topic (and, with `s3.include_dead_letters`, the
//! dead-letter topic) in S3, as Parquet or gzip JSON lines, filed Hive-style by event hour:
//! `{prefix}/dt=YYYY-MM-DD/hour=HH/{topic}+{partition}+{first_offset}.{ext}`.
//!
//! Its own consumer group (`s3.group_id`; a new group starts from the earliest record) reads the
//! topics. Each partition's records wait in memory until a limit (`s3.max_records`,
//! `s3.max_bytes`, `s3.max_interval_ms`); then every hour's records of the partition are written
//! as one object each, and only then is the partition's offset committed (synchronously, before
//! its next flush). Object names come from offsets, so after a crash the flush that was written
//! but not committed is written again under the same names: every record ends up in exactly one
//! object ([`batch`] explains why).

pub mod batch;
pub mod context;
pub mod http;
pub mod parquet;
pub mod stats;
pub mod store;
pub mod table;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use clickpipe_actors::kafka::auth::AuthContext;
use clickpipe_actors::kafka::client;

use crate::service::config::{Config, ObjectFormat, S3Config};
use batch::{object_key, Flush, Limits, Pending, Row};
use context::SinkContext;
use stats::SinkStats;
use store::ObjectStore;
use table::Source;

/// A topic the sink keeps, and where.
#[derive(Debug, Clone)]
struct Kept {
    source: Source,
    prefix: String,
}

/// Runs the sink and its HTTP endpoint (`s3.listen`) until `shutdown` resolves; the records read
/// by then are written and committed first (unless the object store is failing, in which case
/// they are left to the next run).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let stats = Arc::new(SinkStats::default());
    let endpoint = crate::server::spawn_http(
        http::routes(http::SinkState {
            stats: stats.clone(),
            config: config.clone(),
        }),
        &config.s3.listen,
        "s3.listen",
    )?;
    let result = consume(&config, stats, shutdown).await;
    endpoint.stop(true).await;
    result
}

/// The sink's loop: reads, holds, writes and commits until `shutdown` resolves.
async fn consume(
    config: &Config,
    stats: Arc<SinkStats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let s3 = &config.s3;
    let bucket = s3.require_bucket()?.to_string();
    let store = ObjectStore::new(s3, &bucket, stats.clone()).await;
    let mut kept: HashMap<String, Kept> = HashMap::new();
    kept.insert(
        config.kafka.output_topic.clone(),
        Kept {
            source: Source::Predictions,
            prefix: s3.prefix.clone(),
        },
    );
    if s3.include_dead_letters {
        kept.insert(
            config.kafka.dlq_topic.clone(),
            Kept {
                source: Source::DeadLetters,
                prefix: s3.dead_letters_prefix(),
            },
        );
    }
    let consumer: StreamConsumer<SinkContext> = client::consumer(&config.kafka)
        .default("auto.offset.reset", "earliest")
        .force("group.id", &s3.group_id)
        .force("enable.auto.commit", "false")
        .force("enable.auto.offset.store", "false")
        .force("isolation.level", "read_committed")
        .build()
        .create_with_context(SinkContext::new(AuthContext::for_kafka(&config.kafka)))
        .context("creating the sink's consumer")?;
    let topics: Vec<&str> = kept.keys().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .context("subscribing to the kept topics")?;
    tracing::info!(
        bucket,
        topics = ?topics,
        group = %s3.group_id,
        format = ?s3.format,
        "s3 sink started"
    );

    let limits = Limits {
        max_records: s3.max_records,
        max_bytes: s3.max_bytes,
        max_interval: s3.max_interval_ms.get(),
    };
    let mut sink = Sink {
        consumer,
        store,
        kept,
        format: s3.format,
        pending: HashMap::new(),
        stats,
        stopping: false,
        types: feature_types(config),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // Fused: a flush may see it resolve first (and sets `stopping`); polling it again is safe.
    let shutdown = futures::FutureExt::fuse(shutdown);
    tokio::pin!(shutdown);
    while !sink.stopping {
        tokio::select! {
            _ = &mut shutdown => break,
            read = sink.consumer.recv() => {
                // Detached (owned) at once: the borrowed message holds the consumer.
                let read = read.map(|m| m.detach());
                sink.forget_revoked();
                match read {
                    Ok(m) => {
                        let Some(source) = sink.kept.get(m.topic()).map(|k| k.source) else {
                            continue;
                        };
                        let key = (m.topic().to_string(), m.partition());
                        let row = row_of(source, &m);
                        sink.stats.topic(source).read.fetch_add(1, Ordering::Relaxed);
                        sink.stats.backlog_records.fetch_add(1, Ordering::Relaxed);
                        let _ = sink.stats.backlog_since_ms.compare_exchange(
                            0,
                            chrono::Utc::now().timestamp_millis(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        let pending = sink.pending.entry(key.clone()).or_default();
                        pending.push(row, Instant::now());
                        if pending.due(&limits, Instant::now()) {
                            sink.flush(&key, &mut shutdown).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "s3 sink: reading failed"),
                }
            }
            _ = tick.tick() => {
                sink.forget_revoked();
                let now = Instant::now();
                let due: Vec<(String, i32)> = sink
                    .pending
                    .iter()
                    .filter(|(_, p)| p.due(&limits, now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    if sink.stopping {
                        break;
                    }
                    sink.flush(&key, &mut shutdown).await;
                }
                sink.publish(None);
            }
        }
    }
    // Stopping: what was read is written and committed, unless the store fails (then a stop
    // signal already came: leave it to the next run).
    let keys: Vec<(String, i32)> = sink.pending.keys().cloned().collect();
    for key in keys {
        sink.flush_once(&key).await;
    }
    tracing::info!("s3 sink stopped");
    Ok(())
}

/// The feature types the configured feature set declares (`features.set`, else the built-in
/// one); none when it cannot be loaded (the values' types still apply).
fn feature_types(config: &Config) -> table::FeatureTypes {
    match crate::tools::explain::feature_set(config) {
        Ok(set) => table::FeatureTypes::declared_by(&set),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "s3 sink: the feature set cannot be loaded; feature columns are typed by their values");
            table::FeatureTypes::default()
        }
    }
}

/// A record as the sink keeps it.
fn row_of<M: Message>(source: Source, m: &M) -> Row {
    let value = m.payload().unwrap_or_default().to_vec();
    let broker_ms = m.timestamp().to_millis();
    let headers = match (source, m.headers()) {
        (Source::DeadLetters, Some(h)) => h
            .iter()
            .filter_map(|h| {
                Some((
                    h.key.to_string(),
                    String::from_utf8(h.value?.to_vec()).ok()?,
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    Row {
        offset: m.offset(),
        event_time_ms: table::event_time(source, &value, broker_ms),
        value,
        headers,
        appended_ms: broker_ms,
    }
}

struct Sink {
    consumer: StreamConsumer<SinkContext>,
    store: ObjectStore,
    kept: HashMap<String, Kept>,
    format: ObjectFormat,
    pending: HashMap<(String, i32), Pending>,
    stats: Arc<SinkStats>,
    /// The stop signal came (seen by a flush, which then gave up writing).
    stopping: bool,
    /// Feature column types, declared and seen.
    types: table::FeatureTypes,
}

impl Sink {
    /// Drops what is held for partitions taken away: their new owner reads them again from the
    /// committed offset.
    fn forget_revoked(&mut self) {
        for key in self.consumer.context().take_revoked() {
            if let Some(p) = self.pending.remove(&key) {
                tracing::info!(topic = %key.0, partition = key.1, records = p.len(), "s3 sink: partition revoked; its unwritten records are left to its next owner");
            }
        }
    }

    /// Publishes the backlog (records held, plus `in_flight`: the records and read time of a
    /// flush being written) and the assigned partitions to the stats.
    fn publish(&self, in_flight: Option<(usize, Option<Instant>)>) {
        let now = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (mut records, mut oldest) = (0usize, None::<Instant>);
        let held = self.pending.values().map(|p| (p.len(), p.oldest()));
        for (n, t) in held.chain(in_flight) {
            records += n;
            oldest = match (oldest, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let since = oldest.map_or(0, |t| {
            let waited = i64::try_from(now.saturating_duration_since(t).as_millis());
            now_ms - waited.unwrap_or(0)
        });
        let st = &self.stats;
        st.backlog_records.store(records as u64, Ordering::Relaxed);
        st.backlog_since_ms.store(since, Ordering::Relaxed);
        if let Ok(a) = self.consumer.assignment() {
            st.partitions.store(a.count() as u64, Ordering::Relaxed);
        }
    }

    /// The objects of one flush of partition `key`.
    fn objects(
        &mut self,
        key: &(String, i32),
        flush: &Flush,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let kept = self
            .kept
            .get(&key.0)
            .with_context(|| format!("topic {} is not kept", key.0))?;
        flush
            .objects
            .iter()
            .map(|o| {
                let name = object_key(
                    &kept.prefix,
                    &o.hour,
                    &key.0,
                    key.1,
                    o.first_offset,
                    self.format.extension(),
                );
                let body = match self.format {
                    ObjectFormat::Parquet => parquet::encode(&table::columns(
                        kept.source,
                        key.1,
                        &o.rows,
                        &mut self.types,
                    ))
                    .with_context(|| format!("encoding {name}"))?,
                    ObjectFormat::Jsonl => {
                        store::gzip(&table::json_lines(kept.source, key.1, &o.rows))?
                    }
                };
                Ok((name, body))
            })
            .collect()
    }

    /// Writes partition `key`'s records and commits after them; retries the store until it
    /// answers or `shutdown` resolves (then nothing is committed).
    async fn flush(
        &mut self,
        key: &(String, i32),
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) {
        let oldest = self.pending.get(key).and_then(Pending::oldest);
        let Some(flush) = self.pending.get_mut(key).and_then(Pending::take) else {
            return;
        };
        self.publish(Some((flush.records(), oldest)));
        let objects = match self.objects(key, &flush) {
            Ok(o) => o,
            Err(e) => {
                // Encoding our own columns does not fail; if it ever does, the records are read
                // again after a restart rather than skipped.
                tracing::error!(error = %format!("{e:#}"), "s3 sink: cannot encode a flush; stopping its partition's commits");
                return;
            }
        };
        let written = tokio::select! {
            r = self.store.put_all(&objects) => r,
            _ = shutdown.as_mut() => {
                self.stopping = true;
                false
            }
        };
        if written {
            self.commit(key, &flush, &objects).await;
        }
        self.publish(None);
    }

    /// [`Sink::flush`] while stopping: one attempt per object.
    async fn flush_once(&mut self, key: &(String, i32)) {
        let Some(flush) = self.pending.get_mut(key).and_then(Pending::take) else {
            return;
        };
        let Ok(objects) = self.objects(key, &flush) else {
            return;
        };
        if self.store.put_all_once(&objects).await {
            self.commit(key, &flush, &objects).await;
        }
    }

    /// Commits `flush`'s offset for `key` (written as `objects`), retried until it is taken or
    /// the partition is gone.
    async fn commit(&mut self, key: &(String, i32), flush: &Flush, written: &[(String, Vec<u8>)]) {
        let objects = written.len();
        let mut tpl = TopicPartitionList::new();
        if let Err(e) = tpl.add_partition_offset(&key.0, key.1, Offset::Offset(flush.commit)) {
            tracing::error!(error = %e, "s3 sink: bad offset");
            return;
        }
        let records = flush.records();
        for attempt in 1u32.. {
            match self.consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => {
                    tracing::info!(topic = %key.0, partition = key.1, objects, records, offset = flush.commit, "s3 sink: flushed and committed");
                    self.committed(key, flush, written);
                    return;
                }
                Err(e) => {
                    self.stats.commit_failed(&e.to_string());
                    let owned = self
                        .consumer
                        .assignment()
                        .map(|a| a.find_partition(&key.0, key.1).is_some())
                        .unwrap_or(false);
                    if !owned {
                        tracing::warn!(error = %e, topic = %key.0, partition = key.1, "s3 sink: commit refused and the partition is no longer ours; its next owner rewrites the same objects");
                        return;
                    }
                    tracing::warn!(error = %e, attempt, "s3 sink: commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))))
                        .await;
                }
            }
        }
    }
}

impl Sink {
    /// Counts a committed flush of `key`: its records, objects and bytes, and each record's lag
    /// from its append to now.
    fn committed(&self, key: &(String, i32), flush: &Flush, written: &[(String, Vec<u8>)]) {
        let Some(source) = self.kept.get(&key.0).map(|k| k.source) else {
            return;
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let counters = self.stats.topic(source);
        counters
            .written
            .fetch_add(flush.records() as u64, Ordering::Relaxed);
        counters
            .objects
            .fetch_add(written.len() as u64, Ordering::Relaxed);
        let bytes: usize = written.iter().map(|(_, body)| body.len()).sum();
        counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        for row in flush.objects.iter().flat_map(|o| &o.rows) {
            if let Some(t) = row.appended_ms {
                self.stats.lag.observe((now_ms - t).max(0) as f64 / 1000.0);
            }
        }
        self.stats.last_flush_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Checks `s3` for the sink (the bucket is required).
pub fn check(s3: &S3Config) -> anyhow::Result<()> {
    s3.require_bucket()?;
    Ok(())
}
