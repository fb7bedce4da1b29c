//! Input at a steady rate from a thread of its own, so a test can stop brokers and instances
//! while records keep arriving — and learn at the end whether every record was acknowledged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

/// Counts acknowledged and failed deliveries.
#[derive(Clone, Default)]
struct Acks {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                eprintln!("paced producer: delivery failed: {e}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// What a [`PacedProducer`] did.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub acked: usize,
    pub failed: usize,
}

/// Produces `records` to `topic` at `rate` per second from a background thread. The producer is
/// idempotent and waits up to two minutes per record, so a broker outage delays records but
/// neither loses nor duplicates them.
pub struct PacedProducer {
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Produced>>,
}

impl PacedProducer {
    pub fn start(
        bootstrap: &str,
        topic: &str,
        records: Vec<(String, Vec<u8>)>,
        rate: u64,
    ) -> PacedProducer {
        let acks = Acks::default();
        let producer: ThreadedProducer<Acks> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "120000")
            .set("log_level", "3")
            .create_with_context(acks.clone())
            .expect("paced producer");
        let topic = topic.to_string();
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (sent2, stop2) = (sent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0;
            while i < records.len() && !stop2.load(Ordering::Relaxed) {
                let due =
                    ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(records.len());
                while i < due {
                    let (k, v) = &records[i];
                    let mut rec = BaseRecord::to(&topic).key(k.as_bytes()).payload(v);
                    while let Err((_, r)) = producer.send(rec) {
                        rec = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    i += 1;
                    sent2.store(i, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = producer.flush(Duration::from_secs(180));
            Produced {
                acked: acks.ok.load(Ordering::Relaxed),
                failed: acks.failed.load(Ordering::Relaxed),
            }
        });
        PacedProducer {
            sent,
            stop,
            thread: Some(thread),
        }
    }

    /// Records handed to the producer so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until every record was sent and acknowledged (or failed).
    pub fn finish(mut self) -> Produced {
        self.thread
            .take()
            .map(|t| t.join().expect("paced producer thread"))
            .expect("finished once")
    }
}

impl Drop for PacedProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
