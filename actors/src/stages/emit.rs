//! The emit stage: writes each prediction to the output topic (same key as the input) and forwards
//! the record to its partition once the broker acknowledged it. Output headers carry the source
//! coordinates (`clickpipe.source.topic/partition/offset/timestamp`) for lineage and latency.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::FutureExt;

use crate::error::{ErrorKind, Failure, Stage};
use crate::kafka::produce::{deliver_with, is_record_error, Persistence, Producer};
use crate::kafka::transaction::Transactions;
use crate::record::{Emitted, Record, Scored};
use crate::stage::{Outcome, Outcomes, StageLogic};
use crate::stats::Stats;

/// The emit stage.
pub struct Emit {
    producer: Producer,
    topic: Arc<str>,
    stats: Arc<Stats>,
    txn: Option<Arc<Transactions>>,
}

impl Emit {
    /// An emit stage writing to `topic` (inside `txn`'s transactions in exactly-once mode).
    pub fn new(
        producer: Producer,
        topic: &str,
        stats: Arc<Stats>,
        txn: Option<Arc<Transactions>>,
    ) -> Self {
        Emit {
            producer,
            topic: topic.into(),
            stats,
            txn,
        }
    }
}

impl StageLogic for Emit {
    type In = Scored;
    type Out = Emitted;

    const STAGE: Stage = Stage::Emit;

    fn process(&mut self, batch: Vec<Record<Scored>>) -> Outcomes<Emitted> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let stats = self.stats.clone();
        let txn = self.txn.clone();
        async move {
            // Exactly-once: written inside the open transaction; records read before its last
            // abort are not written at all (their partition reads them again).
            let (permit, persistence, producer, batch) = match &txn {
                None => (None, Persistence::UntilAcknowledged, producer, batch),
                Some(txn) => {
                    let partition = batch.first().map_or(0, |r| r.input.partition);
                    match txn
                        .admit(partition, batch.iter().map(|r| r.input.epoch))
                        .await
                    {
                        None => return Vec::new(),
                        Some(a) => {
                            let batch: Vec<_> = batch
                                .into_iter()
                                .filter(|r| r.input.epoch == a.epoch)
                                .collect();
                            (Some(a.permit), Persistence::Once, a.producer, batch)
                        }
                    }
                }
            };
            // All records of the batch are queued in order before any acknowledgement is awaited.
            let sends = batch.iter().map(|r| {
                let producer = &producer;
                let topic = &topic;
                async move {
                    let input = &r.input;
                    if let Some(t) = input.trace.as_deref() {
                        t.note_send(topic);
                    }
                    let value = r.data.output_json().map_err(|e| {
                        SendError::Record(format!("cannot encode the output record: {e}"))
                    })?;
                    deliver_with(
                        producer,
                        topic,
                        input.key.as_deref(),
                        &value,
                        crate::dlq::headers::source(input, 0),
                        persistence,
                    )
                    .await
                    .map_err(|e| match is_record_error(&e) {
                        true => SendError::Record(format!("output record rejected: {e}")),
                        false => SendError::Transaction(e),
                    })
                }
            });
            let results = futures::future::join_all(sends).await;
            let now_ms = chrono::Utc::now().timestamp_millis();
            batch
                .into_iter()
                .zip(results)
                .filter_map(|(r, res)| match res {
                    // Only inside a transaction: the transaction is doomed, the record is read
                    // again after its abort.
                    Err(SendError::Transaction(e)) => {
                        if let Some(txn) = &txn {
                            txn.poison(&e);
                        }
                        None
                    }
                    Err(SendError::Record(message)) => Some((r, Err(message))),
                    Ok(()) => Some((r, Ok(()))),
                })
                .map(|(r, res)| match res {
                    Ok(()) => {
                        stats.outputs.fetch_add(1, Ordering::Relaxed);
                        stats
                            .processing
                            .observe_duration(r.input.received.elapsed());
                        if let Some(ts) = r.input.timestamp_ms {
                            // Clocks of producer and clickpipe may differ: never negative.
                            stats
                                .end_to_end
                                .observe((now_ms - ts).max(0) as f64 / 1000.0);
                        }
                        Outcome::Forward(r.advance(Emitted(permit.clone())))
                    }
                    Err(message) => Outcome::Fail(
                        r.input,
                        Failure::new(ErrorKind::OutputFailed, Stage::Emit, message),
                    ),
                })
                .collect()
        }
        .boxed_local()
    }
}

/// Why an output was not written.
enum SendError {
    /// About the record (too large, cannot be encoded): it is dead-lettered.
    Record(String),
    /// Inside a transaction, any other failure: the transaction is aborted.
    Transaction(rdkafka::error::KafkaError),
}
