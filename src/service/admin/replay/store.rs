//! Where the memory lives: loading what earlier jobs replayed from the replay group and
//! committing what this job handled there (merged with what is committed now).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::memory::{Handled, MAX_METADATA};
use super::plan::Plan;
use super::run::Replay;

impl Replay<'_> {
    /// What earlier jobs handled, per partition of `ends` (their end as of now).
    pub(super) fn load(
        &mut self,
        ends: &HashMap<i32, i64>,
    ) -> Result<HashMap<i32, Handled>, String> {
        let current = self.fetch_committed(ends.keys().copied())?;
        let mut stored = HashMap::new();
        for (p, handled) in current {
            let end = ends.get(&p).copied().unwrap_or(0);
            if handled.top() > end {
                // Beyond the end of the partition: the topic was re-created since.
                tracing::warn!(
                    group = %self.group, partition = p, end, top = handled.top(),
                    "replay memory is past the end of the dead-letter partition; ignoring it"
                );
                self.stale.insert(p);
                continue;
            }
            stored.insert(p, handled);
        }
        Ok(stored)
    }

    /// The committed memory of `partitions` (a partition with nothing committed is absent).
    fn fetch_committed(
        &self,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<HashMap<i32, Handled>, String> {
        let topic = &self.config.kafka.dlq_topic;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, self.job.request_timeout())
            .map_err(|e| {
                format!(
                    "cannot read what earlier jobs replayed (group {}): {e}",
                    self.group
                )
            })?;
        let mut out = HashMap::new();
        for e in committed.elements() {
            if let Err(err) = e.error() {
                return Err(format!(
                    "cannot read what earlier jobs replayed on {topic} [{}] (group {}): {err}",
                    e.partition(),
                    self.group
                ));
            }
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), Handled::decode(o, e.metadata()));
            }
        }
        Ok(out)
    }

    /// Records what the job handled in the replay group (merged with what is committed there
    /// now), trying `attempts` times. Exactly-once mode: with the re-publications since the
    /// last commit, in one transaction (tried once: an abort withdraws them, for a later job).
    pub(super) fn commit(&mut self, plan: &mut Plan<'_>, attempts: u32) -> Result<(), String> {
        if self.txn.is_some() {
            return self.commit_transaction(plan);
        }
        if plan.filter.dry_run || !plan.dirty {
            return Ok(());
        }
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            match self.try_commit(plan) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_commit(&mut self, plan: &mut Plan<'_>) -> Result<(), String> {
        let (tpl, merged) = self.memory(plan)?;
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| format!("commit to group {}: {e}", self.group))?;
        self.remember(plan, merged);
        Ok(())
    }

    /// Exactly-once mode: waits for the re-publications sent, then commits them with the
    /// memory in the open transaction and opens the next; aborts what cannot be committed.
    fn commit_transaction(&mut self, plan: &mut Plan<'_>) -> Result<(), String> {
        let Some(producer) = self.producer.clone() else {
            return Ok(());
        };
        let until = std::time::Instant::now() + self.job.request_timeout();
        while !self.pending.is_empty() && std::time::Instant::now() < until {
            self.reap(plan);
            std::thread::sleep(Duration::from_millis(10));
        }
        let failed = self.txn.as_mut().and_then(|t| t.failed.take());
        if failed.is_none() && self.pending.is_empty() && !plan.dirty {
            return Ok(());
        }
        let committed = match (failed, self.pending.is_empty()) {
            (Some(e), _) => Err(e),
            (None, false) => Err("re-publications unanswered by the broker".into()),
            (None, true) => self.memory(plan).and_then(|(tpl, merged)| {
                let group = self
                    .consumer
                    .group_metadata()
                    .ok_or("the replay consumer has no group metadata")?;
                let timeout = self.job.request_timeout();
                producer
                    .send_offsets_to_transaction(&tpl, &group, timeout)
                    .and_then(|()| producer.commit_transaction(timeout))
                    .map_err(|e| format!("transaction commit to group {}: {e}", self.group))?;
                Ok(merged)
            }),
        };
        match committed {
            Ok(merged) => {
                self.remember(plan, merged);
                if let Some(t) = self.txn.as_mut() {
                    t.marks = plan.marks.clone();
                    t.replayed = self.job.replayed.load(Ordering::Relaxed);
                }
                producer
                    .begin_transaction()
                    .map_err(|e| format!("cannot begin a transaction: {e}"))
            }
            Err(reason) => Err(self.abort_transaction(plan, &producer, reason)),
        }
    }

    /// Exactly-once mode: aborts the open transaction; what it re-published is withdrawn and
    /// left for a later job. Returns the error to report.
    fn abort_transaction(
        &mut self,
        plan: &mut Plan<'_>,
        producer: &clickpipe_actors::kafka::produce::Producer,
        reason: String,
    ) -> String {
        let timeout = self.job.request_timeout();
        let reopened = producer
            .abort_transaction(timeout)
            .and_then(|()| producer.begin_transaction());
        let Some(txn) = self.txn.as_mut() else {
            return reason;
        };
        plan.marks = txn.marks.clone();
        plan.dirty = false;
        let replayed = self.job.replayed.load(Ordering::Relaxed);
        let withdrawn = replayed.saturating_sub(txn.replayed) + self.pending.len() as u64;
        self.job.replayed.store(txn.replayed, Ordering::Relaxed);
        self.pending.clear();
        self.withdrawn.unsent += withdrawn;
        let mut message = format!(
            "transaction aborted ({reason}): {withdrawn} re-publications withdrawn, left for the              next job"
        );
        if let Err(e) = reopened {
            // The producer cannot go on: every later commit of this job fails the same way.
            txn.failed = Some(format!("the replay producer is unusable: {e}"));
            message.push_str(&format!("; the replay producer is unusable: {e}"));
        }
        message
    }

    /// What to commit to the replay group: this job's marks merged with what is committed
    /// there now, per partition.
    fn memory(
        &mut self,
        plan: &Plan<'_>,
    ) -> Result<(TopicPartitionList, HashMap<i32, Handled>), String> {
        let topic = &self.config.kafka.dlq_topic;
        let mut partitions: Vec<i32> = plan
            .marks
            .keys()
            .chain(plan.stored.keys())
            .copied()
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let current = self.fetch_committed(partitions.iter().copied())?;
        let mut tpl = TopicPartitionList::new();
        let mut merged = HashMap::new();
        for p in partitions {
            let base = if self.stale.contains(&p) {
                // What is committed predates the topic: only this job's marks count.
                plan.stored.get(&p).cloned().unwrap_or_default()
            } else {
                current.get(&p).cloned().unwrap_or_default()
            };
            let low = self.lows.get(&p).copied().unwrap_or(0);
            let mut handled = plan.merged(p, &base, low);
            let closed = handled.compact(MAX_METADATA);
            if closed > 0 {
                tracing::warn!(
                    partition = p, closed,
                    "replay memory too large: gaps between replayed ranges closed (\"from\": \"beginning\" reaches them)"
                );
            }
            let mut elem = tpl.add_partition(topic, p);
            elem.set_offset(Offset::Offset(handled.base))
                .map_err(|e| format!("{topic} [{p}]: {e}"))?;
            elem.set_metadata(handled.encode());
            merged.insert(p, handled);
        }
        Ok((tpl, merged))
    }

    /// After a commit: `merged` is the memory from now on.
    fn remember(&mut self, plan: &mut Plan<'_>, merged: HashMap<i32, Handled>) {
        for (p, handled) in merged {
            // What this job committed is the memory from now on, stale or not.
            self.stale.remove(&p);
            plan.stored.insert(p, handled);
        }
        plan.dirty = false;
    }
}
