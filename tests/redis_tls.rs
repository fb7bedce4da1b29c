//! ElastiCache-style Redis: TLS (`rediss://`) and AUTH. A real redis-server with a TLS port and a
//! password; the pipeline's lookups (ZIP data, session state) go through it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct TlsRedis {
    port: u16,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_redis(password: &str) -> TlsRedis {
    let (cert, key) = self_signed_files();
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .args([
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let r = TlsRedis { port, child };
    wait_until(
        "redis-server (TLS) did not start",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    r
}

#[test]
fn lookups_go_through_tls_with_auth() {
    let redis = tls_redis("s3cret");
    // `#insecure`: the test's certificate is self-signed; ElastiCache's is publicly trusted.
    let url = format!("rediss://:s3cret@127.0.0.1:{}/#insecure", redis.port);
    let names = Names::new("redis-tls", 1);
    let model = ModelServer::start(0);
    let mut cfg = config(&names, &model.url);
    cfg.redis.url = url.clone();

    // Seed one ZIP over TLS, as `clickpipe seed-redis` does.
    let client = redis::Client::open(url.as_str()).expect("rediss url");
    let mut conn = client.get_connection().expect("TLS connection with AUTH");
    let () = redis::cmd("HSET")
        .arg(format!("{}10001", names.zip_prefix))
        .arg("median_income")
        .arg("91000")
        .arg("timezone")
        .arg("America/New_York")
        .query(&mut conn)
        .expect("HSET");

    let running = run_pipeline(cfg);
    let ts = chrono::Utc::now().to_rfc3339();
    produce(
        &names.input,
        &[
            (
                "s1".into(),
                event("t1", "s1", &ts, "page_view", Some("10001")),
            ),
            ("s1".into(), event("t2", "s1", &ts, "search", Some("10001"))),
        ],
    );
    let out = consume(&names.output, 2, Duration::from_secs(60));
    assert_eq!(out.len(), 2, "both events scored");
    let by_id = by_event_id(&out);
    assert_eq!(
        by_id["t1"]["features"]["zip_median_income"], 91000.0,
        "ZIP data read over TLS"
    );
    assert_eq!(
        by_id["t2"]["features"]["session_event_count"], 2,
        "session state kept over TLS"
    );
    drop(running);

    // Without the password the server refuses.
    let anonymous = format!("rediss://127.0.0.1:{}/#insecure", redis.port);
    let client = redis::Client::open(anonymous.as_str()).expect("url");
    let refused = client
        .get_connection()
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(refused.is_err(), "AUTH is required");
}
