//! The job's reading and re-publishing: it reads the dead letters, lets the [`Plan`] judge each,
//! re-publishes the picked ones with `clickpipe.replay.count` incremented, takes in the broker's
//! answers and, at the end, waits for (or withdraws) what is outstanding.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::DateTime;
use clickpipe_actors::dlq::headers::{self, replay_count, REPLAY_COUNT};
use futures::FutureExt;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer, PurgeConfig};
use rdkafka::Offset;

use super::jobs::Stop;
use super::memory::kind_key;
use super::plan::{Plan, Verdict};
use super::run::{Pending, Replay};

/// Deliveries a job has outstanding at most.
const MAX_PENDING: usize = 1000;

/// How often a running job records what was acknowledged so far.
const COMMIT_INTERVAL: Duration = Duration::from_secs(2);

/// How long a stopping job (cancelled, past its deadline, failed) waits for the deliveries
/// already sent to the broker before it gives up on knowing their outcome.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Replay<'_> {
    /// Reads up to the ends; returns why it stopped early, if it did.
    pub(super) fn scan(
        &mut self,
        plan: &mut Plan<'_>,
        ends: &mut HashMap<i32, i64>,
    ) -> Result<Option<Stop>, String> {
        let config = self.config;
        let k = &config.kafka;
        let filter = plan.filter;
        let mut last_commit = Instant::now();
        while !ends.is_empty() {
            if let Some(stop) = self.job.stop() {
                return Ok(Some(stop));
            }
            if filter
                .limit
                .is_some_and(|l| self.job.replayed.load(Ordering::Relaxed) >= l)
            {
                break;
            }
            self.reap(plan);
            let open = plan.dirty || (self.txn.is_some() && !self.pending.is_empty());
            if open && last_commit.elapsed() >= COMMIT_INTERVAL {
                if let Err(e) = self.commit(plan, 1) {
                    tracing::warn!(job = %self.job.id, error = %e, "replay: cannot record progress");
                }
                last_commit = Instant::now();
            }
            if self.pending.len() >= MAX_PENDING {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let msg = match self.consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // Caught up with what the partition lets read now: its end, or (an open
                    // transaction) less; what is left is left for the next job.
                    if let Some(end) = ends.remove(&p) {
                        let reached = self.position(p).map_or(0, |pos| pos.min(end));
                        plan.reached_end(p, reached);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(job = %self.job.id, error = %e, "replay consumer error");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let p = msg.partition();
            let Some(end) = ends.get(&p).copied() else {
                continue;
            };
            if msg.offset() >= end {
                ends.remove(&p);
                plan.reached_end(p, end);
                continue;
            }
            self.job.scanned.fetch_add(1, Ordering::Relaxed);
            let h = msg.headers();
            let kind = h
                .and_then(|h| headers::get(h, headers::ERROR_KIND))
                .unwrap_or("");
            let failed_at = h
                .and_then(|h| headers::get(h, headers::FAILED_AT))
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.timestamp_millis())
                .or_else(|| msg.timestamp().to_millis());
            let count = replay_count(&msg);
            let verdict = plan.read(p, msg.offset(), kind, failed_at, count);
            if msg.offset() + 1 >= end {
                ends.remove(&p);
                plan.reached_end(p, end);
            }
            match verdict {
                Verdict::Unmatched => continue,
                Verdict::Already => {
                    self.job.already.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Verdict::Guarded => {
                    self.job.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Verdict::Publish => {}
            }
            self.job.replayed.fetch_add(1, Ordering::Relaxed);
            let Some(producer) = &self.producer else {
                continue; // a dry run
            };
            let next = (count + 1).to_string();
            let mut record = FutureRecord::to(&k.input_topic)
                .payload(msg.payload().unwrap_or_default())
                .headers(headers::with(OwnedHeaders::new(), REPLAY_COUNT, &next));
            if let Some(key) = msg.key() {
                record = record.key(key);
            }
            match producer.send_result(record) {
                Ok(delivery) => self.pending.push(Pending {
                    partition: p,
                    key: kind_key(kind),
                    offset: msg.offset(),
                    delivery,
                }),
                Err((e, _)) => {
                    tracing::warn!(job = %self.job.id, error = %e, "replay produce failed");
                    self.job.errors.fetch_add(1, Ordering::Relaxed);
                    self.job.replayed.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Ok(None)
    }

    /// The consumer's position in partition `p`.
    fn position(&self, p: i32) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        match positions
            .find_partition(&self.config.kafka.dlq_topic, p)?
            .offset()
        {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// Takes in the answered deliveries: acknowledged ones count as replayed.
    pub(super) fn reap(&mut self, plan: &mut Plan<'_>) {
        let job = self.job;
        let withdrawn = &mut self.withdrawn;
        let mut txn = self.txn.as_mut();
        self.pending.retain_mut(|d| {
            let Some(result) = (&mut d.delivery).now_or_never() else {
                return true;
            };
            match result {
                Ok(Ok(_)) => plan.acked(d.partition, d.key, d.offset),
                Ok(Err((e, _))) => {
                    job.replayed.fetch_sub(1, Ordering::Relaxed);
                    // Exactly-once mode: the open transaction can only be aborted now.
                    if let Some(t) = txn.as_deref_mut() {
                        t.failed
                            .get_or_insert_with(|| format!("a re-publication failed: {e}"));
                    }
                    match e.rdkafka_error_code() {
                        Some(RDKafkaErrorCode::PurgeQueue) => withdrawn.unsent += 1,
                        Some(RDKafkaErrorCode::PurgeInflight) => withdrawn.unknown += 1,
                        _ => {
                            tracing::warn!(job = %job.id, error = %e, "replay delivery failed");
                            job.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(_canceled) => {
                    job.replayed.fetch_sub(1, Ordering::Relaxed);
                    withdrawn.unknown += 1;
                }
            }
            false
        });
    }

    /// Waits for the outstanding deliveries: until the deadline normally; a stopping job
    /// withdraws what it has not sent and waits [`STOP_GRACE`] for the rest. Returns the reason
    /// it had to stop waiting, if it did.
    pub(super) fn wind_down(&mut self, plan: &mut Plan<'_>, stop: Option<Stop>) -> Option<Stop> {
        // A dry run has no producer, so nothing to wait for.
        let producer = self.producer.clone()?;
        let mut late = None;
        let mut grace_until = None;
        if stop.is_some() {
            producer.purge(PurgeConfig::default().queue());
            grace_until = Some(Instant::now() + STOP_GRACE);
        }
        loop {
            self.reap(plan);
            if self.pending.is_empty() {
                return late;
            }
            match grace_until {
                Some(g) if Instant::now() >= g => break,
                Some(_) => {}
                None => {
                    if let Some(s) = self.job.stop() {
                        late = Some(s);
                        producer.purge(PurgeConfig::default().queue());
                        grace_until = Some(Instant::now() + STOP_GRACE);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Give up on the answers of what was sent.
        producer.purge(PurgeConfig::default().queue().inflight());
        let until = Instant::now() + Duration::from_secs(1);
        while !self.pending.is_empty() && Instant::now() < until {
            self.reap(plan);
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in self.pending.drain(..) {
            self.job.replayed.fetch_sub(1, Ordering::Relaxed);
            self.withdrawn.unknown += 1;
        }
        late
    }
}
