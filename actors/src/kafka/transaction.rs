//! Exactly-once delivery (`kafka.delivery = exactly_once`): outputs, dead letters and the finished
//! input offsets of each `kafka.transaction_interval_ms` go to Kafka in one transaction of this
//! instance's transactional producer, with the consumer group's metadata (KIP-447), so a member
//! fenced by a rebalance cannot commit what it wrote.
//!
//! How the pieces fit:
//! - every write (output or dead letter) first takes a [`Permit`], a read share of the gate, and
//!   holds it until its partition has counted the record finished; a commit takes the whole gate,
//!   so the offsets it sends are exactly those of the records whose writes are in the transaction;
//! - every input record carries the *epoch* its partition read it in. An abort (any failure of
//!   a write, of the offsets or of the commit) starts a new epoch and rewinds every partition to
//!   its last committed offset; a write of an older epoch is refused ([`Transactions::admit`]),
//!   so nothing read before an abort is written after it;
//! - the commits run on a thread of their own ([`Committer`]); a revoke asks it to commit at once
//!   and waits, so a partition is released only with its offsets committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::TopicPartitionList;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use super::produce::Producer;

/// A share of the open transaction: while any is held, no commit can start.
pub type Permit = Arc<OwnedRwLockReadGuard<()>>;

/// A share of the open transaction ([`Transactions::admit`]).
pub struct Admission {
    /// Held until the written records are counted finished by their partitions.
    pub permit: Permit,
    /// The epoch of the open transaction: only records read in it may be written.
    pub epoch: u64,
}

/// The longest offset metadata a commit carries (the broker's `offset.metadata.max.bytes` is
/// 4,096 by default): a partition whose frontier needs more (too many gaps between finished
/// records) holds the commit back until its gaps close, or until the broker aborts the
/// transaction at its timeout and the partitions rewind.
pub const MAX_METADATA: usize = 3_000;

/// How long a transactional call to the broker may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The transactional producer and the gate between writes and commits.
pub struct Transactions {
    producer: Producer,
    gate: Arc<RwLock<()>>,
    epoch: AtomicU64,
    /// A write inside the open transaction failed: it can only be aborted.
    poisoned: AtomicBool,
    /// Something was written since the last commit.
    dirty: AtomicBool,
    /// The offsets of the last commit: an interval with no write and no offset moved commits
    /// nothing.
    last: parking_lot::Mutex<Vec<(String, i32, i64, String)>>,
}

impl Transactions {
    /// Initialises `producer`'s transactions (fencing an earlier producer with the same
    /// `transactional.id`) and opens the first transaction. Blocks for up to [`CALL_TIMEOUT`].
    pub fn start(producer: Producer) -> Result<Arc<Self>, KafkaError> {
        producer.init_transactions(CALL_TIMEOUT)?;
        producer.begin_transaction()?;
        Ok(Arc::new(Transactions {
            producer,
            gate: Arc::new(RwLock::new(())),
            epoch: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            last: parking_lot::Mutex::new(Vec::new()),
        }))
    }

    /// The transactional producer.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The current epoch: records read from now on are stamped with it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A share of the open transaction, for records read in its epoch (those of an older one
    /// must not be written: their partition reads them again). None while the open transaction
    /// is doomed.
    pub async fn admit(&self) -> Option<Admission> {
        let permit = self.gate.clone().read_owned().await;
        if self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.dirty.store(true, Ordering::Release);
        Some(Admission {
            permit: Arc::new(permit),
            epoch: self.epoch(),
        })
    }

    /// A write inside the open transaction failed: the transaction can only be aborted (at the
    /// next commit), and its records are read again.
    pub fn poison(&self, error: &KafkaError) {
        self.doom(&format!("write failed inside the transaction: {error}"));
    }

    /// The open transaction may hold writes of records that will be processed again (a stage
    /// restart dropped them after their write was queued): it is aborted at the next commit,
    /// and every partition rewinds.
    pub fn doom(&self, reason: &str) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::warn!(%reason, "the open transaction will be aborted");
        }
    }

    /// Commits the open transaction with the offsets `offsets` gives once no write is under way
    /// (the next offset to read of each partition whose records it finished, with the finished
    /// offsets beyond it in the metadata) and opens the next one. On failure the transaction is
    /// aborted, a new epoch begins, and the caller must rewind every partition to its committed
    /// offset. `settle`: the transaction may not stay open (partitions are being released): what
    /// cannot be committed now is aborted. Blocks; call it from the committer's thread only.
    pub fn commit(
        &self,
        offsets: impl FnOnce() -> TopicPartitionList,
        group: Option<&ConsumerGroupMetadata>,
        settle: Settle,
    ) -> Outcome {
        let _all = self.gate.blocking_write();
        if self.poisoned.load(Ordering::Acquire) {
            return self.abort("a write failed inside the transaction".into());
        }
        if settle == Settle::Abort {
            return self.abort("partitions were lost to another member".into());
        }
        let offsets = &offsets();
        let snapshot: Vec<(String, i32, i64, String)> = offsets
            .elements()
            .iter()
            .map(|e| {
                let next = match e.offset() {
                    rdkafka::Offset::Offset(o) => o,
                    _ => -1,
                };
                (
                    e.topic().to_string(),
                    e.partition(),
                    next,
                    e.metadata().to_string(),
                )
            })
            .collect();
        if !self.dirty.load(Ordering::Acquire) && *self.last.lock() == snapshot {
            return Outcome::Idle;
        }
        if let Some((_, partition, _, _)) = snapshot.iter().find(|e| e.3.len() > MAX_METADATA) {
            if settle == Settle::Now {
                return self.abort(format!(
                    "partition {partition} has too many gaps to commit before it is released"
                ));
            }
            tracing::debug!(
                partition,
                "frontier too long to commit; holding the transaction"
            );
            return Outcome::Held;
        }
        let sent = match (offsets.count(), group) {
            (0, _) => Ok(()),
            (_, Some(group)) => {
                self.producer
                    .send_offsets_to_transaction(offsets, group, CALL_TIMEOUT)
            }
            (_, None) => return self.abort("the consumer has no group metadata".into()),
        };
        let committed = sent.and_then(|()| self.producer.commit_transaction(CALL_TIMEOUT));
        match committed {
            Ok(()) => match self.producer.begin_transaction() {
                Ok(()) => {
                    self.dirty.store(false, Ordering::Release);
                    *self.last.lock() = snapshot;
                    Outcome::Committed
                }
                Err(e) => Outcome::Fatal(format!("cannot begin a transaction: {e}")),
            },
            Err(e) if is_fatal(&e) => Outcome::Fatal(format!("transaction failed: {e}")),
            Err(e) => self.abort(e.to_string()),
        }
    }

    /// Aborts the open transaction, starts a new epoch and opens the next transaction.
    fn abort(&self, reason: String) -> Outcome {
        tracing::warn!(%reason, "aborting the transaction; partitions rewind to their commits");
        if let Err(e) = self.producer.abort_transaction(CALL_TIMEOUT) {
            if is_fatal(&e) {
                return Outcome::Fatal(format!("cannot abort the transaction: {e}"));
            }
            tracing::warn!(error = %e, "abort failed; trying to go on");
        }
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.poisoned.store(false, Ordering::Release);
        self.dirty.store(false, Ordering::Release);
        match self.producer.begin_transaction() {
            Ok(()) => Outcome::Aborted { epoch, reason },
            Err(e) => Outcome::Fatal(format!("cannot begin a transaction: {e}")),
        }
    }
}

/// How urgently the open transaction must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The interval's commit: a transaction that cannot be committed yet stays open.
    Tick,
    /// Partitions are being released: commit, or abort what cannot be committed.
    Now,
    /// Partitions were lost to another member: their writes must never become visible.
    Abort,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was written and no offset moved: the transaction stays open.
    Idle,
    /// A partition's frontier has too many gaps to commit yet: the transaction stays open.
    Held,
    /// Committed; the next transaction is open.
    Committed,
    /// Aborted: every partition must rewind to its committed offset and adopt `epoch`.
    Aborted {
        /// The new epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
    /// The producer cannot go on (fenced by a newer instance, or broken): the process must stop.
    Fatal(String),
}

/// Whether a transactional error leaves the producer unusable (fenced, or a fatal librdkafka
/// error): only a new process can go on.
fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(rd) => rd.is_fatal(),
        _ => false,
    }
}

/// What the committer needs from the consumer group.
pub trait TransactionHost: Send + Sync + 'static {
    /// The next offset to read of every hosted partition that finished something.
    fn finished_offsets(&self) -> TopicPartitionList;
    /// The consumer's group metadata (member, generation), for fencing.
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// After an abort: rewind every hosted partition to its committed offset, in `epoch`.
    fn rewind(&self, epoch: u64);
    /// The producer cannot go on: stop the process.
    fn fatal(&self, reason: String);
}

/// A request to the committer thread.
enum Request {
    /// Commit now, with these offsets besides the hosted partitions' (partitions just drained),
    /// and say how it went.
    Now(TopicPartitionList, std::sync::mpsc::Sender<Outcome>),
    /// Commit what is open and stop.
    Stop(std::sync::mpsc::Sender<Outcome>),
    /// Abort what is open (partitions were lost).
    Abort(std::sync::mpsc::Sender<Outcome>),
}

/// The thread that commits the open transaction every interval, or at once when asked.
pub struct Committer {
    tx: std::sync::mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer of `txn` for `host`, committing every `interval`.
    pub fn start(
        txn: Arc<Transactions>,
        host: Arc<dyn TransactionHost>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("clickpipe-txn".into())
            .spawn(move || loop {
                let none = TopicPartitionList::new;
                let (extra, reply, settle, stop) = match rx.recv_timeout(interval) {
                    Ok(Request::Now(extra, reply)) => (extra, Some(reply), Settle::Now, false),
                    Ok(Request::Stop(reply)) => (none(), Some(reply), Settle::Now, true),
                    Ok(Request::Abort(reply)) => (none(), Some(reply), Settle::Abort, false),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        (none(), None, Settle::Tick, false)
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let offsets = || {
                    let mut offsets = host.finished_offsets();
                    for e in extra.elements() {
                        let mut added = offsets.add_partition(e.topic(), e.partition());
                        if added.set_offset(e.offset()).is_ok() {
                            added.set_metadata(e.metadata());
                        }
                    }
                    offsets
                };
                let outcome = txn.commit(offsets, host.group_metadata().as_ref(), settle);
                match &outcome {
                    Outcome::Aborted { epoch, .. } => host.rewind(*epoch),
                    Outcome::Fatal(reason) => {
                        tracing::error!(%reason, "transactional producer failed");
                        host.fatal(reason.clone());
                    }
                    Outcome::Idle | Outcome::Held | Outcome::Committed => {}
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome.clone());
                }
                if stop || matches!(outcome, Outcome::Fatal(_)) {
                    break;
                }
            })?;
        Ok(Committer { tx })
    }

    /// Commits at once with `extra` offsets too; blocks until done (None: the committer is gone).
    pub fn commit_now(&self, extra: TopicPartitionList) -> Option<Outcome> {
        let (reply, rx) = std::sync::mpsc::channel();
        self.tx.send(Request::Now(extra, reply)).ok()?;
        rx.recv().ok()
    }

    /// Commits what is open and stops the thread; blocks until done.
    pub fn stop(&self) -> Option<Outcome> {
        let (reply, rx) = std::sync::mpsc::channel();
        self.tx.send(Request::Stop(reply)).ok()?;
        rx.recv().ok()
    }

    /// Aborts what is open (the hosted partitions rewind); blocks until done.
    pub fn abort(&self) -> Option<Outcome> {
        let (reply, rx) = std::sync::mpsc::channel();
        self.tx.send(Request::Abort(reply)).ok()?;
        rx.recv().ok()
    }
}
