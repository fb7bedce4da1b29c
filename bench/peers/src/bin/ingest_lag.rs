//! Measures `clickpipe ingest`: indexes clickstream documents into an Elasticsearch / OpenSearch
//! index at a steady rate (bulk requests every 20 ms, visible at once) and reads the input topic
//! back; the lag of a document = when its event was read from Kafka − when its bulk request was
//! acknowledged, both on this process's monotonic clock. Prints (and with `--json` writes) a
//! report: counts, lag p50/p90/p99/p99.9/max, throughput.
//!
//! `--preload N` only indexes N documents (as fast as the server takes them) and exits: with
//! `--rate 0 --count N` afterwards it measures catch-up throughput (first to last event read).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use clickpipe::tools::loadgen::LatencySummary;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::Serialize;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// clickpipe config (Kafka brokers and input topic).
    #[arg(long, env = "CLICKPIPE_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Search server base URL.
    #[arg(long)]
    search: String,
    /// Index.
    #[arg(long, default_value = "clicks")]
    index: String,
    /// Documents per second; 0: only read (after `--preload`).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Documents to index (or to read, with `--rate 0`).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Only index this many documents, then exit.
    #[arg(long)]
    preload: Option<u64>,
    /// Give up waiting for events this long after the last document was indexed.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Write the report here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// An event read back: when, how many times, and its record's create time in ms (when
/// `clickpipe ingest` made it).
type Seen = (Instant, u64, i64);

#[derive(Serialize)]
struct Report {
    rate: u64,
    indexed: u64,
    received: u64,
    duplicates: u64,
    missing: u64,
    /// Document indexed → its event read from the input topic.
    lag: Option<LatencySummary>,
    /// Events written per second by the tailer, first to last (record create times).
    throughput: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(ok) if ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ingest-lag: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn doc(i: u64, now_ms: i64) -> serde_json::Value {
    json!({
        "@timestamp": chrono::DateTime::from_timestamp_millis(now_ms).map(|t| t.to_rfc3339()),
        "session_id": format!("s{}", i % 997),
        "user_id": format!("u{}", i % 997),
        "event_type": "page_view",
        "device": "desktop",
        "page": "/p",
    })
}

/// Bulk-indexes documents `from..to`, visible at once.
async fn bulk(
    client: &awc::Client,
    url: &str,
    index: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut body = String::new();
    for i in from..to {
        body.push_str(&json!({"index": {"_index": index, "_id": format!("b{i}")}}).to_string());
        body.push('\n');
        body.push_str(&doc(i, now).to_string());
        body.push('\n');
    }
    let mut resp = client
        .post(format!("{url}/_bulk?refresh=true"))
        .insert_header(("content-type", "application/x-ndjson"))
        .send_body(body)
        .await
        .map_err(|e| anyhow::anyhow!("bulk: {e}"))?;
    let text = resp
        .body()
        .limit(64 << 20)
        .await
        .map_err(|e| anyhow::anyhow!("bulk: {e}"))?;
    anyhow::ensure!(resp.status().is_success(), "bulk: HTTP {}", resp.status());
    anyhow::ensure!(
        !String::from_utf8_lossy(&text).contains("\"errors\":true"),
        "bulk: some documents were refused"
    );
    Ok(())
}

fn run(args: Args) -> anyhow::Result<bool> {
    let cfg = clickpipe::service::settings::load(args.config.as_deref())?;
    let client = || {
        awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish()
    };
    let url = args.search.trim_end_matches('/').to_string();
    if let Some(n) = args.preload {
        actix_rt::System::new().block_on(async {
            let c = client();
            let mut i = 0;
            while i < n {
                let to = (i + 5_000).min(n);
                bulk(&c, &url, &args.index, i, to).await?;
                i = to;
            }
            anyhow::Ok(())
        })?;
        println!("ingest-lag: preloaded {n} documents");
        return Ok(true);
    }

    // The reader: every event's receive time, by event id.
    let consumer: BaseConsumer = clickpipe_actors::kafka::client::consumer(&cfg.kafka)
        .force("group.id", format!("ingest-lag-{}", std::process::id()))
        .force("auto.offset.reset", "earliest")
        .force("enable.auto.commit", "false")
        .force("fetch.wait.max.ms", "1")
        .build()
        .create()
        .context("consumer")?;
    // Assigned, not subscribed: reading starts at once, before the first document is indexed.
    let md = consumer
        .fetch_metadata(Some(&cfg.kafka.input_topic), Duration::from_secs(10))
        .context("metadata")?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(&cfg.kafka.input_topic, p.id(), rdkafka::Offset::Beginning)
                .context("partition")?;
        }
    }
    anyhow::ensure!(
        tpl.count() > 0,
        "topic {} has no partitions",
        cfg.kafka.input_topic
    );
    consumer.assign(&tpl).context("assign")?;
    let received: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let received = received.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    let at = Instant::now();
                    let id = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                        .and_then(|v| v["event_id"].as_str().map(str::to_string));
                    if let Some(id) = id {
                        let created = m.timestamp().to_millis().unwrap_or(0);
                        let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
                        r.entry(id)
                            .and_modify(|e| e.1 += 1)
                            .or_insert((at, 1, created));
                    }
                }
            }
        })
    };

    // The writer: `rate` documents a second in bulk requests every 20 ms.
    let mut indexed_at: HashMap<String, Instant> = HashMap::new();
    if args.rate > 0 {
        actix_rt::System::new().block_on(async {
            let c = client();
            let start = Instant::now();
            let mut sent = 0u64;
            let mut last_report = Instant::now();
            while sent < args.count {
                let due =
                    ((start.elapsed().as_secs_f64() * args.rate as f64) as u64).min(args.count);
                if due > sent {
                    bulk(&c, &url, &args.index, sent, due).await?;
                    let at = Instant::now();
                    for i in sent..due {
                        indexed_at.insert(format!("b{i}"), at);
                    }
                    sent = due;
                }
                if last_report.elapsed() >= Duration::from_secs(1) {
                    let got = received.lock().map(|r| r.len()).unwrap_or(0);
                    eprintln!(
                        "ingest-lag: {:5.1}s indexed {sent} read {got}",
                        start.elapsed().as_secs_f64()
                    );
                    last_report = Instant::now();
                }
                actix_rt::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })?;
    }
    let want = args.count as usize;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    while received.lock().map(|r| r.len()).unwrap_or(0) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A little longer, to see duplicates.
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reader.join();

    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("histogram")?;
    for (id, at) in &indexed_at {
        if let Some((got, _, _)) = r.get(id) {
            let us = got.saturating_duration_since(*at).as_micros() as u64;
            h.record(us.max(1)).context("record")?;
        }
    }
    // Throughput of the tailer itself: first to last record it created (the reader may lag).
    let created: Vec<i64> = r.values().map(|v| v.2).filter(|t| *t > 0).collect();
    let throughput = match (created.iter().min(), created.iter().max()) {
        (Some(a), Some(b)) if b > a => Some(created.len() as f64 * 1000.0 / (b - a) as f64),
        _ => None,
    };
    let report = Report {
        rate: args.rate,
        indexed: if args.rate > 0 {
            indexed_at.len() as u64
        } else {
            args.count
        },
        received: r.len() as u64,
        duplicates: r.values().map(|v| v.1 - 1).sum(),
        missing: (want.saturating_sub(r.len())) as u64,
        lag: LatencySummary::of(&h),
        throughput,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = &args.json {
        std::fs::write(p, text + "\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(report.missing == 0)
}
