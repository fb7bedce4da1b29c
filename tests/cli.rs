//! The command line as a user meets it: `config check` prints the effective config with secrets
//! masked, and a bad value stops with exit code 2 and a message naming the key; `features check`
//! prints the feature set.

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

#[test]
fn health_exits_0_when_the_probed_endpoint_answers_200_and_1_when_not() {
    // The reference model server answers GET /ping.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut server = Command::new(env!("CARGO_BIN_EXE_clickpipe"))
        .args(["model-server", "--listen", &url["http://".len()..]])
        .env_remove("CLICKPIPE_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("model server");
    drop(listener);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, _, stderr) = clickpipe(&["health", "--url", &url, "--path", "/ping"], &[]);
        if code == 0 {
            break;
        }
        assert_eq!(code, 1, "{stderr}");
        assert!(
            std::time::Instant::now() < deadline,
            "model server never healthy: {stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, _, stderr) = clickpipe(&["health", "--url", &url], &[]);
    assert_eq!(code, 1, "no /health/live there");
    assert!(stderr.contains("404"), "{stderr}");
    let _ = server.kill();
    let _ = server.wait();
    let (code, _, stderr) = clickpipe(&["health", "--url", &url, "--path", "/ping"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[test]
fn features_check_prints_the_set_in_model_instance_order_and_refuses_a_bad_one() {
    let (code, stdout, stderr) = clickpipe(&["features", "check"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let names: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter(|l| !l.contains("(not output)"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names.first(), Some(&"hour_of_day"), "{stdout}");
    assert_eq!(names.len(), 21, "the built-in features: {stdout}");
    assert!(stdout.starts_with("version builtin-1"), "{stdout}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/features/example.toml");
    let (code, stdout, stderr) = clickpipe(
        &["features", "check"],
        &[("CLICKPIPE__FEATURES__SET", example)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("user_product_views_10m") && stdout.contains("window"),
        "{stdout}"
    );

    let bad = std::env::temp_dir().join(format!("bad-set-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "version = \"1\"\n[[feature]]\nname = \"d\"\nkind = \"one_hot\"\ncolumn = \"colour\"\nvalues = [\"red\"]\n",
    )
    .expect("file");
    let bad_path = bad.display().to_string();
    for args in [
        &["features", "check"][..],
        &["config", "check"][..],
        &["run"][..],
    ] {
        let (code, _, stderr) = clickpipe(args, &[("CLICKPIPE__FEATURES__SET", &bad_path)]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("features.set") && stderr.contains("feature \"d\": key \"column\""),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_file(&bad);
}
