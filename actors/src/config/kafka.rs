//! `[kafka]`: brokers, topics, the consumer group, authentication and the librdkafka
//! pass-through sections (`[kafka.client]`, `[kafka.consumer]`, `[kafka.producer]`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{bad, non_empty, positive, ConfigError, Millis};

/// Kafka settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Consumer group id; scale out by running more instances with the same id.
    pub group_id: String,
    /// Topic the clickstream events are read from.
    pub input_topic: String,
    /// Topic predictions are written to.
    pub output_topic: String,
    /// Topic dead letters are written to.
    pub dlq_topic: String,
    /// Records larger than this many bytes are dead-lettered as `invalid_event`.
    pub max_payload_bytes: usize,
    /// Interval at which stored (fully processed) offsets are committed, in milliseconds.
    pub commit_interval_ms: Millis,
    /// The consumer group protocol: `classic` (JoinGroup/SyncGroup with cooperative-sticky
    /// assignment, every broker version) or `consumer` (KIP-848: the broker assigns partitions
    /// incrementally, no group-wide barrier; Kafka 4.0+, session timeout set broker side).
    #[serde(default)]
    pub group_protocol: GroupProtocol,
    /// Static membership: this instance's `group.instance.id` (empty: dynamic membership). An
    /// instance restarted with the same id takes its partitions back at once instead of waiting
    /// for its old session to expire; but a stopped static member does not leave the group, so its
    /// partitions wait for the session timeout. Give each instance a stable, unique id.
    #[serde(default)]
    pub group_instance_id: String,
    /// Properties passed to librdkafka as-is, for both the consumer and the producers
    /// (TLS, SASL, `fetch.wait.max.ms`, `linger.ms`…). Keys clickpipe manages itself
    /// (`bootstrap.servers`, `group.id`, `enable.auto.offset.store`…) are rejected.
    #[serde(default, deserialize_with = "scalar_map")]
    pub client: BTreeMap<String, String>,
    /// Properties passed to the consumer only (e.g. `fetch.wait.max.ms`, `session.timeout.ms`).
    #[serde(default, deserialize_with = "scalar_map")]
    pub consumer: BTreeMap<String, String>,
    /// Properties passed to the producers only (e.g. `linger.ms`, `compression.type`).
    #[serde(default, deserialize_with = "scalar_map")]
    pub producer: BTreeMap<String, String>,
    /// `none`, or `msk_iam`: Amazon MSK IAM authentication (SASL_SSL + OAUTHBEARER with a token
    /// signed by the task's AWS credentials; MSK's IAM port is 9098).
    #[serde(default)]
    pub auth: KafkaAuth,
    /// The cluster's AWS region for `msk_iam` (default: `AWS_REGION`, else `AWS_DEFAULT_REGION`).
    #[serde(default)]
    pub region: String,
    /// `at_least_once` (offsets committed after the outputs are acknowledged; a crash repeats
    /// what finished since the last commit) or `exactly_once` (outputs, dead letters and input
    /// offsets committed in one Kafka transaction: a `read_committed` reader sees each input's
    /// result once).
    #[serde(default)]
    pub delivery: Delivery,
    /// With `exactly_once`: how often the open transaction is committed, in milliseconds. A
    /// `read_committed` reader sees an output up to this much (plus the commit's round trips)
    /// later than an `at_least_once` reader would.
    #[serde(default = "default_transaction_interval")]
    pub transaction_interval_ms: Millis,
    /// With `exactly_once`: the producer's `transactional.id`. Empty: `{group_id}-{group_instance_id}`
    /// with static membership (a restarted instance aborts its predecessor's open transaction at
    /// once), else one chosen per process (an open transaction of a killed process then holds
    /// `read_committed` readers back until `transaction.timeout.ms`, 10 s unless
    /// `[kafka.producer]` says otherwise).
    #[serde(default)]
    pub transactional_id: String,
}

fn default_transaction_interval() -> Millis {
    Millis(DEFAULT_TRANSACTION_INTERVAL_MS)
}

/// `kafka.transaction_interval_ms` unless configured.
pub const DEFAULT_TRANSACTION_INTERVAL_MS: u64 = 100;

/// The delivery guarantee (`kafka.delivery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Offsets committed once outputs and dead letters are acknowledged.
    #[default]
    AtLeastOnce,
    /// Outputs, dead letters and offsets in one transaction per `kafka.transaction_interval_ms`.
    ExactlyOnce,
}

/// The consumer group protocol (`kafka.group_protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    /// The classic protocol with the cooperative-sticky assignor.
    #[default]
    Classic,
    /// KIP-848's consumer protocol (Kafka 4.0+).
    Consumer,
}

/// How clickpipe authenticates to Kafka besides `kafka.client` properties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaAuth {
    /// Whatever `kafka.client` says (plaintext, TLS, SCRAM…).
    #[default]
    None,
    /// Amazon MSK IAM.
    MskIam,
}

/// librdkafka takes every property as a string; accept TOML (and environment) strings, numbers and
/// booleans alike, so `"linger.ms" = 5` and `"linger.ms" = "5"` both work.
fn scalar_map<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// librdkafka properties clickpipe sets itself; setting them in `[kafka.client]` would break the
/// delivery guarantees.
pub const MANAGED_CLIENT_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.idempotence",
    "group.protocol",
    "group.instance.id",
    "transactional.id",
];

/// The classic protocol's session timeout unless `session.timeout.ms` says otherwise: a crashed
/// instance's partitions move to the others (or to its restarted self) within ~9 s instead of
/// librdkafka's 45 s. Heartbeats come from librdkafka's own thread every
/// [`CLASSIC_HEARTBEAT_INTERVAL_MS`], eight per session.
pub const CLASSIC_SESSION_TIMEOUT_MS: u64 = 8_000;
/// The classic protocol's heartbeat interval unless `heartbeat.interval.ms` says otherwise.
pub const CLASSIC_HEARTBEAT_INTERVAL_MS: u64 = 1_000;

/// Consumer properties the broker owns under `kafka.group_protocol = consumer` (librdkafka refuses
/// them there).
const CLASSIC_ONLY_CONSUMER_KEYS: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

impl KafkaConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = self;
        if k.brokers.trim().is_empty() {
            return Err(bad("kafka.brokers", "must list at least one host:port"));
        }
        for broker in k.brokers.split(',') {
            let broker = broker.trim();
            let ok = broker
                .rsplit_once(':')
                .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                .unwrap_or(false);
            if !ok {
                return Err(bad("kafka.brokers", format!("`{broker}` is not host:port")));
            }
        }
        non_empty(&[
            ("kafka.group_id", &k.group_id),
            ("kafka.input_topic", &k.input_topic),
            ("kafka.output_topic", &k.output_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
        ])?;
        if k.input_topic == k.output_topic || k.input_topic == k.dlq_topic {
            return Err(bad(
                "kafka.input_topic",
                "must differ from kafka.output_topic and kafka.dlq_topic",
            ));
        }
        if k.output_topic == k.dlq_topic {
            // Dead letters would be read as predictions, and replay would re-publish predictions.
            return Err(bad(
                "kafka.dlq_topic",
                "must differ from kafka.output_topic",
            ));
        }
        if k.auth == KafkaAuth::MskIam && k.region.trim().is_empty() {
            return Err(bad(
                "kafka.region",
                "must be set for kafka.auth = msk_iam (or AWS_REGION)",
            ));
        }
        positive("kafka.max_payload_bytes", k.max_payload_bytes)?;
        positive("kafka.commit_interval_ms", k.commit_interval_ms)?;
        positive("kafka.transaction_interval_ms", k.transaction_interval_ms)?;
        if k.delivery == Delivery::ExactlyOnce {
            // A transaction must commit well within the broker's timeout for it, or the
            // coordinator aborts it and every interval is processed again.
            let (key, timeout) = match (
                k.producer.get("transaction.timeout.ms"),
                k.client.get("transaction.timeout.ms"),
            ) {
                (Some(v), _) => ("kafka.producer.\"transaction.timeout.ms\"", Some(v)),
                (None, Some(v)) => ("kafka.client.\"transaction.timeout.ms\"", Some(v)),
                (None, None) => ("", None),
            };
            let timeout_ms = match timeout {
                None => crate::kafka::client::DEFAULT_TRANSACTION_TIMEOUT_MS,
                Some(v) => v
                    .parse::<u64>()
                    .map_err(|_| bad(key, format!("`{v}` is not a number of milliseconds")))?,
            };
            if k.transaction_interval_ms.0.saturating_mul(2) > timeout_ms {
                return Err(bad(
                    "kafka.transaction_interval_ms",
                    format!(
                        "must be at most half the producer's transaction.timeout.ms ({timeout_ms} ms)"
                    ),
                ));
            }
        }
        if k.transactional_id.len() > 249 {
            return Err(bad(
                "kafka.transactional_id",
                "must be at most 249 characters",
            ));
        }
        for (table, key) in k
            .client
            .keys()
            .map(|key| ("client", key))
            .chain(k.consumer.keys().map(|key| ("consumer", key)))
            .chain(k.producer.keys().map(|key| ("producer", key)))
        {
            if MANAGED_CLIENT_KEYS.contains(&key.as_str()) {
                return Err(bad(
                    &format!("kafka.{table}.\"{key}\""),
                    "is managed by clickpipe; use the kafka.* keys instead",
                ));
            }
            if k.group_protocol == GroupProtocol::Consumer
                && CLASSIC_ONLY_CONSUMER_KEYS.contains(&key.as_str())
            {
                return Err(bad(
                    &format!("kafka.{table}.\"{key}\""),
                    "is set by the broker with kafka.group_protocol = consumer; remove it",
                ));
            }
        }
        // The broker's own rule (JoinGroupRequest.validateGroupInstanceId): refused here as a
        // config error rather than by the broker as a fatal group error at every start.
        let id = &k.group_instance_id;
        if id.len() > 249
            || id == "."
            || id == ".."
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad(
                "kafka.group_instance_id",
                "must be at most 249 characters of a-z, A-Z, 0-9, '.', '_' and '-' (not . or ..)",
            ));
        }

        Ok(())
    }
}
