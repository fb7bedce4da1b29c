//! One actor per assigned partition. It is the partition's source (reads its queue, decodes
//! records, dead-letters the invalid ones), the parent of its stage actors, and the keeper of its
//! offsets: a record is finished when its output or dead letter is acknowledged, and only the
//! offset below the first unfinished record is stored for commit.
//!
//! Backpressure: at most `pipeline.max_in_flight` records are read and not yet finished; the
//! source waits for a finished record before reading more, and every hand-over between stages is
//! a `send().await` into a bounded mailbox.

mod control;
mod exactly_once;
mod read;
mod supervise;
pub mod tracker;

pub use control::{Control, ControlError};
pub use exactly_once::{Rewind, SharedFrontier};

use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::FutureExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, Semaphore};

use std::collections::BTreeMap;

use crate::clients::backoff;
use crate::deps::Deps;
use crate::dlq::{Completed, DeadLetter};
use crate::error::{ErrorKind, Failure, Stage};
use crate::event::decode;
use crate::kafka::consumer::{GroupConsumer, GroupContext};
use crate::record::{Emitted, Input, Record};
use crate::stage::{Batch, Batching, StageActor, StageHealth, StageLogic, StopStage, Wiring};
use crate::stages::{emit::Emit, enrich::Enrich, infer::Infer, lookup::Lookup};
use crate::status::{PartitionState, PartitionStatus};
use crate::supervision::{ChildFailed, Intensity, RestartTracker};
use tracker::OffsetTracker;

/// The partition queue type.
pub type PartitionQueue = StreamPartitionQueue<GroupContext>;

/// Asks a partition to stop reading, finish what is in flight (within the drain timeout), commit
/// and stop. The report is sent on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    /// Where the report goes; a plain channel so a rebalance callback can block on it.
    pub reply: std::sync::mpsc::Sender<DrainReport>,
    /// The assignment was lost (the session expired): another member owns the partition now, so
    /// stop at once without committing.
    pub lost: bool,
}

/// How a drain ended.
#[derive(Debug, Clone)]
pub struct DrainReport {
    /// The partition.
    pub partition: i32,
    /// The offset committed (next to read), if any.
    pub committed: Option<i64>,
    /// Records still in flight when the drain timed out (they will be read again).
    pub abandoned: usize,
}

/// A partition tells the root it restarted its stages (`gave_up` false) or exceeded its restart
/// intensity and stopped (`gave_up` true). The root counts these against its own intensity.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PartitionRestarted {
    /// The partition.
    pub partition: i32,
    /// Whether the partition gave up (failed).
    pub gave_up: bool,
    /// Why.
    pub reason: String,
}

/// A record that arrived on the consumer's main queue instead of the partition's own queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stray(pub OwnedMessage);

/// The next offset a partition stored for commit, shared with the group that hosts it: when the
/// partition's actor dies outside its supervised code, the group restarts it from there.
#[derive(Debug, Clone)]
pub struct StoredOffset(Arc<AtomicI64>);

impl Default for StoredOffset {
    fn default() -> Self {
        StoredOffset(Arc::new(AtomicI64::new(-1)))
    }
}

/// What a partition shares with the group that hosts it about how far it got.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The next offset stored for commit.
    pub stored: StoredOffset,
    /// Exactly-once mode: the frontier for the next transaction (set by the group to the
    /// committed one before the partition starts).
    pub frontier: SharedFrontier,
}

impl StoredOffset {
    /// The stored offset, if any.
    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Acquire)).filter(|o| *o >= 0)
    }

    fn set(&self, offset: Option<i64>) {
        self.0.store(offset.unwrap_or(-1), Ordering::Release);
    }
}

/// The partition actor.
pub struct PartitionActor {
    topic: Arc<str>,
    partition: i32,
    consumer: Arc<GroupConsumer>,
    queue: Option<Rc<PartitionQueue>>,
    deps: Deps,
    permits: Rc<Semaphore>,
    tracker: OffsetTracker,
    stored: StoredOffset,
    /// Exactly-once mode: what the next transaction commits for this partition.
    frontier: SharedFrontier,
    /// Exactly-once mode: the transaction epoch records are read in.
    epoch: u64,
    lookup: Option<Addr<StageActor<Lookup>>>,
    stages: Vec<Recipient<StopStage>>,
    stop: Rc<Notify>,
    stopping: bool,
    drain_replies: Vec<std::sync::mpsc::Sender<DrainReport>>,
    me_completed: Option<Recipient<Completed>>,
    lost: bool,
    root: Recipient<PartitionRestarted>,
    /// Bumped at every restart; work of an older generation is discarded.
    generation: u64,
    restarts: RestartTracker,
    state: PartitionState,
    /// Paused at the consumer because in-flight records reached the high watermark.
    backpressure: bool,
    /// Paused at the consumer by an operator (admin API) until resumed the same way.
    operator_paused: bool,
    /// Dependencies a stage reported unavailable, by stage.
    problems: BTreeMap<crate::error::Stage, String>,
    failure: Option<String>,
    /// Parent of the stages' spans: their log lines name the topic and partition.
    span: tracing::Span,
}

impl PartitionActor {
    /// A partition actor reading `queue`.
    pub fn new(
        topic: &str,
        partition: i32,
        consumer: Arc<GroupConsumer>,
        queue: PartitionQueue,
        deps: Deps,
        root: Recipient<PartitionRestarted>,
        progress: Progress,
    ) -> Self {
        let permits = Rc::new(Semaphore::new(deps.config.pipeline.max_in_flight));
        let epoch = deps.txn.as_ref().map_or(0, |t| t.epoch());
        let sv = &deps.config.supervision;
        let restarts = RestartTracker::new(Intensity {
            max_restarts: sv.max_restarts,
            window: sv.restart_window_ms.get(),
        });
        PartitionActor {
            topic: topic.into(),
            partition,
            consumer,
            queue: Some(Rc::new(queue)),
            deps,
            permits,
            tracker: OffsetTracker::default(),
            stored: progress.stored,
            frontier: progress.frontier,
            epoch,
            lookup: None,
            stages: Vec::new(),
            stop: Rc::new(Notify::new()),
            operator_paused: false,
            stopping: false,
            drain_replies: Vec::new(),
            me_completed: None,
            lost: false,
            root,
            generation: 0,
            restarts,
            state: PartitionState::Running,
            backpressure: false,
            problems: BTreeMap::new(),
            failure: None,
            span: tracing::info_span!("partition", %topic, partition),
        }
    }

    /// Starts one stage actor on this thread, handing its records on to `next`.
    fn start_stage<S: StageLogic>(
        &self,
        me: &Addr<Self>,
        logic: S,
        batching: Batching,
        next: Recipient<Batch<S::Out>>,
    ) -> Addr<StageActor<S>> {
        let wiring = Wiring {
            next,
            dlq: self.deps.dlq.clone(),
            done: me.clone().recipient(),
            failed: me.clone().recipient(),
            stats: self.deps.stats.clone(),
            span: self.span.clone(),
        };
        StageActor::new(
            logic,
            batching,
            wiring,
            self.deps.config.pipeline.mailbox_capacity,
        )
        .start()
    }

    /// Starts the stage actors on this thread, last first, each wired to the next.
    fn start_stages(&mut self, ctx: &mut Context<Self>) {
        let cfg = self.deps.config.clone();
        let me = ctx.address();
        let natural = Batching::natural(cfg.pipeline.max_batch);
        let emit = Emit::new(
            self.deps.producer.clone(),
            &cfg.kafka.output_topic,
            self.deps.stats.clone(),
            self.deps.txn.clone(),
        );
        let emit = self.start_stage(&me, emit, natural, me.clone().recipient());
        let infer = Infer::new(
            &cfg,
            self.deps.stats.clone(),
            self.deps.breaker.clone(),
            self.deps.credentials.clone(),
            me.clone().recipient(),
        );
        // The model is called with batches of its own size, waiting a little for fuller ones.
        let model_batching = Batching {
            max: cfg.model.max_batch_size,
            wait: cfg.model.max_wait_ms.get(),
        };
        let infer = self.start_stage(&me, infer, model_batching, emit.clone().recipient());
        let store = crate::stages::enrich::Store {
            client: crate::clients::redis::LookupClient::new(
                self.deps.redis.clone(),
                self.deps.zip_cache.clone(),
                &cfg.redis,
                std::time::Duration::from_secs(cfg.features.session_gap_s),
            ),
            budget: cfg.redis.retry_budget_ms.get(),
            stats: self.deps.stats.clone(),
        };
        let enrich = Enrich::new(&cfg, self.deps.feature_set.clone(), Some(store));
        #[cfg(feature = "fault-injection")]
        let enrich = enrich.with_hooks(self.deps.hooks.clone());
        let enrich = self.start_stage(&me, enrich, natural, infer.clone().recipient());
        let lookup = Lookup::new(
            &cfg,
            self.deps.redis.clone(),
            self.deps.zip_cache.clone(),
            self.deps.feature_set.clone(),
            me.clone().recipient(),
            self.deps.stats.clone(),
        );
        let lookup = self.start_stage(&me, lookup, natural, enrich.clone().recipient());
        self.stages = vec![
            lookup.clone().recipient(),
            enrich.recipient(),
            infer.recipient(),
            emit.recipient(),
        ];
        self.lookup = Some(lookup);
    }

    fn finish(&mut self, offsets: impl Iterator<Item = i64>, ctx: &mut Context<Self>) {
        let mut n = 0;
        for o in offsets {
            if self.tracker.done(o) {
                n += 1;
            }
        }
        self.permits.add_permits(n);
        self.store();
        self.apply_backpressure();
        if self.stopping && self.tracker.in_flight() == 0 {
            self.complete_drain(ctx);
        }
    }

    /// Stores the committable offset; librdkafka commits stored offsets every
    /// `kafka.commit_interval_ms`.
    fn store(&mut self) {
        if self.transactional() {
            self.publish_frontier();
            return;
        }
        let Some(next) = self.tracker.committable() else {
            return;
        };
        if self.stored.get() == Some(next) {
            return;
        }
        // rd_kafka_offset_store stores `offset + 1`: pass the last finished offset.
        match self
            .consumer
            .store_offset(&self.topic, self.partition, next - 1)
        {
            Ok(()) => {
                tracing::trace!(partition = self.partition, next, "offset stored");
                self.stored.set(Some(next))
            }
            Err(e) => {
                tracing::debug!(partition = self.partition, error = %e, "offset store failed")
            }
        }
    }

    fn complete_drain(&mut self, ctx: &mut Context<Self>) {
        if self.drain_replies.is_empty() {
            return;
        }
        let committed = if self.lost {
            None
        } else {
            self.tracker.committable()
        };
        // Exactly-once: the group commits the frontier with its transaction.
        if let Some(next) = committed.filter(|_| !self.transactional()) {
            let mut tpl = TopicPartitionList::new();
            let added = tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(next));
            match added.and_then(|()| self.consumer.commit(&tpl, CommitMode::Sync)) {
                Ok(()) => tracing::info!(
                    partition = self.partition,
                    offset = next,
                    "committed on drain"
                ),
                Err(e) => {
                    tracing::warn!(partition = self.partition, error = %e, "commit on drain failed")
                }
            }
        }
        let report = DrainReport {
            partition: self.partition,
            committed,
            abandoned: self.tracker.in_flight(),
        };
        if report.abandoned > 0 {
            tracing::warn!(
                partition = self.partition,
                abandoned = report.abandoned,
                "drain timed out; unfinished records will be read again"
            );
        }
        for reply in self.drain_replies.drain(..) {
            let _ = reply.send(report.clone());
        }
        for stage in self.stages.drain(..) {
            let _ = stage.try_send(StopStage);
        }
        self.queue = None;
        self.deps.status.remove(&self.topic, self.partition);
        ctx.stop();
    }

    /// The status the admin API shows.
    fn publish(&self) {
        let paused =
            self.backpressure || self.operator_paused || self.state == PartitionState::Failed;
        let mut reasons: Vec<String> = self.problems.values().cloned().collect();
        if self.operator_paused {
            reasons.insert(0, "paused by an operator (admin API)".into());
        }
        if self.backpressure {
            reasons.insert(
                0,
                "backpressure: in-flight records at the high watermark".into(),
            );
        }
        let state = match self.state {
            PartitionState::Running if paused || !self.problems.is_empty() => {
                PartitionState::Paused
            }
            s => s,
        };
        self.deps.status.publish(PartitionStatus {
            topic: self.topic.to_string(),
            partition: self.partition,
            state,
            committed_offset: self.stored.get(),
            position: self.tracker.position(),
            high_watermark: None,
            lag: None,
            in_flight: self.tracker.in_flight(),
            paused,
            paused_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            restarts: self.restarts.total(),
            restarts_in_window: self.restarts.in_window(Instant::now()),
            failure: self.failure.clone(),
        });
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.deps.config.pipeline.mailbox_capacity);
        self.me_completed = Some(ctx.address().recipient());
        // librdkafka keeps a partition's paused flag across rebalances: a partition this process
        // paused before it was revoked would come back paused. Start from a known state.
        self.set_paused(false);
        if let Some(committed) = self.frontier.lock().as_ref() {
            // Offsets a committed transaction finished beyond its commit point are not redone.
            self.tracker = OffsetTracker::default().skipping(committed.done.clone());
        }
        self.start_stages(ctx);
        tracing::info!(topic = %self.topic, partition = self.partition, "partition started");
        self.publish();
        ctx.run_interval(Duration::from_millis(500), |act, _| {
            if !act.stopping {
                act.publish()
            }
        });
        self.read_next(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::info!(topic = %self.topic, partition = self.partition, "partition stopped");
    }
}

impl Handler<Batch<Emitted>> for PartitionActor {
    type Result = ();

    /// Records whose output was acknowledged.
    fn handle(&mut self, msg: Batch<Emitted>, ctx: &mut Self::Context) {
        self.finish(msg.0.iter().map(|r| r.input.offset), ctx);
    }
}

impl Handler<Completed> for PartitionActor {
    type Result = ();

    /// Records whose dead letter was acknowledged.
    fn handle(&mut self, msg: Completed, ctx: &mut Self::Context) {
        self.finish(msg.offsets.into_iter(), ctx);
    }
}

impl Handler<Drain> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) {
        self.drain_replies.push(msg.reply);
        if msg.lost {
            tracing::warn!(
                partition = self.partition,
                "assignment lost; stopping without commit"
            );
            self.lost = true;
        }
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.state = PartitionState::Draining;
        self.publish();
        self.stop.notify_one();
        if self.tracker.in_flight() == 0 || self.lookup.is_none() || self.lost {
            self.complete_drain(ctx);
        } else {
            ctx.run_later(self.deps.config.pipeline.drain_timeout(), |act, ctx| {
                act.complete_drain(ctx)
            });
        }
    }
}

impl Handler<Stray> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Stray, ctx: &mut Self::Context) {
        tracing::warn!(
            partition = self.partition,
            offset = msg.0.offset(),
            "record arrived on the main queue; processing it"
        );
        // It takes an in-flight slot like any record; `finish` gives it back.
        self.permits.forget_permits(1);
        let forward = self.ingest(vec![msg.0]);
        ctx.spawn(forward.into_actor(self));
    }
}

impl Handler<StageHealth> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: StageHealth, _: &mut Self::Context) {
        match msg.problem {
            Some(problem) => {
                tracing::warn!(partition = self.partition, stage = msg.stage.as_str(), %problem, "partition held");
                self.problems.insert(msg.stage, problem);
            }
            None => {
                tracing::info!(
                    partition = self.partition,
                    stage = msg.stage.as_str(),
                    "dependency available again"
                );
                self.problems.remove(&msg.stage);
            }
        }
        self.publish();
    }
}
