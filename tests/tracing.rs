//! Trace export, end to end: `clickpipe run` (the real binary, configured by the standard OTEL_*
//! variables) against the real broker, Redis and model server, exporting to a real OTLP/HTTP
//! receiver in this test that decodes the protobuf export requests.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};

/// One span as the receiver got it, with its resource's attributes.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    status: i32,
    attributes: HashMap<String, String>,
    links: Vec<(String, String)>,
    resource: HashMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// A real OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
    _server: (actix_web::dev::ServerHandle, std::thread::JoinHandle<()>),
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let server = serve_in_thread(move || {
            HttpServer::new(move || {
                let sink = sink.clone();
                App::new().route(
                    "/v1/traces",
                    web::post().to(move |req: actix_web::HttpRequest, body: web::Bytes| {
                        let sink = sink.clone();
                        async move {
                            let ct = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            if ct != "application/x-protobuf" {
                                return HttpResponse::UnsupportedMediaType().body(ct);
                            }
                            let Ok(export) = ExportTraceServiceRequest::decode(body.as_ref())
                            else {
                                return HttpResponse::BadRequest().body("not an export request");
                            };
                            let mut got = sink.lock().expect("spans");
                            for rs in export.resource_spans {
                                let resource = rs
                                    .resource
                                    .map(|r| attrs(&r.attributes))
                                    .unwrap_or_default();
                                for ss in rs.scope_spans {
                                    for s in ss.spans {
                                        got.push(Got {
                                            trace_id: hex(&s.trace_id),
                                            span_id: hex(&s.span_id),
                                            parent: hex(&s.parent_span_id),
                                            name: s.name,
                                            kind: s.kind,
                                            status: s.status.map(|st| st.code).unwrap_or(0),
                                            attributes: attrs(&s.attributes),
                                            links: s
                                                .links
                                                .iter()
                                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                                .collect(),
                                            resource: resource.clone(),
                                        });
                                    }
                                }
                            }
                            HttpResponse::Ok()
                                .content_type("application/x-protobuf")
                                .body(ExportTraceServiceResponse::default().encode_to_vec())
                        }
                    }),
                )
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listen")
            .run()
        });
        Receiver {
            url,
            spans,
            _server: server,
        }
    }

    fn trace(&self, trace_id: &str) -> Vec<Got> {
        self.spans
            .lock()
            .expect("spans")
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits until the trace has a span named `last` (and returns the trace), or panics.
    fn wait_for(&self, trace_id: &str, last: &str) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.trace(trace_id);
            if t.iter().any(|s| s.name == last) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no `{last}` span for trace {trace_id}; got {t:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn start(names: &Names, model_url: &str, env: &[(&str, &str)]) -> Instance {
    spawn_with(&config_file(names, model_url, &brokers()), env)
}

/// Produces `(key, value, traceparent)` records.
fn produce_traced(topic: &str, records: &[(&str, Vec<u8>, Option<&str>)]) {
    let p = producer();
    for (key, value, tp) in records {
        let mut rec = BaseRecord::to(topic).key(*key).payload(value.as_slice());
        if let Some(tp) = tp {
            rec = rec.headers(OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(*tp),
            }));
        }
        p.send(rec).map_err(|(e, _)| e).expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// The span `name` among `all` that is a call made for `stage` of the trace `trace_id` (its child
/// there, or linked to it from a batch's own trace); asserts it is a client span. `what` names
/// the callee for the failure message.
fn client_span<'a>(all: &'a [Got], name: &str, trace_id: &str, stage: &Got, what: &str) -> &'a Got {
    let carries = |s: &Got| {
        s.name == name
            && ((s.trace_id == trace_id && s.parent == stage.span_id)
                || s.links
                    .contains(&(trace_id.to_string(), stage.span_id.clone())))
    };
    let span = all
        .iter()
        .find(|s| carries(s))
        .unwrap_or_else(|| panic!("no {what} call span for the traced event: {all:#?}"));
    assert_eq!(span.kind, SpanKind::Client as i32);
    span
}

fn by_name<'a>(trace: &'a [Got], name: &str) -> &'a Got {
    trace
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no `{name}` span in {trace:#?}"))
}

/// `00-{trace}-{span}-{flags}` → (trace, span).
fn parse_traceparent(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {tp}");
    (parts[1].to_string(), parts[2].to_string())
}

#[test]
fn a_traced_event_is_followed_from_the_kafka_hop_through_the_model_call_to_its_output() {
    let names = Names::new("tracing", 1);
    let receiver = Receiver::start();
    let model = ModelServer::start(0);
    let _pipeline = start(
        &names,
        &model.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
            ("OTEL_SERVICE_NAME", "clickpipe-under-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );

    let producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let sampled = format!("00-{producer_trace}-{producer_span}-01");
    let bad_trace = "0af7651916cd43dd8448eb211c80319c";
    let bad = format!("00-{bad_trace}-b7ad6b7169203331-01");
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let ts = chrono::Utc::now().to_rfc3339();
    produce_traced(
        &names.input,
        &[
            (
                "s1",
                event("traced", "s1", &ts, "page_view", None),
                Some(sampled.as_str()),
            ),
            ("s2", event("rooted", "s2", &ts, "page_view", None), None),
            (
                "s3",
                event("unsampled", "s3", &ts, "page_view", None),
                Some(unsampled),
            ),
            ("s4", b"{not json".to_vec(), Some(bad.as_str())),
        ],
    );

    let outputs = consume(&names.output, 3, Duration::from_secs(60));
    assert_eq!(outputs.len(), 3, "three outputs");
    let output = |id: &str| {
        outputs
            .iter()
            .find(|m| json(m)["event_id"] == id)
            .unwrap_or_else(|| panic!("no output for {id}"))
    };
    let dead = consume(&names.dlq, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "one dead letter");

    // The traced event: every span in the producer's trace, chained to the producer's span.
    let trace = receiver.wait_for(producer_trace, "emit");
    let process = by_name(&trace, &format!("{} process", names.input));
    assert_eq!(
        process.parent, producer_span,
        "process is the producer's child"
    );
    assert_eq!(process.kind, SpanKind::Consumer as i32);
    assert_eq!(process.attributes["messaging.system"], "kafka");
    assert_eq!(
        process.attributes["messaging.destination.name"],
        names.input
    );
    assert_eq!(
        process.attributes["messaging.destination.partition.id"],
        "0"
    );
    assert_eq!(
        process.attributes["messaging.consumer.group.name"],
        names.group
    );
    assert_eq!(process.attributes["messaging.kafka.message.key"], "s1");
    assert!(process.attributes.contains_key("messaging.kafka.offset"));
    assert_eq!(process.resource["service.name"], "clickpipe-under-test");
    assert_eq!(process.resource["deployment.environment"], "test");
    for stage in ["receive", "lookup", "enrich", "infer", "emit"] {
        let s = by_name(&trace, stage);
        assert_eq!(s.parent, process.span_id, "{stage} is a child of process");
        assert_ne!(s.status, StatusCode::Error as i32, "{stage} succeeded");
    }
    let infer = by_name(&trace, "infer");
    let emit = by_name(&trace, "emit");
    assert_eq!(emit.kind, SpanKind::Producer as i32);
    assert_eq!(emit.attributes["messaging.destination.name"], names.output);
    assert_eq!(emit.attributes["messaging.operation.type"], "send");

    // The batch calls: one client span each, the child of this event's stage span or linked to it.
    let all = receiver.spans.lock().expect("spans").clone();
    let lookup = by_name(&trace, "lookup");
    let redis = client_span(&all, "redis lookup", producer_trace, lookup, "Redis");
    assert_eq!(redis.attributes["db.system.name"], "redis");
    // The model call's context went out on the HTTP request.
    let call = client_span(&all, "POST /invocations", producer_trace, infer, "model");
    assert_eq!(call.attributes["http.request.method"], "POST");
    let sent = model.traceparents.lock().expect("traceparents").clone();
    assert!(
        sent.iter()
            .any(|tp| parse_traceparent(tp) == (call.trace_id.clone(), call.span_id.clone())),
        "the model request carried the call span's context: {sent:?} vs {call:?}"
    );

    // The output carries the emit span's context, so the trace goes on downstream.
    let out_tp = header(output("traced"), "traceparent").expect("output traceparent");
    assert_eq!(
        parse_traceparent(&out_tp),
        (producer_trace.to_string(), emit.span_id.clone())
    );
    let xray = header(output("traced"), "X-Amzn-Trace-Id").expect("output X-Ray header");
    assert!(
        xray.starts_with("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;"),
        "{xray}"
    );

    // An event without a producer context starts a trace with an X-Ray id: its first 8 hex
    // digits are the epoch seconds it was made at.
    let root_tp = header(output("rooted"), "traceparent").expect("rooted traceparent");
    let (root_trace, _) = parse_traceparent(&root_tp);
    let secs = i64::from_str_radix(&root_trace[..8], 16).expect("hex");
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - 300..=now + 5).contains(&secs),
        "X-Ray trace id {root_trace} starts with {secs}, now is {now}"
    );
    let rooted = receiver.wait_for(&root_trace, "emit");
    let root = by_name(&rooted, &format!("{} process", names.input));
    assert!(root.parent.is_empty(), "no parent: {root:?}");

    // Not sampled by its producer: no spans, its context passed on unchanged.
    assert_eq!(
        header(output("unsampled"), "traceparent").as_deref(),
        Some(unsampled)
    );
    assert!(receiver
        .trace("11111111111111111111111111111111")
        .is_empty());

    // The malformed event: failed receive, a dead-letter span, its context on the dead letter.
    let failed = receiver.wait_for(bad_trace, "dead-letter");
    let process = by_name(&failed, &format!("{} process", names.input));
    assert_eq!(process.status, StatusCode::Error as i32);
    assert_eq!(process.attributes["error.type"], "invalid_event");
    let receive = by_name(&failed, "receive");
    assert_eq!(receive.status, StatusCode::Error as i32);
    let letter = by_name(&failed, "dead-letter");
    assert_eq!(letter.parent, process.span_id);
    assert_eq!(letter.attributes["messaging.destination.name"], names.dlq);
    let dl_tp = header(&dead[0], "traceparent").expect("dead-letter traceparent");
    assert_eq!(
        parse_traceparent(&dl_tp),
        (bad_trace.to_string(), letter.span_id.clone())
    );
    assert!(dead[0].payload().is_some());
}

#[test]
fn without_an_endpoint_nothing_is_traced_or_added_to_the_records() {
    let names = Names::new("tracing-off", 1);
    let receiver = Receiver::start();
    let model = ModelServer::start(0);
    // The receiver is running, but nothing points clickpipe at it.
    let _pipeline = start(&names, &model.url, &[("OTEL_TRACES_SAMPLER", "always_on")]);
    let ts = chrono::Utc::now().to_rfc3339();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    produce_traced(
        &names.input,
        &[("s1", event("e1", "s1", &ts, "page_view", None), Some(tp))],
    );
    let outputs = consume(&names.output, 1, Duration::from_secs(60));
    assert_eq!(outputs.len(), 1);
    assert_eq!(header(&outputs[0], "traceparent"), None);
    assert!(model.traceparents.lock().expect("traceparents").is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert!(receiver.spans.lock().expect("spans").is_empty());
}
