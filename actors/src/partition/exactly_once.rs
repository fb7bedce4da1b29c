//! A partition in exactly-once mode: instead of storing offsets for librdkafka to commit, it
//! publishes its [`Frontier`] for the group's next transaction, skips offsets a committed
//! transaction already finished, and rewinds to its committed frontier when a transaction aborts.

use super::*;
use tracker::Frontier;

/// The frontier a partition publishes for the next transaction, shared with its group. Before the
/// partition finished anything it holds the committed frontier it resumed from.
pub type SharedFrontier = Arc<parking_lot::Mutex<Option<Frontier>>>;

/// After an aborted transaction: go back to the committed frontier and read in `epoch`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rewind {
    /// The epoch of the new transaction.
    pub epoch: u64,
    /// The committed frontier (None: nothing committed; read from the group's reset position).
    pub to: Option<Frontier>,
}

impl PartitionActor {
    /// Whether this partition runs in exactly-once mode.
    pub(super) fn transactional(&self) -> bool {
        self.deps.txn.is_some()
    }

    /// Publishes the frontier for the group's next transaction (exactly-once mode).
    pub(super) fn publish_frontier(&mut self) {
        let Some(frontier) = self.tracker.frontier() else {
            return;
        };
        let mut shared = self.frontier.lock();
        // After an abort and until this partition has rewound, what it tracks includes work of
        // the aborted transaction: the committer holds the committed frontier meanwhile.
        if self
            .deps
            .txn
            .as_ref()
            .is_some_and(|t| t.epoch() != self.epoch)
        {
            return;
        }
        self.stored.set(Some(frontier.next));
        *shared = Some(frontier);
    }
}

impl Handler<Rewind> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Rewind, ctx: &mut Self::Context) {
        self.epoch = msg.epoch;
        if self.stopping {
            // Draining: its in-flight records belong to the aborted transaction and will never
            // finish; the next owner reads them from the committed frontier.
            *self.frontier.lock() = msg.to;
            self.complete_drain(ctx);
            return;
        }
        if self.state == PartitionState::Failed {
            return;
        }
        let (offset, tracker) = match &msg.to {
            Some(f) => (
                Offset::Offset(f.next),
                OffsetTracker::resumed_at(f.next).skipping(f.done.clone()),
            ),
            None => (Offset::Beginning, OffsetTracker::default()),
        };
        if let Err(e) =
            self.consumer
                .seek(&self.topic, self.partition, offset, Duration::from_secs(10))
        {
            // The partition cannot go back: its records would be written twice or not at all.
            tracing::error!(partition = self.partition, error = %e, "rewind failed");
            self.root.do_send(PartitionRestarted {
                partition: self.partition,
                gave_up: true,
                reason: format!("rewind after an aborted transaction failed: {e}"),
            });
            self.state = PartitionState::Failed;
            self.failure = Some(format!("rewind failed: {e}"));
            self.set_paused(true);
            self.stop_stages();
            self.publish();
            return;
        }
        tracing::info!(
            partition = self.partition,
            ?offset,
            epoch = msg.epoch,
            "rewound after an aborted transaction"
        );
        self.stop_stages();
        self.tracker = tracker;
        *self.frontier.lock() = msg.to;
        self.start_generation(ctx);
    }
}
