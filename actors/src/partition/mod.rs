//! One actor per assigned partition. It is the partition's source (reads its queue, decodes
//! records, dead-letters the invalid ones), the parent of its stage actors, and the keeper of its
//! offsets: a record is finished when its output or dead letter is acknowledged, and only the
//! offset below the first unfinished record is stored for commit.
//!
//! Backpressure: at most `pipeline.max_in_flight` records are read and not yet finished; the
//! source waits for a finished record before reading more, and every hand-over between stages is
//! a `send().await` into a bounded mailbox.

pub mod tracker;

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
use crate::record::Record;
use crate::stage::{Batch, StageActor, StageHealth, StopStage, Wiring};
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

/// An operator's command for one partition (admin API: pause, resume, seek).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "Result<(), ControlError>")]
pub enum Control {
    /// Stop fetching (at the consumer) until [`Control::Resume`]; in-flight records finish.
    Pause,
    /// Undo [`Control::Pause`] (backpressure or a failure may still hold the partition).
    Resume,
    /// Drop the records in flight and continue reading at this offset. Earlier offsets are read
    /// again (replay); skipped ones are never processed. The new position is committed.
    Seek(i64),
}

/// Why a [`Control`] command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The partition is being released (stop or rebalance).
    #[error("partition {0} is draining (being released)")]
    Draining(i32),
    /// Restart intensity exceeded: only a process restart brings it back.
    #[error("partition {0} has failed; restart the process to bring it back")]
    Failed(i32),
    /// The consumer refused the seek.
    #[error("seek failed: {0}")]
    Seek(String),
    /// An offset below zero.
    #[error("offset must be 0 or more, got {0}")]
    BadOffset(i64),
    /// An offset past the partition's end (its high watermark).
    #[error("offset {offset} is past the end of partition {partition}: it holds offsets {low} to {high} (seek to {high} to wait for new records)")]
    PastTheEnd {
        /// The partition.
        partition: i32,
        /// The offset asked for.
        offset: i64,
        /// The earliest offset the broker still holds.
        low: i64,
        /// The offset the next record will get.
        high: i64,
    },
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
        stored: StoredOffset,
    ) -> Self {
        let permits = Rc::new(Semaphore::new(deps.config.pipeline.max_in_flight));
        let sv = &deps.config.supervision;
        let restarts = RestartTracker::new(Intensity {
            max_restarts: sv.max_restarts,
            window: Duration::from_millis(sv.restart_window_ms),
        });
        PartitionActor {
            topic: topic.into(),
            partition,
            consumer,
            queue: Some(Rc::new(queue)),
            deps,
            permits,
            tracker: OffsetTracker::default(),
            stored,
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

    /// Starts the stage actors on this thread, last first, each wired to the next.
    fn start_stages(&mut self, ctx: &mut Context<Self>) {
        let cfg = self.deps.config.clone();
        let mailbox = cfg.pipeline.mailbox_capacity;
        let me = ctx.address();
        let wiring = |next: Recipient<Batch>| Wiring {
            next,
            dlq: self.deps.dlq.clone(),
            done: me.clone().recipient(),
            failed: me.clone().recipient(),
            stats: self.deps.stats.clone(),
            span: self.span.clone(),
        };
        let emit = StageActor::new(
            Emit::new(
                self.deps.producer.clone(),
                &cfg.kafka.output_topic,
                cfg.pipeline.max_batch,
                self.deps.stats.clone(),
            ),
            wiring(me.clone().recipient()),
            mailbox,
        )
        .start();
        let infer = StageActor::new(
            Infer::new(
                &cfg,
                self.deps.stats.clone(),
                self.deps.breaker.clone(),
                self.deps.credentials.clone(),
                me.clone().recipient(),
            ),
            wiring(emit.clone().recipient()),
            mailbox,
        )
        .start();
        let enrich = Enrich::new(&cfg);
        #[cfg(feature = "fault-injection")]
        let enrich = enrich.with_hooks(self.deps.hooks.clone());
        let enrich = StageActor::new(enrich, wiring(infer.clone().recipient()), mailbox).start();
        let lookup = StageActor::new(
            Lookup::new(
                &cfg,
                self.deps.redis.clone(),
                self.deps.zip_cache.clone(),
                me.clone().recipient(),
            ),
            wiring(enrich.clone().recipient()),
            mailbox,
        )
        .start();
        self.stages = vec![
            lookup.clone().recipient(),
            enrich.recipient(),
            infer.recipient(),
            emit.recipient(),
        ];
        self.lookup = Some(lookup);
    }

    /// Reads the next batch: waits for room in flight and for a first record, then takes what
    /// else is already fetched, up to `pipeline.max_batch`.
    fn read_next(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let Some(queue) = self.queue.clone() else {
            return;
        };
        let permits = self.permits.clone();
        let stop = self.stop.clone();
        let max_batch = self.deps.config.pipeline.max_batch;
        let read = async move {
            tokio::select! {
                biased;
                _ = stop.notified() => return None,
                p = permits.acquire() => p.ok()?.forget(),
            }
            let first = tokio::select! {
                biased;
                _ = stop.notified() => { permits.add_permits(1); return None }
                m = queue.recv() => m.map(|m| m.detach()),
            };
            let mut msgs = Vec::with_capacity(max_batch.min(64));
            match first {
                Ok(m) => msgs.push(m),
                Err(e) => {
                    permits.add_permits(1);
                    tracing::warn!(error = %e, "partition queue error");
                    actix_rt::time::sleep(Duration::from_millis(100)).await;
                    return Some(msgs);
                }
            }
            while msgs.len() < max_batch {
                let Ok(p) = permits.try_acquire() else { break };
                match queue.recv().now_or_never() {
                    Some(Ok(m)) => {
                        p.forget();
                        msgs.push(m.detach());
                    }
                    _ => break,
                }
            }
            Some(msgs)
        };
        let generation = self.generation;
        ctx.spawn(read.into_actor(self).then(move |msgs, act, _ctx| {
            // Records read by a generation that has since been restarted are dropped: the restart
            // rewound the partition to before them, so they will be read again.
            let msgs = msgs.filter(|_| act.generation == generation && !act.stopping);
            let forward = msgs.map(|m| act.ingest(m));
            async move {
                if let Some(f) = forward {
                    f.await;
                }
            }
            .into_actor(act)
            .map(move |(), act, ctx| {
                if act.generation == generation {
                    act.read_next(ctx)
                }
            })
        }));
    }

    /// Registers and decodes freshly read messages; returns the future that hands them on.
    fn ingest(
        &mut self,
        msgs: Vec<OwnedMessage>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let limits = crate::event::Limits::from_config(&self.deps.config);
        let now_utc = chrono::Utc::now();
        let now = Instant::now();
        let mut valid = Vec::with_capacity(msgs.len());
        let mut invalid = Vec::new();
        let n = msgs.len();
        self.deps
            .stats
            .records_in
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        for m in msgs {
            self.tracker.read(m.offset());
            let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
            let mut record = Record {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                timestamp_ms: m.timestamp().to_millis(),
                replay_count: crate::dlq::headers::replay_count(&m),
                received: now,
                event: None,
                zip: None,
                session: None,
                features: None,
                prediction: None,
                trace: crate::trace::start(
                    &self.deps.sampling,
                    &m,
                    &self.deps.config.kafka.group_id,
                ),
                payload,
            };
            if let Some(t) = record.trace.as_deref_mut() {
                t.enter_stage("receive", n);
            }
            match decode(&record.payload, &limits, now_utc) {
                Ok(event) => {
                    if let Some(t) = record.trace.as_deref_mut() {
                        t.end_stage(None);
                    }
                    record.event = Some(event);
                    valid.push(record);
                }
                Err(reason) => {
                    let failure = Failure::new(ErrorKind::InvalidEvent, Stage::Decode, reason);
                    if let Some(t) = record.trace.as_deref_mut() {
                        t.end_stage(Some(&failure));
                    }
                    invalid.push((record, failure));
                }
            }
        }
        self.apply_backpressure();
        let dlq = self.deps.dlq.clone();
        let lookup = self.lookup.clone();
        let done = self.me_completed.clone();
        async move {
            for (record, failure) in invalid {
                let Some(done) = done.clone() else { break };
                let letter = DeadLetter {
                    record,
                    failure,
                    done,
                };
                if dlq.send(letter).await.is_err() {
                    tracing::error!("dead-letter actor is gone; record stays uncommitted");
                }
            }
            if let Some(lookup) = lookup {
                if !valid.is_empty() && lookup.send(Batch(valid)).await.is_err() {
                    // The stage stopped (a restart is under way): the records are re-read.
                    tracing::debug!("lookup stage is gone; records will be read again");
                }
            }
        }
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
        if let Some(next) = committed {
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

    /// Pauses the partition at the consumer when in-flight records reach the high watermark and
    /// resumes it at the low one. Between the two nothing changes, so a partition near its bound
    /// does not flip on every record (each pause makes librdkafka drop what it prefetched).
    fn apply_backpressure(&mut self) {
        let p = &self.deps.config.pipeline;
        let max = p.max_in_flight as f64;
        let in_flight = self.tracker.in_flight() as f64;
        if !self.backpressure && in_flight >= (max * p.pause_high_watermark).max(1.0) {
            self.backpressure = true;
            self.set_paused(true);
        } else if self.backpressure && in_flight <= max * p.resume_low_watermark {
            self.backpressure = false;
            let hold = self.state == PartitionState::Failed || self.operator_paused;
            self.set_paused(hold);
        }
    }

    /// Part of every resume: seeks the partition to where this actor reads next. librdkafka's resume
    /// does not wake its broker thread, which notices the partition only on its next periodic
    /// wake-up (up to a second later: measured, the partition sat idle ~0.8 s after every resume
    /// under load); a seek to an absolute offset starts the fetcher at once. The pause dropped
    /// everything prefetched, so the position is exactly the next record not yet read.
    fn restart_fetch(&self) {
        let Some(next) = self.tracker.position() else {
            return;
        };
        // Timeout zero: asynchronous, never blocks the actor.
        if let Err(e) = self.consumer.seek(
            &self.topic,
            self.partition,
            Offset::Offset(next),
            Duration::ZERO,
        ) {
            tracing::debug!(partition = self.partition, next, error = %e, "seek after resume failed");
        }
    }

    /// Pauses or resumes the partition at the consumer; a resume also restarts the fetcher
    /// ([`Self::restart_fetch`]).
    fn set_paused(&self, paused: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        match result {
            Ok(()) if !paused => self.restart_fetch(),
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(partition = self.partition, paused, error = %e, "pause/resume failed")
            }
        }
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

    /// One-for-all: a stage failed, so every stage of this partition is stopped, in-flight records
    /// are dropped, and after a backoff the stages start again from the first unfinished offset.
    fn child_failed(&mut self, msg: ChildFailed, ctx: &mut Context<Self>) {
        if self.stopping || self.state == PartitionState::Failed {
            return;
        }
        if self.state == PartitionState::Restarting {
            return; // the other stages' failures are part of the same restart
        }
        let reason = format!("stage {} failed: {}", msg.child, msg.reason);
        self.stop_stages();
        let allowed = self.restarts.record(Instant::now());
        self.deps.stats.restarts.fetch_add(1, Ordering::Relaxed);
        self.root.do_send(PartitionRestarted {
            partition: self.partition,
            gave_up: !allowed,
            reason: reason.clone(),
        });
        if !allowed {
            tracing::error!(partition = self.partition, %reason,
                "restart intensity exceeded; partition paused and failed");
            self.state = PartitionState::Failed;
            self.failure = Some(format!(
                "restart intensity exceeded; last failure: {reason}"
            ));
            self.set_paused(true);
            self.publish();
            return;
        }
        self.state = PartitionState::Restarting;
        self.publish();
        let sv = &self.deps.config.supervision;
        let wait = backoff(
            self.restarts.in_window(Instant::now()).saturating_sub(1),
            Duration::from_millis(sv.backoff_initial_ms),
            Duration::from_millis(sv.backoff_max_ms),
        );
        tracing::warn!(partition = self.partition, %reason, ?wait, "restarting the partition's stages");
        ctx.run_later(wait, |act, ctx| act.restart(ctx));
    }

    /// An operator's seek: stops the stages (their in-flight records are dropped, as in a
    /// restart), repositions the consumer, stores the new position for the next commit, and
    /// starts the stages again.
    ///
    /// The offset is checked against the partition's watermarks: one past the end is refused
    /// (librdkafka would reset it to the beginning and commit it); one below the earliest record
    /// the broker still holds goes to that record.
    fn seek_to(&mut self, offset: i64, ctx: &mut Context<Self>) -> Result<(), ControlError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(5))
            .map_err(|e| {
                ControlError::Seek(format!("cannot read the partition's watermarks: {e}"))
            })?;
        if offset > high {
            return Err(ControlError::PastTheEnd {
                partition: self.partition,
                offset,
                low,
                high,
            });
        }
        let offset = offset.max(low);
        self.consumer
            .seek(
                &self.topic,
                self.partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
            .map_err(|e| ControlError::Seek(e.to_string()))?;
        tracing::info!(partition = self.partition, offset, "seek by an operator");
        self.stop_stages();
        self.tracker = OffsetTracker::resumed_at(offset);
        self.stored.set(None);
        self.store();
        // Commit the new position now (the stored offset only moves once a record finishes, and
        // offset 0 cannot be stored at all), so a crash right after the seek resumes from it.
        let mut tpl = TopicPartitionList::new();
        let committed = tpl
            .add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))
            .and_then(|()| self.consumer.commit(&tpl, CommitMode::Async));
        if let Err(e) = committed {
            tracing::warn!(partition = self.partition, offset, error = %e, "commit after seek failed");
        }
        self.start_generation(ctx);
        Ok(())
    }

    /// Stops the current generation of stages; their in-flight records are dropped (work of an
    /// older generation is discarded when it comes back).
    fn stop_stages(&mut self) {
        self.generation += 1;
        self.stop.notify_one();
        for stage in self.stages.drain(..) {
            let _ = stage.try_send(StopStage);
        }
        self.lookup = None;
    }

    /// Starts a new generation of stages and reads from the tracker's position.
    fn start_generation(&mut self, ctx: &mut Context<Self>) {
        // A new generation reads alone: any read loop still running belongs to an older one.
        self.generation += 1;
        self.permits = Rc::new(Semaphore::new(self.deps.config.pipeline.max_in_flight));
        self.stop = Rc::new(Notify::new());
        self.problems.clear();
        if self.backpressure {
            self.backpressure = false;
            self.set_paused(self.operator_paused);
        }
        self.start_stages(ctx);
        self.state = PartitionState::Running;
        self.publish();
        self.read_next(ctx);
    }

    fn restart(&mut self, ctx: &mut Context<Self>) {
        // An operator's seek during the backoff already started a new generation: this restart
        // is void (running it would start a second read loop on the same partition queue).
        if self.stopping || self.state != PartitionState::Restarting {
            return;
        }
        // Rewind to the first record not finished: everything before it has its output or dead
        // letter; everything from it on is read again.
        if let Some(from) = self.tracker.committable() {
            if let Err(e) = self.consumer.seek(
                &self.topic,
                self.partition,
                Offset::Offset(from),
                Duration::from_secs(10),
            ) {
                tracing::error!(partition = self.partition, error = %e, "seek failed; retrying the restart");
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.restart(ctx));
                return;
            }
            self.tracker = OffsetTracker::resumed_at(from);
        }
        tracing::info!(
            partition = self.partition,
            generation = self.generation,
            "restarting stages"
        );
        self.start_generation(ctx);
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

impl Handler<Batch> for PartitionActor {
    type Result = ();

    /// Records whose output was acknowledged.
    fn handle(&mut self, msg: Batch, ctx: &mut Self::Context) {
        self.finish(msg.0.iter().map(|r| r.offset), ctx);
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

impl Handler<Control> for PartitionActor {
    type Result = Result<(), ControlError>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        if self.stopping {
            return Err(ControlError::Draining(self.partition));
        }
        match msg {
            Control::Pause => {
                tracing::info!(partition = self.partition, "paused by an operator");
                self.operator_paused = true;
                self.set_paused(true);
            }
            Control::Resume => {
                tracing::info!(partition = self.partition, "resumed by an operator");
                let was = std::mem::replace(&mut self.operator_paused, false);
                if was && !self.backpressure && self.state != PartitionState::Failed {
                    self.set_paused(false);
                }
            }
            Control::Seek(offset) => {
                if offset < 0 {
                    return Err(ControlError::BadOffset(offset));
                }
                if self.state == PartitionState::Failed {
                    return Err(ControlError::Failed(self.partition));
                }
                self.seek_to(offset, ctx)?;
            }
        }
        self.publish();
        Ok(())
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

impl Handler<ChildFailed> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: ChildFailed, ctx: &mut Self::Context) {
        self.child_failed(msg, ctx);
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
