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

use crate::deps::Deps;
use crate::partition::{Drain, DrainReport, PartitionActor, Stray};

/// The consumer with clickpipe's context.
pub type GroupConsumer = StreamConsumer<GroupContext>;

type TopicPartition = (String, i32);

/// State shared by the consumer-group actor and the consumer's rebalance callbacks.
pub struct GroupShared {
    consumer: OnceLock<Weak<GroupConsumer>>,
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
            let topic = elem.topic().to_string();
            let partition = elem.partition();
            // Split right away, before the first fetch for this partition can complete, so its
            // records go to the partition's own queue (a record that slips through is routed as
            // a `Stray`).
            let Some(queue) = consumer.split_partition_queue(&topic, partition) else {
                tracing::error!(topic, partition, "cannot split the partition queue");
                continue;
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
                PartitionActor::new(&t, partition, c, queue, deps)
            });
            tracing::info!(topic, partition, "partition assigned");
            self.partitions.lock().insert((topic, partition), addr);
        }
    }

    /// Drains the given partitions (all when `tpl` is None), blocking until each has committed or
    /// the drain timeout passed.
    fn drain(&self, tpl: Option<&TopicPartitionList>) -> Vec<DrainReport> {
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
            if a.try_send(Drain { reply: tx.clone() }).is_ok() {
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

    /// Number of partitions currently assigned.
    pub fn assigned(&self) -> usize {
        self.partitions.lock().len()
    }
}

/// The consumer's context: logs through `tracing` and drives rebalances.
pub struct GroupContext {
    shared: Arc<GroupShared>,
}

impl ClientContext for GroupContext {
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
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let reports = self.shared.drain(Some(tpl));
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
pub fn consumer_config(deps: &Deps) -> ClientConfig {
    let k = &deps.config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", k.commit_interval_ms.to_string())
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    for (key, value) in k.client.iter().chain(k.consumer.iter()) {
        c.set(key, value);
    }
    c
}

/// Builds the producer's librdkafka config: idempotent, then `[kafka.client]` and
/// `[kafka.producer]` as given.
pub fn producer_config(config: &crate::config::Config) -> ClientConfig {
    let k = &config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1");
    for (key, value) in k.client.iter().chain(k.producer.iter()) {
        c.set(key, value);
    }
    c
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
}

impl ConsumerGroup {
    /// A consumer-group actor hosting partitions on `workers`. Start it on its own arbiter.
    pub fn new(deps: Deps, workers: Vec<ArbiterHandle>) -> Self {
        ConsumerGroup {
            shared: Arc::new(GroupShared {
                consumer: OnceLock::new(),
                partitions: Mutex::new(HashMap::new()),
                deps,
                workers,
                next_worker: Mutex::new(0),
            }),
            consumer: None,
            poll: None,
        }
    }

    /// The state shared with the rebalance callbacks.
    pub fn shared(&self) -> Arc<GroupShared> {
        self.shared.clone()
    }
}

impl Actor for ConsumerGroup {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let deps = &self.shared.deps;
        let context = GroupContext {
            shared: self.shared.clone(),
        };
        let consumer: GroupConsumer = match consumer_config(deps).create_with_context(context) {
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
        let reports = self.shared.drain(None);
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
