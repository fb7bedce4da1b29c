//! Shared parts of the benchmark peers (`passthrough`, `naive`): configuration, Kafka client
//! settings matching clickpipe's, and the stop signal. The peers read the same configuration as
//! `clickpipe run` (defaults, `--config` file, `CLICKPIPE__SECTION__KEY` variables) so a benchmark
//! points every system at the same broker, topics, Redis and model with one set of variables.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clickpipe::service::config::Config;
use clickpipe_actors::config::KafkaConfig;
use clickpipe_actors::kafka::client;
use rdkafka::config::ClientConfig;

/// Command-line options every peer takes.
#[derive(Debug, Parser)]
pub struct PeerArgs {
    /// TOML config file, layered over clickpipe's defaults (env: CLICKPIPE_CONFIG).
    #[arg(long, env = "CLICKPIPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Consumer group id (each peer uses its own group).
    #[arg(long)]
    pub group: Option<String>,
}

impl PeerArgs {
    /// Loads and validates the configuration.
    pub fn load(&self) -> anyhow::Result<Config> {
        clickpipe::service::settings::load(self.config.as_deref())
    }
}

/// A peer's `main`: parses [`PeerArgs`], runs `run` on an actix system and turns its error into
/// `{name}: {error}` on stderr and a failure exit code.
pub fn peer_main<F>(name: &str, run: impl FnOnce(PeerArgs) -> F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let args = PeerArgs::parse();
    match actix_rt::System::new().block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Consumer settings as clickpipe's (clickpipe's client builder: `[kafka.client]` and
/// `[kafka.consumer]` applied, authentication), reading from the earliest offset of a new group,
/// with automatic offset commits of every record handed out unless `manual_commit`.
pub fn consumer_config(k: &KafkaConfig, group: &str, manual_commit: bool) -> ClientConfig {
    client::consumer(k)
        .default(
            "enable.auto.commit",
            if manual_commit { "false" } else { "true" },
        )
        .default("auto.commit.interval.ms", k.commit_interval_ms.to_string())
        .default("auto.offset.reset", "earliest")
        .default("enable.partition.eof", "false")
        .force("group.id", group)
        .build()
}

/// Producer settings: exactly clickpipe's (idempotent, `linger.ms` 1, `[kafka.client]` and
/// `[kafka.producer]` applied).
pub fn producer_config(config: &Config) -> ClientConfig {
    client::pipeline_producer(&config.kafka)
}

/// Completes on SIGINT or SIGTERM.
pub async fn stop_signal() {
    use actix_rt::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = actix_rt::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = actix_rt::signal::ctrl_c().await;
        }
    }
}
