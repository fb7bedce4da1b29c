//! The `clickpipe run` process killed with SIGKILL mid-stream and started again: every event still
//! ends up in the output or the dead-letter topic (at-least-once: some may repeat, none is lost).

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset};

use common::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn config_file(names: &Names, model_url: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("clickpipe-crash")));
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topic = "{input}"
output_topic = "{output}"
dlq_topic = "{dlq}"
commit_interval_ms = 200
[kafka.consumer]
"fetch.wait.max.ms" = "5"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[pipeline]
drain_timeout_ms = 4000
[redis]
url = "{redis}"
zip_prefix = "{zp}"
session_prefix = "{sp}"
[model]
url = "{model_url}"
[admin]
listen = "127.0.0.1:{port}"
[log]
level = "warn"
"#,
        brokers = brokers(),
        group = names.group,
        input = names.input,
        output = names.output,
        dlq = names.dlq,
        redis = redis_url(),
        zp = names.zip_prefix,
        sp = names.session_prefix,
        port = free_port(),
    );
    std::fs::write(&path, text).expect("config file");
    path
}

fn spawn(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_clickpipe"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn clickpipe run")
}

/// Sum over partitions of the group's committed offsets on the input topic.
fn committed_total(names: &Names) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &names.group)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(&names.input), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(&names.input, p.id());
        }
    }
    let offsets = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_killed_pipeline_restarted_loses_no_event() {
    let names = Names::new("crash", 4);
    let model = ModelServer::start(0);
    let config = config_file(&names, &model.url);
    let total = 4000usize;
    let records: Vec<(String, Vec<u8>)> = (0..total)
        .map(|i| {
            let s = format!("s{}", i % 113);
            (
                s.clone(),
                event(
                    &format!("c{i}"),
                    &s,
                    "2026-06-01T10:00:00Z",
                    "page_view",
                    None,
                ),
            )
        })
        .collect();
    produce(&names.input, &records);

    let mut outputs = Collector::new(&names.output);
    let mut first = spawn(&config);
    // Kill once some outputs exist, mid-stream.
    assert!(
        outputs.until(Duration::from_secs(60), |m| m.len() >= 300),
        "first instance produced outputs"
    );
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    outputs.until(Duration::from_secs(1), |_| false);
    let before = outputs.messages.len();
    assert!(
        before < total,
        "killed mid-stream ({before} of {total} done)"
    );
    let committed = committed_total(&names);
    eprintln!("crash test: killed with {before} outputs seen, {committed} input offsets committed");

    let mut second = spawn(&config);
    let mut ids: HashSet<String> = HashSet::new();
    let mut seen = 0;
    outputs.until(Duration::from_secs(180), |m| {
        for msg in &m[seen..] {
            ids.insert(
                json(msg)["event_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        seen = m.len();
        ids.len() >= total
    });
    let _ = second.kill();
    let _ = second.wait();
    let _ = std::fs::remove_file(&config);
    let out = &outputs.messages;

    let missing: Vec<usize> = (0..total)
        .filter(|i| !ids.contains(&format!("c{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "crash test: {} outputs for {total} events ({} repeated after SIGKILL)",
        out.len(),
        out.len().saturating_sub(total)
    );
}
