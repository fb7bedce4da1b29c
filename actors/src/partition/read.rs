//! The partition's source: reads its queue in batches bounded by the in-flight permits, decodes
//! each record, dead-letters the invalid ones and hands the rest to the lookup stage.

use super::*;

impl PartitionActor {
    /// Reads the next batch: waits for room in flight and for a first record, then takes what
    /// else is already fetched, up to `pipeline.max_batch`.
    pub(super) fn read_next(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn ingest(
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
        let mut skipped = 0;
        for m in msgs {
            if self.tracker.already_done(m.offset()) {
                // Finished in a committed transaction before a restart (exactly-once mode).
                skipped += 1;
                continue;
            }
            self.tracker.read(m.offset());
            let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
            let mut input = Input {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                timestamp_ms: m.timestamp().to_millis(),
                replay_count: crate::dlq::headers::replay_count(&m),
                received: now,
                trace: crate::trace::start(
                    &self.deps.sampling,
                    &m,
                    &self.deps.config.kafka.group_id,
                ),
                payload,
                epoch: self.epoch,
            };
            if let Some(t) = input.trace.as_deref_mut() {
                t.enter_stage("receive", n);
            }
            match decode(&input.payload, &limits, now_utc) {
                Ok(event) => {
                    if let Some(t) = input.trace.as_deref_mut() {
                        t.end_stage(None);
                    }
                    valid.push(Record { input, data: event });
                }
                Err(reason) => {
                    let failure = Failure::new(ErrorKind::InvalidEvent, Stage::Decode, reason);
                    if let Some(t) = input.trace.as_deref_mut() {
                        t.end_stage(Some(&failure));
                    }
                    invalid.push((input, failure));
                }
            }
        }
        if skipped > 0 {
            self.permits.add_permits(skipped);
            self.store();
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
}
