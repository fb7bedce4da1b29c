//! Writing one record to Kafka until the broker acknowledges it. Shared by the emit stage (output
//! records) and the dead-letter actor. The producer is idempotent, so librdkafka's own retries keep
//! order and never duplicate; an error that still comes back is either about the record itself
//! (too large: returned to the caller, which dead-letters or truncates) or about the cluster
//! (retried here with backoff, forever, and logged: a record is never dropped).

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use std::sync::Arc;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::clients::aws::CredentialsProvider;
use crate::clients::backoff;
use crate::config::{KafkaAuth, KafkaConfig};

/// The producers' client context: the MSK IAM token when `kafka.auth = msk_iam`.
#[derive(Clone, Default)]
pub struct AuthContext {
    msk: Option<MskAuth>,
}

/// What an MSK IAM token needs.
#[derive(Clone)]
pub struct MskAuth {
    region: String,
    credentials: Arc<CredentialsProvider>,
}

impl MskAuth {
    /// The MSK IAM signer for `kafka`, or None when `kafka.auth` is not `msk_iam`.
    pub fn for_config(kafka: &KafkaConfig, credentials: Arc<CredentialsProvider>) -> Option<Self> {
        (kafka.auth == KafkaAuth::MskIam).then(|| MskAuth {
            region: kafka.region.clone(),
            credentials,
        })
    }

    /// A fresh token for librdkafka (called on its thread, which may block).
    pub fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let credentials = self.credentials.get_blocking()?;
        let token =
            crate::clients::msk::token(&credentials, &self.region, std::time::SystemTime::now())?;
        Ok(OAuthToken {
            token: token.value,
            principal_name: String::new(),
            lifetime_ms: token.expires_ms,
        })
    }
}

impl AuthContext {
    /// A context signing MSK IAM tokens when `msk` is set.
    pub fn new(msk: Option<MskAuth>) -> Self {
        AuthContext { msk }
    }
}

impl ClientContext for AuthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        match &self.msk {
            Some(msk) => msk.oauth_token(),
            None => Err("OAUTHBEARER asked for, but kafka.auth is not msk_iam".into()),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for AuthContext {}

/// The producer every pipeline component writes with.
pub type Producer = FutureProducer<AuthContext>;

/// Creates a producer from `config` with `context`.
pub fn create_producer(
    config: &ClientConfig,
    context: AuthContext,
) -> rdkafka::error::KafkaResult<Producer> {
    config.create_with_context(context)
}

/// With `kafka.auth = msk_iam`: SASL over TLS with OAUTHBEARER tokens from the client context.
pub fn apply_auth(kafka: &KafkaConfig, config: &mut ClientConfig) {
    if kafka.auth == KafkaAuth::MskIam {
        config
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "OAUTHBEARER");
    }
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

/// Sends one record and waits for its acknowledgement, retrying cluster errors.
/// Returns the error only when it is about the record ([`is_record_error`]).
pub async fn deliver(
    producer: &Producer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: OwnedHeaders,
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
        if is_record_error(&err) {
            return Err(err);
        }
        attempt += 1;
        let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
        tracing::warn!(topic, error = %err, attempt, ?wait, "produce failed; retrying");
        actix_rt::time::sleep(wait).await;
    }
}
