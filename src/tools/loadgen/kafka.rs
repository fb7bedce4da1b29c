//! The load generator's Kafka clients: which `kafka.client` properties go to its producer and
//! which to its summary consumer, and their defaults.

use std::collections::BTreeMap;

use clickpipe_actors::config::KafkaConfig;
use rdkafka::config::ClientConfig;

/// Property keys by prefix, then by name.
type Keys = (&'static [&'static str], &'static [&'static str]);

/// Properties only a consumer understands (by prefix, then by name); not passed to the producer.
const CONSUMER_ONLY: Keys = (
    &["fetch.", "group.", "queued.", "auto.commit", "enable.auto."],
    &[
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "partition.assignment.strategy",
        "enable.partition.eof",
        "isolation.level",
        "check.crcs",
        "coordinator.query.interval.ms",
        "consume.callback.max.messages",
    ],
);

/// Properties only a producer understands (by prefix, then by name); not passed to the summary
/// consumer.
const PRODUCER_ONLY: Keys = (
    &["queue.buffering.", "batch.", "compression.", "transaction"],
    &[
        "linger.ms",
        "acks",
        "request.required.acks",
        "request.timeout.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "message.send.max.retries",
        "retries",
        "partitioner",
        "sticky.partitioning.linger.ms",
        "enable.gapless.guarantee",
        "queuing.strategy",
        "delivery.report.only.error",
        "dr_msg_cb",
        "dr_cb",
    ],
);

/// Whether `key` starts with one of the prefixes or is one of the names of `list`.
fn is_in(key: &str, (prefixes, names): Keys) -> bool {
    prefixes.iter().any(|p| key.starts_with(p)) || names.contains(&key)
}

pub(super) fn producer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(k, &[], CONSUMER_ONLY, &k.producer);
    let has = |key: &str| k.client.contains_key(key) || k.producer.contains_key(key);
    if !has("linger.ms") && !has("queue.buffering.max.ms") {
        c.set("linger.ms", "2");
    }
    if !has("message.timeout.ms") && !has("delivery.timeout.ms") {
        c.set("message.timeout.ms", "30000");
    }
    if !has("client.id") {
        c.set("client.id", "clickpipe-loadgen");
    }
    c
}

pub(super) fn consumer_config(k: &KafkaConfig, run_id: &str) -> ClientConfig {
    // A low fetch wait unless configured: brokers that wait the full time add it to every latency.
    let mut c = client_config(k, &[("fetch.wait.max.ms", "5")], PRODUCER_ONLY, &k.consumer);
    // Never joins a group (partitions are assigned), never commits.
    c.set("group.id", format!("clickpipe-loadgen-{run_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    if !k.client.contains_key("client.id") && !k.consumer.contains_key("client.id") {
        c.set("client.id", "clickpipe-loadgen-summary");
    }
    c
}

/// `bootstrap.servers` and `defaults`, then the shared `kafka.client` properties but those in
/// `excluded` (the other role's), then the role's own map: a later setting wins.
fn client_config(
    k: &KafkaConfig,
    defaults: &[(&str, &str)],
    excluded: Keys,
    role: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in defaults {
        c.set(*key, *value);
    }
    let shared = k.client.iter().filter(|(key, _)| !is_in(key, excluded));
    for (key, value) in shared.chain(role) {
        c.set(key, value);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_properties_are_split_by_role() {
        let mut k: KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:9092", "group_id": "g", "input_topic": "in",
            "output_topic": "out", "dlq_topic": "dlq", "max_payload_bytes": 1048576,
            "commit_interval_ms": 1000,
            "client": {"fetch.wait.max.ms": "100", "security.protocol": "ssl", "linger.ms": "7"},
        }))
        .expect("kafka config");
        let p = producer_config(&k);
        assert_eq!(p.get("fetch.wait.max.ms"), None);
        assert_eq!(p.get("security.protocol"), Some("ssl"));
        assert_eq!(p.get("linger.ms"), Some("7"));
        let c = consumer_config(&k, "r1");
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("linger.ms"), None);
        k.client.remove("linger.ms");
        assert_eq!(producer_config(&k).get("linger.ms"), Some("2"));
        // Role-specific maps apply on top of the shared one.
        k.producer.insert("linger.ms".into(), "4".into());
        k.consumer
            .insert("session.timeout.ms".into(), "6000".into());
        assert_eq!(producer_config(&k).get("linger.ms"), Some("4"));
        assert_eq!(producer_config(&k).get("session.timeout.ms"), None);
        assert_eq!(
            consumer_config(&k, "r1").get("session.timeout.ms"),
            Some("6000")
        );
        // Without a configured fetch wait the summary consumer keeps a low one.
        k.client.remove("fetch.wait.max.ms");
        assert_eq!(
            consumer_config(&k, "r1").get("fetch.wait.max.ms"),
            Some("5")
        );
    }
}
