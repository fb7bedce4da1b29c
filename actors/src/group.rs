//! The consumer-group actor: the root of the pipeline's actor tree. It owns the Kafka consumer,
//! follows the group's rebalances, starts one [`PartitionActor`] per assigned partition on a
//! worker thread, and drains and commits revoked partitions before they are released.
//!
//! Rebalance callbacks run on this actor's thread, inside the poll of the consumer's main queue;
//! partition actors live on other threads, so a revoke can block here until they have drained.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

use crate::config::{GroupProtocol, CLASSIC_HEARTBEAT_INTERVAL_MS, CLASSIC_SESSION_TIMEOUT_MS};
use crate::deps::Deps;
use crate::partition::{Drain, DrainReport, PartitionActor, PartitionRestarted, Stray};
use crate::supervision::{Intensity, RestartTracker};

/// The consumer with clickpipe's context.
pub type GroupConsumer = StreamConsumer<GroupContext>;

type TopicPartition = (String, i32);

/// State shared by the consumer-group actor and the consumer's rebalance callbacks.
pub struct GroupShared {
    consumer: OnceLock<Weak<GroupConsumer>>,
    root: OnceLock<Recipient<PartitionRestarted>>,
    fatal: tokio::sync::watch::Sender<Option<String>>,
    partitions: Mutex<HashMap<TopicPartition, Addr<PartitionActor>>>,
    deps: Deps,
    workers: Vec<ArbiterHandle>,
    next_worker: Mutex<usize>,
}

impl GroupShared {
    fn assign(&self, tpl: &TopicPartitionList) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            tracing::error!("assignment before the consumer was ready");
            return;
        };
        for elem in tpl.elements() {
            self.start_partition(&consumer, elem.topic(), elem.partition());
        }
    }

    /// Starts the actor of one partition on the next worker thread.
    fn start_partition(&self, consumer: &Arc<GroupConsumer>, topic: &str, partition: i32) {
        {
            let topic = topic.to_string();
            // Split right away, before the first fetch for this partition can complete, so its
            // records go to the partition's own queue (a record that slips through is routed as
            // a `Stray`).
            let Some(queue) = consumer.split_partition_queue(&topic, partition) else {
                tracing::error!(topic, partition, "cannot split the partition queue");
                return;
            };
            let Some(root) = self.root.get().cloned() else {
                tracing::error!("partition assigned before the root was ready");
                return;
            };
            let worker = {
                let mut next = self.next_worker.lock();
                *next = (*next + 1) % self.workers.len();
                self.workers[*next].clone()
            };
            let deps = self.deps.clone();
            let c = consumer.clone();
            let t = topic.clone();
            let addr = PartitionActor::start_in_arbiter(&worker, move |_| {
                PartitionActor::new(&t, partition, c, queue, deps, root)
            });
            tracing::info!(topic, partition, "partition assigned");
            self.partitions.lock().insert((topic, partition), addr);
        }
    }

    /// Drains the given partitions (all when `tpl` is None), blocking until each has committed or
    /// the drain timeout passed.
    fn drain(&self, tpl: Option<&TopicPartitionList>, lost: bool) -> Vec<DrainReport> {
        let actors: Vec<Addr<PartitionActor>> = {
            let mut map = self.partitions.lock();
            match tpl {
                None => map.drain().map(|(_, a)| a).collect(),
                Some(tpl) => tpl
                    .elements()
                    .iter()
                    .filter_map(|e| map.remove(&(e.topic().to_string(), e.partition())))
                    .collect(),
            }
        };
        if actors.is_empty() {
            return Vec::new();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut expected = 0;
        for a in &actors {
            if a.try_send(Drain {
                reply: tx.clone(),
                lost,
            })
            .is_ok()
            {
                expected += 1;
            }
        }
        drop(tx);
        let deadline = self.deps.config.pipeline.drain_timeout() + Duration::from_secs(5);
        let started = std::time::Instant::now();
        let mut reports = Vec::new();
        while reports.len() < expected {
            let left = deadline.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(r) => reports.push(r),
                Err(_) => {
                    tracing::error!(
                        waiting = expected - reports.len(),
                        "partitions did not drain in time"
                    );
                    break;
                }
            }
        }
        reports
    }

    /// Restarts partitions whose actor died without draining (a panic outside the stages'
    /// guarded code): one-for-one, from the last offset it stored (else the group's commit).
    fn revive_dead_partitions(&self) -> Vec<String> {
        let dead: Vec<TopicPartition> = self
            .partitions
            .lock()
            .iter()
            .filter(|(_, a)| !a.connected())
            .map(|(k, _)| k.clone())
            .collect();
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return Vec::new();
        };
        let mut revived = Vec::new();
        for (topic, partition) in dead {
            self.partitions.lock().remove(&(topic.clone(), partition));
            let stored = self
                .deps
                .status
                .partitions()
                .into_iter()
                .find(|p| p.topic == topic && p.partition == partition)
                .and_then(|p| p.committed_offset);
            let from = match stored {
                Some(o) => rdkafka::Offset::Offset(o),
                None => {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&topic, partition);
                    consumer
                        .committed_offsets(tpl, Duration::from_secs(10))
                        .ok()
                        .and_then(|t| t.elements().first().map(|e| e.offset()))
                        .filter(|o| matches!(o, rdkafka::Offset::Offset(_)))
                        .unwrap_or(rdkafka::Offset::Beginning)
                }
            };
            tracing::error!(
                topic,
                partition,
                ?from,
                "partition actor died; restarting it"
            );
            self.start_partition(&consumer, &topic, partition);
            if let Err(e) = consumer.seek(&topic, partition, from, Duration::from_secs(10)) {
                tracing::error!(topic, partition, error = %e, "seek after revival failed");
            }
            revived.push(format!("partition {partition} actor died"));
        }
        revived
    }

    /// Number of partitions currently assigned.
    pub fn assigned(&self) -> usize {
        self.partitions.lock().len()
    }

    /// The actor of an assigned partition of `topic`.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Addr<PartitionActor>> {
        self.partitions
            .lock()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// The consumer, while the group runs.
    pub fn consumer(&self) -> Option<Arc<GroupConsumer>> {
        self.consumer.get().and_then(Weak::upgrade)
    }
}

/// The consumer's context: logs through `tracing` and drives rebalances.
pub struct GroupContext {
    shared: Arc<GroupShared>,
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    /// With `kafka.auth = msk_iam`: a fresh MSK IAM token (librdkafka asks before the last one
    /// expires).
    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        let deps = &self.shared.deps;
        match crate::produce::MskAuth::for_config(&deps.config.kafka, deps.credentials.clone()) {
            Some(msk) => msk.oauth_token(),
            None => Err("OAUTHBEARER asked for, but kafka.auth is not msk_iam".into()),
        }
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): keeps the input partitions'
    /// high watermarks for `/status` and `/metrics`. Read from the raw JSON so a field librdkafka
    /// leaves out never costs more than that one value.
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            tracing::debug!("unparsable librdkafka statistics");
            return;
        };
        let topic = &self.shared.deps.config.kafka.input_topic;
        let Some(partitions) = stats
            .get("topics")
            .and_then(|t| t.get(topic.as_str()))
            .and_then(|t| t.get("partitions"))
            .and_then(|p| p.as_object())
        else {
            return;
        };
        for (id, p) in partitions {
            let (Ok(id), Some(hi)) = (
                id.parse::<i32>(),
                p.get("hi_offset").and_then(serde_json::Value::as_i64),
            ) else {
                continue;
            };
            // -1: the internal "unassigned" partition; a negative offset: not known yet.
            if id >= 0 && hi >= 0 {
                self.shared.deps.status.set_high_watermark(topic, id, hi);
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                let reports = self.shared.drain(Some(tpl), lost);
                tracing::info!(
                    revoked = tpl.count(),
                    drained = reports.len(),
                    "partitions revoked"
                );
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!(offsets = ?offsets.to_topic_map(), "offsets committed"),
            Err(e) => tracing::warn!(error = %e, "offset commit failed"),
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.shared.assign(tpl);
        }
    }
}

/// Builds the consumer's librdkafka config: clickpipe's managed keys, then `[kafka.client]` and
/// `[kafka.consumer]` as given.
pub fn consumer_config(config: &crate::config::Config) -> ClientConfig {
    let k = &config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", k.commit_interval_ms.to_string())
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // High watermarks for the admin API's lag (overridable; 0 turns them off).
        .set("statistics.interval.ms", "1000");
    match k.group_protocol {
        // Incremental rebalancing: a member joining or leaving moves only the partitions that
        // change owner; the others keep working (and keep their uncommitted progress).
        GroupProtocol::Classic => c
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", CLASSIC_SESSION_TIMEOUT_MS.to_string())
            .set(
                "heartbeat.interval.ms",
                CLASSIC_HEARTBEAT_INTERVAL_MS.to_string(),
            ),
        GroupProtocol::Consumer => c.set("group.protocol", "consumer"),
    };
    if !k.group_instance_id.is_empty() {
        c.set("group.instance.id", &k.group_instance_id);
    }
    for (key, value) in k.client.iter().chain(k.consumer.iter()) {
        c.set(key, value);
    }
    crate::produce::apply_auth(k, &mut c);
    c
}

/// Builds the producer's librdkafka config: idempotent, then `[kafka.client]` and
/// `[kafka.producer]` as given.
pub fn producer_config(config: &crate::config::Config) -> ClientConfig {
    let k = &config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        // librdkafka can leave records queued after a broker restart until they time out (its
        // default: 5 minutes, a partition held that long — seen in the chaos soak). `deliver`
        // sends a timed-out record again, so a short timeout only turns such a stall into a retry.
        .set("message.timeout.ms", "30000");
    for (key, value) in k.client.iter().chain(k.producer.iter()) {
        if key == "delivery.timeout.ms" {
            c.remove("message.timeout.ms");
        }
        c.set(key, value);
    }
    crate::produce::apply_auth(k, &mut c);
    c
}

impl Handler<PartitionRestarted> for ConsumerGroup {
    type Result = ();

    fn handle(&mut self, msg: PartitionRestarted, _: &mut Self::Context) {
        let reason = format!("partition {}: {}", msg.partition, msg.reason);
        self.record_failure(&reason);
    }
}

/// Asks the group to drain every partition, commit, and leave the group.
#[derive(Message)]
#[rtype(result = "Vec<DrainReport>")]
pub struct Shutdown;

/// The consumer-group actor.
pub struct ConsumerGroup {
    shared: Arc<GroupShared>,
    consumer: Option<Arc<GroupConsumer>>,
    poll: Option<SpawnHandle>,
    restarts: RestartTracker,
}

impl ConsumerGroup {
    /// A consumer-group actor hosting partitions on `workers`. Start it on its own arbiter.
    pub fn new(deps: Deps, workers: Vec<ArbiterHandle>) -> Self {
        let sv = &deps.config.supervision;
        let restarts = RestartTracker::new(Intensity {
            max_restarts: sv.root_max_restarts,
            window: Duration::from_millis(sv.root_restart_window_ms),
        });
        let (fatal, _) = tokio::sync::watch::channel(None);
        ConsumerGroup {
            shared: Arc::new(GroupShared {
                consumer: OnceLock::new(),
                root: OnceLock::new(),
                fatal,
                partitions: Mutex::new(HashMap::new()),
                deps,
                workers,
                next_worker: Mutex::new(0),
            }),
            consumer: None,
            poll: None,
            restarts,
        }
    }

    /// Counts a failure against the root's intensity; past it, the process is told to exit.
    fn record_failure(&mut self, reason: &str) {
        let now = std::time::Instant::now();
        let allowed = self.restarts.record(now);
        self.shared
            .deps
            .status
            .set_root_restarts(self.restarts.in_window(now));
        if !allowed {
            let msg = format!("root restart intensity exceeded; last failure: {reason}");
            tracing::error!("{msg}");
            self.shared.fatal.send_replace(Some(msg));
        }
    }

    /// The state shared with the rebalance callbacks.
    pub fn shared(&self) -> Arc<GroupShared> {
        self.shared.clone()
    }

    /// Resolves with the reason when the root gives up (restart intensity exceeded) or the
    /// consumer hits a fatal error.
    pub fn fatal(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.fatal.subscribe()
    }
}

impl Actor for ConsumerGroup {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _ = self.shared.root.set(ctx.address().recipient());
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            for reason in act.shared.revive_dead_partitions() {
                act.record_failure(&reason);
            }
        });
        let deps = &self.shared.deps;
        let context = GroupContext {
            shared: self.shared.clone(),
        };
        let consumer: GroupConsumer =
            match consumer_config(&deps.config).create_with_context(context) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot create the Kafka consumer");
                    System::current().stop_with_code(1);
                    return;
                }
            };
        let consumer = Arc::new(consumer);
        let _ = self.shared.consumer.set(Arc::downgrade(&consumer));
        if let Err(e) = consumer.subscribe(&[&deps.config.kafka.input_topic]) {
            tracing::error!(error = %e, "cannot subscribe");
            System::current().stop_with_code(1);
            return;
        }
        tracing::info!(topic = %deps.config.kafka.input_topic, group = %deps.config.kafka.group_id,
            "subscribed");
        // The main queue must be polled: it serves rebalances, and any record of a partition
        // whose queue was not split yet is handed to its partition actor.
        let c = consumer.clone();
        let shared = self.shared.clone();
        let poll = async move {
            loop {
                match c.recv().await {
                    Ok(m) => {
                        let key = (m.topic().to_string(), m.partition());
                        let owned = m.detach();
                        let addr = shared.partitions.lock().get(&key).cloned();
                        match addr {
                            Some(a) => {
                                if a.send(Stray(owned)).await.is_err() {
                                    tracing::error!(
                                        partition = key.1,
                                        "stray record for a stopped partition"
                                    );
                                }
                            }
                            None => tracing::error!(
                                partition = key.1,
                                "record for an unassigned partition"
                            ),
                        }
                    }
                    Err(e) => {
                        // A fatal error (e.g. UNRELEASED_INSTANCE_ID: a static member restarted
                        // before the broker released its old self) ends this consumer for good:
                        // hand it to the process, which exits so the orchestrator starts anew,
                        // instead of living on without partitions.
                        if let Some((code, reason)) = c.client().fatal_error() {
                            let msg = format!("fatal Kafka consumer error {code:?}: {reason}");
                            tracing::error!("{msg}");
                            shared.fatal.send_replace(Some(msg));
                            break;
                        }
                        tracing::warn!(error = %e, "consumer error");
                        actix_rt::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        };
        self.poll = Some(ctx.spawn(poll.into_actor(self)));
        self.consumer = Some(consumer);
    }
}

impl Handler<Shutdown> for ConsumerGroup {
    type Result = ResponseActFuture<Self, Vec<DrainReport>>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        if let Some(poll) = self.poll.take() {
            ctx.cancel_future(poll);
        }
        let reports = self.shared.drain(None, false);
        if let Some(c) = &self.consumer {
            c.unsubscribe();
        }
        let weak = self.consumer.as_ref().map(Arc::downgrade);
        // The consumer closes (commits, leaves the group) when its last reference is dropped.
        // Partition queues and the cancelled poll loop hold references until their actors and
        // futures are gone; wait for that, then drop ours here, on this thread.
        let wait = async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while weak.as_ref().is_some_and(|w| w.strong_count() > 1)
                && std::time::Instant::now() < deadline
            {
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
        };
        Box::pin(wait.into_actor(self).map(move |(), act, ctx| {
            if let Some(c) = act.consumer.take() {
                if Arc::strong_count(&c) > 1 {
                    tracing::warn!("consumer still referenced; it leaves the group when released");
                }
                drop(c);
                tracing::info!("left the consumer group");
            }
            ctx.stop();
            reports
        }))
    }
}
