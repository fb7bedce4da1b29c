//! `clickpipe` as a process: config files, spawning, and the group settings tests run with.

use super::*;

/// A MockCluster with the test's three topics, 4 partitions each.
pub fn mock_with_topics(
    names: &Names,
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    for t in [&names.input, &names.output, &names.dlq] {
        mock.create_topic(t, 4, 1).expect("topic");
    }
    mock
}

/// Polls `ready` every `every` until it holds; fails the test with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, every: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(every);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The group settings of [`config_file`]: the classic protocol with a 6 s session.
pub const CLASSIC_GROUP: &str = r#"[kafka.consumer]
"fetch.wait.max.ms" = "5"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"max.poll.interval.ms" = "10000"
"#;

/// clickpipe's own group defaults (classic, session 8 s, heartbeat 1 s).
pub const DEFAULT_GROUP: &str = r#"[kafka.consumer]
"fetch.wait.max.ms" = "5"
"#;

/// KIP-848's consumer protocol: the session and heartbeat belong to the broker.
pub const CONSUMER_PROTOCOL_GROUP: &str = r#"group_protocol = "consumer"
[kafka.consumer]
"fetch.wait.max.ms" = "5"
"max.poll.interval.ms" = "10000"
"#;

/// A config file for `clickpipe run` (a process of its own) with the test's names and services.
pub fn config_file(names: &Names, model_url: &str, bootstrap: &str) -> std::path::PathBuf {
    config_file_with_group(names, model_url, bootstrap, CLASSIC_GROUP)
}

/// [`config_file`] with other group settings (TOML inserted at the end of the `[kafka]` table).
pub fn config_file_with_group(
    names: &Names,
    model_url: &str,
    bootstrap: &str,
    group: &str,
) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("clickpipe-run")));
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topic = "{input}"
output_topic = "{output}"
dlq_topic = "{dlq}"
commit_interval_ms = 200
{group_settings}
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
        brokers = bootstrap,
        group = names.group,
        input = names.input,
        output = names.output,
        dlq = names.dlq,
        redis = redis_url(),
        zp = names.zip_prefix,
        sp = names.session_prefix,
        port = free_port(),
        group_settings = group,
    );
    std::fs::write(&path, text).expect("config file");
    path
}

/// What a test of `clickpipe run` processes on the shared broker starts from: its names with
/// topics of 4 partitions, the broker's address, a model server that always answers, and a
/// config file for them with the group settings `group`.
pub fn process_fixture(
    test: &str,
    group: &str,
) -> (Names, String, ModelServer, std::path::PathBuf) {
    let names = Names::new(test, 4);
    let bootstrap = brokers();
    let model = ModelServer::start(0);
    let config = config_file_with_group(&names, &model.url, &bootstrap, group);
    (names, bootstrap, model, config)
}

/// The most outputs `interruptions` unclean interruptions (kills, broker outages) may repeat: per
/// interruption the records in flight (`max_in_flight` per partition, 4 partitions) plus those
/// finished since the last commit (commit interval 200 ms; a generous 1,000).
pub fn repeat_bound(interruptions: usize, max_in_flight: usize) -> usize {
    interruptions * (max_in_flight * 4 + 1_000)
}

/// A `clickpipe run` process, killed when dropped so a failing test leaves nothing running.
pub struct Instance(std::process::Child);

impl From<std::process::Child> for Instance {
    fn from(child: std::process::Child) -> Self {
        Instance(child)
    }
}

impl Instance {
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// SIGTERM (a clean stop: drain, commit, leave) and the exit code. A process still running
    /// two minutes later is killed and reported as None (so a hung shutdown fails the test
    /// instead of stalling the suite).
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "process {} did not stop within 120 s of SIGTERM; killed",
                    self.0.id()
                );
                let _ = self.0.kill();
                let _ = self.0.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `clickpipe run --config CONFIG` on a free admin port.
pub fn spawn(config: &std::path::Path) -> Instance {
    spawn_with(config, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_with(config: &std::path::Path, env: &[(&str, &str)]) -> Instance {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_clickpipe"));
    cmd.arg("run").arg("--config").arg(config).env(
        "CLICKPIPE__ADMIN__LISTEN",
        format!("127.0.0.1:{}", free_port()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map(Instance)
        .expect("spawn clickpipe run")
}
