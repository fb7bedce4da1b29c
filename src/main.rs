//! The `clickpipe` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clickpipe::ingest;
use clickpipe::server::wait_for_signal;
use clickpipe::service::config::Config;
use clickpipe::service::{self, settings, telemetry};
use clickpipe::tools::{admin_client, explain, loadgen, mock_broker, model_server, seed};

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
        /// Also load the rows into the DynamoDB table `dynamodb.table` (the lookup fallback).
        #[arg(long)]
        dynamodb: bool,
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
    /// Feature-set tools.
    Features {
        #[command(subcommand)]
        command: FeaturesCommand,
    },
    /// Keep topics in an object store.
    Sink {
        #[command(subcommand)]
        command: SinkCommand,
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
        #[command(flatten)]
        filter: admin_client::ReplayFilter,
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

impl AdminArg {
    /// The configuration and the admin API's base URL.
    fn connect(&self) -> anyhow::Result<(Config, String)> {
        let config = load(&self.config)?;
        let base = admin_client::base_url(self.url.as_deref(), &config.admin.listen);
        Ok((config, base))
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate and print the effective configuration (secrets masked).
    Check(ConfigArg),
}

#[derive(Subcommand)]
enum SinkCommand {
    /// Write the output topic (and, with s3.include_dead_letters, the dead-letter topic) to S3
    /// as Parquet or gzip JSON lines, by event hour, committing offsets only after the objects
    /// are written.
    S3(ConfigArg),
}

#[derive(Subcommand)]
enum FeaturesCommand {
    /// Check the feature set (`features.set`, else the built-in one) and print its features:
    /// names, kinds and types in model-instance order.
    Check(ConfigArg),
    /// Compute one event's features against the live Redis without writing anything, and print
    /// them with what they were computed from (exit 1 when the event would be dead-lettered).
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// The event, as a JSON object of the input contract (`-`: read standard input).
        event: String,
    },
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

/// [`load`], then logging started as its `[log]` section says (the commands that log, but export
/// no traces).
fn load_logged(arg: &ConfigArg) -> anyhow::Result<Config> {
    let config = load(arg)?;
    telemetry::init(&config.log)?;
    Ok(config)
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Health { admin, path } => {
            let (_, base) = admin.connect()?;
            match actix_rt::System::new().block_on(admin_client::health(&base, &path)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("clickpipe: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Status { admin, json } => {
            let (_, base) = admin.connect()?;
            let text = actix_rt::System::new().block_on(admin_client::status(&base, json))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            admin,
            filter,
            no_wait,
        } => {
            let (config, base) = admin.connect()?;
            let token = admin.token.or(config.admin.token);
            let body = filter.to_json();
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
        Command::Features {
            command: FeaturesCommand::Explain { config, event },
        } => explain::run(&load(&config)?, &event),
        Command::Features {
            command: FeaturesCommand::Check(arg),
        } => {
            let config = load(&arg)?;
            let set = explain::feature_set(&config)?;
            println!("version {}", set.version);
            for (name, kind, value_type, output) in set.describe() {
                let note = if output { "" } else { "  (not output)" };
                println!("{name:<32} {kind:<16} {value_type}{note}");
            }
            eprintln!("feature set OK: {} features output", set.outputs.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::MockBroker { config, partitions } => {
            let config = load(&config)?;
            actix_rt::System::new().block_on(mock_broker::run(
                &config,
                partitions,
                wait_for_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sink {
            command: SinkCommand::S3(arg),
        } => {
            let config = load_logged(&arg)?;
            #[cfg(feature = "aws")]
            {
                clickpipe::sink::check(&config.s3)?;
                actix_rt::System::new()
                    .block_on(clickpipe::sink::run(config, wait_for_signal()))?;
                Ok(ExitCode::SUCCESS)
            }
            #[cfg(not(feature = "aws"))]
            {
                drop(config);
                anyhow::bail!(clickpipe::NO_AWS)
            }
        }
        Command::Ingest(arg) => {
            let config = load_logged(&arg)?;
            actix_rt::System::new().block_on(ingest::serve(config, wait_for_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(arg) => {
            let config = load(&arg)?;
            let telemetry = telemetry::init_with_traces(&config)?;
            let code = actix_rt::System::new().block_on(service::run(config, wait_for_signal()));
            telemetry.shutdown();
            code
        }
        Command::ModelServer {
            config,
            listen,
            delay_ms,
        } => {
            let config = load_logged(&config)?;
            actix_rt::System::new().block_on(model_server::serve(&config, listen, delay_ms))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SeedRedis {
            config,
            csv,
            dynamodb,
        } => {
            let config = load(&config)?;
            if dynamodb && !cfg!(feature = "aws") {
                anyhow::bail!(clickpipe::NO_AWS);
            }
            let rows = seed::read_csv(&csv)?;
            let system = actix_rt::System::new();
            let n = system.block_on(seed::seed(&config, &rows))?;
            println!("seeded {n} ZIPs into Redis ({}*)", config.redis.zip_prefix);
            if dynamodb {
                let n = system.block_on(seed::seed_dynamodb(&config, &rows))?;
                println!("seeded {n} ZIPs into DynamoDB ({})", config.dynamodb.table);
            }
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
            let config = load_logged(&config)?;
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
                report.write_json(&path)?;
            }
            if let Some(path) = timeline {
                loadgen::write_timeline(&path, &samples)?;
            }
            Ok(if report.is_complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
