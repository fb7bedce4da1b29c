//! A Kafka broker of a test's own, for tests that stop, kill or restart the broker: the same
//! single-node KRaft broker as the shared one (`scripts/services.sh kafka-run`, jars from
//! `$CLICKPIPE_TOOLS`), on free ports, with its data in a temporary directory that survives
//! restarts and is deleted when the fixture is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// A broker process the test owns.
pub struct OwnBroker {
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    child: Option<Child>,
}

impl OwnBroker {
    /// Formats a new broker's storage, starts it and waits until it answers metadata requests.
    pub fn start() -> OwnBroker {
        let dir = std::env::temp_dir().join(super::unique("clickpipe-kafka"));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut b = OwnBroker {
            dir,
            port: super::free_port(),
            controller_port: super::free_port(),
            child: None,
        };
        b.spawn();
        b
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates topics with the given partition counts (replication 1).
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        super::create_topics_on(&self.bootstrap(), topics)
    }

    fn spawn(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kafka.log"))
            .expect("broker log");
        let child = Command::new(script)
            .arg("kafka-run")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("scripts/services.sh kafka-run");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(90));
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()
            .expect("metadata client");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the test's Kafka broker exited during start-up ({status}); log: {}",
                        self.dir.join("kafka.log").display()
                    );
                }
            }
            if consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok_and(|md| !md.brokers().is_empty())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test's Kafka broker did not answer within {timeout:?}; log: {}",
                self.dir.join("kafka.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM (a controlled shutdown) and waits for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// SIGKILL: the broker ends without a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same ports and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running broker");
        self.spawn();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
