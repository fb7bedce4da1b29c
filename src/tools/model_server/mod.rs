//! The reference model server (`clickpipe model-server`).
//!
//! Speaks the SageMaker container convention:
//!
//! - `GET /ping` → `200 {"status":"ok"}`;
//! - `POST /invocations` with `Content-Type: application/json` and a body
//!   `{"instances": [{feature: value, …}, …]}` → `200 {"predictions": [{"score": s}, …],
//!   "model_version": "…"}`, one prediction per instance, in order.
//!
//! The model is a purchase-propensity logistic regression read from a JSON file (see [`Model`]).
//! Every error is answered with a JSON body `{"error": "…"}` that names the problem: 400 for a
//! malformed request, 413 for a body over 8 MiB, 415 for a non-JSON content type, 404 for an unknown
//! route and 405 for a wrong method.
//!
//! - [`Model`] (`model.rs`): the parameters file and the scoring;
//! - [`configure`], [`start`], [`start_with_delay`] (`http.rs`): the HTTP endpoints;
//! - [`serve`]: the `clickpipe model-server` command.

mod http;
mod model;

use std::net::TcpListener;
use std::path::Path;

use crate::service::config::Config;
use anyhow::Context;

pub use http::{configure, start, start_with_delay};
pub use model::Model;

/// Runs `clickpipe model-server`: loads `model_server.model_path`, listens on `listen` (default
/// `model_server.listen`) and serves, with `delay_ms` added to every `/invocations` call, until
/// the server stops (on SIGINT / SIGTERM).
pub async fn serve(config: &Config, listen: Option<String>, delay_ms: u64) -> anyhow::Result<()> {
    let addr = listen.unwrap_or_else(|| config.model_server.listen.clone());
    let model = Model::load(Path::new(&config.model_server.model_path))?;
    let listener = TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        target: crate::CLI_LOG_TARGET,
        %addr,
        version = model.version(),
        delay_ms,
        "model server listening",
    );
    let delay = std::time::Duration::from_millis(delay_ms);
    start_with_delay(model, listener, delay)?.await?;
    Ok(())
}
