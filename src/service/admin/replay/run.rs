//! The job thread: it sets up its Kafka clients, finds the end of each dead-letter partition as
//! of the start, waits for its turn to publish, runs the scan and says how the job ended.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::service::config::Config;
use clickpipe_actors::clients::aws::CredentialsProvider;
use clickpipe_actors::config::Delivery;
use clickpipe_actors::kafka::auth::{AuthContext, MskAuth};
use clickpipe_actors::kafka::client;
use clickpipe_actors::kafka::produce::{create_producer, Producer as ReplayProducer};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DeliveryFuture, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::jobs::{Registry, ReplayJob, Stop};
use super::plan::Plan;
use super::replay_group;
use super::request::ReplayFilter;

/// How a job ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Done,
    Cancelled,
    Failed(String),
}

/// A re-publication the broker has not answered yet.
pub(super) struct Pending {
    pub(super) partition: i32,
    pub(super) key: &'static str,
    pub(super) offset: i64,
    pub(super) delivery: DeliveryFuture,
}

/// What became of the deliveries a stopping job gave up on.
#[derive(Debug, Default)]
pub(super) struct Withdrawn {
    /// Not sent to the broker: not published.
    pub(super) unsent: u64,
    /// Sent, outcome unknown: maybe published, not remembered.
    pub(super) unknown: u64,
}

/// A job with its Kafka clients.
pub(super) struct Replay<'a> {
    pub(super) config: &'a Config,
    pub(super) job: &'a ReplayJob,
    pub(super) consumer: BaseConsumer<AuthContext>,
    pub(super) producer: Option<ReplayProducer>,
    pub(super) group: String,
    /// First offset of each partition read, as of the start.
    pub(super) lows: HashMap<i32, i64>,
    /// Partitions whose stored memory was found stale (the topic was re-created): ignored.
    pub(super) stale: HashSet<i32>,
    pub(super) pending: Vec<Pending>,
    pub(super) withdrawn: Withdrawn,
    /// Exactly-once mode (`kafka.delivery = exactly_once`): re-publications and the memory go
    /// to Kafka in transactions of the job's own transactional producer.
    pub(super) txn: Option<Txn>,
}

/// The open transaction of a job in exactly-once mode.
#[derive(Default)]
pub(super) struct Txn {
    /// The job's marks as of its last committed transaction: an abort restores them.
    pub(super) marks: HashMap<i32, super::memory::Handled>,
    /// `replayed` as of the last committed transaction.
    pub(super) replayed: u64,
    /// Why the open transaction can only be aborted (a re-publication failed).
    pub(super) failed: Option<String>,
}

/// Reads the dead-letter topic up to its end as of now and re-publishes what matches.
pub(super) fn run(
    config: &Config,
    filter: &ReplayFilter,
    job: &ReplayJob,
    registry: &Registry,
) -> Outcome {
    match run_inner(config, filter, job, registry) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    }
}

/// The replay job's consumer: it reads assigned dead-letter partitions and commits its memory
/// itself. It never joins the group, so the group timing is its own whatever `[kafka.consumer]`
/// says (librdkafka refuses, for instance, a session longer than the poll interval a user set
/// for the pipeline's shorter session).
fn consumer_config(k: &clickpipe_actors::config::KafkaConfig, group: &str) -> ClientConfig {
    client::consumer(k)
        .force("group.id", group)
        .force("enable.auto.commit", "false")
        .force("enable.auto.offset.store", "false")
        .force("enable.partition.eof", "true")
        .force("auto.offset.reset", "earliest")
        // This bounds how long a commit waits for an unavailable coordinator.
        .force("session.timeout.ms", "10000")
        .force("heartbeat.interval.ms", "3000")
        .force("max.poll.interval.ms", "300000")
        .build()
}

fn run_inner(
    config: &Config,
    filter: &ReplayFilter,
    job: &ReplayJob,
    registry: &Registry,
) -> Result<Outcome, String> {
    let k = &config.kafka;
    let group = replay_group(config);
    let cc = consumer_config(k, &group);
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
        txn: None,
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
        replay.producer = Some(match k.delivery {
            Delivery::AtLeastOnce => create_producer(&client::pipeline_producer(k), context)
                .map_err(|e| format!("cannot create the replay producer: {e}"))?,
            Delivery::ExactlyOnce => {
                replay.txn = Some(Txn::default());
                transactional_producer(k, context, job)?
            }
        });
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

/// Exactly-once mode: the job's transactional producer (`transactional.id` the pipeline's with
/// `-replay`; jobs of one instance take turns, so one at a time uses it), its first transaction
/// open.
fn transactional_producer(
    k: &clickpipe_actors::config::KafkaConfig,
    context: AuthContext,
    job: &ReplayJob,
) -> Result<ReplayProducer, String> {
    let id = format!("{}-replay", client::transactional_id(k));
    let producer = create_producer(&client::transactional_producer(k, &id), context)
        .map_err(|e| format!("cannot create the replay producer: {e}"))?;
    producer
        .init_transactions(job.request_timeout())
        .and_then(|()| producer.begin_transaction())
        .map_err(|e| format!("cannot start transactions (transactional.id {id}): {e}"))?;
    Ok(producer)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_consumer_is_created_whatever_group_timing_the_pipeline_uses() {
        let k: clickpipe_actors::config::KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:9", "group_id": "g", "input_topic": "in",
            "output_topic": "out", "dlq_topic": "dlq", "max_payload_bytes": 1048576,
            "commit_interval_ms": 1000,
            // Valid for the pipeline (poll ≥ session); the replay's own 10 s session is not.
            "consumer": {"session.timeout.ms": "6000", "max.poll.interval.ms": "8000",
                         "heartbeat.interval.ms": "2000"},
        }))
        .expect("kafka config");
        let created: Result<BaseConsumer, _> = consumer_config(&k, "clickpipe-replay-g").create();
        assert!(created.is_ok(), "{:?}", created.err());
    }
}
