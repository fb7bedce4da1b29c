//! Broker faults injected with librdkafka's MockCluster (a real Kafka-protocol server in-process,
//! on loopback): produce errors, commit errors, and the broker going down and coming back. The
//! pipeline must retry through all of them and lose nothing.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[test]
fn produce_errors_commit_errors_and_a_broker_outage_lose_nothing() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let bootstrap = mock.bootstrap_servers();
    let names = Names::without_topics("mockfaults");
    for t in [&names.input, &names.output, &names.dlq] {
        mock.create_topic(t, 4, 1).expect("topic");
    }
    let model = ModelServer::start(0);
    let mut cfg = config(&names, &model.url);
    cfg.kafka.brokers = bootstrap.clone();
    let total = 3000usize;
    let records = events("m", total, 59);
    produce_on(&bootstrap, &names.input, &records[..1000]);
    let mut outputs = Collector::on(&bootstrap, &names.output);
    let running = run_pipeline(cfg.clone());
    assert!(
        outputs.until(Duration::from_secs(60), |m| m.len() >= 300),
        "processing started"
    );

    // Produce requests fail (retriable), then offset commits fail, then the broker goes away.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5],
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE; 3],
    );
    produce_on(&bootstrap, &names.input, &records[1000..2000]);
    mock.broker_down(1).expect("broker down");
    std::thread::sleep(Duration::from_secs(3));
    mock.broker_up(1).expect("broker up");
    produce_on(&bootstrap, &names.input, &records[2000..]);

    let ids = outputs.event_ids(total, Duration::from_secs(120));
    let complete = ids.len() >= total;
    running.stop();
    let missing = missing_events(&ids, "m", total).len();
    assert!(complete && missing == 0, "{missing} events lost");
}
