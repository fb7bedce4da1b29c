//! The `clickpipe` command line.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use clickpipe::{admin, admin_client, ingest, loadgen, model_server, seed, settings, telemetry};
use clickpipe_actors::config::Config;
use clickpipe_actors::pipeline::Pipeline;

#[derive(Parser)]
#[command(
    name = "clickpipe",
    version,
    about = "Real-time ML inference on clickstream data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// TOML config file, layered over the defaults (env: CLICKPIPE_CONFIG).
    #[arg(long, env = "CLICKPIPE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline service.
    Run(ConfigArg),
    /// Tail an Elasticsearch / OpenSearch index (`ingest.*`) into the input topic.
    Ingest(ConfigArg),
    /// Run the reference model server.
    ModelServer {
        #[command(flatten)]
        config: ConfigArg,
        /// Listen address (default: model_server.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Milliseconds added to every /invocations call: a simulated slow model, for overload
        /// benchmarks.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Load ZIP reference data from a CSV into Redis.
    SeedRedis {
        #[command(flatten)]
        config: ConfigArg,
        /// CSV with columns zip, median_income, timezone.
        #[arg(long)]
        csv: PathBuf,
    },
    /// Produce a synthetic clickstream to the input topic.
    Loadgen {
        #[command(flatten)]
        config: ConfigArg,
        /// Events per second; 0 sends as fast as the system answers, keeping at most 20,000
        /// events outstanding (max-throughput mode; without the summary: as fast as acknowledged).
        #[arg(long)]
        rate: u64,
        /// Events in all.
        #[arg(long)]
        count: u64,
        /// Do not wait for outputs and print the end-to-end summary.
        #[arg(long)]
        no_summary: bool,
        /// Seconds without progress after which the summary stops waiting.
        #[arg(long, default_value_t = 30)]
        summary_timeout_s: u64,
        /// Seed of the random generator, for a repeatable stream.
        #[arg(long)]
        seed: Option<u64>,
        /// Stop reading results this many seconds after the first send, whatever is missing.
        #[arg(long)]
        summary_deadline_s: Option<u64>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write one JSON line per second of progress (sent, acked, outputs, lag) to this file.
        #[arg(long)]
        timeline: Option<PathBuf>,
    },
    /// Run an in-memory Kafka-protocol broker (librdkafka's MockCluster) with the configured
    /// input, output and dead-letter topics, for benchmarks and experiments; prints its bootstrap
    /// address and runs until SIGINT / SIGTERM. Data is lost when it stops.
    MockBroker {
        #[command(flatten)]
        config: ConfigArg,
        /// Partitions of each topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Probe a running instance's health (exit 0 when it answers 200, 1 when not): for
    /// container health checks. `--url` points it elsewhere (`clickpipe ingest` on
    /// ingest.listen; the model server with `--path /ping`).
    Health {
        #[command(flatten)]
        admin: AdminArg,
        /// The path probed.
        #[arg(long, default_value = "/health/live")]
        path: String,
    },
    /// Show a running instance's status (from its admin API).
    Status {
        #[command(flatten)]
        admin: AdminArg,
        /// Print the raw JSON of GET /status.
        #[arg(long)]
        json: bool,
    },
    /// Replay dead letters into the input topic (through a running instance's admin API) and
    /// wait for the job to finish.
    Replay {
        #[command(flatten)]
        admin: AdminArg,
        /// Dead-letter kind to replay (repeatable): invalid_event, lookup_failed,
        /// inference_failed, output_failed. Default: all.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only dead letters written at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only dead letters written before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only this partition of the dead-letter topic.
        #[arg(long)]
        partition: Option<i32>,
        /// Replay at most this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// Count what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the job id and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
}

/// Where the admin API is and how to authenticate.
#[derive(clap::Args)]
struct AdminArg {
    #[command(flatten)]
    config: ConfigArg,
    /// Admin API base URL (default: http://{admin.listen}).
    #[arg(long, env = "CLICKPIPE_ADMIN_URL")]
    url: Option<String>,
    /// Bearer token (default: admin.token of the configuration, e.g. CLICKPIPE__ADMIN__TOKEN).
    #[arg(long, env = "CLICKPIPE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate and print the effective configuration (secrets masked).
    Check(ConfigArg),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clickpipe: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    settings::load(arg.config.as_deref())
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Health { admin, path } => {
            let config = load(&admin.config)?;
            let base = admin_client::base_url(admin.url.as_deref(), &config.admin.listen);
            match actix_rt::System::new().block_on(admin_client::health(&base, &path)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("clickpipe: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Status { admin, json } => {
            let config = load(&admin.config)?;
            let base = admin_client::base_url(admin.url.as_deref(), &config.admin.listen);
            let text = actix_rt::System::new().block_on(admin_client::status(&base, json))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            admin,
            kinds,
            since,
            until,
            partition,
            limit,
            dry_run,
            no_wait,
        } => {
            let config = load(&admin.config)?;
            let base = admin_client::base_url(admin.url.as_deref(), &config.admin.listen);
            let token = admin.token.or(config.admin.token);
            let mut body = serde_json::json!({ "dry_run": dry_run });
            if !kinds.is_empty() {
                body["kinds"] = serde_json::json!(kinds);
            }
            for (key, value) in [("since", since), ("until", until)] {
                if let Some(v) = value {
                    body[key] = serde_json::json!(v);
                }
            }
            if let Some(p) = partition {
                body["partition"] = serde_json::json!(p);
            }
            if let Some(l) = limit {
                body["limit"] = serde_json::json!(l);
            }
            let report = actix_rt::System::new().block_on(admin_client::replay(
                &base,
                token.as_deref(),
                &body,
                !no_wait,
            ))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check(arg),
        } => {
            let config = load(&arg)?;
            println!(
                "{}",
                toml::to_string_pretty(&config.masked()).context("printing config")?
            );
            eprintln!("config OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::MockBroker { config, partitions } => {
            let config = load(&config)?;
            let mock =
                rdkafka::mocking::MockCluster::new(1).context("cannot start the mock broker")?;
            for topic in [
                &config.kafka.input_topic,
                &config.kafka.output_topic,
                &config.kafka.dlq_topic,
            ] {
                mock.create_topic(topic, partitions, 1)
                    .with_context(|| format!("cannot create topic {topic}"))?;
            }
            println!("{}", mock.bootstrap_servers());
            eprintln!(
                "mock broker on {} with topics {}, {}, {} ({partitions} partitions each); Ctrl-C stops it",
                mock.bootstrap_servers(),
                config.kafka.input_topic,
                config.kafka.output_topic,
                config.kafka.dlq_topic
            );
            actix_rt::System::new().block_on(wait_for_signal());
            drop(mock);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(arg) => {
            let config = load(&arg)?;
            telemetry::init(&config.log)?;
            actix_rt::System::new().block_on(ingest::serve(config, wait_for_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(arg) => {
            let config = load(&arg)?;
            let telemetry = telemetry::init_with_traces(&config)?;
            let code = actix_rt::System::new().block_on(run(config));
            telemetry.shutdown();
            code
        }
        Command::ModelServer {
            config,
            listen,
            delay_ms,
        } => {
            let config = load(&config)?;
            telemetry::init(&config.log)?;
            let addr = listen.unwrap_or_else(|| config.model_server.listen.clone());
            let model =
                model_server::Model::load(std::path::Path::new(&config.model_server.model_path))?;
            let listener =
                TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(%addr, version = model.version(), delay_ms, "model server listening");
            let delay = Duration::from_millis(delay_ms);
            actix_rt::System::new().block_on(async move {
                model_server::start_with_delay(model, listener, delay)?.await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SeedRedis { config, csv } => {
            let config = load(&config)?;
            let rows = seed::read_csv(&csv)?;
            let n = actix_rt::System::new().block_on(seed::seed(&config, &rows))?;
            println!("seeded {n} ZIPs into Redis ({}*)", config.redis.zip_prefix);
            Ok(ExitCode::SUCCESS)
        }
        Command::Loadgen {
            config,
            rate,
            count,
            no_summary,
            summary_timeout_s,
            seed,
            summary_deadline_s,
            json,
            timeline,
        } => {
            let config = load(&config)?;
            telemetry::init(&config.log)?;
            let opts = loadgen::LoadgenOptions {
                rate,
                count,
                summary: !no_summary,
                summary_timeout: Duration::from_secs(summary_timeout_s),
                seed,
                summary_deadline: summary_deadline_s.map(Duration::from_secs),
            };
            let (report, samples) =
                actix_rt::System::new().block_on(loadgen::run_with_timeline(&config, opts))?;
            println!("{report}");
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if let Some(path) = timeline {
                let mut text = String::new();
                for s in &samples {
                    text.push_str(&serde_json::to_string(s)?);
                    text.push('\n');
                }
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(if report.delivery_errors > 0 || report.missing > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let config = Arc::new(config);
    let started = Instant::now();
    let pipeline = Pipeline::start(config.clone())?;
    let instance_id = admin::instance_id();
    if config.metrics.emf_enabled {
        actix_rt::spawn(clickpipe::emf::run(
            config.metrics.clone(),
            instance_id.clone(),
            pipeline.stats(),
            pipeline.status(),
        ));
    }
    let state = admin::AdminState {
        stats: pipeline.stats(),
        status: pipeline.status(),
        started,
        config: config.clone(),
        instance_id,
        pipeline: Some(pipeline.handle()),
        replays: Default::default(),
    };
    let listen = config.admin.listen.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(admin::routes(state.clone()))
    })
    .workers(1)
    .disable_signals()
    .bind(&listen)
    .with_context(|| format!("cannot listen on admin.listen {listen}"))?
    .run();
    let admin_handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(admin = %listen, "clickpipe running");

    let failed = pipeline.failed();
    let code = tokio::select! {
        () = wait_for_signal() => ExitCode::SUCCESS,
        reason = failed => {
            tracing::error!(%reason, "giving up so the orchestrator restarts the process");
            ExitCode::from(3)
        }
    };
    tracing::info!("stopping: draining partitions");
    let reports = pipeline.shutdown().await;
    let abandoned: usize = reports.iter().map(|r| r.abandoned).sum();
    admin_handle.stop(true).await;
    tracing::info!(partitions = reports.len(), abandoned, "stopped");
    Ok(code)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops");
                let _ = actix_rt::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = actix_rt::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = actix_rt::signal::ctrl_c().await;
    }
}
