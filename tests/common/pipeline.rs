//! The pipeline in-process: a test's configuration, the actor tree on its own actix system, and
//! the admin API's state over it.

use super::*;

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
    c.kafka.commit_interval_ms = Millis(200);
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
    c.model.retry_budget_ms = Millis(3000);
    c.model.backoff_initial_ms = Millis(20);
    c.model.backoff_max_ms = Millis(200);
    c.pipeline.workers = 2;
    c.pipeline.drain_timeout_ms = Millis(10_000);
    c.validate().expect("test config is valid");
    c.log.level = "warn".into();
    c
}

/// The test's topics (`partitions` each), a model server that always answers, and the
/// [`config`] for both.
pub fn with_healthy_model(test: &str, partitions: i32) -> (Names, ModelServer, Config) {
    let names = Names::new(test, partitions);
    let model = ModelServer::start(0);
    let cfg = config(&names, &model.url);
    (names, model, cfg)
}

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
            let pipeline = Pipeline::start_with_hooks(Arc::new(config.pipeline()), hooks)
                .expect("pipeline starts");
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
