//! Kafka fixtures: topics, producing, consuming, committed offsets and the output collector.

use super::*;

pub fn create_topics(topics: &[(&str, i32)]) {
    create_topics_on(&brokers(), topics)
}

/// Creates topics (replication 1) on the cluster at `bootstrap`.
pub fn create_topics_on(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let rt = actix_rt::Runtime::new().expect("runtime");
    let res = rt
        .block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap_or_else(|e| {
            panic!("create topics on {bootstrap} (is the broker running? scripts/services.sh start): {e}")
        });
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// Creates one topic (replication 1) with topic-level `configs` on the default broker.
pub fn create_topic_with(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let rt = actix_rt::Runtime::new().expect("runtime");
    let res = rt
        .block_on(admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topic");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// The group's committed offset on each partition of `topic` (None: nothing committed).
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let offsets = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

pub fn producer() -> ThreadedProducer<DefaultProducerContext> {
    producer_on(&brokers())
}

pub fn producer_on(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .create()
        .expect("producer")
}

/// Produces `(key, value)` records and waits until all are acknowledged.
pub fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    produce_on(&brokers(), topic, records)
}

/// Produces to the cluster at `bootstrap` (e.g. a MockCluster).
pub fn produce_on(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let p = producer_on(bootstrap);
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic)
            .key(k.as_bytes())
            .payload(v.as_slice());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "{e}"
                    );
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Reads `topic` from the beginning until `want` records arrived or `timeout` passed.
pub fn consume(topic: &str, want: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let mut c = Collector::new(topic);
    c.until(timeout, |m| m.len() >= want);
    c.messages
}

/// Waits `quiet` and returns whatever else arrives — to check nothing more comes.
pub fn consume_settled(
    topic: &str,
    want: usize,
    timeout: Duration,
    quiet: Duration,
) -> Vec<OwnedMessage> {
    let mut got = consume(topic, want, timeout);
    std::thread::sleep(quiet);
    let again = consume(topic, usize::MAX, quiet);
    if again.len() > got.len() {
        got = again;
    }
    got
}

/// What `topic` holds after a second more of waiting: to check that nothing arrives there
/// (e.g. no dead letters).
pub fn settled_after_a_second(topic: &str) -> Vec<OwnedMessage> {
    consume_settled(topic, 0, Duration::from_millis(10), Duration::from_secs(1))
}

/// Asserts that each of `dead` is a dead letter of `kind` (its `clickpipe.error.kind`).
pub fn assert_all_of_kind(dead: &[OwnedMessage], kind: &str) {
    for m in dead {
        assert_eq!(header(m, "clickpipe.error.kind").as_deref(), Some(kind));
    }
}

pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
    })
}

pub fn json(m: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(m.payload().unwrap_or_default()).expect("output is JSON")
}

/// An input event as JSON bytes.
pub fn event(id: &str, session: &str, ts: &str, event_type: &str, zip: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "event_id": id, "user_id": format!("u-{session}"), "session_id": session,
        "timestamp": ts, "event_type": event_type, "device": "desktop", "page": "/p"
    });
    if let Some(z) = zip {
        v["zip"] = serde_json::Value::String(z.to_string());
    }
    serde_json::to_vec(&v).expect("json")
}

/// A page view of `session` without ZIP, at 2026-06-01T10:00:00Z.
pub fn page_view(id: &str, session: &str) -> Vec<u8> {
    event(id, session, "2026-06-01T10:00:00Z", "page_view", None)
}

/// `n` page-view events with ids `{prefix}{i}`, keyed by session `{prefix}-s{i % keys}`.
pub fn events(prefix: &str, n: usize, keys: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let s = format!("{prefix}-s{}", i % keys);
            let payload = page_view(&format!("{prefix}{i}"), &s);
            (s, payload)
        })
        .collect()
}

/// The indices `i` (of `0..total`) of the events `{prefix}{i}` that are not among `ids`.
pub fn missing_events(
    ids: &std::collections::HashSet<String>,
    prefix: &str,
    total: usize,
) -> Vec<usize> {
    (0..total)
        .filter(|i| !ids.contains(&format!("{prefix}{i}")))
        .collect()
}

/// What [`Collector::tally`] found: the indices of the events that never came out, and how many
/// outputs repeated an event; shown as "N outputs for T events, R repeats".
pub struct Tally {
    pub missing: Vec<usize>,
    pub repeats: usize,
    pub outputs: usize,
    pub total: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} outputs for {} events, {} repeats",
            self.outputs, self.total, self.repeats
        )
    }
}

/// Output records by event_id.
pub fn by_event_id(msgs: &[OwnedMessage]) -> HashMap<String, serde_json::Value> {
    msgs.iter()
        .map(|m| {
            let v = json(m);
            (v["event_id"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect()
}

/// One consumer reading a topic from the beginning, accumulating what arrives: cheaper on the
/// broker than re-reading the topic for every check.
pub struct Collector {
    consumer: BaseConsumer,
    pub messages: Vec<OwnedMessage>,
}

impl Collector {
    pub fn new(topic: &str) -> Collector {
        Collector::on(&brokers(), topic)
    }

    /// A collector on the cluster at `bootstrap` (e.g. a MockCluster).
    pub fn on(bootstrap: &str, topic: &str) -> Collector {
        Collector::with_isolation(bootstrap, topic, "read_uncommitted")
    }

    /// A collector that sees only records of committed transactions, as a downstream consumer
    /// of the exactly-once mode does.
    pub fn read_committed(bootstrap: &str, topic: &str) -> Collector {
        Collector::with_isolation(bootstrap, topic, "read_committed")
    }

    fn with_isolation(bootstrap: &str, topic: &str, isolation: &str) -> Collector {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("collector"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .set("isolation.level", isolation)
            .create()
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("tpl");
            }
        }
        consumer.assign(&tpl).expect("assign");
        Collector {
            consumer,
            messages: Vec::new(),
        }
    }

    /// Polls until the outputs carry `total` distinct event ids or `timeout` passes; returns the
    /// ids seen.
    pub fn event_ids(
        &mut self,
        total: usize,
        timeout: Duration,
    ) -> std::collections::HashSet<String> {
        let mut ids = std::collections::HashSet::new();
        let mut seen = 0;
        self.until(timeout, |m| {
            for msg in &m[seen..] {
                ids.insert(
                    json(msg)["event_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            seen = m.len();
            ids.len() >= total
        });
        ids
    }

    /// Polls until the events `{prefix}0` … `{prefix}{total-1}` all came out or `timeout`
    /// passes, then 2 s longer for late repeats, and tallies the outputs.
    pub fn tally(&mut self, prefix: &str, total: usize, timeout: Duration) -> Tally {
        let ids = self.event_ids(total, timeout);
        self.until(Duration::from_secs(2), |_| false);
        Tally {
            missing: missing_events(&ids, prefix, total),
            repeats: self.messages.len() - ids.len(),
            outputs: self.messages.len(),
            total,
        }
    }

    /// Polls until `done(messages)` holds or `timeout` passes; returns whether it held.
    pub fn until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[OwnedMessage]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(&self.messages) {
            if Instant::now() >= deadline {
                return false;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => self.messages.push(m.detach()),
                // Broker errors (an outage the test injected) are reported and retried.
                Some(Err(e)) => eprintln!("collector: {e}"),
                None => {}
            }
        }
        true
    }

    /// Polls until every record the topic holds now (its high watermarks, read once at the call)
    /// has been collected, or `timeout` passes; returns whether it caught up. Unlike a fixed
    /// wait, this does not depend on how fast the first fetch after the assignment is.
    pub fn caught_up(&mut self, topic: &str, timeout: Duration) -> bool {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut total = 0usize;
        for t in md.topics() {
            for p in t.partitions() {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                total += usize::try_from(high - low).unwrap_or(0);
            }
        }
        self.until(timeout, |m| m.len() >= total)
    }
}
