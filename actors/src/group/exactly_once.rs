//! The group's side of exactly-once mode: it starts the transaction committer, hands it the
//! frontiers of its partitions and the consumer's group metadata, resumes newly assigned
//! partitions from their committed frontiers, commits revoked partitions before they are
//! released, and rewinds every partition after an aborted transaction.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::{Offset, TopicPartitionList};

use super::{GroupShared, Hosted, TopicPartition};
use crate::kafka::consumer::GroupConsumer;
use crate::kafka::transaction::{Committer, Outcome, TransactionHost};
use crate::partition::tracker::Frontier;
use crate::partition::{DrainReport, Rewind};

/// The committer's view of the group; weak, so the committer's thread does not keep the group
/// alive.
struct Host(Weak<GroupShared>);

impl TransactionHost for Host {
    fn finished_offsets(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let Some(group) = self.0.upgrade() else {
            return tpl;
        };
        for ((topic, partition), hosted) in group.partitions.lock().iter() {
            if let Some(f) = hosted.progress.frontier.lock().as_ref() {
                add_frontier(&mut tpl, topic, *partition, f);
            }
        }
        tpl
    }

    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.0.upgrade()?.consumer()?.group_metadata()
    }

    fn rewind(&self, epoch: u64) -> bool {
        let Some(group) = self.0.upgrade() else {
            return true;
        };
        let Some(consumer) = group.consumer() else {
            return true;
        };
        let hosted: Vec<(TopicPartition, Hosted)> = group
            .partitions
            .lock()
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), _) in &hosted {
            tpl.add_partition(topic, *partition);
        }
        let mut committed = match group.read_frontiers(&consumer, &tpl) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the committed frontiers to rewind; retrying");
                return false;
            }
        };
        for (key, hosted) in hosted {
            let to = committed.remove(&key);
            // Until the partition has rewound, the next commits carry its committed frontier
            // (it publishes none of its own while its epoch is behind).
            *hosted.progress.frontier.lock() = to.clone();
            // A rare control message that must not be lost to a full mailbox.
            hosted.addr.do_send(Rewind { epoch, to });
        }
        true
    }
}

/// `tpl` with `frontier` for one partition: its next offset, its finished ranges as metadata.
fn add_frontier(tpl: &mut TopicPartitionList, topic: &str, partition: i32, frontier: &Frontier) {
    let mut elem = tpl.add_partition(topic, partition);
    if elem.set_offset(Offset::Offset(frontier.next)).is_ok() {
        elem.set_metadata(frontier.metadata());
    }
}

impl GroupShared {
    /// Exactly-once mode: starts the thread that commits the transactions.
    pub(super) fn start_committer(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(txn) = self.deps.txn.clone() else {
            return Ok(());
        };
        let host = Arc::new(Host(Arc::downgrade(self)));
        let interval = self.deps.config.kafka.transaction_interval_ms.get();
        let committer = Committer::start(txn, host, interval)?;
        let _ = self.committer.set(committer);
        Ok(())
    }

    /// Exactly-once mode: commits the open transaction, with the frontiers of the drained
    /// partitions (still hosted until released), before they are released; blocks until done.
    pub(super) fn commit_drained(&self, reports: &[DrainReport]) {
        let Some(committer) = self.committer.get() else {
            return;
        };
        if reports.is_empty() {
            return;
        }
        match committer.commit_now() {
            Some(Outcome::Committed | Outcome::Idle) => {
                tracing::info!(partitions = reports.len(), "drained partitions committed")
            }
            other => tracing::warn!(?other, "drained partitions not committed"),
        }
    }

    /// Exactly-once mode: partitions were lost to another member, so what the open transaction
    /// wrote for them must never become visible: it is aborted (the others rewind).
    pub(super) fn abort_lost(&self) {
        if let Some(committer) = self.committer.get() {
            let outcome = committer.abort();
            tracing::warn!(?outcome, "partitions lost: open transaction aborted");
        }
    }

    /// Exactly-once mode: commits what is open and stops the committer.
    pub(super) fn stop_committer(&self) {
        if let Some(committer) = self.committer.get() {
            let outcome = committer.stop();
            tracing::info!(?outcome, "transaction committer stopped");
        }
    }

    /// Exactly-once mode: the committed frontier of each partition of `tpl` (none for a
    /// partition never committed); when the broker cannot say, the process is told to stop.
    /// At-least-once mode: empty, without asking the broker.
    pub(super) fn committed_frontiers(
        &self,
        consumer: &GroupConsumer,
        tpl: &TopicPartitionList,
    ) -> HashMap<TopicPartition, Frontier> {
        if self.deps.txn.is_none() {
            return HashMap::new();
        }
        self.read_frontiers(consumer, tpl).unwrap_or_else(|e| {
            // Without them a partition would redo what a committed transaction finished
            // beyond its commit point: the process stops and its partitions move on.
            let reason = format!("cannot read the committed frontiers: {e}");
            tracing::error!("{reason}");
            self.fatal.send_replace(Some(reason));
            HashMap::new()
        })
    }

    /// The committed frontier of each partition of `tpl` (none for a partition never
    /// committed), as the broker says.
    fn read_frontiers(
        &self,
        consumer: &GroupConsumer,
        tpl: &TopicPartitionList,
    ) -> Result<HashMap<TopicPartition, Frontier>, rdkafka::error::KafkaError> {
        if tpl.count() == 0 {
            return Ok(HashMap::new());
        }
        let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((
                    (e.topic().to_string(), e.partition()),
                    Frontier {
                        next,
                        done: Frontier::parse_done(e.metadata()),
                    },
                )),
                _ => None,
            })
            .collect())
    }
}
