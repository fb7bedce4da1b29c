//! A naive sequential consumer, the way a first version of this job is often written: for one
//! record at a time, poll → Redis (ZIP hash, session state read and write) → one model POST →
//! produce and wait for the acknowledgement → synchronous commit. It computes the same features
//! and writes the same output records as clickpipe; an event it cannot process goes to the
//! dead-letter topic with a `clickpipe.error.kind` header. No batching, no pipelining, no caching.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clickpipe::service::config::Config;
use clickpipe_actors::clients::model::Prediction;
use clickpipe_actors::dlq::headers;
use clickpipe_actors::event::rfc3339;
use clickpipe_actors::event::{decode, Event, Limits};
use clickpipe_actors::features::{compute, Features, ZipInfo};
use clickpipe_actors::record::OutputRecord;
use clickpipe_actors::session::{advance, SessionState};
use clickpipe_bench::{consumer_config, peer_main, producer_config, stop_signal, PeerArgs};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde::Deserialize;

fn main() -> ExitCode {
    peer_main("naive", run)
}

/// Everything one record needs.
struct Job {
    cfg: Config,
    /// The decoder's limits, as clickpipe's.
    limits: Limits,
    redis: MultiplexedConnection,
    http: awc::Client,
    producer: FutureProducer,
}

/// The model's answer.
#[derive(Deserialize)]
struct ModelReply {
    predictions: Vec<Score>,
    model_version: String,
}

#[derive(Deserialize)]
struct Score {
    score: f64,
}

async fn run(args: PeerArgs) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| "bench-naive".to_string());
    let consumer: StreamConsumer = consumer_config(&cfg.kafka, &group, true)
        .create()
        .context("cannot create the consumer")?;
    consumer
        .subscribe(&[&cfg.kafka.input_topic])
        .context("cannot subscribe")?;
    let producer: FutureProducer = producer_config(&cfg)
        .create()
        .context("cannot create the producer")?;
    let redis = redis::Client::open(cfg.redis.url.as_str())
        .context("bad redis.url")?
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis")?;
    let http = awc::Client::builder()
        .timeout(cfg.model.timeout_ms.get())
        .finish();
    let mut job = Job {
        limits: Limits::of(&cfg.kafka, &cfg.features),
        cfg,
        redis,
        http,
        producer,
    };
    println!("naive: ready");

    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let m = tokio::select! {
            biased;
            () = &mut stop => break,
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m.detach(),
            Err(e) => {
                eprintln!("naive: consumer error: {e}");
                continue;
            }
        };
        let result = process(&mut job, &m).await;
        let k = &job.cfg.kafka;
        let (topic, value, headers) = match result {
            Ok(out) => (k.output_topic.clone(), out, OwnedHeaders::new()),
            Err((kind, reason)) => (
                k.dlq_topic.clone(),
                m.payload().unwrap_or_default().to_vec(),
                {
                    let h = headers::with(OwnedHeaders::new(), headers::ERROR_KIND, kind);
                    headers::with(h, headers::ERROR_MESSAGE, &reason)
                },
            ),
        };
        let mut rec = FutureRecord::to(&topic).payload(&value).headers(headers);
        if let Some(key) = m.key() {
            rec = rec.key(key);
        }
        // Sequential: wait for the acknowledgement, then commit, before the next record.
        if let Err((e, _)) = job.producer.send(rec, Duration::from_secs(30)).await {
            return Err(anyhow!("cannot produce to `{topic}`: {e}"));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1))
            .context("offset")?;
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            eprintln!("naive: commit failed: {e}");
        }
    }
    Ok(())
}

/// One record: the output value, or the dead-letter kind and reason.
async fn process(job: &mut Job, m: &OwnedMessage) -> Result<Vec<u8>, (&'static str, String)> {
    let event = decode(
        m.payload().unwrap_or_default(),
        &job.limits,
        chrono::Utc::now(),
    )
    .map_err(|e| ("invalid_event", e))?;
    let (zip, session) = lookup(job, &event)
        .await
        .map_err(|e| ("lookup_failed", format!("redis: {e}")))?;
    let cfg = &job.cfg;
    let features = compute(
        &event,
        zip.as_ref(),
        &session,
        cfg.features.default_zip_median_income,
    );
    let prediction = infer(job, &features)
        .await
        .map_err(|e| ("inference_failed", e))?;
    let features = clickpipe_actors::features::FeatureValues::Builtin(features);
    let out = OutputRecord {
        event_id: &event.event_id,
        user_id: &event.user_id,
        session_id: &event.session_id,
        event_time: rfc3339(event.timestamp),
        features_version: None,
        features: &features,
        prediction: &prediction,
        processed_at: rfc3339(chrono::Utc::now()),
    };
    serde_json::to_vec(&out).map_err(|e| ("output_failed", e.to_string()))
}

/// ZIP data and the session update, one Redis command at a time.
async fn lookup(
    job: &mut Job,
    event: &Event,
) -> redis::RedisResult<(Option<ZipInfo>, clickpipe_actors::session::SessionSnapshot)> {
    let cfg = &job.cfg;
    let zip = match &event.zip {
        Some(z) => {
            let key = format!("{}{z}", cfg.redis.zip_prefix);
            let (income, tz): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(&key)
                .arg("median_income")
                .arg("timezone")
                .query_async(&mut job.redis)
                .await?;
            (income.is_some() || tz.is_some())
                .then(|| ZipInfo::from_fields(income.as_deref(), tz.as_deref()))
        }
        None => None,
    };
    let key = format!("naive:{}{}", cfg.redis.session_prefix, event.session_id);
    let stored: Option<String> = job.redis.get(&key).await?;
    let prev = stored.and_then(|s| {
        let mut it = s.split(',').map(|v| v.parse::<i64>().ok());
        Some(SessionState {
            count: u64::try_from(it.next()??).ok()?,
            first_ms: it.next()??,
            last_ms: it.next()??,
        })
    });
    let gap_ms = i64::try_from(cfg.features.session_gap_s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let (state, snap) = advance(prev, event.timestamp.timestamp_millis(), gap_ms);
    let value = format!("{},{},{}", state.count, state.first_ms, state.last_ms);
    let ttl = u64::try_from(gap_ms.saturating_mul(2) / 1000).unwrap_or(3600);
    let () = job.redis.set_ex(&key, value, ttl).await?;
    Ok((zip, snap))
}

/// One model call for one event.
async fn infer(job: &Job, features: &Features) -> Result<Prediction, String> {
    let url = format!("{}/invocations", job.cfg.model.url.trim_end_matches('/'));
    let mut resp = job
        .http
        .post(url)
        .send_json(&serde_json::json!({ "instances": [features] }))
        .await
        .map_err(|e| format!("model call failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("model answered {}", resp.status()));
    }
    let reply: ModelReply = resp
        .json()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("bad model reply: {e}"))?;
    let score = reply
        .predictions
        .first()
        .ok_or("model returned no prediction")?
        .score;
    Ok(Prediction {
        score,
        model_version: reply.model_version,
    })
}
