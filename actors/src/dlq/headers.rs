//! The names of the headers clickpipe writes, and the builders of the groups of them that the
//! pipeline, the replay job and the tailer share. These names are a contract: replay tools,
//! dashboards and the admin API's replay read them.

use rdkafka::message::{Header, OwnedHeaders};

use crate::record::Input;

/// The error kind of a dead letter (`ErrorKind` as a string, e.g. `invalid_event`).
pub const ERROR_KIND: &str = "clickpipe.error.kind";
/// The human-readable reason of a dead letter (bounded, credentials masked).
pub const ERROR_MESSAGE: &str = "clickpipe.error.message";
/// The stage that gave up on the record (`Stage` as a string).
pub const ERROR_STAGE: &str = "clickpipe.error.stage";
/// How many attempts were made before giving up.
pub const ATTEMPTS: &str = "clickpipe.attempts";
/// When the record was dead-lettered, RFC 3339 UTC.
pub const FAILED_AT: &str = "clickpipe.failed_at";
/// On a truncated or minimal dead letter: the original payload's size in bytes.
pub const PAYLOAD_TRUNCATED: &str = "clickpipe.payload.truncated";
/// The topic the record was read from.
pub const SOURCE_TOPIC: &str = "clickpipe.source.topic";
/// The partition the record was read from.
pub const SOURCE_PARTITION: &str = "clickpipe.source.partition";
/// The offset the record was read at.
pub const SOURCE_OFFSET: &str = "clickpipe.source.offset";
/// The source record's broker timestamp, epoch ms.
pub const SOURCE_TIMESTAMP: &str = "clickpipe.source.timestamp";
/// The search index a tailed document came from (`clickpipe ingest`).
pub const SOURCE_INDEX: &str = "clickpipe.source.index";
/// The `_id` of a tailed document (`clickpipe ingest`).
pub const SOURCE_ID: &str = "clickpipe.source.id";
/// How many times a record was replayed from the dead-letter topic.
pub const REPLAY_COUNT: &str = "clickpipe.replay.count";

/// `headers` with one more header.
pub fn with(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value),
    })
}

/// `headers` with why a record failed: [`ERROR_KIND`], [`ERROR_MESSAGE`] and [`ERROR_STAGE`].
pub fn why(headers: OwnedHeaders, kind: &str, message: &str, stage: &str) -> OwnedHeaders {
    let headers = with(headers, ERROR_KIND, kind);
    let headers = with(headers, ERROR_MESSAGE, message);
    with(headers, ERROR_STAGE, stage)
}

/// `headers` with when and after how many attempts a record failed: [`ATTEMPTS`] and
/// [`FAILED_AT`].
pub fn when(headers: OwnedHeaders, attempts: u32, failed_at: &str) -> OwnedHeaders {
    with(
        with(headers, ATTEMPTS, &attempts.to_string()),
        FAILED_AT,
        failed_at,
    )
}

/// The value of header `key` of a message, as UTF-8 (None when absent, empty-valued or not
/// UTF-8).
pub fn get<'a, H: rdkafka::message::Headers>(headers: &'a H, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The replay count of a message ([`REPLAY_COUNT`]; 0 when absent or malformed).
pub fn replay_count<M: rdkafka::Message>(m: &M) -> u32 {
    m.headers()
        .and_then(|h| get(h, REPLAY_COUNT))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Headers naming where `record` came from: [`SOURCE_TOPIC`], [`SOURCE_PARTITION`],
/// [`SOURCE_OFFSET`] and, when the broker gave one, [`SOURCE_TIMESTAMP`] (epoch ms). Output
/// records and dead letters both carry them, for lineage and end-to-end latency. A traced
/// record's trace context follows (`traceparent`, `tracestate`, `X-Amzn-Trace-Id` of its current
/// stage span), or the producer's context headers unchanged when the record was not traced here.
/// `capacity`: how many more headers the caller adds.
pub fn source(record: &Input, capacity: usize) -> OwnedHeaders {
    let h = coordinates(record, OwnedHeaders::new_with_capacity(capacity + 7));
    let h = match record.timestamp_ms {
        Some(ts) => with(h, SOURCE_TIMESTAMP, &ts.to_string()),
        None => h,
    };
    match &record.trace {
        Some(trace) => trace.add_headers(h),
        None => h,
    }
}

/// `h` with [`SOURCE_TOPIC`], [`SOURCE_PARTITION`] and [`SOURCE_OFFSET`]: where `record` is.
pub fn coordinates(record: &Input, h: OwnedHeaders) -> OwnedHeaders {
    let h = with(h, SOURCE_TOPIC, &record.topic);
    let h = with(h, SOURCE_PARTITION, &record.partition.to_string());
    with(h, SOURCE_OFFSET, &record.offset.to_string())
}
