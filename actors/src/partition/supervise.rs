//! One-for-all supervision of a partition's stages: a stage's failure stops them all, and after a
//! backoff a new generation starts from the first unfinished offset (or the partition gives up
//! once its restart intensity is exceeded). An operator's seek starts a new generation too.

use super::*;

impl PartitionActor {
    /// One-for-all: a stage failed, so every stage of this partition is stopped, in-flight records
    /// are dropped, and after a backoff the stages start again from the first unfinished offset.
    pub(super) fn child_failed(&mut self, msg: ChildFailed, ctx: &mut Context<Self>) {
        if self.stopping || self.state == PartitionState::Failed {
            return;
        }
        if self.state == PartitionState::Restarting {
            return; // the other stages' failures are part of the same restart
        }
        let reason = format!("stage {} failed: {}", msg.child, msg.reason);
        self.stop_stages();
        if let Some(txn) = &self.deps.txn {
            // Writes of the dropped records may already be in the open transaction.
            txn.doom(&reason);
        }
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
            sv.backoff_initial_ms.get(),
            sv.backoff_max_ms.get(),
        );
        tracing::warn!(partition = self.partition, %reason, ?wait, "restarting the partition's stages");
        ctx.run_later(wait, |act, ctx| act.restart(ctx));
    }

    /// Stops the current generation of stages; their in-flight records are dropped (work of an
    /// older generation is discarded when it comes back).
    pub(super) fn stop_stages(&mut self) {
        self.generation += 1;
        self.stop.notify_one();
        for stage in self.stages.drain(..) {
            let _ = stage.try_send(StopStage);
        }
        self.lookup = None;
    }

    /// Starts a new generation of stages and reads from the tracker's position.
    pub(super) fn start_generation(&mut self, ctx: &mut Context<Self>) {
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

    pub(super) fn restart(&mut self, ctx: &mut Context<Self>) {
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

impl Handler<ChildFailed> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: ChildFailed, ctx: &mut Self::Context) {
        self.child_failed(msg, ctx);
    }
}
