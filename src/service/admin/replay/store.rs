//! Where the memory lives: loading what earlier jobs replayed from the replay group and
//! committing what this job handled there (merged with what is committed now).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
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
    /// now), trying `attempts` times.
    pub(super) fn commit(&mut self, plan: &mut Plan<'_>, attempts: u32) -> Result<(), String> {
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
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| format!("commit to group {}: {e}", self.group))?;
        for (p, handled) in merged {
            // What this job committed is the memory from now on, stale or not.
            self.stale.remove(&p);
            plan.stored.insert(p, handled);
        }
        plan.dirty = false;
        Ok(())
    }
}
