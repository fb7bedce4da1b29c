//! The consumer-group actor: the root of the pipeline's actor tree. It owns the Kafka consumer,
//! follows the group's rebalances, starts one [`PartitionActor`] per assigned partition on a
//! worker thread, and drains and commits revoked partitions before they are released.
//!
//! Rebalance callbacks run on this actor's thread, inside the poll of the consumer's main queue;
//! partition actors live on other threads, so a revoke can block here until they have drained.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message as _;
use rdkafka::TopicPartitionList;

use crate::deps::Deps;
use crate::kafka::auth::{AuthContext, MskAuth};
use crate::kafka::consumer::{GroupConsumer, GroupContext, GroupEvents};
use crate::kafka::transaction::Committer;
use crate::partition::{Drain, DrainReport, PartitionActor, PartitionRestarted, Progress, Stray};

mod exactly_once;
use crate::supervision::{Intensity, RestartTracker};

type TopicPartition = (String, i32);

/// A partition this process hosts: its actor and how far it got.
#[derive(Clone)]
struct Hosted {
    addr: Addr<PartitionActor>,
    progress: Progress,
    /// Being drained for release: its actor stops on purpose and is not revived.
    draining: Arc<AtomicBool>,
}

/// State shared by the consumer-group actor and the consumer's rebalance callbacks.
pub struct GroupShared {
    consumer: OnceLock<Weak<GroupConsumer>>,
    root: OnceLock<Recipient<PartitionRestarted>>,
    fatal: tokio::sync::watch::Sender<Option<String>>,
    partitions: Mutex<HashMap<TopicPartition, Hosted>>,
    deps: Deps,
    workers: Vec<ArbiterHandle>,
    next_worker: Mutex<usize>,
    /// Exactly-once mode: the thread committing the transactions.
    committer: OnceLock<Committer>,
    /// Set by [`Shutdown`]: assignments served while leaving start no partitions.
    closing: AtomicBool,
}

impl GroupShared {
    fn assign(&self, tpl: &TopicPartitionList) {
        if self.closing.load(Ordering::Acquire) {
            tracing::info!(
                partitions = tpl.count(),
                "assignment while leaving the group: not started"
            );
            return;
        }
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            tracing::error!("assignment before the consumer was ready");
            return;
        };
        let mut committed = self.committed_frontiers(&consumer, tpl);
        for elem in tpl.elements() {
            let progress = Progress::default();
            let key = (elem.topic().to_string(), elem.partition());
            *progress.frontier.lock() = committed.remove(&key);
            self.start_partition(&consumer, elem.topic(), elem.partition(), progress);
        }
    }

    /// Starts the actor of one partition on the next worker thread.
    fn start_partition(
        &self,
        consumer: &Arc<GroupConsumer>,
        topic: &str,
        partition: i32,
        progress: Progress,
    ) {
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
            let p = progress.clone();
            let addr = PartitionActor::start_in_arbiter(&worker, move |_| {
                PartitionActor::new(&t, partition, c, queue, deps, root, p)
            });
            tracing::info!(topic, partition, "partition assigned");
            self.partitions.lock().insert(
                (topic, partition),
                Hosted {
                    addr,
                    progress,
                    draining: Arc::default(),
                },
            );
        }
    }

    /// Drains the given partitions (all when `tpl` is None), blocking until each has committed or
    /// the drain timeout passed. They stay hosted (their progress is what the exactly-once
    /// commit of the release carries) until [`GroupShared::release`].
    fn drain(&self, tpl: Option<&TopicPartitionList>, lost: bool) -> Vec<DrainReport> {
        let actors: Vec<Addr<PartitionActor>> = {
            let map = self.partitions.lock();
            let hosted: Vec<&Hosted> = match tpl {
                None => map.values().collect(),
                Some(tpl) => tpl
                    .elements()
                    .iter()
                    .filter_map(|e| map.get(&(e.topic().to_string(), e.partition())))
                    .collect(),
            };
            hosted
                .into_iter()
                .map(|h| {
                    h.draining.store(true, Ordering::Release);
                    h.addr.clone()
                })
                .collect()
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

    /// Forgets the given partitions (all when `tpl` is None), drained and released.
    fn release(&self, tpl: Option<&TopicPartitionList>) {
        let mut map = self.partitions.lock();
        match tpl {
            None => map.clear(),
            Some(tpl) => {
                for e in tpl.elements() {
                    map.remove(&(e.topic().to_string(), e.partition()));
                }
            }
        }
    }

    /// Restarts partitions whose actor died without draining (a panic outside the stages'
    /// guarded code): one-for-one, from the last offset it stored (else the group's commit).
    fn revive_dead_partitions(&self) -> Vec<String> {
        let dead: Vec<(TopicPartition, Progress)> = self
            .partitions
            .lock()
            .iter()
            .filter(|(_, h)| !h.addr.connected() && !h.draining.load(Ordering::Acquire))
            .map(|(k, h)| (k.clone(), h.progress.clone()))
            .collect();
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return Vec::new();
        };
        let mut revived = Vec::new();
        for ((topic, partition), progress) in dead {
            self.partitions.lock().remove(&(topic.clone(), partition));
            if let Some(txn) = &self.deps.txn {
                // Writes of its in-flight records may already be in the open transaction.
                txn.doom("a partition actor died");
            }
            let from = match progress.stored.get() {
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
            // The new actor starts from the same progress (in exactly-once mode it skips what
            // the open transaction already holds).
            self.start_partition(&consumer, &topic, partition, progress);
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
            .map(|h| h.addr.clone())
    }

    /// The consumer, while the group runs.
    pub fn consumer(&self) -> Option<Arc<GroupConsumer>> {
        self.consumer.get().and_then(Weak::upgrade)
    }
}

impl GroupEvents for GroupShared {
    fn revoked(&self, tpl: &TopicPartitionList, lost: bool) {
        let reports = self.drain(Some(tpl), lost);
        if lost {
            self.abort_lost();
        } else {
            self.commit_drained(&reports);
        }
        self.release(Some(tpl));
        tracing::info!(
            revoked = tpl.count(),
            drained = reports.len(),
            "partitions revoked"
        );
    }

    fn assigned(&self, tpl: &TopicPartitionList) {
        self.assign(tpl);
    }

    fn high_watermark(&self, partition: i32, offset: i64) {
        let topic = &self.deps.config.kafka.input_topic;
        self.deps
            .status
            .set_high_watermark(topic, partition, offset);
    }
}

impl Handler<PartitionRestarted> for ConsumerGroup {
    type Result = ();

    fn handle(&mut self, msg: PartitionRestarted, _: &mut Self::Context) {
        let reason = format!("partition {}: {}", msg.partition, msg.reason);
        self.record_failure(&reason);
    }
}

/// How long a shutdown waits for the consumer to be unassigned and unreferenced before closing it.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

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
            window: sv.root_restart_window_ms.get(),
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
                committer: OnceLock::new(),
                closing: AtomicBool::new(false),
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
        let auth = AuthContext::new(MskAuth::for_config(
            &deps.config.kafka,
            deps.credentials.clone(),
        ));
        let context = GroupContext::new(self.shared.clone(), auth, &deps.config.kafka.input_topic);
        let consumer: GroupConsumer =
            match crate::kafka::client::pipeline_consumer(&deps.config.kafka)
                .create_with_context(context)
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot create the Kafka consumer");
                    System::current().stop_with_code(1);
                    return;
                }
            };
        let consumer = Arc::new(consumer);
        let _ = self.shared.consumer.set(Arc::downgrade(&consumer));
        if let Err(e) = self.shared.start_committer() {
            tracing::error!(error = %e, "cannot start the transaction committer");
            System::current().stop_with_code(1);
            return;
        }
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
                        let addr = shared.partitions.lock().get(&key).map(|h| h.addr.clone());
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
        self.shared.closing.store(true, Ordering::Release);
        let reports = self.shared.drain(None, false);
        self.shared.commit_drained(&reports);
        self.shared.stop_committer();
        self.shared.release(None);
        if let Some(c) = &self.consumer {
            c.unsubscribe();
        }
        let consumer = self.consumer.clone();
        // The consumer closes (leaves the group) when its last reference is dropped. Before
        // that: serve the revoke the unsubscribe causes, polling the main queue until nothing is
        // assigned — librdkafka can block for good when a close has to unassign a cooperative
        // assignment itself (librdkafka #4884) — and wait for the partition queues and the
        // cancelled poll loop to let go of their references. Then ours is dropped here, on this
        // thread. Bounded: after CLOSE_WAIT the close goes ahead as things are.
        let wait = async move {
            let Some(c) = consumer else { return };
            let deadline = std::time::Instant::now() + CLOSE_WAIT;
            while std::time::Instant::now() < deadline {
                let assigned = c.assignment().map(|a| a.count()).unwrap_or(0);
                // Ours and the actor's: anything more is a partition queue or the poll loop.
                let referenced = Arc::strong_count(&c) > 2;
                if assigned == 0 && !referenced {
                    break;
                }
                if assigned > 0 {
                    // Serves rebalance events; a record still arriving is not processed (it
                    // was not committed, so it is read again by the next owner).
                    let _ = actix_rt::time::timeout(Duration::from_millis(50), c.recv()).await;
                } else {
                    actix_rt::time::sleep(Duration::from_millis(10)).await;
                }
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
