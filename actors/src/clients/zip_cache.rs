//! A bounded in-process TTL cache of ZIP data, shared by all partitions of a process. Misses (ZIPs
//! Redis does not know) are cached too, so unknown ZIPs do not cost a round trip each time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::features::ZipInfo;

/// What the cache knows about one ZIP: `None` means Redis has no hash for it.
pub type CachedZip = Option<Arc<ZipInfo>>;

/// The cache. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ZipCache {
    entries: Mutex<HashMap<String, (Instant, CachedZip)>>,
    ttl: Duration,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ZipCache {
    /// A cache of at most `capacity` ZIPs, each kept for `ttl`. Capacity 0 disables it.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ZipCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Look-ups answered from the cache and look-ups that went to Redis, so far.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The cached value of `zip`, if fresh. `Some(None)` is a cached "unknown ZIP".
    pub fn get(&self, zip: &str) -> Option<CachedZip> {
        if self.capacity == 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let found = {
            let entries = self.entries.lock();
            entries
                .get(zip)
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, v)| v.clone())
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores what Redis said about `zip`.
    pub fn put(&self, zip: String, value: CachedZip) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&zip) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of fresh entries: drop an arbitrary one. Cheap, and a ZIP working set
                // larger than the cache degrades to a hit ratio, never to unbounded memory.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(zip, (Instant::now(), value));
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that needed Redis.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_hits_and_misses_until_the_ttl() {
        let c = ZipCache::new(10, Duration::from_millis(50));
        assert_eq!(c.get("10001"), None);
        c.put("10001".into(), None);
        c.put(
            "10002".into(),
            Some(Arc::new(ZipInfo::from_fields(Some("5"), None))),
        );
        assert_eq!(c.get("10001"), Some(None));
        assert!(matches!(c.get("10002"), Some(Some(_))));
        assert_eq!((c.hits(), c.misses()), (2, 1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("10001"), None, "expired");
    }

    #[test]
    fn never_grows_past_its_capacity() {
        let c = ZipCache::new(3, Duration::from_secs(60));
        for i in 0..10 {
            c.put(format!("{i:05}"), None);
        }
        assert!(c.entries.lock().len() <= 3);
        let off = ZipCache::new(0, Duration::from_secs(60));
        off.put("1".into(), None);
        assert_eq!(off.get("1"), None);
    }
}
