//! Shared fixtures of the integration tests: real Kafka-protocol broker and Redis (started by
//! `scripts/services.sh`, addresses from `CLICKPIPE_TEST_BROKERS` / `CLICKPIPE_TEST_REDIS`), a real
//! model server over loopback, and the pipeline running on its own actix system. Every test makes
//! its own topics, group and Redis key prefixes.

#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]

mod broker;
mod http;
mod kafka;
mod load;
mod model;
mod moto;
mod pipeline;
mod process;
mod redis;
mod tls;
pub use broker::OwnBroker;
/// `*_ms` config fields are typed.
pub use clickpipe_actors::config::Millis;
pub use http::*;
pub use kafka::*;
pub use load::{PacedProducer, Produced};
pub use model::*;
pub use moto::*;
pub use pipeline::*;
pub use process::*;
pub use redis::*;
pub use tls::*;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpServer};
use clickpipe::service::config::Config;
use clickpipe::tools::model_server::{configure, Model};
use clickpipe_actors::fault_injection::FaultHooks;
use clickpipe_actors::partition::DrainReport;
use clickpipe_actors::pipeline::{Pipeline, PipelineHandle};
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::StatusBoard;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn brokers() -> String {
    std::env::var("CLICKPIPE_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("CLICKPIPE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

pub fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// The topics, group and key prefixes of one test.
pub struct Names {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
    pub zip_prefix: String,
    pub session_prefix: String,
}

impl Names {
    pub fn new(test: &str, partitions: i32) -> Names {
        let n = Names::without_topics(test);
        create_topics(&[(&n.input, partitions), (&n.output, partitions), (&n.dlq, 1)]);
        n
    }

    /// Names only; the test creates the topics where it needs them.
    pub fn without_topics(test: &str) -> Names {
        Names {
            input: unique(&format!("{test}-in")),
            output: unique(&format!("{test}-out")),
            dlq: unique(&format!("{test}-dlq")),
            group: unique(&format!("{test}-group")),
            zip_prefix: unique(&format!("{test}:zip")) + ":",
            session_prefix: unique(&format!("{test}:session")) + ":",
        }
    }
}

/// Sends a request to the admin API test `app` with the calling file's `TOKEN` as bearer token;
/// evaluates to (status, JSON body). Needs `actix_web::test as web_test` in scope.
#[macro_export]
macro_rules! call {
    ($app:expr, $method:expr, $uri:expr, $body:expr) => {{
        let mut r = web_test::TestRequest::default()
            .method($method)
            .uri($uri)
            .insert_header(("Authorization", format!("Bearer {TOKEN}")));
        let body: Option<serde_json::Value> = $body;
        if let Some(b) = body {
            r = r.set_json(b);
        }
        let resp = web_test::call_service(&$app, r.to_request()).await;
        let code = resp.status().as_u16();
        let bytes = web_test::read_body(resp).await;
        (
            code,
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
        )
    }};
}
