//! Pausing, resuming and seeking a partition: an operator's commands (admin API), backpressure at
//! the in-flight high watermark, and the consumer calls behind them.

use super::*;

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
    Seek(#[source] rdkafka::error::KafkaError),
    /// The partition's watermarks, which bound the seek, could not be read.
    #[error("seek failed: cannot read the partition's watermarks: {0}")]
    Watermarks(#[source] rdkafka::error::KafkaError),
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

impl PartitionActor {
    /// An operator's seek: stops the stages (their in-flight records are dropped, as in a
    /// restart), repositions the consumer, stores the new position for the next commit, and
    /// starts the stages again.
    ///
    /// The offset is checked against the partition's watermarks: one past the end is refused
    /// (librdkafka would reset it to the beginning and commit it); one below the earliest record
    /// the broker still holds goes to that record.
    pub(super) fn seek_to(
        &mut self,
        offset: i64,
        ctx: &mut Context<Self>,
    ) -> Result<(), ControlError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, self.partition, Duration::from_secs(5))
            .map_err(ControlError::Watermarks)?;
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
            .map_err(ControlError::Seek)?;
        tracing::info!(partition = self.partition, offset, "seek by an operator");
        self.stop_stages();
        self.tracker = OffsetTracker::resumed_at(offset);
        self.stored.set(None);
        self.store();
        if self.transactional() {
            // Committed with the group's next transaction.
            self.start_generation(ctx);
            return Ok(());
        }
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

    /// Pauses the partition at the consumer when in-flight records reach the high watermark and
    /// resumes it at the low one. Between the two nothing changes, so a partition near its bound
    /// does not flip on every record (each pause makes librdkafka drop what it prefetched).
    pub(super) fn apply_backpressure(&mut self) {
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
    pub(super) fn restart_fetch(&self) {
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
    pub(super) fn set_paused(&self, paused: bool) {
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
