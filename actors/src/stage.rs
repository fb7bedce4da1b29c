//! The machinery every stage actor of a partition shares. A stage is plain logic (a
//! [`StageLogic`]: a batch in, one [`Outcome`] per record out); [`StageActor`] runs it as an actix
//! actor with a bounded mailbox, one batch in flight, natural batching (whatever queued up while
//! the previous batch was processed goes next, up to the stage's maximum), an optional wait for a
//! fuller batch, and forwarding with `send().await` so a slow next stage holds this one back.
//!
//! Order: a stage handles batches one at a time and forwards in order, so records leave a
//! partition in the order they entered it (per key, and overall).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt as _;
use tracing::Instrument as _;

use crate::dlq::{Completed, DeadLetter, DlqActor};
use crate::error::{Failure, Stage};
use crate::record::{Input, Record};
use crate::stats::Stats;
use crate::supervision::{panic_message, ChildFailed};

/// Records handed from one stage to the next, each as far as the sending stage took it.
pub struct Batch<T>(pub Vec<Record<T>>);

impl<T: 'static> Message for Batch<T> {
    type Result = ();
}

/// Asks a stage actor to stop (its partition is draining or stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopStage;

/// A stage tells its partition that a service it needs is unavailable (`Some(reason)`) or
/// available again (`None`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StageHealth {
    /// The stage.
    pub stage: Stage,
    /// What is wrong, or None once it is fine again.
    pub problem: Option<String>,
}

/// What a stage decided for one record.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Go on to the next stage, with what this stage added.
    Forward(Record<T>),
    /// Leave the pipeline for the dead-letter topic: the record as read, and why.
    Fail(Input, Failure),
}

/// What [`StageLogic::process`] returns: one outcome per record, in order, once the batch is done.
pub type Outcomes<T> = LocalBoxFuture<'static, Vec<Outcome<T>>>;

/// The logic of one stage.
pub trait StageLogic: Unpin + 'static {
    /// What the stage is handed: what the stage before it produced.
    type In: Send + Unpin + 'static;
    /// What the stage hands on.
    type Out: Send + 'static;
    /// Which stage this is (its name in logs, metrics and spans).
    const STAGE: Stage;
    /// Processes a batch. The future owns what it needs, so the actor stays free to queue input.
    fn process(&mut self, batch: Vec<Record<Self::In>>) -> Outcomes<Self::Out>;
    /// Called once when the actor starts, on its thread.
    fn started(&mut self) {}
}

/// How a stage actor batches its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Largest batch handed to [`StageLogic::process`].
    pub max: usize,
    /// How long a batch smaller than `max` may wait for more records (zero: go at once with
    /// whatever queued up).
    pub wait: Duration,
}

impl Batching {
    /// Batches of up to `max` records, never waiting for a fuller one.
    pub fn natural(max: usize) -> Self {
        Batching {
            max,
            wait: Duration::ZERO,
        }
    }
}

/// Where a stage sends its results (`T`: what it hands on).
pub struct Wiring<T: Send + 'static> {
    /// The next stage (or the partition, after the last stage).
    pub next: Recipient<Batch<T>>,
    /// The dead-letter actor.
    pub dlq: Addr<DlqActor>,
    /// The partition, told when a dead letter is acknowledged.
    pub done: Recipient<Completed>,
    /// The partition (the stage's supervisor), told when the stage fails.
    pub failed: Recipient<ChildFailed>,
    /// Where the stage's batch times are recorded.
    pub stats: Arc<Stats>,
    /// The partition's span: the stage's log lines carry its fields (topic, partition) and the
    /// stage's name.
    pub span: tracing::Span,
}

impl<T: Send + 'static> Clone for Wiring<T> {
    fn clone(&self) -> Self {
        Wiring {
            next: self.next.clone(),
            dlq: self.dlq.clone(),
            done: self.done.clone(),
            failed: self.failed.clone(),
            stats: self.stats.clone(),
            span: self.span.clone(),
        }
    }
}

/// An actor running a [`StageLogic`].
pub struct StageActor<S: StageLogic> {
    logic: S,
    batching: Batching,
    wiring: Wiring<S::Out>,
    mailbox: usize,
    queue: VecDeque<Record<S::In>>,
    busy: bool,
    first_queued: Option<Instant>,
    wait_timer: Option<SpawnHandle>,
    span: tracing::Span,
}

impl<S: StageLogic> StageActor<S> {
    /// A stage actor batching as `batching` says, with a mailbox of `mailbox` batches.
    pub fn new(logic: S, batching: Batching, wiring: Wiring<S::Out>, mailbox: usize) -> Self {
        StageActor {
            logic,
            batching,
            wiring,
            mailbox,
            queue: VecDeque::new(),
            busy: false,
            first_queued: None,
            wait_timer: None,
            span: tracing::Span::none(),
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.queue.is_empty() {
            return;
        }
        let wait = self.batching.wait;
        if self.queue.len() < self.batching.max && !wait.is_zero() {
            let waited = self.first_queued.map(|t| t.elapsed()).unwrap_or_default();
            if waited < wait {
                if self.wait_timer.is_none() {
                    self.wait_timer = Some(ctx.run_later(wait - waited, |act, ctx| {
                        act.wait_timer = None;
                        act.flush(ctx);
                    }));
                }
                return;
            }
        }
        self.flush(ctx);
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.queue.is_empty() {
            return;
        }
        if let Some(timer) = self.wait_timer.take() {
            ctx.cancel_future(timer);
        }
        let n = self.queue.len().min(self.batching.max);
        let mut batch: Vec<Record<S::In>> = self.queue.drain(..n).collect();
        self.count_queued(-(n as i64));
        self.first_queued = if self.queue.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        self.busy = true;
        let size = batch.len();
        let name = S::STAGE;
        for t in batch
            .iter_mut()
            .filter_map(|r| r.input.trace.as_deref_mut())
        {
            t.enter_stage(name.as_str(), size);
        }
        // A panic in the stage's logic is this actor's failure: report it to the partition (which
        // restarts its stages from the last committed offset) and take no more work.
        let entered = self.span.clone().entered();
        let work = match std::panic::catch_unwind(AssertUnwindSafe(|| self.logic.process(batch))) {
            Ok(work) => work,
            Err(payload) => {
                self.fail(panic_message(payload.as_ref()));
                return;
            }
        };
        drop(entered);
        let wiring = self.wiring.clone();
        let fut = async move {
            let started = Instant::now();
            let outcomes = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(outcomes) => outcomes,
                Err(payload) => return Err(panic_message(payload.as_ref())),
            };
            let took = started.elapsed();
            if let Some(h) = wiring.stats.stages.get(name) {
                h.observe_duration(took);
            }
            tracing::trace!(stage = name.as_str(), size, ?took, "batch processed");
            let mut forward = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                match outcome {
                    Outcome::Forward(mut r) => {
                        if let Some(t) = r.input.trace.as_deref_mut() {
                            t.end_stage(None);
                        }
                        forward.push(r)
                    }
                    Outcome::Fail(mut record, failure) => {
                        if let Some(t) = record.trace.as_deref_mut() {
                            t.end_stage(Some(&failure));
                        }
                        let letter = DeadLetter {
                            record,
                            failure,
                            done: wiring.done.clone(),
                        };
                        if wiring.dlq.send(letter).await.is_err() {
                            return Err("the dead-letter actor is gone".to_string());
                        }
                    }
                }
            }
            if !forward.is_empty() && wiring.next.send(Batch(forward)).await.is_err() {
                return Err("the next stage is gone".to_string());
            }
            Ok(())
        };
        ctx.spawn(
            fut.instrument(self.span.clone()).into_actor(self).map(
                |result, act, ctx| match result {
                    Ok(()) => {
                        act.busy = false;
                        act.kick(ctx);
                    }
                    Err(reason) => act.fail(reason),
                },
            ),
        );
    }

    /// Reports this stage's failure to its partition; the stage stays busy (takes no more work)
    /// until the partition stops it.
    fn fail(&mut self, reason: String) {
        let name = S::STAGE;
        tracing::error!(stage = name.as_str(), %reason, "stage failed");
        self.busy = true;
        // A failure report must not be lost to a full mailbox: it is rare and decides recovery.
        self.wiring.failed.do_send(ChildFailed {
            child: name,
            reason,
        });
    }
}

impl<S: StageLogic> StageActor<S> {
    /// Moves the stage's queue-depth gauge by `delta` records.
    fn count_queued(&self, delta: i64) {
        if let Some(g) = self.wiring.stats.queued.get(S::STAGE) {
            g.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl<S: StageLogic> Actor for StageActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
        self.span =
            tracing::info_span!(parent: &self.wiring.span, "stage", stage = S::STAGE.as_str());
        self.logic.started();
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Records still queued are dropped with the stage (a restart reads them again).
        self.count_queued(-(self.queue.len() as i64));
    }
}

impl<S: StageLogic> Handler<Batch<S::In>> for StageActor<S> {
    type Result = ();

    fn handle(&mut self, msg: Batch<S::In>, ctx: &mut Self::Context) {
        if self.queue.is_empty() {
            self.first_queued = Some(Instant::now());
        }
        self.count_queued(msg.0.len() as i64);
        self.queue.extend(msg.0);
        self.kick(ctx);
    }
}

impl<S: StageLogic> Handler<StopStage> for StageActor<S> {
    type Result = ();

    fn handle(&mut self, _: StopStage, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;

    use futures::FutureExt;
    use rdkafka::ClientConfig;

    use crate::stats::Stats;

    /// Records the size of each batch it is given; forwards everything.
    struct Recorder {
        sizes: Rc<RefCell<Vec<usize>>>,
    }

    impl StageLogic for Recorder {
        type In = ();
        type Out = ();
        const STAGE: Stage = Stage::Enrich;
        fn process(&mut self, batch: Vec<Record<()>>) -> Outcomes<()> {
            self.sizes.borrow_mut().push(batch.len());
            FutureExt::boxed_local(futures::future::ready(
                batch.into_iter().map(Outcome::Forward).collect(),
            ))
        }
    }

    struct Sink(Rc<RefCell<Vec<i64>>>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Batch<()>> for Sink {
        type Result = ();
        fn handle(&mut self, msg: Batch<()>, _: &mut Context<Self>) {
            self.0
                .borrow_mut()
                .extend(msg.0.iter().map(|r| r.input.offset));
        }
    }
    impl Handler<Completed> for Sink {
        type Result = ();
        fn handle(&mut self, _: Completed, _: &mut Context<Self>) {}
    }
    impl Handler<ChildFailed> for Sink {
        type Result = ();
        fn handle(&mut self, _: ChildFailed, _: &mut Context<Self>) {}
    }

    fn record(offset: i64) -> Record<()> {
        Record {
            input: Input {
                topic: "t".into(),
                partition: 0,
                offset,
                key: None,
                payload: Vec::new(),
                timestamp_ms: None,
                replay_count: 0,
                received: Instant::now(),
                trace: None,
                epoch: 0,
            },
            data: (),
        }
    }

    /// Sends `batches` one at a time; returns the sizes the stage saw and the offsets forwarded.
    async fn run(
        max_batch: usize,
        max_wait: Duration,
        batches: Vec<Vec<i64>>,
    ) -> (Vec<usize>, Vec<i64>) {
        let sizes = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink = Sink(seen.clone()).start();
        let producer = crate::kafka::produce::create_producer(
            ClientConfig::new().set("bootstrap.servers", "127.0.0.1:1"),
            crate::kafka::auth::AuthContext::default(),
        )
        .expect("producer (no connection is made)");
        let stats = Arc::new(Stats::default());
        let dlq = DlqActor::new(producer, "dlq", stats.clone(), 4).start();
        let wiring = Wiring {
            next: sink.clone().recipient(),
            dlq,
            done: sink.clone().recipient(),
            failed: sink.recipient(),
            stats,
            span: tracing::Span::none(),
        };
        let logic = Recorder {
            sizes: sizes.clone(),
        };
        let batching = Batching {
            max: max_batch,
            wait: max_wait,
        };
        let stage = StageActor::new(logic, batching, wiring, 4).start();
        for b in batches {
            stage
                .send(Batch(b.into_iter().map(record).collect()))
                .await
                .expect("send");
        }
        actix_rt::time::sleep(max_wait + Duration::from_millis(100)).await;
        let sizes = sizes.borrow().clone();
        let seen = seen.borrow().clone();
        (sizes, seen)
    }

    #[actix_rt::test]
    async fn splits_large_input_into_batches_of_at_most_max_batch_in_order() {
        let (sizes, seen) = run(4, Duration::ZERO, vec![(0..10).collect()]).await;
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[actix_rt::test]
    async fn waits_up_to_max_wait_to_fill_a_batch() {
        let (sizes, seen) = run(
            8,
            Duration::from_millis(50),
            vec![vec![0], vec![1], vec![2]],
        )
        .await;
        assert_eq!(
            sizes,
            vec![3],
            "three small inputs within max_wait make one batch"
        );
        assert_eq!(seen, vec![0, 1, 2]);
    }
}
