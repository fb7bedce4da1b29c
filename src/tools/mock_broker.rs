//! `clickpipe mock-broker`: an in-memory Kafka-protocol broker (librdkafka's MockCluster) with
//! the configured input, output and dead-letter topics, for benchmarks and experiments.

use std::future::Future;

use crate::service::config::Config;
use anyhow::Context;

/// Starts the broker with `partitions` partitions of each configured topic, prints its bootstrap
/// address on stdout (a line on stderr says what it runs) and runs until `shutdown` completes.
/// Data is lost when it stops.
pub async fn run(
    config: &Config,
    partitions: i32,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mock = rdkafka::mocking::MockCluster::new(1).context("cannot start the mock broker")?;
    for topic in [
        &config.kafka.input_topic,
        &config.kafka.output_topic,
        &config.kafka.dlq_topic,
    ] {
        mock.create_topic(topic, partitions, 1)
            .with_context(|| format!("cannot create topic {topic}"))?;
    }
    println!("{}", mock.bootstrap_servers());
    eprintln!(
        "mock broker on {} with topics {}, {}, {} ({partitions} partitions each); Ctrl-C stops it",
        mock.bootstrap_servers(),
        config.kafka.input_topic,
        config.kafka.output_topic,
        config.kafka.dlq_topic
    );
    shutdown.await;
    drop(mock);
    Ok(())
}
