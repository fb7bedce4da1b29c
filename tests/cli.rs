//! The command line as a user meets it: `config check` prints the effective config with secrets
//! masked, and a bad value stops with exit code 2 and a message naming the key.

use std::process::Command;

fn clickpipe(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpipe"));
    cmd.args(args).env_remove("CLICKPIPE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run clickpipe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_masked() {
    let (code, stdout, stderr) = clickpipe(
        &["config", "check"],
        &[
            (
                "CLICKPIPE__REDIS__URL",
                "rediss://app:s3cret@cache.example:6379/0",
            ),
            ("CLICKPIPE__KAFKA__GROUP_ID", "from-env"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("group_id = \"from-env\""), "{stdout}");
    assert!(
        stdout.contains("rediss://app:***@cache.example:6379/0"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"));
}

#[test]
fn a_bad_value_stops_start_up_naming_the_key() {
    let (code, _, stderr) = clickpipe(
        &["config", "check"],
        &[("CLICKPIPE__MODEL__URL", "ftp://model")],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("model.url"), "{stderr}");

    let (code, _, stderr) = clickpipe(&["run"], &[("CLICKPIPE__PIPELINE__MAX_BATCH", "0")]);
    assert_eq!(code, 2, "run refuses to start");
    assert!(stderr.contains("pipeline.max_batch"), "{stderr}");

    let (code, _, stderr) = clickpipe(&["config", "check", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn mock_broker_serves_the_configured_topics_until_stopped() {
    use std::io::BufRead;
    use std::time::Duration;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::ClientConfig;

    let mut child = Command::new(env!("CARGO_BIN_EXE_clickpipe"))
        .args(["mock-broker", "--partitions", "3"])
        .env_remove("CLICKPIPE_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mock-broker");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("bootstrap line");
    let bootstrap = line.trim().to_string();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("client");
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let code = child.wait().ok().and_then(|s| s.code());
    for topic in ["clicks", "predictions", "clicks-dlq"] {
        let t = md.topics().iter().find(|t| t.name() == topic);
        assert_eq!(
            t.map(|t| t.partitions().len()),
            Some(3),
            "{topic} on {bootstrap}"
        );
    }
    assert_eq!(code, Some(0), "stops cleanly on SIGTERM");
}
