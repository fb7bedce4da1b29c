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
//!   and waits, so a partition is released only with its offsets committed;
//! - a producer left unusable (fenced: the coordinator timed the transaction out during a broker
//!   outage, or a newer producer took the `transactional.id`) is replaced by a new one with the
//!   same `transactional.id`, whose initialisation aborts whatever the old one left open; this
//!   counts as an abort (new epoch, partitions rewind).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
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
    /// The producer of the open transaction: the writes go through it.
    pub producer: Producer,
}

/// Makes a new transactional producer (same configuration, same `transactional.id`).
pub type MakeProducer = Box<dyn Fn() -> Result<Producer, KafkaError> + Send + Sync>;

/// The longest offset metadata a commit carries (the broker's `offset.metadata.max.bytes` is
/// 4,096 by default): a partition whose frontier needs more (too many gaps between finished
/// records) holds the commit back until its gaps close, or until the broker aborts the
/// transaction at its timeout and the partitions rewind.
pub const MAX_METADATA: usize = 3_000;

/// How long the committer waits before trying again to replace an unusable producer or to
/// read the committed offsets of a rewind.
const BROKEN_PAUSE: Duration = Duration::from_secs(1);

/// How long a transactional call to the broker may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The transactional producer and the gate between writes and commits.
pub struct Transactions {
    producer: parking_lot::RwLock<Producer>,
    make: MakeProducer,
    /// The producer is unusable and could not be replaced yet: the next commit tries again.
    broken: AtomicBool,
    gate: Arc<RwLock<()>>,
    epoch: AtomicU64,
    /// A write inside the open transaction failed: it can only be aborted.
    poisoned: AtomicBool,
    /// Something was written since the last commit.
    dirty: AtomicBool,
    /// The offsets of the last commit: an interval with no write and no offset moved commits
    /// nothing.
    last: parking_lot::Mutex<Vec<(String, i32, i64, String)>>,
    /// The input partitions the open transaction wrote for: it commits only with the offsets
    /// of each (which the broker checks against the group's generation), so writes for a
    /// partition this member no longer owns can never become visible.
    touched: parking_lot::Mutex<std::collections::BTreeSet<i32>>,
}

impl Transactions {
    /// Makes a producer with `make`, initialises its transactions (fencing an earlier producer
    /// with the same `transactional.id`) and opens the first transaction. Blocks for up to
    /// [`CALL_TIMEOUT`]. `make` is called again whenever the producer must be replaced.
    pub fn start(make: MakeProducer) -> Result<Arc<Self>, KafkaError> {
        let producer = ready(&make)?;
        Ok(Arc::new(Transactions {
            producer: parking_lot::RwLock::new(producer),
            make,
            broken: AtomicBool::new(false),
            gate: Arc::new(RwLock::new(())),
            epoch: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            last: parking_lot::Mutex::new(Vec::new()),
            touched: parking_lot::Mutex::new(std::collections::BTreeSet::new()),
        }))
    }

    /// The transactional producer of the open transaction.
    pub fn producer(&self) -> Producer {
        self.producer.read().clone()
    }

    /// The current epoch: records read from now on are stamped with it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A share of the open transaction, to write for records of input `partition` that were
    /// read in the epochs `read_in`: only those read in the open transaction's epoch may be
    /// written (the others' partition reads them again). None while the open transaction is
    /// doomed, or when no record belongs to it.
    pub async fn admit(
        &self,
        partition: i32,
        mut read_in: impl Iterator<Item = u64>,
    ) -> Option<Admission> {
        let permit = self.gate.clone().read_owned().await;
        let epoch = self.epoch();
        if self.poisoned.load(Ordering::Acquire) || !read_in.any(|e| e == epoch) {
            return None;
        }
        self.dirty.store(true, Ordering::Release);
        self.touched.lock().insert(partition);
        Some(Admission {
            permit: Arc::new(permit),
            epoch,
            producer: self.producer(),
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
        let asked = std::time::Instant::now();
        let _all = self.gate.blocking_write();
        let waited = asked.elapsed();
        if self.broken.load(Ordering::Acquire) {
            return self.renew("the producer is still unusable".into());
        }
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
        let unaccounted: Vec<i32> = self
            .touched
            .lock()
            .iter()
            .filter(|p| !snapshot.iter().any(|e| e.1 == **p && e.2 >= 0))
            .copied()
            .collect();
        if !unaccounted.is_empty() {
            // Written for, but no longer hosted (lost or released without its offsets): only
            // an abort keeps those writes from becoming visible.
            return self.abort(format!(
                "the transaction wrote for partitions {unaccounted:?} it no longer holds offsets of"
            ));
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
        let producer = self.producer();
        let started = std::time::Instant::now();
        let sent = match (offsets.count(), group) {
            (0, _) => Ok(()),
            (_, Some(group)) => producer.send_offsets_to_transaction(offsets, group, CALL_TIMEOUT),
            (_, None) => return self.abort("the consumer has no group metadata".into()),
        };
        let committed = sent.and_then(|()| producer.commit_transaction(CALL_TIMEOUT));
        tracing::debug!(
            gate_ms = waited.as_secs_f64() * 1e3,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            ok = committed.is_ok(),
            "transaction commit"
        );
        match committed {
            Ok(()) => match producer.begin_transaction() {
                Ok(()) => {
                    self.dirty.store(false, Ordering::Release);
                    self.touched.lock().clear();
                    *self.last.lock() = snapshot;
                    Outcome::Committed
                }
                Err(e) => self.renew(format!("cannot begin a transaction: {e}")),
            },
            Err(e) if is_fatal(&e) => self.renew(format!("the commit failed: {e}")),
            Err(e) => self.abort(e.to_string()),
        }
    }

    /// Aborts the open transaction once no write is under way (partitions are released while
    /// the last abort's rewind is still due). Blocks; call it from the committer's thread only.
    pub fn abandon(&self, reason: &str) -> Outcome {
        let _all = self.gate.blocking_write();
        match self.broken.load(Ordering::Acquire) {
            true => self.renew(reason.into()),
            false => self.abort(reason.into()),
        }
    }

    /// Aborts the open transaction, starts a new epoch and opens the next transaction.
    fn abort(&self, reason: String) -> Outcome {
        tracing::warn!(%reason, "aborting the transaction; partitions rewind to their commits");
        let producer = self.producer();
        if let Err(e) = producer.abort_transaction(CALL_TIMEOUT) {
            if is_fatal(&e) {
                return self.renew(format!("{reason}; then the abort failed: {e}"));
            }
            tracing::warn!(error = %e, "abort failed; trying to go on");
        }
        if let Err(e) = producer.begin_transaction() {
            return self.renew(format!("{reason}; then a transaction could not begin: {e}"));
        }
        Outcome::Aborted {
            epoch: self.next_epoch(),
            reason,
        }
    }

    /// The producer is unusable: replaces it with a new one with the same `transactional.id`
    /// (its initialisation aborts what the old one left open, and fences it). Until that
    /// succeeds nothing is admitted and every commit tries again.
    fn renew(&self, reason: String) -> Outcome {
        tracing::warn!(%reason, "the transactional producer is unusable; replacing it");
        self.broken.store(true, Ordering::Release);
        self.poisoned.store(true, Ordering::Release);
        match ready(&self.make) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *self.producer.write(), fresh);
                drop(old);
                self.broken.store(false, Ordering::Release);
                tracing::info!("transactional producer replaced");
                Outcome::Aborted {
                    epoch: self.next_epoch(),
                    reason,
                }
            }
            Err(e) => Outcome::Broken(format!("{reason}; a new producer is not ready: {e}")),
        }
    }

    /// After an abort: a new epoch begins, with an empty open transaction.
    fn next_epoch(&self) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.poisoned.store(false, Ordering::Release);
        self.dirty.store(false, Ordering::Release);
        self.touched.lock().clear();
        epoch
    }
}

/// A producer from `make` with its transactions initialised and the first one open.
fn ready(make: &MakeProducer) -> Result<Producer, KafkaError> {
    let producer = make()?;
    producer.init_transactions(CALL_TIMEOUT)?;
    producer.begin_transaction()?;
    Ok(producer)
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
    /// The producer is unusable and no new one is ready yet (the broker is unreachable):
    /// nothing is admitted; the committer tries again after a pause.
    Broken(String),
}

/// Whether a transactional error leaves the producer unusable (fenced, or a fatal librdkafka
/// error): only a new producer can go on.
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
    /// False when the committed offsets could not be read (the broker is away): nothing may be
    /// committed until a later call succeeds.
    fn rewind(&self, epoch: u64) -> bool;
}

/// A request to the committer thread.
enum Request {
    /// Commit now (partitions are being released) and say how it went.
    Now(std::sync::mpsc::Sender<Outcome>),
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
            .spawn(move || {
                // An abort whose rewind could not be done yet: the hosted frontiers still hold
                // aborted work, so nothing is committed until it is.
                let mut rewind_due = false;
                let mut pause = interval;
                loop {
                    let (reply, settle, stop) = match rx.recv_timeout(pause) {
                        Ok(Request::Now(reply)) => (Some(reply), Settle::Now, false),
                        Ok(Request::Stop(reply)) => (Some(reply), Settle::Now, true),
                        Ok(Request::Abort(reply)) => (Some(reply), Settle::Abort, false),
                        Err(RecvTimeoutError::Timeout) => (None, Settle::Tick, false),
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    if rewind_due {
                        rewind_due = !host.rewind(txn.epoch());
                    }
                    let outcome = match (rewind_due, settle) {
                        (false, _) => txn.commit(
                            || host.finished_offsets(),
                            host.group_metadata().as_ref(),
                            settle,
                        ),
                        (true, Settle::Tick) => Outcome::Held,
                        (true, _) => txn.abandon("partitions are released before their rewind"),
                    };
                    pause = interval;
                    match &outcome {
                        Outcome::Aborted { epoch, .. } => rewind_due = !host.rewind(*epoch),
                        Outcome::Broken(reason) => {
                            tracing::warn!(%reason, "no usable transactional producer; retrying");
                            pause = interval.max(BROKEN_PAUSE);
                        }
                        Outcome::Idle | Outcome::Held | Outcome::Committed => {}
                    }
                    if rewind_due {
                        pause = interval.max(BROKEN_PAUSE);
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(outcome);
                    }
                    if stop {
                        break;
                    }
                }
            })?;
        Ok(Committer { tx })
    }

    /// Commits at once; blocks until done (None: the committer is gone).
    pub fn commit_now(&self) -> Option<Outcome> {
        let (reply, rx) = std::sync::mpsc::channel();
        self.tx.send(Request::Now(reply)).ok()?;
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
