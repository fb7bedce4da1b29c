//! Logging and trace export set-up.
//!
//! Logs: human or JSON lines on stderr, filtered by `log.level` (or `RUST_LOG`).
//!
//! Traces (`clickpipe run` only, when `tracing.otlp_endpoint` / `OTEL_EXPORTER_OTLP_*ENDPOINT` is
//! set): the per-record spans of [`clickpipe_actors::trace`] go through `tracing-opentelemetry` to
//! a batch span processor that exports OTLP/HTTP protobuf with a blocking client on its own
//! thread (never on actix's runtime), with X-Ray-compatible trace ids (the first 8 hex digits are
//! the epoch seconds). Sampling is decided per record by the pipeline, so the SDK records every
//! span it is given. `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS` /
//! `_TIMEOUT` and `OTEL_BSP_*` are honoured as the OpenTelemetry SDK defines them.

use std::time::Duration;

use crate::service::config::{Config, LogConfig, LogFormat};
use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The trace exporter, while one runs. [`Telemetry::shutdown`] exports what is still queued.
#[must_use = "call shutdown() at exit, or queued spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued (bounded by the export timeout) and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
            }
        }
    }
}

/// Installs the global `tracing` subscriber: logs only.
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    install(cfg, None)
}

/// Installs the global `tracing` subscriber with logs and, when an endpoint is configured, the
/// trace exporter.
pub fn init_with_traces(cfg: &Config) -> anyhow::Result<Telemetry> {
    let provider = match cfg.tracing.traces_url() {
        Some(url) => Some(provider(cfg, &url)?),
        None => None,
    };
    install(&cfg.log, provider.clone())?;
    if let (Some(url), Some(_)) = (cfg.tracing.traces_url(), &provider) {
        let url = clickpipe_actors::config::mask_url(&url);
        tracing::info!(%url, sampler = %cfg.tracing.sampler, ratio = cfg.tracing.sampling_ratio,
            "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn provider(cfg: &Config, url: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .with_context(|| {
            format!(
                "invalid config key `tracing.otlp_endpoint`: cannot export to {}",
                clickpipe_actors::config::mask_url(url)
            )
        })?;
    // Our defaults where the OTEL_BSP_* variables say nothing: a span reaches the collector
    // within a second, and a queue for bursts of full sampling (it exports every 512 spans; the
    // queue is allocated up front, ~400 bytes a slot: 65,536 slots cost 23 MB of RSS, measured).
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(Duration::from_secs(1));
    }
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        batch = batch.with_max_queue_size(8_192);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_id_generator(XrayIdGenerator::default())
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.tracing.service_name.clone())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}

fn install(cfg: &LogConfig, provider: Option<SdkTracerProvider>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .map_err(|e| anyhow::anyhow!("invalid config key `log.level`: {e}"))?
        // The per-record spans are for the trace export; the log layer never formats them.
        .add_directive(
            format!("{}=off", clickpipe_actors::trace::TARGET)
                .parse()
                .map_err(|e| anyhow::anyhow!("log filter: {e}"))?,
        );
    let logs = if cfg.format == LogFormat::Json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    // The per-record spans only: library spans and log events stay out of the traces.
    let traces = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("clickpipe"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_filter(Targets::new().with_target(clickpipe_actors::trace::TARGET, Level::INFO))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
