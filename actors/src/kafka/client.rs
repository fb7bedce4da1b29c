//! The one place librdkafka client configurations are built. Every consumer and producer — the
//! pipeline's, the replay job's, the tailer's, the load generator's and the benchmark peers' —
//! starts from [`consumer`] or [`producer`], which layer, in this order:
//!
//! 1. `bootstrap.servers` and the role's defaults ([`Builder::default`]: clickpipe's choices, which
//!    the user's sections may override);
//! 2. `[kafka.client]` without the other role's properties, then `[kafka.consumer]` or
//!    `[kafka.producer]`, as given (a user key that is an alias of a default, such as
//!    `delivery.timeout.ms` for `message.timeout.ms`, replaces the default);
//! 3. what the client cannot work without ([`Builder::force`]: e.g. a reader that must never
//!    commit);
//! 4. authentication (`kafka.auth = msk_iam`: SASL/OAUTHBEARER over TLS; pair the client with
//!    an [`AuthContext`](super::auth::AuthContext)).

use rdkafka::config::ClientConfig;

use super::auth::apply_auth;
use crate::config::{
    Delivery, GroupProtocol, KafkaConfig, CLASSIC_HEARTBEAT_INTERVAL_MS, CLASSIC_SESSION_TIMEOUT_MS,
};

/// Which kind of client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Consumer,
    Producer,
}

/// librdkafka properties that name the same setting: a user's value for one replaces a default
/// for the other (librdkafka applies a map's entries in no set order, so both cannot stand).
const ALIASES: &[(&str, &str)] = &[
    ("message.timeout.ms", "delivery.timeout.ms"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("acks", "request.required.acks"),
    ("retries", "message.send.max.retries"),
];

/// A client configuration being built; see the module docs for the layering.
#[derive(Debug, Clone)]
pub struct Builder<'a> {
    kafka: &'a KafkaConfig,
    role: Role,
    defaults: Vec<(String, String)>,
    forced: Vec<(String, String)>,
}

/// A consumer's configuration for `kafka`.
pub fn consumer(kafka: &KafkaConfig) -> Builder<'_> {
    Builder::new(kafka, Role::Consumer)
}

/// A producer's configuration for `kafka`.
pub fn producer(kafka: &KafkaConfig) -> Builder<'_> {
    Builder::new(kafka, Role::Producer)
}

impl<'a> Builder<'a> {
    fn new(kafka: &'a KafkaConfig, role: Role) -> Self {
        Builder {
            kafka,
            role,
            defaults: Vec::new(),
            forced: Vec::new(),
        }
    }

    /// A value clickpipe chooses unless the user's sections set the key (or an alias of it).
    pub fn default(mut self, key: &str, value: impl Into<String>) -> Self {
        self.defaults.push((key.to_string(), value.into()));
        self
    }

    /// A value the client needs whatever the user's sections say.
    pub fn force(mut self, key: &str, value: impl Into<String>) -> Self {
        self.forced.push((key.to_string(), value.into()));
        self
    }

    /// The user's properties for this role: the shared section without the other role's keys,
    /// then the role's own section.
    fn user(&self) -> impl Iterator<Item = (&String, &String)> {
        let role = self.role;
        let shared = self.kafka.client.iter().filter(move |(key, _)| match role {
            Role::Consumer => !is_producer_only(key),
            Role::Producer => !is_consumer_only(key),
        });
        let own = match role {
            Role::Consumer => &self.kafka.consumer,
            Role::Producer => &self.kafka.producer,
        };
        shared.chain(own.iter())
    }

    /// The finished configuration.
    pub fn build(self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.kafka.brokers);
        for (key, value) in &self.defaults {
            c.set(key, value);
        }
        let mut users = std::collections::HashSet::new();
        for (key, value) in self.user() {
            users.insert(key.as_str());
            for (a, b) in ALIASES {
                if key == a {
                    c.remove(b);
                } else if key == b {
                    c.remove(a);
                }
            }
            c.set(key, value);
        }
        for (key, value) in &self.forced {
            c.set(key, value);
        }
        // librdkafka refuses a message timeout not above the linger: a default timeout gives way
        // to a user's long linger instead of failing the client's creation.
        let linger = ["linger.ms", "queue.buffering.max.ms"]
            .iter()
            .find_map(|k| c.get(k).and_then(|v| v.trim().parse::<u64>().ok()));
        let timeout = c
            .get("message.timeout.ms")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(linger), Some(timeout)) = (linger, timeout) {
            if linger >= timeout && !users.contains("message.timeout.ms") {
                c.set(
                    "message.timeout.ms",
                    linger
                        .saturating_add(DEFAULT_MESSAGE_TIMEOUT_MS)
                        .to_string(),
                );
            }
        }
        apply_auth(self.kafka, &mut c);
        c
    }
}

/// The pipeline's group consumer: clickpipe stores offsets itself (only for finished records)
/// and lets librdkafka commit them every `kafka.commit_interval_ms`; the classic protocol uses
/// incremental (cooperative-sticky) rebalancing with clickpipe's session defaults.
pub fn pipeline_consumer(k: &KafkaConfig) -> ClientConfig {
    let mut b = consumer(k)
        .default("group.id", &k.group_id)
        .default("enable.auto.commit", "true")
        .default("auto.commit.interval.ms", k.commit_interval_ms.to_string())
        .default("enable.auto.offset.store", "false")
        .default("auto.offset.reset", "earliest")
        .default("enable.partition.eof", "false")
        // High watermarks for the admin API's lag (overridable; 0 turns them off).
        .default("statistics.interval.ms", "1000");
    b = match k.group_protocol {
        // Incremental rebalancing: a member joining or leaving moves only the partitions that
        // change owner; the others keep working (and keep their uncommitted progress).
        GroupProtocol::Classic => b
            .default("partition.assignment.strategy", "cooperative-sticky")
            .default("session.timeout.ms", CLASSIC_SESSION_TIMEOUT_MS.to_string())
            .default(
                "heartbeat.interval.ms",
                CLASSIC_HEARTBEAT_INTERVAL_MS.to_string(),
            ),
        GroupProtocol::Consumer => b.default("group.protocol", "consumer"),
    };
    if k.delivery == Delivery::ExactlyOnce {
        // Offsets are committed by the transactions only; an upstream transactional producer's
        // aborted records are never read.
        b = b
            .force("enable.auto.commit", "false")
            .default("isolation.level", "read_committed");
    }
    if !k.group_instance_id.is_empty() {
        b = b.default("group.instance.id", &k.group_instance_id);
    }
    b.build()
}

/// The producer of output records and dead letters (the pipeline's, the replay job's and the
/// tailer's): idempotent, so librdkafka's retries neither reorder nor duplicate.
pub fn pipeline_producer(kafka: &KafkaConfig) -> ClientConfig {
    producer(kafka)
        .default("enable.idempotence", "true")
        .default("linger.ms", "1")
        // librdkafka can leave records queued after a broker restart until they time out (its
        // default: 5 minutes, a partition held that long — seen in the chaos soak). `deliver`
        // sends a timed-out record again, so a short timeout only turns such a stall into a
        // retry.
        .default("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS.to_string())
        .build()
}

/// The pipeline's producer in exactly-once mode: [`pipeline_producer`] with `transactional_id`.
/// An open transaction of a killed process holds `read_committed` readers back until the broker
/// aborts it: `transaction.timeout.ms` is 10 s unless configured (librdkafka's is 60 s).
pub fn transactional_producer(kafka: &KafkaConfig, transactional_id: &str) -> ClientConfig {
    let mut c = pipeline_producer(kafka);
    if c.get("transaction.timeout.ms").is_none() {
        c.set(
            "transaction.timeout.ms",
            DEFAULT_TRANSACTION_TIMEOUT_MS.to_string(),
        );
    }
    // A message may not outlive its transaction.
    let txn_timeout: u64 = c
        .get("transaction.timeout.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TRANSACTION_TIMEOUT_MS);
    let msg_timeout: u64 = c
        .get("message.timeout.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_TIMEOUT_MS);
    if msg_timeout > txn_timeout {
        c.set("message.timeout.ms", txn_timeout.to_string());
    }
    c.set("transactional.id", transactional_id);
    c.set("enable.idempotence", "true");
    c
}

/// The transactional producer's `transaction.timeout.ms` unless configured.
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 10_000;

/// The `transactional.id` of this process in exactly-once mode: `kafka.transactional_id`, else
/// `{group_id}-{group_instance_id}` with static membership, else `{group_id}-` and a random
/// suffix.
pub fn transactional_id(kafka: &KafkaConfig) -> String {
    if !kafka.transactional_id.is_empty() {
        return kafka.transactional_id.clone();
    }
    if !kafka.group_instance_id.is_empty() {
        return format!("{}-{}", kafka.group_id, kafka.group_instance_id);
    }
    format!("{}-{:016x}", kafka.group_id, rand::random::<u64>())
}

/// clickpipe's producers' `message.timeout.ms` unless configured (librdkafka's is 5 minutes).
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// Properties only a consumer understands; not passed to a producer.
fn is_consumer_only(key: &str) -> bool {
    key.starts_with("fetch.")
        || key.starts_with("group.")
        || key.starts_with("queued.")
        || key.starts_with("auto.commit")
        || key.starts_with("enable.auto.")
        || matches!(
            key,
            "session.timeout.ms"
                | "heartbeat.interval.ms"
                | "max.poll.interval.ms"
                | "auto.offset.reset"
                | "partition.assignment.strategy"
                | "enable.partition.eof"
                | "isolation.level"
                | "check.crcs"
                | "coordinator.query.interval.ms"
                | "consume.callback.max.messages"
        )
}

/// Properties only a producer understands; not passed to a consumer.
fn is_producer_only(key: &str) -> bool {
    key.starts_with("queue.buffering.")
        || key.starts_with("batch.")
        || key.starts_with("compression.")
        || key.starts_with("transaction")
        || matches!(
            key,
            "linger.ms"
                | "acks"
                | "request.required.acks"
                | "request.timeout.ms"
                | "message.timeout.ms"
                | "delivery.timeout.ms"
                | "message.send.max.retries"
                | "retries"
                | "partitioner"
                | "sticky.partitioning.linger.ms"
                | "enable.gapless.guarantee"
                | "queuing.strategy"
                | "delivery.report.only.error"
                | "dr_msg_cb"
                | "dr_cb"
                | "enable.idempotence"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka() -> KafkaConfig {
        serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:9092", "group_id": "g", "input_topic": "in",
            "output_topic": "out", "dlq_topic": "dlq", "max_payload_bytes": 1048576,
            "commit_interval_ms": 1000,
            "client": {"fetch.wait.max.ms": "100", "security.protocol": "ssl", "linger.ms": "7"},
        }))
        .expect("kafka config")
    }

    #[test]
    fn the_shared_section_is_split_by_role() {
        let k = kafka();
        let p = producer(&k).build();
        assert_eq!(p.get("fetch.wait.max.ms"), None);
        assert_eq!(p.get("security.protocol"), Some("ssl"));
        assert_eq!(p.get("linger.ms"), Some("7"));
        let c = consumer(&k).build();
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("linger.ms"), None);
    }

    #[test]
    fn the_user_overrides_defaults_and_forced_keys_override_the_user() {
        let mut k = kafka();
        k.consumer
            .insert("enable.auto.commit".into(), "true".into());
        k.consumer
            .insert("session.timeout.ms".into(), "6000".into());
        let c = consumer(&k)
            .default("session.timeout.ms", "45000")
            .default("client.id", "reader")
            .force("enable.auto.commit", "false")
            .build();
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        assert_eq!(c.get("client.id"), Some("reader"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn a_user_alias_replaces_the_default_it_names() {
        let mut k = kafka();
        k.producer
            .insert("delivery.timeout.ms".into(), "120000".into());
        k.client.remove("linger.ms");
        k.producer
            .insert("queue.buffering.max.ms".into(), "9".into());
        let p = pipeline_producer(&k);
        assert_eq!(p.get("message.timeout.ms"), None);
        assert_eq!(p.get("delivery.timeout.ms"), Some("120000"));
        assert_eq!(p.get("linger.ms"), None);
        assert_eq!(p.get("queue.buffering.max.ms"), Some("9"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn a_long_user_linger_lifts_the_default_message_timeout_above_it() {
        let mut k = kafka();
        k.producer.insert("linger.ms".into(), "60000".into());
        let p = pipeline_producer(&k);
        assert_eq!(p.get("message.timeout.ms"), Some("90000"));
        k.producer
            .insert("message.timeout.ms".into(), "1000".into());
        // The user's own timeout stands (librdkafka then says what is wrong with it).
        assert_eq!(
            pipeline_producer(&k).get("message.timeout.ms"),
            Some("1000")
        );
    }

    #[test]
    fn msk_iam_turns_on_sasl_for_every_role() {
        let mut k = kafka();
        k.auth = crate::config::KafkaAuth::MskIam;
        for c in [consumer(&k).build(), producer(&k).build()] {
            assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(c.get("sasl.mechanism"), Some("OAUTHBEARER"));
        }
    }
}
