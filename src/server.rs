//! What the two services (`service`, `ingest`) and the mock broker share: the HTTP listener
//! set-up and the stop signal.

use actix_web::dev::ServerHandle;
use actix_web::web;
use anyhow::Context;

/// Binds an actix-web server with one worker on `listen`, serving the routes `configure`
/// registers, and spawns it on the current actix system. Signals are left to the caller (see
/// [`wait_for_signal`]); `key` names the configuration key of `listen` in the bind error.
pub fn spawn_http<F>(configure: F, listen: &str, key: &str) -> anyhow::Result<ServerHandle>
where
    F: FnOnce(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
            .workers(1)
            .disable_signals()
            .bind(listen)
            .with_context(|| format!("cannot listen on {key} {listen}"))?
            .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT); on Ctrl-C only where SIGTERM cannot be watched.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    target: crate::CLI_LOG_TARGET,
                    error = %e,
                    "cannot watch SIGTERM; only Ctrl-C stops",
                );
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
