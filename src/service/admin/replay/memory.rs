//! What earlier jobs replayed: per dead-letter partition, the offsets handled for each kind
//! ([`Handled`]), and its encoding in the offset metadata of the replay group.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::KINDS;

/// job without a `kinds` filter replays them too).
pub(super) const OTHER_KIND: &str = "other";

/// Every kind the memory of a partition tracks.
pub(super) const ALL_KEYS: [&str; 5] = [KINDS[0], KINDS[1], KINDS[2], KINDS[3], OTHER_KIND];

/// Largest offset metadata a job commits (brokers refuse more than `offset.metadata.max.bytes`,
/// 4096 by default).
pub(super) const MAX_METADATA: usize = 3000;

/// The memory key of a `clickpipe.error.kind`.
pub(super) fn kind_key(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or(OTHER_KIND)
}

/// The dead letters of one partition earlier jobs handled. An offset is handled for a kind when
/// the record there is not of that kind, or was replayed (acknowledged), or was refused by the
/// loop guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Handled {
    /// Every offset below it is handled for every kind.
    pub(super) base: i64,
    /// Above `base`, per kind: sorted, disjoint, non-adjacent half-open ranges.
    kinds: BTreeMap<&'static str, Vec<(i64, i64)>>,
}

impl Handled {
    /// Adds `[from, to)` to what is handled for `kind`.
    pub(super) fn insert(&mut self, kind: &'static str, from: i64, to: i64) {
        let from = from.max(self.base);
        if to <= from {
            return;
        }
        let ranges = self.kinds.entry(kind).or_default();
        // Fast path: jobs mostly append.
        if let Some(last) = ranges.last_mut() {
            if from >= last.0 && from <= last.1 {
                last.1 = last.1.max(to);
                return;
            }
        }
        if ranges.last().is_none_or(|last| from > last.1) {
            ranges.push((from, to));
            return;
        }
        // The ranges touching [from, to) merge with it.
        let first = ranges.partition_point(|r| r.1 < from);
        let past = ranges.partition_point(|r| r.0 <= to);
        let (mut lo, mut hi) = (from, to);
        if first < past {
            lo = lo.min(ranges[first].0);
            hi = hi.max(ranges[past - 1].1);
        }
        ranges.splice(first..past, [(lo, hi)]);
    }

    /// Whether `offset` is handled for `kind`.
    pub(super) fn contains(&self, kind: &str, offset: i64) -> bool {
        offset < self.base
            || self.kinds.get(kind).is_some_and(|ranges| {
                let i = ranges.partition_point(|r| r.1 <= offset);
                ranges.get(i).is_some_and(|r| r.0 <= offset)
            })
    }

    /// The first offset at or after `from` not handled for `kind`.
    pub(super) fn first_unhandled(&self, kind: &str, from: i64) -> i64 {
        let at = from.max(self.base);
        self.kinds
            .get(kind)
            .and_then(|ranges| {
                let i = ranges.partition_point(|r| r.1 <= at);
                ranges.get(i).filter(|r| r.0 <= at).map(|r| r.1)
            })
            .unwrap_or(at)
    }

    /// Adds everything `other` handles.
    pub(super) fn union(&mut self, other: &Handled) {
        self.base = self.base.max(other.base);
        for (kind, ranges) in &other.kinds {
            for (from, to) in ranges {
                self.insert(kind, *from, *to);
            }
        }
        self.normalize(0);
    }

    /// Moves `base` up to the first offset not handled for some kind (and at least to `low`,
    /// the partition's first offset) and drops the ranges below it.
    pub(super) fn normalize(&mut self, low: i64) {
        self.base = self.base.max(low);
        let base = self.base;
        self.base = ALL_KEYS
            .iter()
            .map(|k| self.first_unhandled(k, base))
            .min()
            .unwrap_or(base);
        let base = self.base;
        for ranges in self.kinds.values_mut() {
            ranges.retain(|r| r.1 > base);
            if let Some(first) = ranges.first_mut() {
                first.0 = first.0.max(base);
            }
        }
        self.kinds.retain(|_, ranges| !ranges.is_empty());
    }

    /// The highest offset it mentions (exclusive).
    pub(super) fn top(&self) -> i64 {
        self.kinds
            .values()
            .filter_map(|r| r.last().map(|r| r.1))
            .max()
            .unwrap_or(self.base)
            .max(self.base)
    }

    /// The offset metadata: `v1 kind=a..b,c..d …` (half-open ranges above the committed offset).
    pub(super) fn encode(&self) -> String {
        let mut out = String::from("v1");
        for (kind, ranges) in &self.kinds {
            out.push(' ');
            out.push_str(kind);
            out.push('=');
            let parts: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}..{b}")).collect();
            out.push_str(&parts.join(","));
        }
        out
    }

    /// Reads a committed offset and its metadata. Metadata that is empty (e.g. after
    /// `kafka-consumer-groups --reset-offsets`) or not ours means: everything below the offset is
    /// handled, nothing above it.
    pub(super) fn decode(offset: i64, metadata: &str) -> Handled {
        let base = Handled {
            base: offset.max(0),
            kinds: BTreeMap::new(),
        };
        let mut words = metadata.split_whitespace();
        match words.next() {
            None => return base,
            Some("v1") => {}
            Some(_) => {
                tracing::warn!(
                    metadata,
                    "replay memory: metadata not understood; using the offset only"
                );
                return base;
            }
        }
        let mut out = base.clone();
        for word in words {
            let parsed = word.split_once('=').and_then(|(kind, ranges)| {
                let kind = ALL_KEYS.iter().find(|k| **k == kind)?;
                let ranges: Option<Vec<(i64, i64)>> = ranges
                    .split(',')
                    .map(|r| {
                        let (a, b) = r.split_once("..")?;
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((*kind, ranges?))
            });
            let Some((kind, ranges)) = parsed else {
                tracing::warn!(
                    metadata,
                    "replay memory: metadata not understood; using the offset only"
                );
                return base;
            };
            for (a, b) in ranges {
                out.insert(kind, a, b);
            }
        }
        out.normalize(0);
        out
    }

    /// Shrinks the encoding to at most `max` bytes by closing the smallest gaps between ranges of
    /// a kind (the dead letters in a closed gap count as replayed: only `"from": "beginning"`
    /// reaches them then). Returns how many gaps were closed.
    pub(super) fn compact(&mut self, max: usize) -> usize {
        let mut closed = 0;
        loop {
            let len = self.encode().len();
            let ranges: usize = self.kinds.values().map(Vec::len).sum();
            if len <= max || ranges <= self.kinds.len() {
                break;
            }
            // Close about as many gaps as the excess needs, the smallest first.
            let per_range = len / ranges + 1;
            let want = ((len - max) / per_range).max(1);
            let mut gaps: Vec<(i64, &'static str, usize)> = self
                .kinds
                .iter()
                .flat_map(|(kind, ranges)| {
                    ranges
                        .windows(2)
                        .enumerate()
                        .map(move |(i, w)| (w[1].0 - w[0].1, *kind, i))
                })
                .collect();
            gaps.sort_unstable();
            let mut close: HashMap<&'static str, HashSet<usize>> = HashMap::new();
            for (_, kind, i) in gaps.into_iter().take(want) {
                close.entry(kind).or_default().insert(i);
                closed += 1;
            }
            for (kind, gaps) in close {
                if let Some(ranges) = self.kinds.get_mut(kind) {
                    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
                    for (i, r) in ranges.iter().enumerate() {
                        match merged.last_mut() {
                            // Gap i lies between ranges i and i + 1.
                            Some(last) if i > 0 && gaps.contains(&(i - 1)) => last.1 = r.1,
                            _ => merged.push(*r),
                        }
                    }
                    *ranges = merged;
                }
            }
        }
        if closed > 0 {
            self.normalize(0);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_ranges_merge_and_answer() {
        let mut h = Handled::default();
        h.insert("invalid_event", 10, 12);
        h.insert("invalid_event", 14, 16);
        h.insert("invalid_event", 12, 14); // joins the two
        assert_eq!(h.kinds["invalid_event"], vec![(10, 16)]);
        h.insert("invalid_event", 3, 5);
        h.insert("invalid_event", 20, 21);
        h.insert("invalid_event", 4, 11); // overlaps two
        assert_eq!(h.kinds["invalid_event"], vec![(3, 16), (20, 21)]);
        assert!(h.contains("invalid_event", 3));
        assert!(h.contains("invalid_event", 15));
        assert!(!h.contains("invalid_event", 16));
        assert!(!h.contains("lookup_failed", 3));
        assert_eq!(h.first_unhandled("invalid_event", 0), 0);
        assert_eq!(h.first_unhandled("invalid_event", 5), 16);
        assert_eq!(h.first_unhandled("invalid_event", 20), 21);
        assert_eq!(h.first_unhandled("lookup_failed", 5), 5);
    }

    #[test]
    fn the_base_moves_once_every_kind_is_handled() {
        let mut h = Handled::default();
        for k in KINDS {
            h.insert(k, 0, 10);
        }
        h.normalize(0);
        assert_eq!(h.base, 0, "the other kind is not handled yet");
        h.insert(OTHER_KIND, 0, 7);
        h.normalize(0);
        assert_eq!(h.base, 7);
        assert_eq!(h.kinds.len(), 4, "ranges above the base stay");
        assert!(h.kinds.values().all(|r| r == &vec![(7, 10)]));
        // The partition's first offset moves it too (older dead letters are gone).
        h.normalize(20);
        assert_eq!(h.base, 20);
        assert!(h.kinds.is_empty());
    }

    #[test]
    fn the_memory_round_trips_through_offset_metadata() {
        let mut h = Handled {
            base: 5,
            ..Handled::default()
        };
        h.insert("inference_failed", 7, 9);
        h.insert("inference_failed", 12, 40);
        h.insert("lookup_failed", 6, 8);
        let text = h.encode();
        assert_eq!(text, "v1 inference_failed=7..9,12..40 lookup_failed=6..8");
        assert_eq!(Handled::decode(h.base, &text), h);
        // Empty metadata (an operator's --reset-offsets) or not ours: the offset alone.
        let plain = Handled {
            base: 30,
            ..Handled::default()
        };
        assert_eq!(Handled::decode(30, ""), plain);
        assert_eq!(Handled::decode(30, "something else"), plain);
        assert_eq!(Handled::decode(30, "v1 inference_failed=x..9"), plain);
        assert_eq!(Handled::decode(30, "v1 nonsense=1..9"), plain);
        assert_eq!(Handled::decode(-1, "").base, 0);
    }

    #[test]
    fn compaction_keeps_the_metadata_under_the_broker_limit() {
        let mut h = Handled::default();
        for i in 0..2000i64 {
            // Gaps of growing size: the smallest close first.
            h.insert("inference_failed", i * 1000, i * 1000 + 999 - (i % 7));
        }
        assert!(h.encode().len() > MAX_METADATA);
        let covered = h.clone();
        let closed = h.compact(MAX_METADATA);
        assert!(closed > 0);
        assert!(h.encode().len() <= MAX_METADATA, "{}", h.encode().len());
        // Nothing handled before is unhandled now.
        for (a, b) in &covered.kinds["inference_failed"] {
            assert!(h.contains("inference_failed", *a) && h.contains("inference_failed", b - 1));
        }
    }
}
