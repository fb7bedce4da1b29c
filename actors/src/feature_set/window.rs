//! The window rule, in Rust: what one entity's window state holds and how an aggregate is read
//! from it. The Redis script that keeps the state applies the same rule (the two are checked
//! against each other), so this is the reference.
//!
//! - The state of an entity is its events' (event id, event time, value), at most one per event
//!   id: a redelivered event changes nothing.
//! - The value for an event at time t covers the entries with event time in (t − window, t], the
//!   event itself included, whatever order they arrived in.
//! - Entries older than the newest event time minus twice the window are dropped: an event late
//!   by up to one window still finds everything it covers, and the state of an entity never
//!   outgrows two windows of its events.
//! - Nor more than `max_events` entries (`features.max_window_events`): beyond it the oldest, by
//!   (event time, event id), are dropped. Aggregates stay exact for entities under the cap; a hot
//!   entity over it gets them over its latest `max_events` events, at a bounded cost per event.

use std::collections::HashSet;

use super::spec::WindowFunction;

/// One event in an entity's window state.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The event's id (the idempotency key).
    pub event_id: String,
    /// Its event time, epoch milliseconds.
    pub ts_ms: i64,
    /// Its `column` value as text (None: absent, or no column).
    pub value: Option<String>,
}

/// Adds `entry` unless its event id is there already; returns whether it was added.
pub fn insert(entries: &mut Vec<Entry>, entry: Entry) -> bool {
    if entries.iter().any(|e| e.event_id == entry.event_id) {
        return false;
    }
    entries.push(entry);
    true
}

/// `features.max_window_events` unless configured.
pub const DEFAULT_MAX_EVENTS: usize = 10_000;

/// Drops the entries no event within one window of the newest can cover, then the oldest beyond
/// `max_events`.
pub fn prune(entries: &mut Vec<Entry>, window_ms: i64, max_events: usize) {
    let Some(newest) = entries.iter().map(|e| e.ts_ms).max() else {
        return;
    };
    let keep_after = newest.saturating_sub(window_ms.saturating_mul(2));
    entries.retain(|e| e.ts_ms > keep_after);
    if entries.len() > max_events {
        entries.sort_by(|a, b| {
            (a.ts_ms, a.event_id.as_bytes()).cmp(&(b.ts_ms, b.event_id.as_bytes()))
        });
        entries.drain(..entries.len() - max_events);
    }
}

/// The aggregate for an event at `t_ms` over `window_ms`; None when a function of values finds
/// none (every function but `count` and `count_distinct`).
pub fn aggregate(
    entries: &[Entry],
    t_ms: i64,
    window_ms: i64,
    function: WindowFunction,
) -> Option<f64> {
    let from = t_ms.saturating_sub(window_ms);
    // In (event time, event id) order, as the Redis script reads them: float sums come out the
    // same to the last bit.
    let mut in_order: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.ts_ms > from && e.ts_ms <= t_ms)
        .collect();
    in_order
        .sort_by(|a, b| (a.ts_ms, a.event_id.as_bytes()).cmp(&(b.ts_ms, b.event_id.as_bytes())));
    let covered = in_order.iter().copied();
    let numbers = || {
        covered
            .clone()
            .filter_map(|e| e.value.as_deref()?.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    match function {
        WindowFunction::Count => Some(covered.count() as f64),
        WindowFunction::CountDistinct => Some(
            covered
                .filter_map(|e| e.value.as_deref())
                .collect::<HashSet<_>>()
                .len() as f64,
        ),
        WindowFunction::Sum => {
            let mut n = numbers().peekable();
            n.peek()?;
            Some(n.sum())
        }
        WindowFunction::Avg => {
            let (sum, count) = numbers().fold((0.0, 0u64), |(s, c), v| (s + v, c + 1));
            (count > 0).then(|| sum / count as f64)
        }
        WindowFunction::Min => numbers().reduce(f64::min),
        WindowFunction::Max => numbers().reduce(f64::max),
        // The latest event by event time with a value; ties by event id, so the order of
        // arrival never matters.
        WindowFunction::Last => covered
            .filter_map(|e| {
                let v = e.value.as_deref()?.trim().parse::<f64>().ok()?;
                v.is_finite().then_some((e.ts_ms, e.event_id.as_str(), v))
            })
            .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
            .map(|(_, _, v)| v),
    }
}

/// One event's part in one window feature's state, as the script takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowItem {
    /// The state's key (a sorted set of event ids by event time); its values live in the hash
    /// `{key}:v`. Both share a hash tag, so they sit in one slot of a Redis cluster.
    pub key: String,
    /// The event, as it enters the state.
    pub entry: Entry,
    /// Whether the event enters the state (it matches the feature's `where`); its aggregate is
    /// read either way.
    pub add: bool,
    /// The window, milliseconds.
    pub window_ms: i64,
    /// The most entries the state keeps.
    pub max_events: usize,
    /// The aggregation.
    pub function: WindowFunction,
}

/// The name of `function` in the script.
fn function_name(f: WindowFunction) -> &'static str {
    match f {
        WindowFunction::Count => "count",
        WindowFunction::Sum => "sum",
        WindowFunction::Avg => "avg",
        WindowFunction::Min => "min",
        WindowFunction::Max => "max",
        WindowFunction::CountDistinct => "count_distinct",
        WindowFunction::Last => "last",
    }
}

/// The script's `KEYS` and `ARGV` for `items`.
pub fn script_args(items: &[WindowItem]) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::with_capacity(items.len() * 2);
    let mut argv = Vec::with_capacity(items.len() * 6);
    for it in items {
        keys.push(it.key.clone());
        keys.push(format!("{}:v", it.key));
        argv.push(it.entry.event_id.clone());
        argv.push(it.entry.ts_ms.to_string());
        argv.push(match &it.entry.value {
            None => String::new(),
            Some(v) => format!("={v}"),
        });
        argv.push(it.window_ms.to_string());
        argv.push(function_name(it.function).to_string());
        argv.push(if it.add { "1" } else { "0" }.to_string());
        argv.push(it.max_events.to_string());
    }
    (keys, argv)
}

/// One reply of the script: `""` for no value, else the aggregate as `%.17g`.
pub fn parse_reply(text: &str) -> Option<f64> {
    match text {
        "" => None,
        t => t.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// Redis script applying the [`WindowItem`]s of a batch, in order, and reading each one's
/// aggregate: the Rust rule above, kept in Redis. `KEYS`: per item the sorted set and its value
/// hash; `ARGV`: per item event id, event time (ms), value (`""` none, else `=` and the text),
/// window (ms), function, add (`1`/`0`), the most entries kept. Returns one string per item. Times are integer strings
/// and are formatted back with `%d` (Lua's `..` would round them to 14 digits).
pub const WINDOW_SCRIPT: &str = r#"
local out = {}
local function hmget(h, ids)
  local vals = {}
  for s = 1, #ids, 500 do
    local chunk = {}
    for j = s, math.min(s + 499, #ids) do chunk[#chunk + 1] = ids[j] end
    local got = redis.call('HMGET', h, unpack(chunk))
    for j = 1, #got do vals[#vals + 1] = got[j] end
  end
  return vals
end
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local b = (i - 1) * 7
  local eid, ts_s, val, w_s, fn, add, cap =
    ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], tonumber(ARGV[b + 7])
  local ts, w = tonumber(ts_s), tonumber(w_s)
  if add == '1' and not redis.call('ZSCORE', z, eid) then
    redis.call('ZADD', z, ts_s, eid)
    if val ~= '' then redis.call('HSET', h, eid, string.sub(val, 2)) end
  end
  local newest = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if newest[2] then
    local cut = string.format('%d', tonumber(newest[2]) - 2 * w)
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', cut)
    for j = 1, #old do redis.call('HDEL', h, old[j]) end
    if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', cut) end
    local card = redis.call('ZCARD', z)
    if card > cap then
      -- Over the cap: the oldest go (a sorted set orders equal times by member, as Rust does).
      local over = redis.call('ZRANGE', z, 0, card - cap - 1)
      for s = 1, #over, 500 do
        redis.call('HDEL', h, unpack(over, s, math.min(s + 499, #over)))
      end
      redis.call('ZREMRANGEBYRANK', z, 0, card - cap - 1)
    end
    redis.call('PEXPIRE', z, 2 * w)
    if redis.call('EXISTS', h) == 1 then redis.call('PEXPIRE', h, 2 * w) end
  end
  local from = '(' .. string.format('%d', ts - w)
  local result = ''
  local ids = {}
  if fn ~= 'count' then ids = redis.call('ZRANGEBYSCORE', z, from, ts_s) end
  if fn == 'count' then
    -- Counted without reading a value.
    result = string.format('%d', redis.call('ZCOUNT', z, from, ts_s))
  elseif #ids > 0 then
    local vals = hmget(h, ids)
    if fn == 'count_distinct' then
      local seen, n = {}, 0
      for j = 1, #ids do
        local v = vals[j]
        if v and not seen[v] then seen[v] = true; n = n + 1 end
      end
      result = string.format('%d', n)
    else
      local sum, n, lo, hi, last = 0, 0, nil, nil, nil
      for j = 1, #ids do
        local x = vals[j] and tonumber(vals[j])
        if x and x == x and x ~= math.huge and x ~= -math.huge then
          sum = sum + x; n = n + 1; last = x
          if lo == nil or x < lo then lo = x end
          if hi == nil or x > hi then hi = x end
        end
      end
      if n > 0 then
        local r
        if fn == 'sum' then r = sum elseif fn == 'avg' then r = sum / n
        elseif fn == 'min' then r = lo elseif fn == 'max' then r = hi else r = last end
        result = string.format('%.17g', r)
      end
    end
  elseif fn == 'count_distinct' then
    result = '0'
  end
  out[i] = result
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn entry(id: &str, ts_ms: i64, value: Option<&str>) -> Entry {
        Entry {
            event_id: id.into(),
            ts_ms,
            value: value.map(str::to_string),
        }
    }

    /// Feeds `events` in the given order; returns each one's aggregate as it arrives.
    fn feed(events: &[Entry], window_ms: i64, f: WindowFunction) -> Vec<Option<f64>> {
        let mut state = Vec::new();
        events
            .iter()
            .map(|e| {
                insert(&mut state, e.clone());
                prune(&mut state, window_ms, DEFAULT_MAX_EVENTS);
                aggregate(&state, e.ts_ms, window_ms, f)
            })
            .collect()
    }

    #[test]
    fn the_window_covers_t_minus_window_exclusive_to_t_inclusive() {
        let events = [
            entry("a", 0, Some("1")),
            entry("b", 5 * MIN, Some("2")),
            entry("c", 10 * MIN, Some("4")),
            entry("d", 10 * MIN + 1, Some("8")),
        ];
        let got = feed(&events, 10 * MIN, WindowFunction::Sum);
        // At 10 min, the event at 0 is exactly one window old: out. At 10 min + 1 ms too.
        assert_eq!(got, vec![Some(1.0), Some(3.0), Some(6.0), Some(14.0)]);
    }

    #[test]
    fn pruning_never_drops_what_an_event_late_by_up_to_a_window_covers() {
        let in_order: Vec<Entry> = (0..60)
            .map(|i| entry(&format!("e{i}"), i * 37_000, Some(&(i % 7).to_string())))
            .collect();
        // Each pair swapped, and every fifth event held back by 12 places (7.4 min, less than
        // the 10 min window).
        let mut shuffled = in_order.clone();
        shuffled.chunks_mut(2).for_each(|c| c.reverse());
        for i in (0..shuffled.len()).step_by(5) {
            let late = shuffled.remove(i);
            shuffled.insert((i + 12).min(shuffled.len()), late);
        }
        for f in WindowFunction::ALL {
            let (mut pruned, mut everything) = (Vec::new(), Vec::new());
            for e in &shuffled {
                insert(&mut pruned, e.clone());
                prune(&mut pruned, 10 * MIN, DEFAULT_MAX_EVENTS);
                insert(&mut everything, e.clone());
                assert_eq!(
                    aggregate(&pruned, e.ts_ms, 10 * MIN, f),
                    aggregate(&everything, e.ts_ms, 10 * MIN, f),
                    "{f:?} at {}",
                    e.event_id
                );
            }
            // Arrival order does not change the value of the last event.
            let last = in_order.last().expect("events");
            assert_eq!(
                aggregate(&everything, last.ts_ms, 10 * MIN, f),
                feed(&in_order, 10 * MIN, f).pop().flatten(),
                "{f:?}"
            );
        }
    }

    #[test]
    fn a_redelivered_event_changes_no_aggregate() {
        let mut state = Vec::new();
        assert!(insert(&mut state, entry("a", 0, Some("5"))));
        assert!(insert(&mut state, entry("b", MIN, Some("7"))));
        let before = aggregate(&state, MIN, 10 * MIN, WindowFunction::Sum);
        assert!(!insert(&mut state, entry("a", 0, Some("5"))));
        assert!(!insert(&mut state, entry("b", MIN, Some("999"))));
        assert_eq!(
            aggregate(&state, MIN, 10 * MIN, WindowFunction::Sum),
            before
        );
        assert_eq!(before, Some(12.0));
    }

    #[test]
    fn state_never_outgrows_two_windows_of_events() {
        let mut state = Vec::new();
        for i in 0..10_000 {
            insert(&mut state, entry(&format!("e{i}"), i * 1_000, None));
            prune(&mut state, MIN, DEFAULT_MAX_EVENTS);
        }
        // One event a second, a one-minute window: at most 120 kept.
        assert!(state.len() <= 120, "{}", state.len());
        assert_eq!(
            aggregate(&state, 9_999_000, MIN, WindowFunction::Count),
            Some(60.0)
        );
    }

    #[test]
    fn functions_of_values_ignore_absent_and_unparsable_values() {
        let state = vec![
            entry("a", 1, Some("2")),
            entry("b", 2, None),
            entry("c", 3, Some("x")),
            entry("d", 4, Some("inf")),
            entry("e", 5, Some("6")),
        ];
        let at = |f| aggregate(&state, 5, MIN, f);
        assert_eq!(at(WindowFunction::Count), Some(5.0));
        assert_eq!(at(WindowFunction::Sum), Some(8.0));
        assert_eq!(at(WindowFunction::Avg), Some(4.0));
        assert_eq!(at(WindowFunction::Min), Some(2.0));
        assert_eq!(at(WindowFunction::Max), Some(6.0));
        assert_eq!(at(WindowFunction::Last), Some(6.0));
        assert_eq!(at(WindowFunction::CountDistinct), Some(4.0), "a, c, d, e");
        let empty: Vec<Entry> = vec![entry("b", 2, None)];
        assert_eq!(aggregate(&empty, 5, MIN, WindowFunction::Avg), None);
        assert_eq!(aggregate(&empty, 5, MIN, WindowFunction::Sum), None);
        assert_eq!(aggregate(&empty, 5, MIN, WindowFunction::Count), Some(1.0));
    }
}
