//! The dead-letter actor: one per process, shared by every partition. It writes the original
//! record (key and value unchanged) to the dead-letter topic with headers saying why, and tells
//! the record's partition once the broker has acknowledged it, so the offset can be committed.
//!
//! Headers: `clickpipe.error.kind`, `clickpipe.error.message`, `clickpipe.error.stage`,
//! `clickpipe.source.topic`, `clickpipe.source.partition`, `clickpipe.source.offset`,
//! `clickpipe.source.timestamp` (when known), `clickpipe.attempts`, `clickpipe.failed_at`.
//! A payload the broker rejects as too large is truncated to [`TRUNCATED_PAYLOAD_BYTES`] and
//! marked with `clickpipe.payload.truncated` (its original size), rather than block the partition.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use rdkafka::message::{Header, OwnedHeaders};

use crate::error::Failure;
use crate::produce::{deliver, Producer};
use crate::record::{rfc3339, Record};
use crate::stats::Stats;

/// How much of a too-large payload is kept.
pub const TRUNCATED_PAYLOAD_BYTES: usize = 64 * 1024;

/// A record that leaves the pipeline.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeadLetter {
    /// The record.
    pub record: Record,
    /// Why.
    pub failure: Failure,
    /// Told when the dead letter is acknowledged.
    pub done: Recipient<Completed>,
}

/// Offsets of a partition whose dead letters the broker acknowledged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Completed {
    /// Source offsets now finished.
    pub offsets: Vec<i64>,
}

/// The dead-letter actor.
pub struct DlqActor {
    producer: Producer,
    topic: Arc<str>,
    stats: Arc<Stats>,
    mailbox: usize,
}

impl DlqActor {
    /// A dead-letter actor writing to `topic`.
    pub fn new(producer: Producer, topic: &str, stats: Arc<Stats>, mailbox: usize) -> Self {
        DlqActor {
            producer,
            topic: topic.into(),
            stats,
            mailbox,
        }
    }
}

impl Actor for DlqActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

/// The headers of a dead letter.
pub fn dead_letter_headers(record: &Record, failure: &Failure) -> OwnedHeaders {
    let attempts = failure.attempts.to_string();
    let failed_at = rfc3339(Utc::now());
    let replays = record.replay_count.to_string();
    let headers = record
        .source_headers(6)
        .insert(Header {
            key: "clickpipe.error.kind",
            value: Some(failure.kind.as_str()),
        })
        .insert(Header {
            key: "clickpipe.error.message",
            value: Some(failure.message()),
        })
        .insert(Header {
            key: "clickpipe.error.stage",
            value: Some(failure.stage.as_str()),
        })
        .insert(Header {
            key: "clickpipe.attempts",
            value: Some(attempts.as_str()),
        })
        .insert(Header {
            key: "clickpipe.failed_at",
            value: Some(failed_at.as_str()),
        });
    if record.replay_count > 0 {
        headers.insert(Header {
            key: crate::record::REPLAY_COUNT_HEADER,
            value: Some(replays.as_str()),
        })
    } else {
        headers
    }
}

impl Handler<DeadLetter> for DlqActor {
    type Result = ();

    fn handle(&mut self, msg: DeadLetter, ctx: &mut Self::Context) {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let stats = self.stats.clone();
        // Dead letters are written concurrently; how many can be pending is bounded by the
        // partitions' in-flight limits, since each stays in flight until acknowledged.
        ctx.spawn(
            async move {
                let DeadLetter { mut record, failure, done } = msg;
                if let Some(t) = record.trace.as_deref_mut() {
                    t.enter_stage("dead-letter", 1);
                    t.note_send(&topic);
                }
                let headers = dead_letter_headers(&record, &failure);
                let key = record.key.as_deref();
                let mut result =
                    deliver(&producer, &topic, key, &record.payload, headers.clone()).await;
                if let Err(e) = &result {
                    tracing::warn!(error = %e, size = record.payload.len(),
                        "dead letter too large for the broker; writing it truncated");
                    let size = record.payload.len().to_string();
                    let cut = &record.payload[..record.payload.len().min(TRUNCATED_PAYLOAD_BYTES)];
                    let headers = headers.insert(Header {
                        key: "clickpipe.payload.truncated",
                        value: Some(size.as_str()),
                    });
                    result = deliver(&producer, &topic, key, cut, headers).await;
                }
                if let Some(t) = record.trace.as_deref_mut() {
                    t.end_stage(result.is_err().then_some(&failure));
                }
                match result {
                    Ok(()) => {
                        stats.dead_letters(failure.kind).fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(kind = %failure.kind, offset = record.offset, "dead-lettered");
                        let _ = done.send(Completed { offsets: vec![record.offset] }).await;
                    }
                    Err(e) => tracing::error!(error = %e, offset = record.offset,
                        "dead letter rejected even truncated; record stays uncommitted"),
                }
            }
            .into_actor(self),
        );
    }
}
