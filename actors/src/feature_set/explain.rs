//! `clickpipe features explain`: one event's features computed against the live Redis without
//! writing anything. Only reading commands are sent (`HMGET`, `HEXISTS`, `ZSCORE`,
//! `ZRANGEBYSCORE`); the session and window rules are applied in Rust to what is read, as the
//! pipeline's scripts would apply them to this event now (an event already applied gets its
//! stored session answer back, as a redelivery would).

use std::collections::HashMap;

use deadpool_redis::redis::{self, aio::ConnectionLike};
use serde::Serialize;

use super::engine::{Computed, Known};
use super::plan::Declared;
use super::window::{aggregate, Entry};
use super::FeatureSet;
use crate::error::ClientError;
use crate::event::Event;
use crate::session::{
    advance, parse_aggregates, parse_snapshot, AggFunction, SessionSnapshot, SessionState,
};

/// What `features explain` found and computed for one event.
#[derive(Debug, Serialize)]
pub struct Explained {
    /// The set's `version`.
    pub features_version: String,
    /// The features as the model would get them (None: the event would be dead-lettered).
    pub features: Option<Computed>,
    /// Why the event would be dead-lettered as `invalid_event`.
    pub dead_letter: Option<String>,
    /// What was read: the hash fields of each lookup key.
    pub hashes: HashMap<String, HashMap<String, String>>,
    /// The session as the event would see it.
    pub session: SessionView,
    /// Window and session aggregates by feature (null: nothing to aggregate).
    pub aggregates: HashMap<String, Option<f64>>,
}

/// A session snapshot, for printing.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// 1-based index of the event in its session.
    pub count: u64,
    /// Latest event time before this event, epoch ms.
    pub prev_ms: Option<i64>,
    /// Session start, epoch ms.
    pub first_ms: i64,
    /// Latest event time, epoch ms.
    pub last_ms: i64,
    /// Whether Redis already holds this event's answer (it was processed before).
    pub already_applied: bool,
}

fn failed(e: redis::RedisError) -> ClientError {
    ClientError::transient(format!("redis: {e}"))
}

fn int(s: Option<&String>) -> Option<i64> {
    s.filter(|t| t.len() <= 17).and_then(|t| t.parse().ok())
}

/// Computes `event`'s features with `set` against the Redis behind `conn`, reading only.
/// `session_key` is the event's session hash, `gap_ms` `features.session_gap_s` in ms.
pub async fn explain<C: ConnectionLike>(
    set: &FeatureSet,
    event: &Event,
    conn: &mut C,
    session_key: &str,
    gap_ms: i64,
) -> Result<Explained, ClientError> {
    let plan = set.plan(&[event]);
    let mut hashes = Vec::new();
    for (key, fields) in &plan.hashes {
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(key)
            .arg(fields)
            .query_async(conn)
            .await
            .map_err(failed)?;
        hashes.push(
            fields
                .iter()
                .zip(values)
                .filter_map(|(f, v)| Some((f.clone(), v?)))
                .collect::<HashMap<_, _>>(),
        );
    }

    // The session, as the session script would answer this event.
    let ts = event.timestamp.timestamp_millis();
    let mut fields = vec![
        format!("e:{}", event.event_id),
        "count".into(),
        "first".into(),
        "last".into(),
    ];
    fields.extend(plan.session_aggs.iter().map(|(n, _)| format!("a:{n}")));
    let got: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(session_key)
        .arg(&fields)
        .query_async(conn)
        .await
        .map_err(failed)?;
    let stored = got.first().cloned().flatten();
    let (session, session_aggs, already_applied) = match stored.as_deref().and_then(|s| {
        Some((
            parse_snapshot(s)?,
            parse_aggregates(s, plan.session_aggs.len()),
        ))
    }) {
        Some((snap, aggs)) => (snap, aggs, true),
        None => {
            let prev = match (
                int(got.get(1).and_then(Option::as_ref)),
                int(got.get(2).and_then(Option::as_ref)),
                int(got.get(3).and_then(Option::as_ref)),
            ) {
                (Some(count), Some(first_ms), Some(last_ms)) if count >= 0 => Some(SessionState {
                    count: count as u64,
                    first_ms,
                    last_ms,
                }),
                _ => None,
            };
            let (_, snap) = advance(prev, ts, gap_ms);
            let restarted = snap.count == 1;
            let mut aggs = Vec::new();
            for (j, (name, function)) in plan.session_aggs.iter().enumerate() {
                let cur = got.get(4 + j).cloned().flatten().filter(|_| !restarted);
                let value = plan.session_values.first().and_then(|v| v.get(j)?.clone());
                aggs.push(match function {
                    AggFunction::Sum => {
                        let cur = cur.and_then(|c| c.parse::<f64>().ok());
                        match value.and_then(|v| v.parse::<f64>().ok()) {
                            Some(x) => Some(cur.unwrap_or(0.0) + x),
                            None => cur,
                        }
                    }
                    AggFunction::CountDistinct => {
                        let cur = cur.and_then(|c| c.parse::<f64>().ok()).unwrap_or(0.0);
                        let new = match value {
                            Some(v) if !restarted => {
                                let field = format!("d:{}:{name}:{v}", name.len());
                                let seen: bool = redis::cmd("HEXISTS")
                                    .arg(session_key)
                                    .arg(field)
                                    .query_async(conn)
                                    .await
                                    .map_err(failed)?;
                                !seen
                            }
                            Some(_) => true,
                            None => false,
                        };
                        Some(cur + f64::from(u8::from(new)))
                    }
                });
            }
            (snap, aggs, false)
        }
    };

    // Windows: the entries in (t − window, t] as stored, plus this event when it would enter.
    let mut windows = Vec::with_capacity(plan.windows.len());
    for item in &plan.windows {
        let from = item.entry.ts_ms.saturating_sub(item.window_ms);
        let scored: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(&item.key)
            .arg(format!("({from}"))
            .arg(item.entry.ts_ms)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .map_err(failed)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(scored.len() + 1);
        if !scored.is_empty() {
            let ids: Vec<&String> = scored.iter().map(|(id, _)| id).collect();
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(format!("{}:v", item.key))
                .arg(&ids)
                .query_async(conn)
                .await
                .map_err(failed)?;
            for ((id, score), value) in scored.iter().zip(values) {
                entries.push(Entry {
                    event_id: id.clone(),
                    ts_ms: *score as i64,
                    value,
                });
            }
        }
        let mut added = false;
        if item.add && !entries.iter().any(|e| e.event_id == item.entry.event_id) {
            let present: Option<f64> = redis::cmd("ZSCORE")
                .arg(&item.key)
                .arg(&item.entry.event_id)
                .query_async(conn)
                .await
                .map_err(failed)?;
            if present.is_none() {
                entries.push(item.entry.clone());
                added = true;
            }
        }
        if added {
            // At the cap, the script would drop the oldest entries of the whole state.
            let card: usize = redis::cmd("ZCARD")
                .arg(&item.key)
                .query_async(conn)
                .await
                .map_err(failed)?;
            let over = (card + 1).saturating_sub(item.max_events);
            if over > 0 {
                let oldest: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&item.key)
                    .arg(0)
                    .arg(over - 1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await
                    .map_err(failed)?;
                let mut candidates: Vec<(i64, String)> = oldest
                    .into_iter()
                    .map(|(id, score)| (score as i64, id))
                    .chain([(item.entry.ts_ms, item.entry.event_id.clone())])
                    .collect();
                candidates.sort_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
                candidates.truncate(over);
                entries.retain(|e| !candidates.iter().any(|(_, id)| *id == e.event_id));
            }
        }
        windows.push(aggregate(
            &entries,
            item.entry.ts_ms,
            item.window_ms,
            item.function,
        ));
    }

    let declared: Declared = plan
        .answers(hashes, &windows, &[session_aggs])
        .pop()
        .unwrap_or_default();
    let known = Known {
        declared: Some(&declared),
        session: Some(&session),
    };
    let (features, dead_letter) = match set.compute(event, &known) {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let SessionSnapshot {
        count,
        prev_ms,
        first_ms,
        last_ms,
    } = session;
    Ok(Explained {
        features_version: set.version.to_string(),
        features,
        dead_letter,
        hashes: declared
            .hashes
            .iter()
            .map(|(k, v)| (k.clone(), (**v).clone()))
            .collect(),
        session: SessionView {
            count,
            prev_ms,
            first_ms,
            last_ms,
            already_applied,
        },
        aggregates: declared.aggregates,
    })
}
