//! A partition's records waiting to be written, grouped by event hour, and the objects one flush
//! makes of them.
//!
//! Why the objects come out the same after a crash: a flush writes every hour's records of the
//! partition at once, and the partition's offset is committed right after, before the next flush
//! begins. So at most one flush is written but not committed; after a restart the records are
//! read again from its first record, and each hour's object gets the same name (its first record
//! is the same) and replaces the one written before — whatever its extent now. No record ends up
//! in two objects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Timelike, Utc};

/// An hour of event time, UTC: the object's Hive partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour {
    /// Year (any year chrono can hold).
    pub year: i32,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
}

impl Hour {
    /// The hour of `ms` since the epoch (the epoch's hour for a time chrono cannot hold).
    pub fn of_millis(ms: i64) -> Hour {
        let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        Hour {
            year: t.year(),
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
        }
    }

    /// `dt=YYYY-MM-DD/hour=HH` (years outside 0–9999 are written with their sign, e.g.
    /// `+12345`, as chrono writes them).
    pub fn path(&self) -> String {
        let year = if (0..=9999).contains(&self.year) {
            format!("{:04}", self.year)
        } else {
            format!("{:+05}", self.year)
        };
        format!(
            "dt={year}-{:02}-{:02}/hour={:02}",
            self.month, self.day, self.hour
        )
    }
}

/// One record as the sink keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its offset in the partition.
    pub offset: i64,
    /// Its event time, epoch ms (the hour it is filed under).
    pub event_time_ms: i64,
    /// Its value, as read.
    pub value: Vec<u8>,
    /// Its headers that the sink keeps (dead letters: why and where from), as (name, value).
    pub headers: Vec<(String, String)>,
    /// Its broker timestamp, epoch ms (when it was appended to the topic), if it has one.
    pub appended_ms: Option<i64>,
}

/// When a partition's records are written.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Once it holds this many records.
    pub max_records: usize,
    /// Once their values add up to this many bytes.
    pub max_bytes: usize,
    /// Once the oldest has waited this long.
    pub max_interval: Duration,
}

/// The records of one hour, written as one object.
#[derive(Debug, Clone, PartialEq)]
pub struct HourRows {
    /// The hour.
    pub hour: Hour,
    /// The offset of its first record: the object's name.
    pub first_offset: i64,
    /// Its records in offset order.
    pub rows: Vec<Row>,
}

/// What one flush writes, and the offset to commit once it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Flush {
    /// One per hour present.
    pub objects: Vec<HourRows>,
    /// The offset after the last record.
    pub commit: i64,
}

impl Flush {
    /// How many records it holds.
    pub fn records(&self) -> usize {
        self.objects.iter().map(|o| o.rows.len()).sum()
    }
}

/// A partition's records not written yet.
#[derive(Debug, Default)]
pub struct Pending {
    hours: BTreeMap<Hour, Vec<Row>>,
    records: usize,
    bytes: usize,
    oldest: Option<Instant>,
    next_offset: Option<i64>,
}

impl Pending {
    /// Adds a record read at `now`.
    pub fn push(&mut self, row: Row, now: Instant) {
        self.records += 1;
        self.bytes += row.value.len();
        self.oldest.get_or_insert(now);
        self.next_offset = Some(row.offset.saturating_add(1));
        self.hours
            .entry(Hour::of_millis(row.event_time_ms))
            .or_default()
            .push(row);
    }

    /// When the oldest record held was read (None when empty).
    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Whether a limit is reached at `now`.
    pub fn due(&self, limits: &Limits, now: Instant) -> bool {
        self.records >= limits.max_records
            || self.bytes >= limits.max_bytes
            || self
                .oldest
                .is_some_and(|t| now.saturating_duration_since(t) >= limits.max_interval)
    }

    /// Takes everything held as one flush (None when empty).
    pub fn take(&mut self) -> Option<Flush> {
        let commit = self.next_offset?;
        let hours = std::mem::take(&mut self.hours);
        *self = Pending::default();
        let objects = hours
            .into_iter()
            .filter_map(|(hour, rows)| {
                Some(HourRows {
                    hour,
                    first_offset: rows.first()?.offset,
                    rows,
                })
            })
            .collect();
        Some(Flush { objects, commit })
    }
}

/// The key of an object: `{prefix}/dt=YYYY-MM-DD/hour=HH/{topic}+{partition}+{first_offset}.{ext}`.
pub fn object_key(
    prefix: &str,
    hour: &Hour,
    topic: &str,
    partition: i32,
    first_offset: i64,
    extension: &str,
) -> String {
    format!(
        "{prefix}/{}/{topic}+{partition}+{first_offset}.{extension}",
        hour.path()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: i64, t: &str) -> Row {
        Row {
            offset,
            event_time_ms: DateTime::parse_from_rfc3339(t)
                .expect("time")
                .timestamp_millis(),
            value: vec![b'x'; 10],
            headers: Vec::new(),
            appended_ms: None,
        }
    }

    #[test]
    fn a_flush_makes_one_object_per_hour_named_by_its_first_offset() {
        let mut p = Pending::default();
        let now = Instant::now();
        p.push(row(7, "2026-06-01T10:59:59Z"), now);
        p.push(row(8, "2026-06-01T11:00:00Z"), now);
        p.push(row(10, "2026-06-01T10:30:00Z"), now);
        let f = p.take().expect("flush");
        assert_eq!(f.commit, 11);
        let names: Vec<String> = f
            .objects
            .iter()
            .map(|o| object_key("p", &o.hour, "out", 3, o.first_offset, "parquet"))
            .collect();
        assert_eq!(
            names,
            vec![
                "p/dt=2026-06-01/hour=10/out+3+7.parquet",
                "p/dt=2026-06-01/hour=11/out+3+8.parquet"
            ]
        );
        assert_eq!(f.objects[0].rows.len(), 2);
        assert!(p.is_empty() && p.take().is_none());
    }

    #[test]
    fn limits_trigger_on_records_bytes_and_age() {
        let limits = Limits {
            max_records: 3,
            max_bytes: 25,
            max_interval: Duration::from_secs(5),
        };
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.push(row(0, "2026-06-01T10:00:00Z"), t0);
        assert!(!p.due(&limits, t0));
        assert!(p.due(&limits, t0 + Duration::from_secs(5)), "age");
        p.push(row(1, "2026-06-01T10:00:00Z"), t0);
        p.push(row(2, "2026-06-01T10:00:00Z"), t0);
        assert!(p.due(&limits, t0), "records and bytes");
    }

    #[test]
    fn any_time_chrono_holds_gets_an_hour_path() {
        assert_eq!(Hour::of_millis(0).path(), "dt=1970-01-01/hour=00");
        let far = DateTime::<Utc>::MAX_UTC.timestamp_millis();
        assert!(
            Hour::of_millis(far).path().starts_with("dt=+262"),
            "{}",
            Hour::of_millis(far).path()
        );
        let early = DateTime::<Utc>::MIN_UTC.timestamp_millis();
        assert!(Hour::of_millis(early).path().starts_with("dt=-262"));
        assert_eq!(Hour::of_millis(i64::MAX).path(), "dt=1970-01-01/hour=00");
    }
}
