//! Overload: a model far slower than the input. The pipeline's memory must stay flat while lag
//! grows, and nothing may be lost. The pipeline runs as its own process (its RSS is what is
//! measured) against the shared Apache Kafka broker.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

/// Kills the child process when dropped (a failing assertion leaves nothing running).
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_model_ten_times_too_slow_keeps_memory_flat_and_loses_nothing() {
    let names = Names::new("overload", 4);
    let bootstrap = brokers();
    let model = ModelServer::start(0);
    model.delay_ms.store(200, Ordering::SeqCst);
    let config = std::env::temp_dir().join(format!("{}.toml", unique("clickpipe-overload")));
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{}\"\ninput_topic = \"{}\"\noutput_topic = \"{}\"\ndlq_topic = \"{}\"\n\
             [redis]\nurl = \"{}\"\nzip_prefix = \"{}\"\nsession_prefix = \"{}\"\n[model]\nurl = \"{}\"\nmax_batch_size = 16\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n",
            names.group, names.input, names.output, names.dlq, redis_url(), names.zip_prefix, names.session_prefix, model.url
        ),
    )
    .expect("config");
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_clickpipe"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .expect("clickpipe run"),
    );
    let pid = child.0.id();

    // 2,000 events/s for 30 s; the model (200 ms per call of 16) serves ~320/s.
    let rate = 2000u64;
    let seconds = 30u64;
    let total = (rate * seconds) as usize;
    let input = PacedProducer::start(&bootstrap, &names.input, events("o", total, 401), rate);
    let started = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    while input.sent() < total {
        let secs = started.elapsed().as_secs();
        if samples.last().is_none_or(|(t, _)| *t < secs) {
            samples.push((secs, rss_kib(pid).unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let produced = input.finish();
    assert_eq!(produced.failed, 0, "every input record was acknowledged");
    let mut outputs = Collector::on(&bootstrap, &names.output);
    outputs.until(Duration::from_secs(1), |_| false);
    let done_during_overload = outputs.messages.len();

    // The model recovers; everything must come out.
    model.delay_ms.store(0, Ordering::SeqCst);
    let ids = outputs.event_ids(total, Duration::from_secs(240));
    let complete = ids.len() >= total;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let code = child.0.wait().ok().and_then(|s| s.code());
    let _ = std::fs::remove_file(&config);

    let warm = samples.iter().find(|(t, _)| *t >= 5).map_or(0, |(_, r)| *r);
    let peak = samples.iter().map(|(_, r)| *r).max().unwrap_or(0);
    eprintln!(
        "overload: rss at 5 s {} MiB, peak {} MiB over {seconds} s; {done_during_overload} of {total} done during overload; samples {:?}",
        warm / 1024,
        peak / 1024,
        samples.iter().map(|(t, r)| (t, r / 1024)).collect::<Vec<_>>()
    );
    assert!(
        done_during_overload < total / 2,
        "the model was the bottleneck (lag grew)"
    );
    assert!(
        peak > 0 && peak < warm + 100 * 1024,
        "RSS stayed flat: {} → {} MiB",
        warm / 1024,
        peak / 1024
    );
    assert!(complete, "{} of {total} outputs after recovery", ids.len());
    assert_eq!(code, Some(0));
}
