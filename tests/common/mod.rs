//! Shared fixtures of the integration tests: real Kafka-protocol broker and Redis (started by
//! `scripts/services.sh`, addresses from `CLICKPIPE_TEST_BROKERS` / `CLICKPIPE_TEST_REDIS`), a real
//! model server over loopback, and the pipeline running on its own actix system. Every test makes
//! its own topics, group and Redis key prefixes.

#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]

mod broker;
mod load;
pub use broker::OwnBroker;
pub use load::{PacedProducer, Produced};

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpServer};
use clickpipe::tools::model_server::{configure, Model};
use clickpipe_actors::config::Config;
use clickpipe_actors::fault_injection::FaultHooks;
use clickpipe_actors::partition::DrainReport;
use clickpipe_actors::pipeline::{Pipeline, PipelineHandle};
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::StatusBoard;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn brokers() -> String {
    std::env::var("CLICKPIPE_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("CLICKPIPE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

pub fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// The topics, group and key prefixes of one test.
pub struct Names {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
    pub zip_prefix: String,
    pub session_prefix: String,
}

impl Names {
    pub fn new(test: &str, partitions: i32) -> Names {
        let n = Names::without_topics(test);
        create_topics(&[(&n.input, partitions), (&n.output, partitions), (&n.dlq, 1)]);
        n
    }

    /// Names only; the test creates the topics where it needs them.
    pub fn without_topics(test: &str) -> Names {
        Names {
            input: unique(&format!("{test}-in")),
            output: unique(&format!("{test}-out")),
            dlq: unique(&format!("{test}-dlq")),
            group: unique(&format!("{test}-group")),
            zip_prefix: unique(&format!("{test}:zip")) + ":",
            session_prefix: unique(&format!("{test}:session")) + ":",
        }
    }
}

pub fn create_topics(topics: &[(&str, i32)]) {
    create_topics_on(&brokers(), topics)
}

/// Creates topics (replication 1) on the cluster at `bootstrap`.
pub fn create_topics_on(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let rt = actix_rt::Runtime::new().expect("runtime");
    let res = rt
        .block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap_or_else(|e| {
            panic!("create topics on {bootstrap} (is the broker running? scripts/services.sh start): {e}")
        });
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// Creates one topic (replication 1) with topic-level `configs` on the default broker.
pub fn create_topic_with(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let rt = actix_rt::Runtime::new().expect("runtime");
    let res = rt
        .block_on(admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topic");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// The group's committed offset on each partition of `topic` (None: nothing committed).
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let offsets = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// A config for one test: defaults, with the test's services, topics, group and prefixes.
pub fn config(names: &Names, model_url: &str) -> Config {
    let mut c = clickpipe::service::settings::load_from(
        None,
        figment::providers::Env::prefixed("CLICKPIPE_TEST_UNUSED__"),
    )
    .expect("default config");
    c.kafka.brokers = brokers();
    c.kafka.group_id = names.group.clone();
    c.kafka.input_topic = names.input.clone();
    c.kafka.output_topic = names.output.clone();
    c.kafka.dlq_topic = names.dlq.clone();
    c.kafka.commit_interval_ms = 200;
    c.kafka
        .consumer
        .insert("session.timeout.ms".into(), "15000".into());
    c.kafka
        .consumer
        .insert("heartbeat.interval.ms".into(), "500".into());
    c.redis.url = redis_url();
    c.redis.zip_prefix = names.zip_prefix.clone();
    c.redis.session_prefix = names.session_prefix.clone();
    c.model.url = model_url.to_string();
    c.model.retry_budget_ms = 3000;
    c.model.backoff_initial_ms = 20;
    c.model.backoff_max_ms = 200;
    c.pipeline.workers = 2;
    c.pipeline.drain_timeout_ms = 10_000;
    c.validate().expect("test config is valid");
    c.log.level = "warn".into();
    c
}

pub fn seed_zip(prefix: &str, zip: &str, income: &str, tz: &str) {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_connection()
        .unwrap_or_else(|e| panic!("redis at {} (scripts/services.sh start): {e}", redis_url()));
    redis::cmd("HSET")
        .arg(format!("{prefix}{zip}"))
        .arg("median_income")
        .arg(income)
        .arg("timezone")
        .arg(tz)
        .query::<()>(&mut conn)
        .expect("HSET");
}

// ---------------------------------------------------------------------------------------------
// Model server

/// Runs the server `build` makes on its own thread and actix system; returns its handle (to stop
/// it) and the thread.
pub fn serve_in_thread<F>(build: F) -> (ServerHandle, JoinHandle<()>)
where
    F: FnOnce() -> actix_web::dev::Server + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = build();
            let _ = tx.send(server.handle());
            let _ = server.await;
        });
    });
    (rx.recv().expect("server handle"), thread)
}

/// A real model server on loopback, answering 500 to its first `fail_first` invocations (all of
/// them when `fail_first` is usize::MAX).
pub struct ModelServer {
    pub url: String,
    pub invocations: Arc<AtomicUsize>,
    /// `GET /ping` requests answered.
    pub pings: Arc<AtomicUsize>,
    /// Added to every invocation, in milliseconds (a slow model).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// While set, every invocation answers 500 (the model is down; `/ping` still answers).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// While set, every invocation answers 400 (a non-retryable refusal; `/ping` still answers).
    pub rejecting: Arc<std::sync::atomic::AtomicBool>,
    /// The `traceparent` header of every invocation that had one.
    pub traceparents: Arc<std::sync::Mutex<Vec<String>>>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl ModelServer {
    pub fn start(fail_first: usize) -> ModelServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").expect("bind"), fail_first)
    }

    pub fn start_on(listener: TcpListener, fail_first: usize) -> ModelServer {
        let model = Arc::new(
            Model::load(std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/model.json"
            )))
            .expect("model"),
        );
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let invocations = Arc::new(AtomicUsize::new(0));
        let calls = invocations.clone();
        let pings = Arc::new(AtomicUsize::new(0));
        let pinged = pings.clone();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let down = failing.clone();
        let rejecting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = rejecting.clone();
        let traceparents = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = traceparents.clone();
        let (handle, thread) = serve_in_thread(move || {
            HttpServer::new(move || {
                let calls = calls.clone();
                let pinged = pinged.clone();
                let delay = delay.clone();
                let down = down.clone();
                let refuse = refuse.clone();
                let seen = seen.clone();
                App::new()
                    .wrap_fn(move |req, srv| {
                        if req.path() == "/ping" {
                            pinged.fetch_add(1, Ordering::SeqCst);
                        }
                        let wait = delay.load(Ordering::SeqCst);
                        let n = if req.path() == "/invocations" {
                            if let Some(tp) = req
                                .headers()
                                .get("traceparent")
                                .and_then(|v| v.to_str().ok())
                            {
                                seen.lock().expect("traceparents").push(tp.to_string());
                            }
                            calls.fetch_add(1, Ordering::SeqCst)
                        } else {
                            usize::MAX
                        };
                        let fail =
                            n != usize::MAX && (n < fail_first || down.load(Ordering::SeqCst));
                        let reject = n != usize::MAX && refuse.load(Ordering::SeqCst);
                        let fut = if fail || reject {
                            None
                        } else {
                            Some(srv.call(req))
                        };
                        async move {
                            if wait > 0 {
                                actix_rt::time::sleep(Duration::from_millis(wait)).await;
                            }
                            match fut {
                                Some(f) => f.await.map(|r| r.map_body(|_, b| b.boxed())),
                                None if reject => {
                                    Err(actix_web::error::ErrorBadRequest("injected refusal"))
                                }
                                None => Err(actix_web::error::ErrorInternalServerError(
                                    "injected failure",
                                )),
                            }
                        }
                    })
                    .configure(configure(model.clone()))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listen")
            .run()
        });
        ModelServer {
            url,
            invocations,
            pings,
            delay_ms,
            failing,
            rejecting,
            traceparents,
            handle,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let h = self.handle.clone();
        if let Some(t) = self.thread.take() {
            let rt = actix_rt::Runtime::new().expect("runtime");
            rt.block_on(h.stop(false));
            let _ = t.join();
        }
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline

/// The pipeline running on its own actix system, in its own thread.
pub struct Running {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<Vec<DrainReport>>>,
    pub stats: Arc<Stats>,
    pub status: Arc<StatusBoard>,
    pub fatal: Arc<std::sync::Mutex<Option<String>>>,
    /// What the admin API holds of the pipeline.
    pub handle: PipelineHandle,
}

pub fn run_pipeline(config: Config) -> Running {
    run_pipeline_with(config, Arc::new(FaultHooks::default()))
}

/// Logs to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=clickpipe_actors=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub fn run_pipeline_with(config: Config, hooks: Arc<FaultHooks>) -> Running {
    init_logs();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (stats_tx, stats_rx) = std::sync::mpsc::channel();
    let fatal = Arc::new(std::sync::Mutex::new(None));
    let fatal_slot = fatal.clone();
    let thread = std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let pipeline =
                Pipeline::start_with_hooks(Arc::new(config), hooks).expect("pipeline starts");
            let failed = pipeline.failed();
            actix_rt::spawn(async move {
                let reason = failed.await;
                if let Ok(mut slot) = fatal_slot.lock() {
                    *slot = Some(reason);
                }
            });
            let _ = stats_tx.send((pipeline.stats(), pipeline.status(), pipeline.handle()));
            let _ = actix_rt::task::spawn_blocking(move || stop_rx.recv()).await;
            pipeline.shutdown().await
        })
    });
    let (stats, status, handle) = stats_rx.recv().expect("pipeline stats");
    Running {
        stop: Some(stop_tx),
        thread: Some(thread),
        stats,
        status,
        fatal,
        handle,
    }
}

/// The admin API state of a running pipeline (as `clickpipe run` builds it).
pub fn admin_state(running: &Running, cfg: Config) -> clickpipe::service::admin::AdminState {
    clickpipe::service::admin::AdminState {
        stats: running.stats.clone(),
        status: running.status.clone(),
        started: Instant::now(),
        config: Arc::new(cfg),
        instance_id: clickpipe::service::admin::instance_id(),
        pipeline: Some(running.handle.clone()),
        replays: Default::default(),
    }
}

impl Running {
    /// Clean stop (as on SIGTERM).
    pub fn stop(mut self) -> Vec<DrainReport> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Vec<DrainReport> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.thread
            .take()
            .map(|t| t.join().expect("pipeline thread"))
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka I/O

pub fn producer() -> ThreadedProducer<DefaultProducerContext> {
    producer_on(&brokers())
}

pub fn producer_on(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .create()
        .expect("producer")
}

/// Produces `(key, value)` records and waits until all are acknowledged.
pub fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    produce_on(&brokers(), topic, records)
}

/// Produces to the cluster at `bootstrap` (e.g. a MockCluster).
pub fn produce_on(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let p = producer_on(bootstrap);
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic)
            .key(k.as_bytes())
            .payload(v.as_slice());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "{e}"
                    );
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Reads `topic` from the beginning until `want` records arrived or `timeout` passed.
pub fn consume(topic: &str, want: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let mut c = Collector::new(topic);
    c.until(timeout, |m| m.len() >= want);
    c.messages
}

/// Waits `quiet` and returns whatever else arrives — to check nothing more comes.
pub fn consume_settled(
    topic: &str,
    want: usize,
    timeout: Duration,
    quiet: Duration,
) -> Vec<OwnedMessage> {
    let mut got = consume(topic, want, timeout);
    std::thread::sleep(quiet);
    let again = consume(topic, usize::MAX, quiet);
    if again.len() > got.len() {
        got = again;
    }
    got
}

pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
    })
}

pub fn json(m: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(m.payload().unwrap_or_default()).expect("output is JSON")
}

/// An input event as JSON bytes.
pub fn event(id: &str, session: &str, ts: &str, event_type: &str, zip: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "event_id": id, "user_id": format!("u-{session}"), "session_id": session,
        "timestamp": ts, "event_type": event_type, "device": "desktop", "page": "/p"
    });
    if let Some(z) = zip {
        v["zip"] = serde_json::Value::String(z.to_string());
    }
    serde_json::to_vec(&v).expect("json")
}

/// `n` page-view events with ids `{prefix}{i}`, keyed by session `{prefix}-s{i % keys}`.
pub fn events(prefix: &str, n: usize, keys: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let s = format!("{prefix}-s{}", i % keys);
            let payload = event(
                &format!("{prefix}{i}"),
                &s,
                "2026-06-01T10:00:00Z",
                "page_view",
                None,
            );
            (s, payload)
        })
        .collect()
}

/// Output records by event_id.
pub fn by_event_id(msgs: &[OwnedMessage]) -> HashMap<String, serde_json::Value> {
    msgs.iter()
        .map(|m| {
            let v = json(m);
            (v["event_id"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect()
}

/// One consumer reading a topic from the beginning, accumulating what arrives: cheaper on the
/// broker than re-reading the topic for every check.
pub struct Collector {
    consumer: BaseConsumer,
    pub messages: Vec<OwnedMessage>,
}

impl Collector {
    pub fn new(topic: &str) -> Collector {
        Collector::on(&brokers(), topic)
    }

    /// A collector on the cluster at `bootstrap` (e.g. a MockCluster).
    pub fn on(bootstrap: &str, topic: &str) -> Collector {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("collector"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("tpl");
            }
        }
        consumer.assign(&tpl).expect("assign");
        Collector {
            consumer,
            messages: Vec::new(),
        }
    }

    /// Polls until the outputs carry `total` distinct event ids or `timeout` passes; returns the
    /// ids seen.
    pub fn event_ids(
        &mut self,
        total: usize,
        timeout: Duration,
    ) -> std::collections::HashSet<String> {
        let mut ids = std::collections::HashSet::new();
        let mut seen = 0;
        self.until(timeout, |m| {
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
        ids
    }

    /// Polls until `done(messages)` holds or `timeout` passes; returns whether it held.
    pub fn until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[OwnedMessage]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(&self.messages) {
            if Instant::now() >= deadline {
                return false;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => self.messages.push(m.detach()),
                // Broker errors (an outage the test injected) are reported and retried.
                Some(Err(e)) => eprintln!("collector: {e}"),
                None => {}
            }
        }
        true
    }

    /// Polls until every record the topic holds now (its high watermarks, read once at the call)
    /// has been collected, or `timeout` passes; returns whether it caught up. Unlike a fixed
    /// wait, this does not depend on how fast the first fetch after the assignment is.
    pub fn caught_up(&mut self, topic: &str, timeout: Duration) -> bool {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut total = 0usize;
        for t in md.topics() {
            for p in t.partitions() {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                total += usize::try_from(high - low).unwrap_or(0);
            }
        }
        self.until(timeout, |m| m.len() >= total)
    }
}

// ---------------------------------------------------------------------------------------------
// `clickpipe run` as a process

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

    /// SIGTERM (a clean stop: drain, commit, leave) and the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        self.0.wait().ok().and_then(|s| s.code())
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

// ---------------------------------------------------------------------------------------------
// TLS

/// A self-signed certificate for 127.0.0.1: (certificate, key).
pub fn self_signed() -> (
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Builder, X509NameBuilder};

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "127.0.0.1").expect("cn");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("version");
    let serial = BigNum::from_u32(1)
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(1).expect("time"))
        .expect("not after");
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .expect("san");
    b.append_extension(san).expect("extension");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    (b.build(), key)
}

/// Writes a self-signed certificate and its key as PEM files: (certificate, key).
pub fn self_signed_files() -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = self_signed();
    let dir = std::env::temp_dir();
    let cert_path = dir.join(format!("{}.pem", unique("clickpipe-cert")));
    let key_path = dir.join(format!("{}.pem", unique("clickpipe-key")));
    std::fs::write(&cert_path, cert.to_pem().expect("pem")).expect("write cert");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
    (cert_path, key_path)
}

/// Sends a request to the admin API test `app` with the calling file's `TOKEN` as bearer token;
/// evaluates to (status, JSON body). Needs `actix_web::test as web_test` in scope.
#[macro_export]
macro_rules! call {
    ($app:expr, $method:expr, $uri:expr, $body:expr) => {{
        let mut r = web_test::TestRequest::default()
            .method($method)
            .uri($uri)
            .insert_header(("Authorization", format!("Bearer {TOKEN}")));
        let body: Option<serde_json::Value> = $body;
        if let Some(b) = body {
            r = r.set_json(b);
        }
        let resp = web_test::call_service(&$app, r.to_request()).await;
        let code = resp.status().as_u16();
        let bytes = web_test::read_body(resp).await;
        (
            code,
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
        )
    }};
}
