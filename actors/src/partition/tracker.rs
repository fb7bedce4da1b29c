//! Which offsets of a partition are finished, and how far the committed offset may move: only up
//! to the first record still in flight, so a crash never skips unfinished work.

use std::collections::BTreeSet;

/// Offsets read but not finished, and the furthest read.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    pending: BTreeSet<i64>,
    last_read: Option<i64>,
}

impl OffsetTracker {
    /// A tracker for a partition rewound to `next`: nothing in flight, position `next`.
    pub fn resumed_at(next: i64) -> Self {
        OffsetTracker {
            pending: BTreeSet::new(),
            last_read: Some(next - 1),
        }
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
