//! `clickpipe ingest` (the real binary) tailing a real OpenSearch-compatible server (osmem-server,
//! in memory, one per test) into the real broker, with its checkpoint in the real Redis.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::Message as _;
use serde_json::{json, Value};

/// An osmem-server process on a free port, killed when dropped.
struct Search {
    url: String,
    child: Child,
}

fn osmem_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CLICKPIPE_OSMEM") {
        return p.into();
    }
    let tools = std::env::var_os("CLICKPIPE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/clickpipe")))
        .expect("HOME or CLICKPIPE_TOOLS");
    let p = tools.join("bin/osmem-server");
    assert!(
        p.exists(),
        "{} not found: run scripts/services.sh install osmem",
        p.display()
    );
    p
}

impl Search {
    fn start() -> Search {
        let port = free_port();
        let child = Command::new(osmem_binary())
            .args(["-addr", &format!("127.0.0.1:{port}"), "-no-stdin-watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn osmem-server");
        let s = Search {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        wait_until(
            "osmem-server did not start",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || http("GET", &format!("{}/", s.url), None).0 == 200,
        );
        s
    }

    fn create_index(&self, index: &str) {
        let (status, body) = http(
            "PUT",
            &format!("{}/{index}", self.url),
            Some(
                json!({"mappings": {"properties": {
                    "@timestamp": {"type": "date"},
                    "session_id": {"type": "keyword"},
                    "event_id": {"type": "keyword"},
                }}})
                .to_string(),
            ),
        );
        assert_eq!(status, 200, "{body}");
    }

    /// Indexes `(id, document)` pairs with `_bulk`, visible at once.
    fn bulk(&self, index: &str, docs: &[(String, Value)]) {
        for chunk in docs.chunks(5000) {
            let mut body = String::new();
            for (id, doc) in chunk {
                body.push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
                body.push('\n');
                body.push_str(&doc.to_string());
                body.push('\n');
            }
            let (status, answer) = http(
                "POST",
                &format!("{}/_bulk?refresh=true", self.url),
                Some(body),
            );
            assert_eq!(status, 200, "{answer}");
            assert!(
                answer.contains("\"errors\":false"),
                "{}",
                &answer[..answer.len().min(500)]
            );
        }
    }
}

impl Drop for Search {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn doc(ts_ms: i64, session: &str) -> Value {
    json!({
        "@timestamp": chrono::DateTime::from_timestamp_millis(ts_ms).expect("ts").to_rfc3339(),
        "session_id": session,
        "user_id": format!("u-{session}"),
        "event_type": "page_view",
        "device": "desktop",
    })
}

/// Starts `clickpipe ingest` on the `clicks` index at `search_url`, writing to the shared broker,
/// with `extra` TOML lines in `[ingest]`.
fn ingest(names: &Names, search_url: &str, extra: &str) -> (Instance, u16) {
    let index = "clicks";
    let path = config_file(names, "http://127.0.0.1:1", &brokers());
    let port = free_port();
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str(&format!(
        "[ingest]\nurl = \"{}\"\nindex = \"{index}\"\nlisten = \"127.0.0.1:{port}\"\ncheckpoint_key = \"{}checkpoint\"\n{extra}\n",
        search_url, names.zip_prefix
    ));
    std::fs::write(&path, text).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpipe"));
    cmd.arg("ingest").arg("--config").arg(&path);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn clickpipe ingest");
    (Instance::from(child), port)
}

/// Event ids on `topic` (each occurrence), read until `want` distinct ids or `timeout`.
fn collect_ids(c: &mut Collector, want: usize, timeout: Duration) -> HashMap<String, usize> {
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut counted = 0;
    c.until(timeout, |msgs| {
        for m in &msgs[counted..] {
            let id = json(m)["event_id"].as_str().unwrap_or_default().to_string();
            *ids.entry(id).or_insert(0) += 1;
        }
        counted = msgs.len();
        ids.len() >= want
    });
    ids
}

/// The test's topics (`partitions` each) on the shared Kafka broker and a search server with an
/// empty `clicks` index.
fn topics_and_search(test: &str, partitions: i32) -> (Names, Search) {
    let names = Names::new(test, partitions);
    let search = Search::start();
    search.create_index("clicks");
    (names, search)
}

/// `n` documents `{prefix}{i}` of session `session`, one a millisecond from `start_ms`.
fn docs_from(prefix: &str, n: i64, start_ms: i64, session: &str) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), doc(start_ms + i, session)))
        .collect()
}

/// `n` documents `{prefix}{i}` (`i` zero-padded to `width` digits) from an hour ago, in groups
/// of `group` sharing one timestamp, `step_ms` apart, spread over `sessions` sessions.
fn docs_in_groups(
    prefix: &str,
    width: usize,
    n: usize,
    group: usize,
    step_ms: i64,
    sessions: usize,
) -> Vec<(String, Value)> {
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    (0..n)
        .map(|i| {
            (
                format!("{prefix}{i:0width$}"),
                doc(
                    base + (i / group) as i64 * step_ms,
                    &format!("s{}", i % sessions),
                ),
            )
        })
        .collect()
}

/// Reads on for `quiet` (nothing more may come) and returns how many records arrived in all.
fn settled_count(c: &mut Collector, quiet: Duration) -> usize {
    c.until(quiet, |_| false);
    c.messages.len()
}

#[test]
fn fifty_thousand_documents_with_equal_timestamps_across_pages_arrive_exactly_once() {
    let (names, search) = topics_and_search("ingest-50k", 4);
    let bootstrap = brokers();
    // 50,000 documents in groups of 700 sharing one timestamp: with pages of 500, page
    // boundaries fall inside groups of equal timestamps again and again.
    search.bulk("clicks", &docs_in_groups("d", 5, 50_000, 700, 1000, 97));
    // Inside points in time: their `_shard_doc` order breaks the ties.
    let (_tailer, port) = ingest(&names, &search.url, "page_size = 500\npit = \"always\"");
    let mut c = Collector::on(&bootstrap, &names.input);
    let ids = collect_ids(&mut c, 50_000, Duration::from_secs(240));
    assert_eq!(get_json(port, "/status")["point_in_time"], "opensearch");
    assert_eq!(ids.len(), 50_000, "every document arrived");
    // A little longer: nothing more may come.
    let total = settled_count(&mut c, Duration::from_secs(3));
    assert_eq!(total, 50_000, "each exactly once ({total} records)");
    let m = &c.messages[0];
    assert_eq!(
        header(m, "clickpipe.source.index").as_deref(),
        Some("clicks")
    );
    let v = json(m);
    assert_eq!(
        m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        v["session_id"].as_str().map(str::to_string),
        "keyed by session"
    );
    assert_eq!(
        header(m, "clickpipe.source.id").as_deref(),
        v["event_id"].as_str()
    );
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http("GET", &format!("http://127.0.0.1:{port}{path}"), None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn wait_live(port: u16) {
    wait_until(
        "clickpipe ingest did not come up",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || http("GET", &format!("http://127.0.0.1:{port}/health/live"), None).0 == 200,
    );
}

#[test]
fn documents_added_while_tailing_arrive_within_a_second_and_late_ones_inside_the_overlap_too() {
    let (names, search) = topics_and_search("ingest-live", 1);
    let (_tailer, port) = ingest(&names, &search.url, "");
    wait_live(port);
    let mut c = Collector::new(&names.input);
    // Let the tailer make its first (empty) polls.
    std::thread::sleep(Duration::from_millis(500));
    let mut indexed_at = HashMap::new();
    for i in 0..20 {
        let now = chrono::Utc::now().timestamp_millis();
        let id = format!("live{i}");
        search.bulk("clicks", &[(id.clone(), doc(now, "s1"))]);
        indexed_at.insert(id, chrono::Utc::now().timestamp_millis());
        std::thread::sleep(Duration::from_millis(100));
    }
    let ids = collect_ids(&mut c, 20, Duration::from_secs(30));
    assert_eq!(ids.len(), 20);
    for m in &c.messages {
        let id = json(m)["event_id"].as_str().unwrap_or_default().to_string();
        let produced = m.timestamp().to_millis().expect("record timestamp");
        let lag = produced - indexed_at[&id];
        assert!(
            lag < 1000,
            "{id} reached Kafka {lag} ms after it was indexed"
        );
    }

    // Visible only now, 1 s older than the newest sent: inside the 2 s overlap, so still sent.
    let newest = c
        .messages
        .iter()
        .filter_map(|m| json(m)["@timestamp"].as_str().map(str::to_string))
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp_millis())
        .max()
        .expect("timestamps");
    search.bulk("clicks", &[("late".to_string(), doc(newest - 1000, "s2"))]);
    let ids = collect_ids(&mut c, 21, Duration::from_secs(10));
    assert_eq!(ids.get("late"), Some(&1), "the late document arrives once");
    assert_eq!(
        settled_count(&mut c, Duration::from_secs(2)),
        21,
        "nothing is sent twice"
    );

    let status = get_json(port, "/status");
    assert_eq!(status["documents"], 21);
    assert_eq!(
        status["point_in_time"], "none",
        "auto: the server sorts on _id, so no point in time is needed"
    );
    assert_eq!(status["caught_up"], true);
    let (_, metrics) = http("GET", &format!("http://127.0.0.1:{port}/metrics"), None);
    assert!(
        metrics.contains("clickpipe_ingest_documents_total 21"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clickpipe_ingest_lag_seconds_count 21"),
        "{metrics}"
    );
}

#[test]
fn a_tailer_killed_mid_way_and_restarted_leaves_no_gap() {
    let (names, search) = topics_and_search("ingest-kill", 4);
    let bootstrap = brokers();
    let total = 20_000;
    search.bulk("clicks", &docs_in_groups("k", 5, total, 300, 10, 31));
    let page = 500;
    let extra = format!("page_size = {page}");
    let (mut first, port) = ingest(&names, &search.url, &extra);
    wait_live(port);
    // Kill it by its own count, mid-way and in the middle of a page (pages of 500).
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let (_, body) = http("GET", &format!("http://127.0.0.1:{port}/status"), None);
        let sent = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["documents"].as_u64())
            .unwrap_or(0);
        if sent >= 5_250 {
            first.kill().expect("kill -9");
            let _ = first.wait();
            break sent;
        }
        assert!(
            Instant::now() < deadline,
            "the tailer never reached 5,000 documents"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(at_kill < total as u64 / 2, "killed mid-way, at {at_kill}");
    let mut c = Collector::on(&bootstrap, &names.input);
    let (_second, _) = ingest(&names, &search.url, &extra);
    let ids = collect_ids(&mut c, total, Duration::from_secs(240));
    assert_eq!(ids.len(), total, "no gap: every document arrived");
    let repeats = settled_count(&mut c, Duration::from_secs(3)) - total;
    eprintln!("kill -9 and restart: {repeats} documents sent twice");
    assert!(
        repeats <= page,
        "at most the page in flight repeats: {repeats} > {page}"
    );
}

#[test]
fn malformed_documents_are_dead_lettered_with_the_reason_and_tailing_goes_on() {
    let (names, search) = topics_and_search("ingest-bad", 1);
    let base = chrono::Utc::now().timestamp_millis() - 60_000;
    let mut docs = docs_from("ok", 10, base, "s1");
    let mut no_session = doc(base + 20, "s1");
    no_session
        .as_object_mut()
        .expect("object")
        .remove("session_id");
    let mut bad_zip = doc(base + 21, "s1");
    bad_zip["zip"] = json!("abc");
    let mut bad_type = doc(base + 22, "s1");
    bad_type["event_type"] = json!(42);
    docs.push(("no-session".into(), no_session));
    docs.push(("bad-zip".into(), bad_zip));
    docs.push(("bad-type".into(), bad_type));
    // A ~900 KB bad field: its reason must not echo it (a 900 KB header next to a 900 KB
    // document is more than the broker takes, and the tailer stopped on it).
    let mut huge_zip = doc(base + 23, "s1");
    huge_zip["zip"] = json!("9".repeat(900_000));
    docs.push(("huge-zip".into(), huge_zip));
    search.bulk("clicks", &docs);
    let (_tailer, port) = ingest(&names, &search.url, "");
    let mut input = Collector::new(&names.input);
    assert_eq!(
        collect_ids(&mut input, 10, Duration::from_secs(60)).len(),
        10
    );
    let dead = consume(&names.dlq, 4, Duration::from_secs(30));
    assert_eq!(dead.len(), 4);
    for m in &dead {
        let id = header(m, "clickpipe.source.id").expect("source id");
        assert_eq!(
            header(m, "clickpipe.error.kind").as_deref(),
            Some("invalid_event"),
            "{id}"
        );
        assert_eq!(
            header(m, "clickpipe.error.stage").as_deref(),
            Some("ingest"),
            "{id}"
        );
        let reason = header(m, "clickpipe.error.message").unwrap_or_default();
        let field = match id.as_str() {
            "no-session" => "session_id",
            "bad-zip" | "huge-zip" => "zip",
            "bad-type" => "event_type",
            other => panic!("unexpected dead letter {other}"),
        };
        assert!(reason.contains(field), "{id}: {reason}");
        assert!(reason.len() < 300, "{id}: {} bytes", reason.len());
        assert_eq!(
            json(m)["event_id"],
            id.as_str(),
            "the document itself, with its id"
        );
    }
    // Tailing goes on.
    search.bulk("clicks", &[("after".to_string(), doc(base + 30, "s1"))]);
    assert_eq!(
        collect_ids(&mut input, 11, Duration::from_secs(30)).get("after"),
        Some(&1)
    );
    assert_eq!(get_json(port, "/status")["dead_letters"], 4);
}

#[test]
fn without_a_point_in_time_the_tiebreaker_field_orders_equal_timestamps() {
    // (The 50,000-document test reads inside points in time; this one without.)
    let (names, search) = topics_and_search("ingest-nopit", 2);
    search.bulk("clicks", &docs_in_groups("n", 4, 3_000, 700, 1, 7));
    let (_tailer, port) = ingest(&names, &search.url, "pit = \"never\"\npage_size = 500");
    let mut c = Collector::new(&names.input);
    assert_eq!(
        collect_ids(&mut c, 3_000, Duration::from_secs(120)).len(),
        3_000
    );
    assert_eq!(
        settled_count(&mut c, Duration::from_secs(2)),
        3_000,
        "each exactly once"
    );
    assert_eq!(get_json(port, "/status")["point_in_time"], "none");
}

/// An HTTPS front for `search` that answers 401 unless the request carries `authorization`, and
/// otherwise forwards it. Returns its URL and the CA file that verifies it.
fn tls_front(
    search: &Search,
    authorization: &'static str,
) -> (
    String,
    PathBuf,
    (actix_web::dev::ServerHandle, std::thread::JoinHandle<()>),
) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let (cert, key) = self_signed();
    let ca = std::env::temp_dir().join(format!("{}.pem", unique("clickpipe-ca")));
    std::fs::write(&ca, cert.to_pem().expect("pem")).expect("write CA");
    let mut tls = openssl::ssl::SslAcceptor::mozilla_intermediate(openssl::ssl::SslMethod::tls())
        .expect("acceptor");
    tls.set_private_key(&key).expect("key");
    tls.set_certificate(&cert).expect("cert");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let upstream = search.url.clone();
    let server = serve_in_thread(move || {
        HttpServer::new(move || {
            let upstream = upstream.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let upstream = upstream.clone();
                async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok());
                    if auth != Some(authorization) {
                        return HttpResponse::Unauthorized()
                            .json(json!({"error": "missing or wrong credentials"}));
                    }
                    let client = awc::Client::default();
                    let mut forward =
                        client.request(req.method().clone(), format!("{upstream}{}", req.uri()));
                    if let Some(ct) = req.headers().get("content-type") {
                        forward = forward.insert_header(("content-type", ct.clone()));
                    }
                    match forward.send_body(body).await {
                        Ok(mut resp) => {
                            let bytes = resp.body().limit(64 << 20).await.unwrap_or_default();
                            HttpResponse::build(resp.status())
                                .content_type("application/json")
                                .body(bytes)
                        }
                        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
                    }
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen_openssl(listener, tls)
        .expect("listen")
        .run()
    });
    (url, ca, server)
}

#[test]
fn tls_with_basic_auth_reaches_the_cluster_and_refused_credentials_stop_start_up() {
    let search = Search::start();
    search.create_index("clicks");
    let base = chrono::Utc::now().timestamp_millis() - 60_000;
    search.bulk("clicks", &docs_from("t", 100, base, "s1"));
    // "elastic:changeme", base64.
    let (url, ca, _front) = tls_front(&search, "Basic ZWxhc3RpYzpjaGFuZ2VtZQ==");
    let ca = ca.display().to_string();

    let names = Names::new("ingest-tls", 1);
    let (_tailer, port) = ingest(
        &names,
        &url,
        &format!("username = \"elastic\"\npassword = \"changeme\"\ntls_ca_file = \"{ca}\""),
    );
    let mut c = Collector::new(&names.input);
    assert_eq!(collect_ids(&mut c, 100, Duration::from_secs(60)).len(), 100);
    assert_eq!(get_json(port, "/status")["errors"], 0);

    // Without the CA the certificate is not trusted: the tailer retries and reports the error.
    let names = Names::new("ingest-tls-untrusted", 1);
    let (_tailer, port) = ingest(
        &names,
        &url,
        "username = \"elastic\"\npassword = \"changeme\"",
    );
    wait_live(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get_json(port, "/status");
        if status["errors"].as_u64().unwrap_or(0) > 0 {
            let e = status["last_error"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            assert!(
                e.contains("certificate") || e.contains("ssl") || e.contains("tls"),
                "{e}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no TLS error reported: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Wrong credentials: the cluster's 401 stops the tailer with the answer in the message.
    let names = Names::new("ingest-tls-denied", 1);
    let path = config_file(&names, "http://127.0.0.1:1", &brokers());
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str(&format!(
        "[ingest]\nurl = \"{url}\"\nlisten = \"127.0.0.1:{}\"\napi_key = \"bm9wZTpub3Bl\"\ntls_ca_file = \"{ca}\"\n",
        free_port()
    ));
    std::fs::write(&path, text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clickpipe"))
        .arg("ingest")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run clickpipe ingest");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn start_from_now_leaves_out_what_the_index_already_held() {
    let (names, search) = topics_and_search("ingest-now", 1);
    let old = chrono::Utc::now().timestamp_millis() - 3_600_000;
    search.bulk("clicks", &docs_from("old", 50, old, "s1"));
    let (_tailer, port) = ingest(&names, &search.url, "start_from = \"now\"");
    wait_live(port);
    std::thread::sleep(Duration::from_millis(500));
    let now = chrono::Utc::now().timestamp_millis();
    search.bulk("clicks", &docs_from("new", 5, now, "s2"));
    let mut c = Collector::new(&names.input);
    let ids = collect_ids(&mut c, 5, Duration::from_secs(30));
    assert_eq!(
        settled_count(&mut c, Duration::from_secs(2)),
        5,
        "only the new documents: {ids:?}"
    );
    assert!(ids.keys().all(|id| id.starts_with("new")), "{ids:?}");
}

#[test]
fn a_document_from_year_2099_does_not_hide_the_documents_of_the_present() {
    let (names, search) = topics_and_search("ingest-future", 1);
    let future = chrono::DateTime::parse_from_rfc3339("2099-01-01T00:00:00Z")
        .expect("time")
        .timestamp_millis();
    search.bulk("clicks", &[("from-2099".to_string(), doc(future, "s9"))]);
    let (_tailer, port) = ingest(&names, &search.url, "");
    wait_live(port);
    // Beyond features.max_event_lead_s: dead-lettered before Kafka's input topic.
    let dead = consume(&names.dlq, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    assert!(
        header(&dead[0], "clickpipe.error.message").is_some_and(|r| r.contains("max_event_lead_s"))
    );
    let mut c = Collector::new(&names.input);
    // Documents of the present, over a few polls: each arrives once.
    for i in 0..10 {
        let now = chrono::Utc::now().timestamp_millis();
        search.bulk("clicks", &[(format!("now{i}"), doc(now, "s1"))]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let ids = collect_ids(&mut c, 10, Duration::from_secs(20));
    c.until(Duration::from_secs(1), |_| false);
    assert_eq!(ids.len(), 10, "{ids:?}");
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
}

#[test]
fn credentials_in_the_cluster_url_never_reach_the_status_page() {
    let names = Names::new("ingest-secret", 1);
    // Nothing listens on port 1: every search fails, and the failure is reported.
    let (mut tailer, port) = ingest(&names, "http://elastic:s3cret-pass@127.0.0.1:1", "");
    wait_live(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = get_json(port, "/status");
        if !status["last_error"].is_null() || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = tailer.terminate();
    assert!(!status["last_error"].is_null(), "{status}");
    let text = status.to_string();
    assert!(!text.contains("s3cret-pass"), "{text}");
    assert!(text.contains("elastic:***@127.0.0.1:1"), "{text}");
}
