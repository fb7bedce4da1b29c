//! Session state: how one event advances its session, as a pure function, and the Redis script
//! that applies the same rule atomically and idempotently.
//!
//! A session is identified by the event's `session_id`. It restarts when an event comes more than
//! `gap` after the latest event seen so far. Events that arrive out of order stay in their
//! session: they count, do not move the latest time back, and get a gap of zero.
//!
//! Idempotency: the script remembers the result it computed for each event id (the latest
//! [`RESULT_RING`] events per session), so a redelivered record gets back exactly the session
//! features it got the first time and the count does not move.
//!
//! Session aggregates (declared `session` features with `sum` or `count_distinct`): the session
//! also keeps, per such feature, the running sum of a column or the distinct values it has seen,
//! in arrival order like the count, reset when the session restarts ([`aggregate_step`]).

use std::collections::HashSet;

/// The stored state of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// Events counted in the session so far.
    pub count: u64,
    /// Earliest event time seen, epoch milliseconds.
    pub first_ms: i64,
    /// Latest event time seen, epoch milliseconds.
    pub last_ms: i64,
}

/// What the session looked like for one event, right after it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// 1-based index of the event in its session.
    pub count: u64,
    /// Latest event time seen before this event (None for the first event of a session).
    pub prev_ms: Option<i64>,
    /// Earliest event time of the session, including this event.
    pub first_ms: i64,
    /// Latest event time of the session, including this event.
    pub last_ms: i64,
}

/// How many per-event results a session remembers for de-duplication.
pub const RESULT_RING: u64 = 512;

/// Applies one event at `ts_ms` to a session. Returns the new state and the snapshot the event
/// sees. This is the rule [`SESSION_SCRIPT`] implements in Redis.
pub fn advance(
    prev: Option<SessionState>,
    ts_ms: i64,
    gap_ms: i64,
) -> (SessionState, SessionSnapshot) {
    match prev {
        // Saturating: a stored state is read back from Redis, and no value of it may panic here.
        Some(s) if ts_ms.saturating_sub(s.last_ms) <= gap_ms => {
            let state = SessionState {
                count: s.count.saturating_add(1),
                first_ms: s.first_ms.min(ts_ms),
                last_ms: s.last_ms.max(ts_ms),
            };
            let snap = SessionSnapshot {
                count: state.count,
                prev_ms: Some(s.last_ms),
                first_ms: state.first_ms,
                last_ms: state.last_ms,
            };
            (state, snap)
        }
        _ => {
            let state = SessionState {
                count: 1,
                first_ms: ts_ms,
                last_ms: ts_ms,
            };
            let snap = SessionSnapshot {
                count: 1,
                prev_ms: None,
                first_ms: ts_ms,
                last_ms: ts_ms,
            };
            (state, snap)
        }
    }
}

/// Parses the `count|prev|first|last` result the script returns (`prev` empty for none).
pub fn parse_snapshot(s: &str) -> Option<SessionSnapshot> {
    let mut it = s.split('|');
    let count = it.next()?.parse().ok()?;
    let prev = it.next()?;
    let prev_ms = if prev.is_empty() {
        None
    } else {
        Some(prev.parse().ok()?)
    };
    let first_ms = it.next()?.parse().ok()?;
    let last_ms = it.next()?.parse().ok()?;
    Some(SessionSnapshot {
        count,
        prev_ms,
        first_ms,
        last_ms,
    })
}

/// A session aggregate: what a declared `session` feature with a `column` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunction {
    /// Sum of the column's numeric values.
    Sum,
    /// How many distinct values of the column.
    CountDistinct,
}

impl AggFunction {
    /// The function's name in [`SESSION_SCRIPT`].
    pub fn name(self) -> &'static str {
        match self {
            AggFunction::Sum => "sum",
            AggFunction::CountDistinct => "count_distinct",
        }
    }
}

/// What a session keeps for one aggregate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggState {
    /// The running sum (None: no numeric value yet).
    pub sum: Option<f64>,
    /// The distinct values seen.
    pub distinct: HashSet<String>,
}

/// Applies one event's `value` (a finite number's text for `Sum`, any text for
/// `CountDistinct`; None when the event has none) to a session aggregate; `restarted`: the event
/// started a new session (its snapshot's count is 1), which empties the state first. Returns the
/// value the event sees: the sum so far (None before any value), or the number of distinct
/// values so far. The rule [`SESSION_SCRIPT`] implements.
pub fn aggregate_step(
    state: &mut AggState,
    restarted: bool,
    function: AggFunction,
    value: Option<&str>,
) -> Option<f64> {
    if restarted {
        *state = AggState::default();
    }
    match function {
        AggFunction::Sum => {
            if let Some(x) = value
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|x| x.is_finite())
            {
                state.sum = Some(state.sum.unwrap_or(0.0) + x);
            }
            state.sum
        }
        AggFunction::CountDistinct => {
            if let Some(v) = value {
                state.distinct.insert(v.to_string());
            }
            Some(state.distinct.len() as f64)
        }
    }
}

/// The aggregates after the `count|prev|first|last` of a script result, one per requested
/// aggregate (`""`: no value; absent, e.g. a result stored before the aggregate was declared: no
/// value).
pub fn parse_aggregates(s: &str, n: usize) -> Vec<Option<f64>> {
    let mut it = s.split('|').skip(4);
    (0..n)
        .map(|_| {
            it.next()
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|v| v.is_finite())
        })
        .collect()
}

/// Redis script applying a batch of events to their sessions in one round trip.
///
/// `KEYS[i]`: the session hash of event i. `ARGV`: `gap_ms`, `ttl_ms`, `ring`, `n` (session
/// aggregates), `n` pairs of function (`sum`, `count_distinct`) and feature name, then per event
/// `event_id`, `ts_ms` and its `n` values (`""` none, else `=` and the text). Returns one
/// `count|prev|first|last` string per event, followed by `|value` per aggregate (`""` for none).
/// Aggregates live in the hash as `a:{name}` (the sum, `%.17g`, or the distinct count) and
/// `d:{len(name)}:{name}:{value}` (each distinct value), and are emptied when the session restarts. The hash holds
/// `count`, `first`, `last`, `seq` (events ever applied), `e:{event_id}` (result of that event)
/// and `s:{n}` (ring slot → event id, so results older than the latest `ring` events are dropped;
/// they survive session restarts, so a redelivery across a restart is still recognised). The hash expires `ttl_ms` after its last update.
///
/// Times cross the Lua boundary as the decimal strings they came in as: Lua numbers are doubles
/// and `..` formats them with 14 significant digits (`2.534022144e+14`), so the script compares
/// numbers but stores and returns the original strings. A stored time or count that is not an
/// integer string (written by an older script) starts the session afresh instead of being echoed.
pub const SESSION_SCRIPT: &str = r#"
local gap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local ring = tonumber(ARGV[3])
local naggs = tonumber(ARGV[4]) or 0
local aggs, distinct = {}, false
for j = 1, naggs do
  aggs[j] = { ARGV[3 + 2 * j], ARGV[4 + 2 * j] }
  if aggs[j][1] == 'count_distinct' then distinct = true end
end
local base, stride = 4 + 2 * naggs, 2 + naggs
local function int(s)
  if s and string.match(s, '^%-?%d+$') and #s <= 17 then return s end
  return nil
end
local out = {}
for i, key in ipairs(KEYS) do
  local at = base + (i - 1) * stride
  local eid = ARGV[at + 1]
  local ts_s = ARGV[at + 2]
  local ts = tonumber(ts_s)
  -- One read for the dedupe check and the state: HMGET e:{id} count first last seq a:{name}...
  local read = { 'e:' .. eid, 'count', 'first', 'last', 'seq' }
  for j = 1, naggs do read[5 + j] = 'a:' .. aggs[j][2] end
  local h = redis.call('HMGET', key, unpack(read))
  if h[1] then
    out[i] = h[1]
  else
    local count_s, first_s, last_s, seq_s = int(h[2]), int(h[3]), int(h[4]), int(h[5])
    local seq = (tonumber(seq_s) or 0) + 1
    local result
    local restarted = false
    if count_s == nil or first_s == nil or last_s == nil or ts - tonumber(last_s) > gap then
      restarted = true
      if distinct and count_s ~= nil then
        -- A session restarts: its distinct values go (rare: once per session at most).
        local fields = redis.call('HKEYS', key)
        for _, f in ipairs(fields) do
          if string.sub(f, 1, 2) == 'd:' then redis.call('HDEL', key, f) end
        end
      end
      count_s = '1'
      first_s = ts_s
      last_s = ts_s
      result = '1||' .. ts_s .. '|' .. ts_s
    else
      local prev_s = last_s
      count_s = string.format('%d', tonumber(count_s) + 1)
      if ts < tonumber(first_s) then first_s = ts_s end
      if ts > tonumber(last_s) then last_s = ts_s end
      result = count_s .. '|' .. prev_s .. '|' .. first_s .. '|' .. last_s
    end
    local writes = {}
    for j = 1, naggs do
      local fn, name = aggs[j][1], aggs[j][2]
      local cur = h[5 + j]
      if restarted then cur = nil end
      local val = ARGV[at + 2 + j]
      local v = nil
      if val and val ~= '' then v = string.sub(val, 2) end
      if fn == 'sum' then
        local x = v and tonumber(v)
        if x and x == x and x ~= math.huge and x ~= -math.huge then
          cur = string.format('%.17g', (tonumber(cur) or 0) + x)
        end
        cur = cur or ''
      else
        cur = int(cur) or '0'
        if v and redis.call('HSETNX', key, 'd:' .. #name .. ':' .. name .. ':' .. v, '1') == 1 then
          cur = string.format('%d', tonumber(cur) + 1)
        end
      end
      result = result .. '|' .. cur
      writes[#writes + 1] = 'a:' .. name
      writes[#writes + 1] = cur
    end
    -- Results are kept across session restarts, in a ring of the latest `ring` events: the slot
    -- this event takes held event `seq - ring`, whose result is dropped (only once the ring is full).
    local slot = 's:' .. string.format('%d', seq % ring)
    if seq > ring then
      local old = redis.call('HGET', key, slot)
      if old then redis.call('HDEL', key, 'e:' .. old) end
    end
    redis.call('HSET', key, 'count', count_s, 'first', first_s, 'last', last_s,
      'seq', string.format('%d', seq), 'e:' .. eid, result, slot, eid, unpack(writes))
    redis.call('PEXPIRE', key, ttl)
    out[i] = result
  end
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: i64 = 30 * 60 * 1000;

    #[test]
    fn counts_events_and_gaps_within_a_session() {
        let (s1, a) = advance(None, 1_000, GAP);
        assert_eq!((a.count, a.prev_ms), (1, None));
        let (s2, b) = advance(Some(s1), 61_000, GAP);
        assert_eq!(
            (b.count, b.prev_ms, b.first_ms, b.last_ms),
            (2, Some(1_000), 1_000, 61_000)
        );
        let (_, c) = advance(Some(s2), 61_000 + GAP + 1, GAP);
        assert_eq!(
            (c.count, c.prev_ms),
            (1, None),
            "a gap above the limit starts a new session"
        );
    }

    #[test]
    fn out_of_order_events_count_but_do_not_move_time_back() {
        let (s1, _) = advance(None, 100_000, GAP);
        let (s2, late) = advance(Some(s1), 40_000, GAP);
        assert_eq!(late.count, 2);
        assert_eq!(late.prev_ms, Some(100_000));
        assert_eq!((s2.first_ms, s2.last_ms), (40_000, 100_000));
        let (_, next) = advance(Some(s2), 110_000, GAP);
        assert_eq!(
            (next.count, next.prev_ms, next.first_ms),
            (3, Some(100_000), 40_000)
        );
    }

    #[test]
    fn extreme_stored_values_saturate_instead_of_overflowing() {
        let stored = SessionState {
            count: u64::MAX,
            first_ms: 0,
            last_ms: i64::MIN,
        };
        let (_, snap) = advance(Some(stored), 1_000, GAP);
        assert_eq!(snap.count, 1, "an infinitely old session restarts");
        let stored = SessionState {
            count: u64::MAX,
            first_ms: i64::MIN,
            last_ms: 1_000,
        };
        assert_eq!(advance(Some(stored), 2_000, GAP).1.count, u64::MAX);
    }

    #[test]
    fn snapshot_strings_round_trip() {
        assert_eq!(
            parse_snapshot("3|100|40|110"),
            Some(SessionSnapshot {
                count: 3,
                prev_ms: Some(100),
                first_ms: 40,
                last_ms: 110
            })
        );
        assert_eq!(parse_snapshot("1||5|5").map(|s| s.prev_ms), Some(None));
        assert_eq!(parse_snapshot("garbage"), None);
    }
}
