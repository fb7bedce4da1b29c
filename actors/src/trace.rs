//! Per-record traces. The source decides once per record whether it is traced (head sampling:
//! the producer's decision when its context says so, else a ratio); only traced records get
//! spans, so with export off — or for the records not sampled — nothing is created or recorded.
//!
//! A traced record has a `process` span (kind consumer, parent: the producer's context from the
//! record's `traceparent` or `X-Amzn-Trace-Id` header) living until its output or dead letter is
//! acknowledged, and one child span per stage it passes (`receive`, `lookup`, `enrich`, `infer`,
//! `emit`, `dead-letter`). A call made for a whole batch (the Redis round trip, the model
//! request) is one client span, child of the first traced record's stage span, linked to the
//! others'. The context of the last span goes out with the record: on the model request and on the output or dead-letter headers
//! (`traceparent`, `tracestate`, `X-Amzn-Trace-Id`). A record not sampled here whose producer sent
//! a context carries those headers on unchanged.
//!
//! The spans are `tracing` spans with target [`TARGET`]; `tracing-opentelemetry` turns them into
//! OpenTelemetry spans when the binary installs it.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, Status, TraceContextExt};
use opentelemetry_aws::trace::XrayPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TracingConfig;
use crate::error::Failure;

/// The `tracing` target of every per-record span; the OpenTelemetry layer listens to it alone.
pub const TARGET: &str = "clickpipe::trace";

/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state header.
pub const TRACESTATE: &str = "tracestate";

/// The longest context header passed on unchanged (W3C's limit for `tracestate`).
pub const MAX_CONTEXT_HEADER_BYTES: usize = 512;
/// AWS X-Ray trace header.
pub const XRAY_HEADER: &str = "X-Amzn-Trace-Id";

const CONTEXT_HEADERS: [&str; 3] = [TRACEPARENT, TRACESTATE, XRAY_HEADER];

/// The head-sampling decision, made once per record by the partition's source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    enabled: bool,
    ratio: f64,
    parent_based: bool,
}

impl Sampling {
    /// No record is traced.
    pub fn off() -> Self {
        Sampling {
            enabled: false,
            ratio: 0.0,
            parent_based: false,
        }
    }

    /// The sampling `cfg` describes; off when no export endpoint is set.
    pub fn from_config(cfg: &TracingConfig) -> Self {
        if cfg.traces_url().is_none() {
            return Sampling::off();
        }
        let (parent_based, ratio) = match cfg.sampler.as_str() {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, cfg.sampling_ratio),
            "parentbased_always_on" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            _ => (true, cfg.sampling_ratio),
        };
        Sampling {
            enabled: true,
            ratio,
            parent_based,
        }
    }

    /// Whether tracing is on at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether a record whose producer context is `parent` is traced.
    fn sample(&self, parent: Option<&SpanContext>) -> bool {
        match parent {
            Some(p) if self.parent_based => p.is_sampled(),
            _ => self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio),
        }
    }
}

/// What a record knows about its trace.
#[derive(Debug, Clone)]
pub enum RecordTrace {
    /// Traced here.
    Sampled {
        /// Lives until the record's output or dead letter is acknowledged.
        process: Span,
        /// The span of the stage holding the record, if any.
        stage: Option<Span>,
    },
    /// Not traced here; the producer's context headers, passed on unchanged.
    Forward(Vec<(&'static str, Vec<u8>)>),
}

/// Reads context headers from a Kafka record (names compared without case).
struct KafkaExtractor<'a, H>(&'a H);

impl<H: Headers> Extractor for KafkaExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// Collects injected context headers.
#[derive(Default)]
struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        // Kafka header names are case-sensitive: use the names AWS and W3C write.
        let key = if key.eq_ignore_ascii_case(XRAY_HEADER) {
            XRAY_HEADER.to_string()
        } else {
            key.to_ascii_lowercase()
        };
        self.0.insert(key, value);
    }
}

/// The producer's context in `headers`: W3C trace context first, else X-Ray's header.
fn extract<H: Headers>(headers: &H) -> opentelemetry::Context {
    let carrier = KafkaExtractor(headers);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        return cx;
    }
    XrayPropagator::default().extract(&carrier)
}

/// The context headers of `span` (W3C and X-Ray), as (name, value) pairs.
pub fn context_headers(span: &Span) -> Vec<(String, String)> {
    let cx = span.context();
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    XrayPropagator::default().inject_context(&cx, &mut carrier);
    let mut pairs: Vec<(String, String)> = carrier.0.into_iter().collect();
    pairs.sort();
    pairs
}

/// Decides whether the record in `message` is traced and, if so, opens its `process` span.
/// Returns None when tracing is off, or the record is neither traced nor carries a context.
pub fn start<M: rdkafka::Message>(
    sampling: &Sampling,
    message: &M,
    group: &str,
) -> Option<Box<RecordTrace>> {
    if !sampling.enabled {
        return None;
    }
    let headers = message.headers();
    let parent = headers.map(extract);
    let parent_span = parent
        .as_ref()
        .map(|cx| cx.span().span_context().clone())
        .filter(SpanContext::is_valid);
    if !sampling.sample(parent_span.as_ref()) {
        let headers = headers?;
        parent_span.as_ref()?;
        let forward: Vec<(&'static str, Vec<u8>)> = CONTEXT_HEADERS
            .iter()
            .filter_map(|name| {
                headers
                    .iter()
                    .find(|h| h.key.eq_ignore_ascii_case(name))
                    .and_then(|h| h.value)
                    // A context header longer than W3C allows (tracestate: 512) is not passed on:
                    // it would make every output and dead letter of the record too large.
                    .filter(|v| v.len() <= MAX_CONTEXT_HEADER_BYTES)
                    .map(|v| (*name, v.to_vec()))
            })
            .collect();
        return Some(Box::new(RecordTrace::Forward(forward)));
    }
    let topic = message.topic();
    let key = message
        .key()
        .map(String::from_utf8_lossy)
        .map(|k| crate::error::bounded(&k, 256).into_owned());
    let process = tracing::info_span!(
        target: TARGET,
        "process",
        otel.name = %format_args!("{topic} process"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = message.partition(),
        messaging.consumer.group.name = group,
        messaging.kafka.offset = message.offset(),
        messaging.kafka.message.key = key.as_deref(),
        messaging.message.body.size = message.payload().map_or(0, <[u8]>::len),
    );
    if let (Some(cx), Some(_)) = (parent, parent_span) {
        let _ = process.set_parent(cx);
    }
    Some(Box::new(RecordTrace::Sampled {
        process,
        stage: None,
    }))
}

impl RecordTrace {
    /// Opens the span of stage `name` (closing the previous stage's, if still open).
    pub fn enter_stage(&mut self, name: &'static str, batch_size: usize) {
        if let RecordTrace::Sampled { process, stage } = self {
            // The calls a batch makes (Redis, the model) are client spans of their own.
            let kind = match name {
                "emit" | "dead-letter" => "producer",
                _ => "internal",
            };
            *stage = Some(tracing::info_span!(
                target: TARGET,
                parent: &*process,
                "stage",
                otel.name = name,
                otel.kind = kind,
                clickpipe.stage = name,
                clickpipe.batch.size = batch_size,
            ));
        }
    }

    /// Closes the current stage span, marking it (and the record's `process` span) failed when
    /// the record leaves for the dead-letter topic.
    pub fn end_stage(&mut self, failure: Option<&Failure>) {
        if let RecordTrace::Sampled { process, stage } = self {
            if let Some(f) = failure {
                let status = Status::error(format!("{}: {}", f.kind.as_str(), f.message()));
                if let Some(s) = stage.as_ref() {
                    s.set_status(status.clone());
                    s.set_attribute("error.type", f.kind.as_str());
                }
                process.set_status(status);
                process.set_attribute("error.type", f.kind.as_str());
            }
            *stage = None;
        }
    }

    /// Marks the current stage span as a Kafka send to `topic` (messaging attributes).
    pub fn note_send(&self, topic: &str) {
        if let Some(span) = self.stage_span() {
            span.set_attribute("messaging.system", "kafka");
            span.set_attribute("messaging.operation.type", "send");
            span.set_attribute("messaging.destination.name", topic.to_string());
        }
    }

    /// The span of the current stage, when traced.
    pub fn stage_span(&self) -> Option<&Span> {
        match self {
            RecordTrace::Sampled { stage, .. } => stage.as_ref(),
            RecordTrace::Forward(_) => None,
        }
    }

    /// Adds the record's trace context to outgoing headers: the current stage span's (or the
    /// `process` span's) when traced, the producer's headers unchanged otherwise.
    pub fn add_headers(&self, headers: OwnedHeaders) -> OwnedHeaders {
        match self {
            RecordTrace::Sampled { process, stage } => {
                context_headers(stage.as_ref().unwrap_or(process))
                    .iter()
                    .fold(headers, |h, (k, v)| {
                        h.insert(Header {
                            key: k.as_str(),
                            value: Some(v.as_str()),
                        })
                    })
            }
            RecordTrace::Forward(pairs) => pairs.iter().fold(headers, |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                })
            }),
        }
    }
}

/// The client span of a call made for a batch of `size` records, whose traced records' traces are
/// `traces`: child of the first one's stage span, linked to the others' stage spans. None when no
/// record is traced.
pub fn batch_span<'a>(
    name: &'static str,
    size: usize,
    traces: impl Iterator<Item = &'a RecordTrace>,
) -> Option<Span> {
    let mut spans = traces.filter_map(RecordTrace::stage_span);
    let first = spans.next()?;
    let span = tracing::info_span!(
        target: TARGET,
        parent: first,
        "call",
        otel.name = name,
        otel.kind = "client",
        clickpipe.batch.size = size,
    );
    for other in spans {
        let cx = other.context();
        span.add_link(cx.span().span_context().clone());
    }
    Some(span)
}

/// Marks a span failed.
pub fn fail(span: &Span, message: &str) {
    span.set_status(Status::error(message.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    fn context(sampled: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )
    }

    fn config(sampler: &str, ratio: f64) -> TracingConfig {
        TracingConfig {
            otlp_endpoint: "http://collector:4318".into(),
            sampler: sampler.into(),
            sampling_ratio: ratio,
            ..TracingConfig::default()
        }
    }

    #[test]
    fn sampling_is_off_without_an_endpoint() {
        let s = Sampling::from_config(&TracingConfig {
            sampler: "always_on".into(),
            ..TracingConfig::default()
        });
        assert!(!s.enabled());
        assert!(Sampling::from_config(&config("always_on", 1.0)).enabled());
    }

    #[test]
    fn parent_based_samplers_follow_the_producers_decision() {
        let s = Sampling::from_config(&config("parentbased_traceidratio", 0.0));
        assert!(s.sample(Some(&context(true))));
        assert!(!s.sample(Some(&context(false))));
        assert!(!s.sample(None), "ratio 0 without a parent");
        let s = Sampling::from_config(&config("parentbased_always_off", 1.0));
        assert!(!s.sample(None));
        assert!(s.sample(Some(&context(true))));
    }

    #[test]
    fn ratio_samplers_ignore_the_parent_and_sample_about_the_ratio() {
        let s = Sampling::from_config(&config("traceidratio", 0.25));
        assert!(!Sampling::from_config(&config("always_off", 1.0)).sample(Some(&context(true))));
        assert!(Sampling::from_config(&config("always_on", 0.0)).sample(Some(&context(false))));
        let hits = (0..20_000)
            .filter(|_| s.sample(Some(&context(true))))
            .count();
        assert!((4_000..6_000).contains(&hits), "{hits} of 20000 at 0.25");
    }

    #[test]
    fn extracts_w3c_context_else_the_xray_header() {
        let w3c = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        });
        let cx = extract(w3c.as_borrowed());
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let xray = OwnedHeaders::new().insert(Header {
            key: "x-amzn-trace-id",
            value: Some(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            ),
        });
        let cx = extract(xray.as_borrowed());
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert!(cx.span().span_context().is_sampled());
    }
}
