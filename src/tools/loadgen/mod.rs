//! The load generator (`clickpipe loadgen`): a realistic synthetic clickstream.
//!
//! [`Generator`] is pure (a seeded RNG in, event payloads out) so it can be unit-tested and reused
//! by benchmarks. [`run`] paces its events onto the input topic and, with `summary`, reads the
//! output and dead-letter topics back to count what came out and how long it took.
//!
//! What the events look like:
//!
//! - `concurrent_sessions` sessions are open at once; each event belongs to a random open session;
//!   a session has 1–30 events (mostly short), then it is replaced by a new one.
//! - A session starts at a simulated time 1–7 days ago, at a local hour of day drawn from a
//!   realistic mix (quiet at night, peaks around 12–14 and 19–22 in the ZIP's time zone); its
//!   next events follow a few seconds to a few minutes apart.
//! - Event types follow a shopping funnel: `page_view` ≫ `product_view` > `search` >
//!   `add_to_cart` > `checkout` > `purchase`, with the odd `remove_from_cart`; checkout needs a
//!   cart and purchase needs a checkout.
//! - Each session has a ZIP from the reference CSV, or (per `unknown_zip_ratio`) a valid 5-digit
//!   ZIP not in it, or (per `missing_zip_ratio`) none; a device (mobile / desktop / tablet); an
//!   entry referrer sometimes, then the previous page as referrer.
//! - Ids: `event_id` is `{run_id}-{n}`, `session_id` is `{run_id}-s{n}`; the run id is fresh for
//!   every generator (never taken from the seed), so runs never collide in session state.
//!
//! Where things are: [`Generator`] and [`poison`] (`generator.rs`), the traffic's shape
//! (`traffic.rs`), the ZIP reference data (`zips.rs`), pacing and producing (`pacing.rs`), the
//! summary consumer (`collector.rs`), the state those share (`shared.rs`), the Kafka client
//! properties (`kafka.rs`) and the report (`report.rs`).

mod collector;
mod generator;
mod kafka;
mod pacing;
mod report;
mod shared;
mod traffic;
mod zips;

use std::path::Path;
use std::time::Duration;

use crate::service::config::Config;
use anyhow::{bail, Context};
use clickpipe_actors::kafka::auth::AuthContext;
use rdkafka::producer::FutureProducer;

use collector::Collector;
use kafka::producer_config;
use pacing::{produce, UNPACED_BACKLOG};
use shared::Shared;

pub use generator::{poison, sequence_of, Generator};
pub use report::{write_timeline, LatencySummary, LoadgenReport, Sample};
pub use zips::{load_zips, ZipRow};

/// How a load run is driven (from the CLI).
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Events per second; 0 produces as fast as the broker acknowledges (max-throughput mode).
    pub rate: u64,
    /// Total events to produce.
    pub count: u64,
    /// Read the output and dead-letter topics back and report counts and latency.
    pub summary: bool,
    /// With `summary`: stop waiting once this long passes without a new record after the last
    /// event was produced.
    pub summary_timeout: Duration,
    /// Seed of the event content (ids stay unique per run).
    pub seed: Option<u64>,
    /// With `summary`: stop waiting this long after the first send, whatever is still missing
    /// (overload runs, where the system cannot catch up in any useful time).
    pub summary_deadline: Option<Duration>,
}

/// Produces `count` events at `rate`/s to the input topic (and with `summary`, reads the output and
/// dead-letter topics back). Progress goes to stderr about once a second. Delivery failures are
/// counted, and make the run an error at the end (whose message includes the report).
pub async fn run(cfg: &Config, opts: LoadgenOptions) -> anyhow::Result<LoadgenReport> {
    run_with_timeline(cfg, opts).await.map(|(report, _)| report)
}

/// [`run`], also returning a [`Sample`] of the run's progress per second.
pub async fn run_with_timeline(
    cfg: &Config,
    opts: LoadgenOptions,
) -> anyhow::Result<(LoadgenReport, Vec<Sample>)> {
    let zips = load_zips(Path::new(&cfg.loadgen.zip_csv))?;
    let mut generator = Generator::new(zips, &cfg.loadgen, opts.seed);
    let run_id = generator.run_id().to_string();
    let producer: FutureProducer<AuthContext> = producer_config(&cfg.kafka)
        .create_with_context(AuthContext::for_kafka(&cfg.kafka))
        .context("cannot create the Kafka producer")?;
    let collector = if opts.summary && opts.count > 0 {
        Some(Collector::start(&cfg.kafka, &run_id, opts.count)?)
    } else {
        None
    };
    let rate = if opts.rate == 0 {
        format!("as fast as the system answers (at most {UNPACED_BACKLOG} outstanding)")
    } else {
        format!("at {}/s", opts.rate)
    };
    eprintln!(
        "loadgen: run {run_id}: {} events {rate} to `{}` on {}",
        opts.count, cfg.kafka.input_topic, cfg.kafka.brokers
    );

    let shared = Shared::new(opts.count);
    let summary = collector.is_some();
    let producing = produce(
        &producer,
        &mut generator,
        &cfg.kafka.input_topic,
        &opts,
        &shared,
        summary,
    );
    let collecting = async {
        let out = match collector {
            Some(c) => Some(
                c.collect(&shared, opts.summary_timeout, opts.summary_deadline)
                    .await,
            ),
            None => None,
        };
        shared.finished.set(true);
        out
    };
    let sampling = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shared.timeline.borrow_mut().push(shared.sample());
            if shared.finished.get() && shared.produced_at.get().is_some() {
                break;
            }
        }
    };
    let ((elapsed, first_error), collected, ()) =
        futures::future::join3(producing, collecting, sampling).await;

    let produced = shared.acked.get();
    let delivery_errors = shared.delivery_errors.get();
    let mut report = LoadgenReport {
        run_id,
        rate: opts.rate,
        produced,
        delivery_errors,
        predictions: 0,
        dead_letters: 0,
        duplicates: 0,
        missing: 0,
        latency: None,
        elapsed_s: elapsed.as_secs_f64(),
        output_rate: None,
    };
    if let Some(c) = collected {
        report.predictions = c.predictions;
        report.dead_letters = c.dead_letters;
        report.duplicates = c.duplicates;
        report.missing = produced.saturating_sub(shared.accounted.get());
        report.latency = LatencySummary::of(&c.latency);
        if let Some(last) = shared.last_result.get() {
            let span = last.duration_since(shared.origin).as_secs_f64();
            if span > 0.0 {
                report.output_rate = Some(shared.accounted.get() as f64 / span);
            }
        }
        if c.duplicates > 0 {
            eprintln!("loadgen: {} duplicate records", c.duplicates);
        }
    }
    let timeline = shared.timeline.take();
    if delivery_errors > 0 {
        bail!(
            "{delivery_errors} of {} events failed delivery (first error: {})\n{report}",
            opts.count,
            first_error.unwrap_or_default()
        );
    }
    Ok((report, timeline))
}
