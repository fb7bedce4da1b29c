//! The clickpipe service (`clickpipe run`): the pipeline, its admin API and the optional EMF
//! metrics task, started and stopped as one.
//!
//! - [`run`]: starts everything, waits for a stop request or a pipeline failure, drains.
//! - [`settings`]: the configuration (defaults, file, environment).
//! - [`telemetry`]: logs and trace export.
//! - [`emf`]: CloudWatch embedded-metric-format lines.
//! - [`admin`]: the admin HTTP API.

pub mod admin;
pub mod config;
pub mod emf;
pub mod metrics;
pub mod settings;
pub mod telemetry;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clickpipe_actors::pipeline::Pipeline;
use config::Config;

/// How much longer than `pipeline.drain_timeout_ms` a stop may take before the process exits
/// anyway (code 4): the drain's own margin, the consumer's close and the producer's flush.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs the service until `shutdown` completes (exit code 0) or the pipeline gives up (exit code
/// 3, so the orchestrator restarts the process); then drains the partitions and stops the admin
/// API (exit code 4 when that takes more than `pipeline.drain_timeout_ms` + 20 s). Errors are start-up failures (the pipeline or the admin listener).
///
/// Runs on an actix system (`actix_rt::System::block_on`); the caller installs logging first.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<ExitCode> {
    let config = Arc::new(config);
    let started = Instant::now();
    let pipeline = Pipeline::start(Arc::new(config.pipeline()))?;
    let instance_id = admin::instance_id();
    if config.metrics.emf_enabled {
        actix_rt::spawn(emf::run(
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
    let listen = &config.admin.listen;
    let admin_handle = crate::server::spawn_http(admin::routes(state), listen, "admin.listen")?;
    tracing::info!(target: crate::CLI_LOG_TARGET, admin = %listen, "clickpipe running");

    let failed = pipeline.failed();
    let code = tokio::select! {
        () = shutdown => ExitCode::SUCCESS,
        reason = failed => {
            tracing::error!(
                target: crate::CLI_LOG_TARGET,
                %reason,
                "giving up so the orchestrator restarts the process",
            );
            ExitCode::from(3)
        }
    };
    tracing::info!(target: crate::CLI_LOG_TARGET, "stopping: draining partitions");
    // Bounded: a stop that hangs (in the Kafka client, leaving the group) must not keep the
    // process, and the partitions it still holds, from going away.
    let limit = config.pipeline.drain_timeout_ms.get() + STOP_GRACE;
    let Ok(reports) = actix_rt::time::timeout(limit, pipeline.shutdown()).await else {
        tracing::error!(
            target: crate::CLI_LOG_TARGET,
            limit_s = limit.as_secs(),
            "the stop did not finish in time; exiting without leaving the group cleanly",
        );
        return Ok(ExitCode::from(4));
    };
    let abandoned: usize = reports.iter().map(|r| r.abandoned).sum();
    admin_handle.stop(true).await;
    tracing::info!(target: crate::CLI_LOG_TARGET, partitions = reports.len(), abandoned, "stopped");
    Ok(code)
}
