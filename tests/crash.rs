//! The `clickpipe run` process killed with SIGKILL mid-stream and started again: every event still
//! ends up in the output or the dead-letter topic (at-least-once: some may repeat, none is lost).

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn a_killed_pipeline_restarted_loses_no_event() {
    let names = Names::new("crash", 4);
    let model = ModelServer::start(0);
    let config = config_file(&names, &model.url);
    let total = 6000usize;
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

    let mut first = spawn(&config);
    // Kill once some outputs exist, mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while consume(&names.output, 300, Duration::from_millis(500)).len() < 300
        && Instant::now() < deadline
    {}
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let before = consume(&names.output, usize::MAX, Duration::from_secs(2)).len();
    assert!(
        before < total,
        "killed mid-stream ({before} of {total} done)"
    );

    let mut second = spawn(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (out, ids) = loop {
        let out = consume(&names.output, usize::MAX, Duration::from_secs(3));
        let ids: HashSet<String> = out
            .iter()
            .map(|m| json(m)["event_id"].as_str().unwrap_or_default().to_string())
            .collect();
        if ids.len() >= total || Instant::now() > deadline {
            break (out, ids);
        }
    };
    let _ = second.kill();
    let _ = second.wait();
    let _ = std::fs::remove_file(&config);

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
