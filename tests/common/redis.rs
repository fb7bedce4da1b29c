//! Redis fixtures: ZIP data for the lookup stage, and a Redis of a test's own (for outages).

use super::*;
use std::process::{Child, Command, Stdio};

pub fn seed_zip(prefix: &str, zip: &str, income: &str, tz: &str) {
    let client = ::redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_connection()
        .unwrap_or_else(|e| panic!("redis at {} (scripts/services.sh start): {e}", redis_url()));
    ::redis::cmd("HSET")
        .arg(format!("{prefix}{zip}"))
        .arg("median_income")
        .arg(income)
        .arg("timezone")
        .arg(tz)
        .query::<()>(&mut conn)
        .expect("HSET");
}

/// A Redis of this test's own, so stopping it does not disturb other tests.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts redis-server on `port` (loopback), no persistence.
    pub fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        let r = OwnRedis {
            port,
            child: Some(child),
        };
        wait_until(
            "redis-server listens",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (an outage); starting it again on the same port ends the outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
