//! The dead-letter actor: one per process, shared by every partition. It writes the original
//! record (key and value unchanged) to the dead-letter topic with headers saying why, and tells
//! the record's partition once the broker has acknowledged it, so the offset can be committed.
//!
//! Headers: `clickpipe.error.kind`, `clickpipe.error.message`, `clickpipe.error.stage`,
//! `clickpipe.source.topic`, `clickpipe.source.partition`, `clickpipe.source.offset`,
//! `clickpipe.source.timestamp` (when known), `clickpipe.attempts`, `clickpipe.failed_at`.
//!
//! A dead letter is always written, so its offset can always be committed ([`write`], shared with
//! `clickpipe ingest`): a letter the broker refuses whole is written with its payload truncated to
//! [`TRUNCATED_PAYLOAD_BYTES`] and marked with `clickpipe.payload.truncated` (its original size);
//! one refused even so is written minimal — no key, no payload, only the headers that say what
//! failed and where the record is (`clickpipe.error.*`, `clickpipe.source.*`, and
//! `clickpipe.payload.truncated`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;

pub mod headers;

use crate::error::Failure;
use crate::event::rfc3339;
use crate::kafka::produce::{deliver_with, is_record_error, Persistence, Producer};
use crate::kafka::transaction::{Permit, Transactions};
use crate::record::Input;
use crate::stats::Stats;

/// How much of a too-large payload is kept.
pub const TRUNCATED_PAYLOAD_BYTES: usize = 64 * 1024;

/// A record that leaves the pipeline.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeadLetter {
    /// The record as read.
    pub record: Input,
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
    /// Exactly-once mode: the share of the transaction the letters were written in, held until
    /// the partition has counted them finished.
    pub permit: Option<Permit>,
}

/// The dead-letter actor.
pub struct DlqActor {
    producer: Producer,
    topic: Arc<str>,
    stats: Arc<Stats>,
    mailbox: usize,
    txn: Option<Arc<Transactions>>,
}

impl DlqActor {
    /// A dead-letter actor writing to `topic`.
    pub fn new(producer: Producer, topic: &str, stats: Arc<Stats>, mailbox: usize) -> Self {
        DlqActor {
            producer,
            topic: topic.into(),
            stats,
            mailbox,
            txn: None,
        }
    }

    /// Exactly-once mode: letters are written inside `txn`'s transactions.
    pub fn transactional(mut self, txn: Option<Arc<Transactions>>) -> Self {
        self.txn = txn;
        self
    }
}

impl Actor for DlqActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

/// A dead letter as the broker will be offered it.
pub struct Letter<'a> {
    /// The original key.
    pub key: Option<&'a [u8]>,
    /// The original value.
    pub payload: &'a [u8],
    /// The headers of the whole letter: why, lineage, trace context.
    pub headers: OwnedHeaders,
    /// The headers of the minimal letter: what failed and where the record is.
    pub minimal: OwnedHeaders,
}

/// The form in which a dead letter was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// As it came.
    Whole,
    /// Payload cut to [`TRUNCATED_PAYLOAD_BYTES`].
    Truncated,
    /// Headers only.
    Minimal,
}

/// Writes `letter` to `topic`, whole, else truncated, else minimal, and waits for the broker's
/// acknowledgement: cluster errors are retried for as long as it takes (see [`deliver`]), and so
/// is the minimal letter, so every dead letter is eventually written and its offset committed.
pub async fn write(producer: &Producer, topic: &str, letter: Letter<'_>) -> Form {
    let mut letter = Some(letter);
    loop {
        // With `UntilAcknowledged` every error is retried inside; a second round never runs.
        let Some(l) = letter.take() else {
            return Form::Minimal;
        };
        if let Ok(form) = write_with(producer, topic, l, Persistence::UntilAcknowledged).await {
            return form;
        }
    }
}

/// [`write`]; with [`Persistence::Once`] (inside a transaction) a failure that is not about the
/// letter's size is returned instead of retried.
pub async fn write_with(
    producer: &Producer,
    topic: &str,
    letter: Letter<'_>,
    persistence: Persistence,
) -> Result<Form, KafkaError> {
    let Letter {
        key,
        payload,
        headers,
        minimal,
    } = letter;
    let send =
        |key, payload, headers| deliver_with(producer, topic, key, payload, headers, persistence);
    let refused = match send(key, payload, headers.clone()).await {
        Ok(()) => return Ok(Form::Whole),
        Err(e) if !is_record_error(&e) => return Err(e),
        Err(e) => e,
    };
    let size = payload.len().to_string();
    let mark = |h: OwnedHeaders| headers::with(h, headers::PAYLOAD_TRUNCATED, &size);
    if payload.len() > TRUNCATED_PAYLOAD_BYTES {
        tracing::warn!(error = %refused, size = payload.len(),
            "dead letter too large for the broker; writing it truncated");
        let cut = &payload[..TRUNCATED_PAYLOAD_BYTES];
        match send(key, cut, mark(headers)).await {
            Ok(()) => return Ok(Form::Truncated),
            Err(e) if !is_record_error(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "truncated dead letter refused; writing it minimal")
            }
        }
    } else {
        tracing::warn!(error = %refused, size = payload.len(),
            "dead letter refused by the broker; writing it minimal");
    }
    // A size refusal can be a batch-mate's: the broker refuses a whole batch that is over the
    // topic's `max.message.bytes`. The minimal letter (a few hundred bytes) is tried again, in a
    // batch of its own, until it is written.
    let minimal = mark(minimal);
    let mut attempt = 0u32;
    loop {
        match send(None, &[], minimal.clone()).await {
            Ok(()) => return Ok(Form::Minimal),
            Err(e) if persistence == Persistence::Once => return Err(e),
            Err(e) => {
                attempt += 1;
                let wait = crate::clients::backoff(
                    attempt,
                    std::time::Duration::from_millis(50),
                    std::time::Duration::from_secs(5),
                );
                tracing::error!(error = %e, attempt, ?wait, "minimal dead letter refused; trying again");
                actix_rt::time::sleep(wait).await;
            }
        }
    }
}

/// The headers of a minimal dead letter: kind, stage, message and the source's coordinates.
pub fn minimal_headers(record: &Input, failure: &Failure) -> OwnedHeaders {
    headers::coordinates(record, why(failure, OwnedHeaders::new_with_capacity(7)))
}

/// `headers` with why `failure` happened (kind, message, stage).
fn why(failure: &Failure, h: OwnedHeaders) -> OwnedHeaders {
    headers::why(
        h,
        failure.kind.as_str(),
        failure.message(),
        failure.stage.as_str(),
    )
}

/// The headers of a dead letter.
pub fn dead_letter_headers(record: &Input, failure: &Failure) -> OwnedHeaders {
    let failed_at = rfc3339(Utc::now());
    let h = why(failure, headers::source(record, 6));
    let h = headers::when(h, failure.attempts, &failed_at);
    if record.replay_count > 0 {
        headers::with(h, headers::REPLAY_COUNT, &record.replay_count.to_string())
    } else {
        h
    }
}

impl Handler<DeadLetter> for DlqActor {
    type Result = ();

    fn handle(&mut self, msg: DeadLetter, ctx: &mut Self::Context) {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let stats = self.stats.clone();
        let txn = self.txn.clone();
        // Dead letters are written concurrently; how many can be pending is bounded by the
        // partitions' in-flight limits, since each stays in flight until acknowledged.
        ctx.spawn(
            async move {
                let DeadLetter { mut record, failure, done } = msg;
                // Exactly-once: written inside the open transaction, if the record belongs to it.
                let (permit, persistence, producer) = match &txn {
                    None => (None, Persistence::UntilAcknowledged, producer),
                    Some(txn) => match txn.admit(record.partition, [record.epoch].into_iter()).await {
                        Some(a) => (Some(a.permit), Persistence::Once, a.producer),
                        // An abort since the record was read: its partition reads it again.
                        None => return,
                    },
                };
                if let Some(t) = record.trace.as_deref_mut() {
                    t.enter_stage("dead-letter", 1);
                    t.note_send(&topic);
                }
                let letter = Letter {
                    key: record.key.as_deref(),
                    payload: &record.payload,
                    headers: dead_letter_headers(&record, &failure),
                    minimal: minimal_headers(&record, &failure),
                };
                let form = match write_with(&producer, &topic, letter, persistence).await {
                    Ok(form) => form,
                    Err(e) => {
                        if let Some(txn) = &txn {
                            txn.poison(&e);
                        }
                        return;
                    }
                };
                if let Some(t) = record.trace.as_deref_mut() {
                    t.end_stage(None);
                }
                stats.dead_letters(failure.kind).fetch_add(1, Ordering::Relaxed);
                tracing::debug!(kind = %failure.kind, offset = record.offset, ?form, "dead-lettered");
                let _ = done
                    .send(Completed {
                        offsets: vec![record.offset],
                        permit,
                    })
                    .await;
            }
            .into_actor(self),
        );
    }
}
