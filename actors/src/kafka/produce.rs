//! Writing one record to Kafka until the broker acknowledges it. Shared by the emit stage (output
//! records) and the dead-letter actor. The producer is idempotent, so librdkafka's own retries keep
//! order and never duplicate; an error that still comes back is either about the record itself
//! (too large: returned to the caller, which dead-letters or truncates) or about the cluster
//! (retried here with backoff, forever, and logged: a record is never dropped).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::auth::AuthContext;
use crate::clients::backoff;

/// The producer every pipeline component writes with.
pub type Producer = FutureProducer<AuthContext>;

/// Creates a producer from `config` with `context`.
pub fn create_producer(
    config: &ClientConfig,
    context: AuthContext,
) -> rdkafka::error::KafkaResult<Producer> {
    config.create_with_context(context)
}

/// Whether a produce error is about the record itself, so sending it again cannot succeed.
pub fn is_record_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
        )
    )
}

/// What a write does with a failure that is not about the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Send it again, with backoff, until the broker acknowledges it.
    UntilAcknowledged,
    /// Give up and return the error: inside a transaction a failed write dooms the transaction,
    /// whose records are then read and written again after its abort.
    Once,
}

/// Sends one record and waits for its acknowledgement, retrying cluster errors.
/// Returns the error only when it is about the record ([`is_record_error`]).
pub async fn deliver(
    producer: &Producer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: OwnedHeaders,
) -> Result<(), KafkaError> {
    deliver_with(
        producer,
        topic,
        key,
        payload,
        headers,
        Persistence::UntilAcknowledged,
    )
    .await
}

/// [`deliver`], or with [`Persistence::Once`] a single attempt whose error, whatever it is
/// about, is returned.
pub async fn deliver_with(
    producer: &Producer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: OwnedHeaders,
    persistence: Persistence,
) -> Result<(), KafkaError> {
    let mut attempt = 0u32;
    loop {
        let mut record = FutureRecord::to(topic)
            .payload(payload)
            .headers(headers.clone());
        if let Some(k) = key {
            record = record.key(k);
        }
        // Queue full waits inside librdkafka's queue (Timeout::Never): that is backpressure.
        let err = match producer.send(record, Timeout::Never).await {
            Ok(_) => return Ok(()),
            Err((e, _)) => e,
        };
        if is_record_error(&err) || persistence == Persistence::Once {
            return Err(err);
        }
        attempt += 1;
        let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
        tracing::warn!(topic, error = %err, attempt, ?wait, "produce failed; retrying");
        actix_rt::time::sleep(wait).await;
    }
}
