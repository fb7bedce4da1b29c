//! A job's bookkeeping, free of Kafka: where it starts reading, what it does with each dead
//! letter it reads ([`Verdict`]) and what it handled, to be remembered.

use std::collections::HashMap;

use super::memory::{kind_key, Handled, ALL_KEYS};
use super::request::ReplayFilter;
use super::KINDS;

/// What a job does with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not selected by the filter.
    Unmatched,
    /// Selected, but an earlier job replayed it.
    Already,
    /// Selected, refused by the loop guard.
    Guarded,
    /// To re-publish.
    Publish,
}

/// A job's bookkeeping, free of Kafka: what it reads, what it decides, what it has handled.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    pub(super) filter: &'a ReplayFilter,
    max_count: u32,
    /// The kinds the job selects.
    keys: Vec<&'static str>,
    /// What earlier jobs handled, as loaded at the start (then as last committed).
    pub(super) stored: HashMap<i32, Handled>,
    /// What this job handled.
    pub(super) marks: HashMap<i32, Handled>,
    /// The next offset each partition is expected to deliver.
    next: HashMap<i32, i64>,
    /// Whether `marks` grew since the last commit.
    pub(super) dirty: bool,
}

impl<'a> Plan<'a> {
    pub(super) fn new(
        filter: &'a ReplayFilter,
        max_count: u32,
        stored: HashMap<i32, Handled>,
    ) -> Self {
        let keys = match &filter.kinds {
            None => ALL_KEYS.to_vec(),
            Some(k) => KINDS
                .iter()
                .copied()
                .filter(|kind| k.contains(*kind))
                .collect(),
        };
        Plan {
            filter,
            max_count,
            keys,
            stored,
            marks: HashMap::new(),
            next: HashMap::new(),
            dirty: false,
        }
    }

    /// Where the job starts reading partition `p` (whose first offset is `low`).
    pub(super) fn start(&mut self, p: i32, low: i64) -> i64 {
        let start = if self.filter.from_beginning {
            low
        } else {
            let handled = self.stored.get(&p).cloned().unwrap_or_default();
            self.keys
                .iter()
                .map(|k| handled.first_unhandled(k, low))
                .min()
                .unwrap_or(low)
        };
        self.next.insert(p, start);
        start
    }

    /// Marks `[from, to)` handled for every selected kind except `except`.
    fn mark_others(&mut self, p: i32, from: i64, to: i64, except: Option<&str>) {
        if to <= from {
            return;
        }
        let marks = self.marks.entry(p).or_default();
        for k in &self.keys {
            if Some(*k) != except {
                marks.insert(k, from, to);
            }
        }
        self.dirty = true;
    }

    /// The job read the dead letter at `offset` of partition `p`.
    pub(super) fn read(
        &mut self,
        p: i32,
        offset: i64,
        kind: &str,
        failed_at: Option<i64>,
        count: u32,
    ) -> Verdict {
        // Offsets skipped over hold no record (transaction markers, compacted away).
        let next = self.next.get(&p).copied().unwrap_or(offset);
        self.mark_others(p, next.min(offset), offset, None);
        self.next.insert(p, offset + 1);
        let key = kind_key(kind);
        // For every other selected kind, this record is one less to replay.
        self.mark_others(p, offset, offset + 1, Some(key));
        if !self.keys.contains(&key) {
            return Verdict::Unmatched;
        }
        if let Some(since) = self.filter.since_ms {
            if failed_at.is_none_or(|t| t < since) {
                return Verdict::Unmatched;
            }
        }
        if let Some(until) = self.filter.until_ms {
            if failed_at.is_none_or(|t| t >= until) {
                return Verdict::Unmatched;
            }
        }
        if !self.filter.from_beginning
            && self.stored.get(&p).is_some_and(|h| h.contains(key, offset))
        {
            return Verdict::Already;
        }
        if count >= self.max_count {
            self.marks
                .entry(p)
                .or_default()
                .insert(key, offset, offset + 1);
            self.dirty = true;
            return Verdict::Guarded;
        }
        Verdict::Publish
    }

    /// The job read partition `p` up to `end` (exclusive): what follows its last record holds
    /// none.
    pub(super) fn reached_end(&mut self, p: i32, end: i64) {
        if let Some(next) = self.next.get(&p).copied() {
            self.mark_others(p, next, end, None);
            self.next.insert(p, end.max(next));
        }
    }

    /// The broker acknowledged the re-publication of the dead letter at `offset`.
    pub(super) fn acked(&mut self, p: i32, key: &'static str, offset: i64) {
        self.marks
            .entry(p)
            .or_default()
            .insert(key, offset, offset + 1);
        self.dirty = true;
    }

    /// What to commit for partition `p`: what is stored (`current`, freshly read) with this
    /// job's marks, moved up to the partition's first offset `low`.
    pub(super) fn merged(&self, p: i32, current: &Handled, low: i64) -> Handled {
        let mut out = current.clone();
        if let Some(marks) = self.marks.get(&p) {
            out.union(marks);
        }
        out.normalize(low);
        out
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::service::admin::replay::memory::OTHER_KIND;
    use crate::service::admin::replay::ReplayRequest;

    fn filter(body: serde_json::Value) -> ReplayFilter {
        serde_json::from_value::<ReplayRequest>(body)
            .expect("request")
            .validate()
            .expect("valid")
    }

    #[test]
    fn a_second_job_leaves_out_what_the_first_replayed() {
        let all = filter(serde_json::json!({}));
        let mut first = Plan::new(&all, 3, HashMap::new());
        assert_eq!(first.start(0, 0), 0);
        for o in 0..4 {
            assert_eq!(first.read(0, o, "invalid_event", None, 0), Verdict::Publish);
        }
        first.reached_end(0, 4);
        // Only 0..3 acknowledged: 3 is left for the next job.
        for o in 0..3 {
            first.acked(0, "invalid_event", o);
        }
        let stored = first.merged(0, &Handled::default(), 0);
        assert_eq!(stored.base, 3);

        let mut second = Plan::new(&all, 3, HashMap::from([(0, stored.clone())]));
        assert_eq!(
            second.start(0, 0),
            3,
            "starts after what the first replayed"
        );
        assert_eq!(
            second.read(0, 3, "invalid_event", None, 0),
            Verdict::Publish
        );

        let again = filter(serde_json::json!({"from": "beginning"}));
        let mut third = Plan::new(&again, 3, HashMap::from([(0, stored)]));
        assert_eq!(third.start(0, 0), 0);
        assert_eq!(third.read(0, 0, "invalid_event", None, 0), Verdict::Publish);
    }

    #[test]
    fn a_job_of_one_kind_leaves_the_other_kinds_to_later_jobs() {
        let inference = filter(serde_json::json!({"kinds": ["inference_failed"]}));
        let mut first = Plan::new(&inference, 3, HashMap::new());
        first.start(0, 0);
        let kinds = [
            "lookup_failed",
            "inference_failed",
            "lookup_failed",
            "inference_failed",
        ];
        for (o, kind) in kinds.iter().enumerate() {
            let v = first.read(0, o as i64, kind, None, 0);
            if *kind == "inference_failed" {
                assert_eq!(v, Verdict::Publish);
                first.acked(0, "inference_failed", o as i64);
            } else {
                assert_eq!(v, Verdict::Unmatched);
            }
        }
        first.reached_end(0, 4);
        let stored = first.merged(0, &Handled::default(), 0);
        assert_eq!(stored.base, 0, "lookup failures are not replayed yet");

        let all = filter(serde_json::json!({}));
        let mut second = Plan::new(&all, 3, HashMap::from([(0, stored.clone())]));
        assert_eq!(second.start(0, 0), 0);
        let verdicts: Vec<Verdict> = kinds
            .iter()
            .enumerate()
            .map(|(o, kind)| second.read(0, o as i64, kind, None, 0))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Publish,
                Verdict::Already,
                Verdict::Publish,
                Verdict::Already
            ]
        );
        // A job of the kind already replayed starts past it.
        let mut third = Plan::new(&inference, 3, HashMap::from([(0, stored)]));
        assert_eq!(third.start(0, 0), 4);
    }

    #[test]
    fn dead_letters_outside_the_window_stay_replayable() {
        let since = filter(serde_json::json!({"since": "2026-01-01T00:00:00Z"}));
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .ok()
        };
        let mut first = Plan::new(&since, 3, HashMap::new());
        first.start(0, 0);
        assert_eq!(
            first.read(0, 0, "inference_failed", t("2025-12-31T00:00:00Z"), 0),
            Verdict::Unmatched
        );
        assert_eq!(
            first.read(0, 1, "inference_failed", t("2026-01-02T00:00:00Z"), 0),
            Verdict::Publish
        );
        first.acked(0, "inference_failed", 1);
        // The loop guard's refusals count as handled: no later job reads them again.
        assert_eq!(
            first.read(0, 2, "inference_failed", t("2026-01-02T00:00:00Z"), 3),
            Verdict::Guarded
        );
        first.reached_end(0, 3);
        let stored = first.merged(0, &Handled::default(), 0);
        assert_eq!(stored.base, 0);
        assert!(stored.contains("inference_failed", 1));
        assert!(stored.contains("inference_failed", 2));
        assert!(
            !stored.contains("inference_failed", 0),
            "left for a later job"
        );
    }

    #[test]
    fn a_dry_run_or_an_unacknowledged_record_is_not_remembered() {
        let all = filter(serde_json::json!({}));
        let mut job = Plan::new(&all, 3, HashMap::new());
        job.start(0, 0);
        assert_eq!(job.read(0, 0, "output_failed", None, 0), Verdict::Publish);
        job.reached_end(0, 1);
        let stored = job.merged(0, &Handled::default(), 0);
        assert!(!stored.contains("output_failed", 0));
        assert_eq!(stored.base, 0);
    }

    #[test]
    fn unknown_kinds_are_replayed_only_without_a_kind_filter() {
        assert_eq!(kind_key("inference_failed"), "inference_failed");
        assert_eq!(kind_key(""), OTHER_KIND);
        assert_eq!(kind_key("weird"), OTHER_KIND);
        let one = filter(serde_json::json!({"kinds": ["invalid_event"]}));
        let mut job = Plan::new(&one, 3, HashMap::new());
        job.start(0, 0);
        assert_eq!(job.read(0, 0, "", None, 0), Verdict::Unmatched);
        let all = filter(serde_json::json!({}));
        let mut job = Plan::new(&all, 3, HashMap::new());
        job.start(0, 0);
        assert_eq!(job.read(0, 0, "", None, 0), Verdict::Publish);
    }
}
