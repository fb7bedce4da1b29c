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

/// Runs the service until `shutdown` completes (exit code 0) or the pipeline gives up (exit code
/// 3, so the orchestrator restarts the process); then drains the partitions and stops the admin
/// API. Errors are start-up failures (the pipeline or the admin listener).
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
    let reports = pipeline.shutdown().await;
    let abandoned: usize = reports.iter().map(|r| r.abandoned).sum();
    admin_handle.stop(true).await;
    tracing::info!(target: crate::CLI_LOG_TARGET, partitions = reports.len(), abandoned, "stopped");
    Ok(code)
}
