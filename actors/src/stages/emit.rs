//! The emit stage: writes each prediction to the output topic (same key as the input) and forwards
//! the record to its partition once the broker acknowledged it. Output headers carry the source
//! coordinates (`clickpipe.source.topic/partition/offset/timestamp`) for lineage and latency.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::FutureExt;

use crate::error::{ErrorKind, Failure, Stage};
use crate::kafka::produce::{deliver, Producer};
use crate::record::{Emitted, Record, Scored};
use crate::stage::{Outcome, Outcomes, StageLogic};
use crate::stats::Stats;

/// The emit stage.
pub struct Emit {
    producer: Producer,
    topic: Arc<str>,
    stats: Arc<Stats>,
}

impl Emit {
    /// An emit stage writing to `topic`.
    pub fn new(producer: Producer, topic: &str, stats: Arc<Stats>) -> Self {
        Emit {
            producer,
            topic: topic.into(),
            stats,
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
        async move {
            // All records of the batch are queued in order before any acknowledgement is awaited.
            let sends = batch.iter().map(|r| {
                let producer = &producer;
                let topic = &topic;
                async move {
                    let input = &r.input;
                    if let Some(t) = input.trace.as_deref() {
                        t.note_send(topic);
                    }
                    let value = r
                        .data
                        .output_json()
                        .map_err(|e| format!("cannot encode the output record: {e}"))?;
                    deliver(
                        producer,
                        topic,
                        input.key.as_deref(),
                        &value,
                        crate::dlq::headers::source(input, 0),
                    )
                    .await
                    .map_err(|e| format!("output record rejected: {e}"))
                }
            });
            let results = futures::future::join_all(sends).await;
            let now_ms = chrono::Utc::now().timestamp_millis();
            batch
                .into_iter()
                .zip(results)
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
                        Outcome::Forward(r.advance(Emitted))
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
