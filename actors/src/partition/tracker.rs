//! Which offsets of a partition are finished, and how far the committed offset may move: only up
//! to the first record still in flight, so a crash never skips unfinished work.

use std::collections::BTreeSet;

/// Offsets read but not finished, and the furthest read.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    pending: BTreeSet<i64>,
    last_read: Option<i64>,
    /// Offsets beyond the commit point already finished in a committed transaction (exactly-once
    /// mode): read again, they are skipped. Inclusive ranges, ascending.
    skips: Vec<(i64, i64)>,
}

/// Where an exactly-once partition stands in a transaction: the next offset to read after a
/// restart, and the offsets beyond it whose writes are in the transaction too (a dead letter
/// written while an earlier record was still in flight). Both are committed with the transaction,
/// the second in the offset's metadata, so a restart skips exactly those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    /// The first offset not finished.
    pub next: i64,
    /// Finished offsets beyond `next`, as inclusive ranges, ascending.
    pub done: Vec<(i64, i64)>,
}

/// The prefix of a [`Frontier`]'s offset metadata.
const FRONTIER_TAG: &str = "clickpipe.eos.v1:";

impl Frontier {
    /// The offset metadata: `clickpipe.eos.v1:` and the finished ranges (`12-15,18`).
    pub fn metadata(&self) -> String {
        let ranges: Vec<String> = self
            .done
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        format!("{FRONTIER_TAG}{}", ranges.join(","))
    }

    /// The finished ranges written by [`Frontier::metadata`]; empty for metadata of another kind.
    pub fn parse_done(metadata: &str) -> Vec<(i64, i64)> {
        let Some(list) = metadata.strip_prefix(FRONTIER_TAG) else {
            return Vec::new();
        };
        let mut done: Vec<(i64, i64)> = list
            .split(',')
            .filter(|r| !r.is_empty())
            .filter_map(|r| match r.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => r.parse().ok().map(|a| (a, a)),
            })
            .filter(|(a, b)| a <= b)
            .collect();
        done.sort_unstable();
        done
    }
}

impl OffsetTracker {
    /// A tracker for a partition rewound to `next`: nothing in flight, position `next`.
    pub fn resumed_at(next: i64) -> Self {
        OffsetTracker {
            pending: BTreeSet::new(),
            last_read: Some(next - 1),
            skips: Vec::new(),
        }
    }

    /// This tracker, skipping the offsets of `done` when they are read (a committed frontier's).
    pub fn skipping(mut self, done: Vec<(i64, i64)>) -> Self {
        self.skips = done;
        self
    }

    /// Whether `offset` was finished in a committed transaction (and needs no processing); if
    /// so it counts as read and finished.
    pub fn already_done(&mut self, offset: i64) -> bool {
        // Ranges wholly behind the offset are passed.
        while self.skips.first().is_some_and(|&(_, b)| b < offset) {
            self.skips.remove(0);
        }
        let skip = self
            .skips
            .first()
            .is_some_and(|&(a, b)| a <= offset && offset <= b);
        if skip {
            self.last_read = Some(self.last_read.map_or(offset, |l| l.max(offset)));
        }
        skip
    }

    /// The frontier to commit with a transaction; None before anything was read or resumed.
    pub fn frontier(&self) -> Option<Frontier> {
        let next = self.committable()?;
        let mut done = Vec::new();
        let mut from = next;
        for &p in self.pending.range(next..) {
            if p > from {
                done.push((from, p - 1));
            }
            from = p + 1;
        }
        if let Some(last) = self.last_read {
            if last >= from {
                done.push((from, last));
            }
        }
        // Skipped ranges not reached yet stay finished.
        let unread = self.last_read.map_or(i64::MIN, |l| l + 1);
        done.extend(
            self.skips
                .iter()
                .map(|&(a, b)| (a.max(unread), b))
                .filter(|(a, b)| a <= b),
        );
        Some(Frontier { next, done })
    }

    /// One past the furthest offset read.
    pub fn position(&self) -> Option<i64> {
        self.last_read.map(|l| l + 1)
    }

    /// Records that `offset` was read and is now in flight.
    pub fn read(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.last_read = Some(self.last_read.map_or(offset, |l| l.max(offset)));
    }

    /// Records that `offset` is finished (output or dead letter acknowledged).
    /// Returns false if it was not in flight.
    pub fn done(&mut self, offset: i64) -> bool {
        self.pending.remove(&offset)
    }

    /// Records in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The offset to commit (the next one to read after a restart): the first offset still in
    /// flight, or one past the furthest read when nothing is. None before anything was read.
    pub fn committable(&self) -> Option<i64> {
        match self.pending.first() {
            Some(first) => Some(*first),
            None => self.last_read.map(|l| l + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frontier_lists_what_finished_beyond_the_first_unfinished_offset() {
        let mut t = OffsetTracker::default();
        for o in 10..21 {
            t.read(o);
        }
        for o in [11, 12, 13, 14, 17, 18, 19, 20] {
            assert!(t.done(o));
        }
        let f = t.frontier().expect("read");
        assert_eq!(f.next, 10);
        assert_eq!(f.done, vec![(11, 14), (17, 20)]);
        assert_eq!(f.metadata(), "clickpipe.eos.v1:11-14,17-20");
        assert_eq!(Frontier::parse_done(&f.metadata()), f.done);
        assert!(t.done(10) && t.done(15) && t.done(16));
        assert_eq!(
            t.frontier(),
            Some(Frontier {
                next: 21,
                done: vec![]
            })
        );
    }

    #[test]
    fn a_resumed_partition_skips_the_committed_finished_offsets_and_keeps_them_in_its_frontier() {
        let done = Frontier::parse_done("clickpipe.eos.v1:12-13,16");
        let mut t = OffsetTracker::resumed_at(10).skipping(done);
        assert_eq!(
            t.frontier().map(|f| f.done),
            Some(vec![(12, 13), (16, 16)]),
            "nothing read yet: the committed ranges stay"
        );
        let mut processed = Vec::new();
        for o in 10..18 {
            if !t.already_done(o) {
                t.read(o);
                processed.push(o);
            }
        }
        assert_eq!(processed, vec![10, 11, 14, 15, 17]);
        assert_eq!(
            t.frontier().map(|f| (f.next, f.done)),
            Some((10, vec![(12, 13), (16, 16)]))
        );
        for o in processed {
            assert!(t.done(o));
        }
        assert_eq!(t.frontier().map(|f| f.next), Some(18));
    }

    #[test]
    fn foreign_or_damaged_metadata_skips_nothing() {
        assert!(Frontier::parse_done("").is_empty());
        assert!(Frontier::parse_done("{\"replay\":1}").is_empty());
        assert_eq!(
            Frontier::parse_done("clickpipe.eos.v1:x,5-3,7,9-"),
            vec![(7, 7)]
        );
    }

    #[test]
    fn commits_only_up_to_the_first_unfinished_offset() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.committable(), None);
        for o in 10..15 {
            t.read(o);
        }
        assert_eq!(t.committable(), Some(10));
        assert!(t.done(12) && t.done(13));
        assert_eq!(
            t.committable(),
            Some(10),
            "a gap at 10 holds the commit back"
        );
        assert!(t.done(10));
        assert_eq!(t.committable(), Some(11));
        assert!(t.done(11) && t.done(14));
        assert_eq!((t.committable(), t.in_flight()), (Some(15), 0));
        assert!(!t.done(14), "finishing twice is reported");
    }

    #[test]
    fn tolerates_gaps_in_offsets() {
        let mut t = OffsetTracker::default();
        t.read(100);
        t.read(205); // compacted or transactional gaps
        t.done(205);
        assert_eq!(t.committable(), Some(100));
        t.done(100);
        assert_eq!(t.committable(), Some(206));
    }
}
