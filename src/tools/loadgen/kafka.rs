//! The load generator's Kafka clients, built by clickpipe's one client builder
//! (`clickpipe_actors::kafka::client`) with the load generator's own defaults.

use clickpipe_actors::config::KafkaConfig;
use clickpipe_actors::kafka::client;
use rdkafka::config::ClientConfig;

/// The load generator's producer: not idempotent (a benchmark's input), a short linger.
pub(super) fn producer_config(k: &KafkaConfig) -> ClientConfig {
    client::producer(k)
        .default("linger.ms", "2")
        .default(
            "message.timeout.ms",
            client::DEFAULT_MESSAGE_TIMEOUT_MS.to_string(),
        )
        .default("client.id", "clickpipe-loadgen")
        .build()
}

/// The summary consumer: reads assigned partitions, never joins a group, never commits.
pub(super) fn consumer_config(k: &KafkaConfig, run_id: &str) -> ClientConfig {
    // A low fetch wait unless configured: brokers that wait the full time add it to every latency.
    client::consumer(k)
        .default("fetch.wait.max.ms", "5")
        .default("client.id", "clickpipe-loadgen-summary")
        // Only committed records: in exactly-once mode a latency includes the wait for the
        // transaction's commit, as a downstream reader would see it.
        .default("isolation.level", "read_committed")
        .force("group.id", format!("clickpipe-loadgen-{run_id}"))
        .force("enable.auto.commit", "false")
        .force("enable.auto.offset.store", "false")
        .force("enable.partition.eof", "false")
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_generator_keeps_its_own_client_defaults_unless_configured() {
        let mut k: KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:9092", "group_id": "g", "input_topic": "in",
            "output_topic": "out", "dlq_topic": "dlq", "max_payload_bytes": 1048576,
            "commit_interval_ms": 1000, "consumer": {"enable.auto.commit": "true"},
        }))
        .expect("kafka config");
        let p = producer_config(&k);
        assert_eq!(p.get("linger.ms"), Some("2"));
        assert_eq!(p.get("client.id"), Some("clickpipe-loadgen"));
        let c = consumer_config(&k, "r1");
        assert_eq!(c.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(c.get("group.id"), Some("clickpipe-loadgen-r1"));
        // It never commits, whatever the consumer section says.
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        k.producer
            .insert("queue.buffering.max.ms".into(), "4".into());
        assert_eq!(producer_config(&k).get("linger.ms"), None);
    }
}
