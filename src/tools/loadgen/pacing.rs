//! The producing half of a run: events paced at `rate` per second (or as fast as the system
//! answers), deliveries awaited, progress printed once a second.

use std::time::Duration;

use clickpipe_actors::kafka::auth::AuthContext;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::time::Instant;

use super::generator::Generator;
use super::shared::Shared;
use super::LoadgenOptions;

/// Pacing tick: each tick sends every event that has come due.
const TICK: Duration = Duration::from_millis(5);

/// Most deliveries awaited at once; sending waits for acks beyond this.
const MAX_OUTSTANDING: usize = 20_000;

/// Events produced per pacing step when the rate is unlimited (`rate` 0), so progress still shows.
const UNPACED_STEP: u64 = 1_000;

/// With an unlimited rate and the summary on, the most events sent but not yet seen on an output
/// topic: the load generator keeps the system saturated without piling up a backlog that a broker
/// with bounded retention (librdkafka's MockCluster keeps a few MB per partition) would trim.
pub(super) const UNPACED_BACKLOG: u64 = 20_000;

/// How many of `count` events are due `elapsed` into a run at `rate` per second: event `n` is due
/// at `n / rate` seconds, so the first one goes out at once.
fn due(elapsed: Duration, rate: u64, count: u64) -> u64 {
    let n = elapsed.as_nanos() * u128::from(rate) / 1_000_000_000 + 1;
    n.min(u128::from(count)) as u64
}

/// When event `n` is due.
fn due_at(start: Instant, n: u64, rate: u64) -> Instant {
    let nanos = u128::from(n) * 1_000_000_000 / u128::from(rate.max(1));
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The producing half of [`run`]: returns the time from the first send until every delivery
/// settled, and the first delivery error.
pub(super) async fn produce(
    producer: &FutureProducer<AuthContext>,
    generator: &mut Generator,
    topic: &str,
    opts: &LoadgenOptions,
    shared: &Shared,
    summary: bool,
) -> (Duration, Option<String>) {
    let start = shared.origin;
    let mut outstanding: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();
    let mut first_error: Option<String> = None;
    let mut sent = 0u64;
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_progress = (start, 0u64);
    let progress = |sent: u64, last: &mut (Instant, u64)| {
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let rate = (sent - last.1) as f64 / dt;
        *last = (now, sent);
        eprintln!(
            "loadgen: {:>6.1}s sent {sent} acked {} failed {} rate {rate:.0}/s{}",
            now.duration_since(start).as_secs_f64(),
            shared.acked.get(),
            shared.delivery_errors.get(),
            if summary {
                shared.outputs()
            } else {
                String::new()
            },
        );
    };

    while sent < opts.count {
        let target = if opts.rate == 0 {
            (sent + UNPACED_STEP).min(opts.count)
        } else {
            due(start.elapsed(), opts.rate, opts.count)
        };
        while sent < target {
            let mut stalled = (shared.accounted.get(), Instant::now());
            while opts.rate == 0
                && summary
                && sent.saturating_sub(shared.accounted.get()) >= UNPACED_BACKLOG
            {
                // A system that stopped answering does not hold the run forever.
                if shared.accounted.get() != stalled.0 {
                    stalled = (shared.accounted.get(), Instant::now());
                } else if stalled.1.elapsed() >= opts.summary_timeout {
                    break;
                }
                tokio::select! {
                    biased;
                    Some(r) = outstanding.next(), if !outstanding.is_empty() => {
                        shared.settle(r, &mut first_error);
                    }
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            while outstanding.len() >= MAX_OUTSTANDING {
                if let Some(r) = outstanding.next().await {
                    shared.settle(r, &mut first_error);
                }
            }
            let (key, payload, _) = generator.next_event();
            loop {
                let record = FutureRecord::to(topic).key(&key).payload(&payload);
                match producer.send_result(record) {
                    Ok(delivery) => {
                        shared.mark_sent(sent);
                        outstanding.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        match outstanding.next().await {
                            Some(r) => shared.settle(r, &mut first_error),
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => {
                        shared.delivery_errors.set(shared.delivery_errors.get() + 1);
                        first_error.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
            sent += 1;
            shared.sent.set(sent);
        }
        let now = Instant::now();
        if now >= next_progress {
            progress(sent, &mut last_progress);
            // Stay on the run's one-second grid, skipping seconds missed while blocked.
            while next_progress <= now {
                next_progress += Duration::from_secs(1);
            }
        }
        if sent >= opts.count {
            break;
        }
        let deadline = if opts.rate == 0 {
            now
        } else {
            due_at(start, sent, opts.rate)
                .max(now + TICK)
                .min(next_progress)
        };
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                Some(r) = outstanding.next(), if !outstanding.is_empty() => {
                    shared.settle(r, &mut first_error);
                }
                _ = &mut sleep => break,
            }
        }
    }
    while let Some(r) = outstanding.next().await {
        shared.settle(r, &mut first_error);
        let now = Instant::now();
        if now >= next_progress {
            progress(sent, &mut last_progress);
            next_progress = now + Duration::from_secs(1);
        }
    }
    let elapsed = start.elapsed();
    eprintln!(
        "loadgen: produced in {:.2}s: sent {sent} acked {} failed {} ({:.0}/s)",
        elapsed.as_secs_f64(),
        shared.acked.get(),
        shared.delivery_errors.get(),
        shared.acked.get() as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    shared.produced_at.set(Some(Instant::now()));
    (elapsed, first_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spreads_events_without_drift() {
        assert_eq!(due(Duration::ZERO, 1000, 10_000), 1);
        assert_eq!(due(Duration::from_millis(5), 1000, 10_000), 6);
        assert_eq!(due(Duration::from_secs(3), 1000, 10_000), 3001);
        assert_eq!(due(Duration::from_secs(30), 1000, 10_000), 10_000);
        assert_eq!(due(Duration::from_millis(999), 1, 10), 1);
        assert_eq!(due(Duration::from_millis(1000), 1, 10), 2);
        let start = Instant::now();
        assert_eq!(
            due_at(start, 1500, 1000),
            start + Duration::from_millis(1500)
        );
    }
}
