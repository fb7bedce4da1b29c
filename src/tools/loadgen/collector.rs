//! The summary consumer: reads the run's records back from the output and dead-letter topics,
//! counting each event once and measuring its end-to-end latency.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clickpipe_actors::config::KafkaConfig;
use clickpipe_actors::kafka::auth::AuthContext;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::generator::sequence_of;
use super::kafka::consumer_config;
use super::shared::Shared;

/// Largest latency the summary histogram tells apart, microseconds (one hour).
pub(super) const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Timeout of the blocking metadata and watermark look-ups of the summary consumer.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What the summary consumer saw.
pub(super) struct Collected {
    pub(super) predictions: u64,
    pub(super) dead_letters: u64,
    pub(super) duplicates: u64,
    /// End-to-end latency, microseconds.
    pub(super) latency: Histogram<u64>,
}

/// Reads this run's records back from the output and dead-letter topics.
pub(super) struct Collector {
    consumer: StreamConsumer<AuthContext>,
    run_id: String,
    output_topic: String,
    dlq_topic: String,
    count: u64,
    latency: Histogram<u64>,
}

impl Collector {
    /// Creates the consumer and assigns every partition of both topics at its current end, so
    /// only records written from now on are read. (The high watermark is looked up and assigned
    /// as an explicit offset rather than `Offset::End`, which tansu's ListOffsets makes unreliable.)
    pub(super) fn start(k: &KafkaConfig, run_id: &str, count: u64) -> anyhow::Result<Collector> {
        let consumer: StreamConsumer<AuthContext> = consumer_config(k, run_id)
            .create_with_context(AuthContext::for_kafka(k))
            .context("cannot create the summary consumer")?;
        let mut tpl = TopicPartitionList::new();
        for topic in [&k.output_topic, &k.dlq_topic] {
            let md = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .with_context(|| format!("cannot fetch metadata of topic `{topic}`"))?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic.as_str())
                .ok_or_else(|| anyhow!("topic `{topic}` is not in the broker's metadata"))?;
            if let Some(err) = t.error() {
                bail!("topic `{topic}`: {:?}", RDKafkaErrorCode::from(err));
            }
            if t.partitions().is_empty() {
                bail!("topic `{topic}` has no partitions (does it exist?)");
            }
            for p in t.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                    .with_context(|| {
                        format!("cannot fetch watermarks of `{topic}` [{}]", p.id())
                    })?;
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))
                    .with_context(|| format!("cannot assign `{topic}` [{}]", p.id()))?;
            }
        }
        consumer
            .assign(&tpl)
            .context("cannot assign the output and dead-letter partitions")?;
        Ok(Collector {
            consumer,
            run_id: run_id.to_string(),
            output_topic: k.output_topic.clone(),
            dlq_topic: k.dlq_topic.clone(),
            count,
            // 1 µs – 1 h at 3 significant digits; longer latencies clamp to 1 h.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .context("cannot create the latency histogram")?,
        })
    }

    /// Reads until every acknowledged event is accounted for, or `timeout` passes without a new
    /// record after production finished.
    pub(super) async fn collect(
        self,
        shared: &Shared,
        timeout: Duration,
        deadline: Option<Duration>,
    ) -> Collected {
        // Per event: bit 1 = seen on the output topic, bit 2 = seen on the dead-letter topic.
        let mut seen = vec![0u8; usize::try_from(self.count).unwrap_or(usize::MAX)];
        let mut out = Collected {
            predictions: 0,
            dead_letters: 0,
            duplicates: 0,
            latency: self.latency,
        };
        let mut last_record = Instant::now();
        let mut next_progress = Instant::now();
        let mut last_error: Option<Instant> = None;
        loop {
            if deadline.is_some_and(|d| shared.origin.elapsed() >= d) {
                eprintln!(
                    "loadgen: summary deadline reached; {} events unaccounted for",
                    shared.acked.get().saturating_sub(shared.accounted.get())
                );
                break;
            }
            if let Some(done) = shared.produced_at.get() {
                if shared.accounted.get() >= shared.acked.get() {
                    break;
                }
                if last_record.max(done).elapsed() >= timeout {
                    eprintln!(
                        "loadgen: no new records for {:.1}s; {} events unaccounted for",
                        timeout.as_secs_f64(),
                        shared.acked.get().saturating_sub(shared.accounted.get())
                    );
                    break;
                }
                if Instant::now() >= next_progress {
                    eprintln!(
                        "loadgen: waiting for results: {} of {} accounted for{}",
                        shared.accounted.get(),
                        shared.acked.get(),
                        shared.outputs()
                    );
                    next_progress = Instant::now() + Duration::from_secs(1);
                }
            }
            let msg =
                match tokio::time::timeout(Duration::from_millis(5), self.consumer.recv()).await {
                    Err(_) => continue,
                    Ok(Err(e)) => {
                        if last_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            eprintln!("loadgen: summary consumer error: {e}");
                            last_error = Some(Instant::now());
                        }
                        continue;
                    }
                    Ok(Ok(msg)) => msg,
                };
            let received = Instant::now();
            let bit = if msg.topic() == self.output_topic {
                1u8
            } else if msg.topic() == self.dlq_topic {
                2u8
            } else {
                continue;
            };
            let Some(seq) = msg
                .payload()
                .and_then(event_id_of)
                .and_then(|id| sequence_of(&self.run_id, &id))
            else {
                continue;
            };
            let Some(slot) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i)) else {
                continue;
            };
            last_record = received;
            if *slot & bit != 0 {
                out.duplicates += 1;
                continue;
            }
            let first = *slot == 0;
            *slot |= bit;
            if bit == 1 {
                out.predictions += 1;
                shared.predictions.set(out.predictions);
            } else {
                out.dead_letters += 1;
                shared.dead_letters.set(out.dead_letters);
            }
            if first {
                shared.accounted.set(shared.accounted.get() + 1);
                shared.last_result.set(Some(received));
                if let Some(us) = shared.latency_us(seq, received) {
                    out.latency.saturating_record(us.max(1));
                }
            }
        }
        out
    }
}

/// The `event_id` of an output record or a dead-lettered payload, if it has a string one.
pub(super) fn event_id_of(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        event_id: Option<String>,
    }
    serde_json::from_slice::<Id>(payload).ok()?.event_id
}
