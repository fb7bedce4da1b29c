//! The benchmark floor: a bare consume → produce passthrough with clickpipe's Kafka settings.
//! Every input record is written unchanged (same key and value) to the output topic; offsets are
//! committed automatically. What it measures is the cost of the two broker hops alone.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clickpipe_bench::{consumer_config, peer_main, producer_config, stop_signal, PeerArgs};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

fn main() -> ExitCode {
    peer_main("passthrough", run)
}

async fn run(args: PeerArgs) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let k = &cfg.kafka;
    let group = args.group.as_deref().unwrap_or("bench-passthrough");
    let consumer: StreamConsumer = consumer_config(k, group, false)
        .create()
        .context("cannot create the consumer")?;
    consumer
        .subscribe(&[&k.input_topic])
        .context("cannot subscribe")?;
    let producer: FutureProducer = producer_config(&cfg)
        .create()
        .context("cannot create the producer")?;
    println!(
        "passthrough: ready ({} → {})",
        k.input_topic, k.output_topic
    );

    let mut pending: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();
    let mut failed = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(r) = pending.next(), if !pending.is_empty() => {
                if !matches!(r, Ok(Ok(_))) {
                    failed += 1;
                }
            }
            m = consumer.recv() => {
                let m = match m {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        eprintln!("passthrough: consumer error: {e}");
                        continue;
                    }
                };
                loop {
                    let mut rec = FutureRecord::to(&k.output_topic)
                        .payload(m.payload().unwrap_or_default());
                    if let Some(key) = m.key() {
                        rec = rec.key(key);
                    }
                    match producer.send_result(rec) {
                        Ok(d) => {
                            pending.push(d);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            if let Some(r) = pending.next().await {
                                if !matches!(r, Ok(Ok(_))) {
                                    failed += 1;
                                }
                            }
                        }
                        Err((e, _)) => {
                            eprintln!("passthrough: produce error: {e}");
                            failed += 1;
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(10));
    while let Some(r) = pending.next().await {
        if !matches!(r, Ok(Ok(_))) {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("passthrough: {failed} records failed delivery");
    }
    Ok(())
}
