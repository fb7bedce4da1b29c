"""clickpipe's job written the way Quix Streams documents it: a benchmark peer.

Kafka `INPUT_TOPIC` (JSON clickstream events) -> features (session state in Quix's RocksDB state
store, ZIP data from Redis) -> one POST {MODEL_URL}/invocations per event -> `OUTPUT_TOPIC`, same
key as the input, same value shape and lineage headers as clickpipe's output.

Run: VENV/bin/python bench/quix/app.py, configured by environment variables (see `env` below).
Prints "quix: ready (...)" to stdout once the consumer group has assigned it partitions and their
start offsets are resolved; stops cleanly on SIGTERM / SIGINT (Quix commits its checkpoint, leaves
the group, and the script prints "quix: stopped").
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# Importing quixstreams pulls in authlib's httpx integration, which prints an
# AuthlibDeprecationWarning on every start (authlib forces its own "always" filter, so
# filterwarnings() cannot hide it); record and drop the warnings of these imports only.
with warnings.catch_warnings(record=True):
    from quixstreams import Application, State, message_context
    from quixstreams.models.serializers.exceptions import SerializationError
    from quixstreams.models.topics import TopicConfig, TopicManager
    from quixstreams.models.topics.admin import TopicAdmin
    from quixstreams.models.topics.exceptions import TopicNotFoundError
    from quixstreams.models.topics.topic import Topic

log = logging.getLogger("quix-bench")


def env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


BROKERS = env("BROKERS", "127.0.0.1:9092")
INPUT_TOPIC = env("INPUT_TOPIC", "clicks")
OUTPUT_TOPIC = env("OUTPUT_TOPIC", "predictions")
GROUP_ID = env("GROUP_ID", "quix-bench")
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
MODEL_URL = env("MODEL_URL", "http://127.0.0.1:8080").rstrip("/")
STATE_DIR = env("STATE_DIR", "/tmp/quix-bench-state")
SESSION_GAP_MS = int(float(env("SESSION_GAP_S", "1800")) * 1000)
AUTO_OFFSET_RESET = env("AUTO_OFFSET_RESET", "latest")
# With "latest": resolve new partitions' start offsets before printing "quix: ready" (see
# BenchApplication). 0 leaves it to librdkafka (records produced right after "ready" may be skipped).
PIN_LATEST = env("PIN_LATEST", "1") != "0"
DEFAULT_ZIP_MEDIAN_INCOME = float(env("DEFAULT_ZIP_MEDIAN_INCOME", "65000.0"))
ZIP_PREFIX = env("ZIP_PREFIX", "zip:")
MODEL_TIMEOUT_S = float(env("MODEL_TIMEOUT_S", "2.0"))
# Seconds Quix waits for each metadata / admin request (its default is 30).
REQUEST_TIMEOUT_S = float(env("QUIX_REQUEST_TIMEOUT_S", "10"))
LOGLEVEL = env("LOGLEVEL", "INFO")
# Same fetch wait as every system in a benchmark run (the harness passes its --fetch-wait-ms).
FETCH_WAIT_MAX_MS = int(env("FETCH_WAIT_MAX_MS", "5"))

# clickpipe's feature source, the one definition of the one-hot event types and devices.
FEATURES_RS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "actors", "src",
                           "features.rs")


def rust_str_list(source: str, name: str) -> tuple[str, ...]:
    """The strings of `pub const NAME: [&str; N] = [...];` in a Rust source file."""
    m = re.search(r"pub const " + name + r": \[&str; \d+\] = \[(.*?)\];", source, re.S)
    if m is None:
        raise SystemExit(f"quix: no `pub const {name}: [&str; N]` in {FEATURES_RS}")
    return tuple(re.findall(r'"([^"]*)"', m.group(1)))


with open(FEATURES_RS, encoding="utf-8") as _f:
    _features_rs = _f.read()
EVENT_TYPES = rust_str_list(_features_rs, "EVENT_TYPES")
DEVICES = rust_str_list(_features_rs, "DEVICES")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)


# --------------------------------------------------------------------------------- topic lookup


class MetadataOnlyTopicManager(TopicManager):
    """A TopicManager that learns topics from cluster metadata only.

    Quix's stock TopicManager reads every topic's configuration with the admin API
    (DescribeConfigs) to copy `retention.ms` / `retention.bytes` / `cleanup.policy`. Neither test
    broker answers that the way Quix expects:

    - librdkafka's MockCluster does not implement DescribeConfigs: the request times out
      ("waiting for controller") after `request_timeout`, and `app.topic()` raises.
    - tansu 0.6 answers, but without `retention.ms` unless the topic was created with that config,
      and a stateful `apply` then fails with `KeyError: 'retention.ms'` (derive_topic_config).

    This app never creates topics (auto_create_topics=False: the harness pre-creates them) and
    runs without changelog topics, so the configs are used for nothing but that derivation. Here
    partitions and replicas come from the metadata (Metadata request, which both brokers serve) and
    retention is Kafka's default unless the environment overrides it.
    """

    assumed_extra_config = {
        "retention.ms": env("ASSUMED_RETENTION_MS", "604800000"),
        "retention.bytes": "-1",
    }

    def _fetch_topic(self, topic: Topic) -> Topic:
        metadata = self._admin.list_topics(timeout=self._timeout).get(topic.name)
        if metadata is None or not metadata.partitions:
            raise TopicNotFoundError(f'Topic "{topic.name}" not found on the broker')
        if metadata.error is not None:
            raise TopicNotFoundError(f'Topic "{topic.name}": {metadata.error}')
        fetched = Topic(name=topic.name)
        fetched.broker_config = TopicConfig(
            num_partitions=len(metadata.partitions),
            replication_factor=len(next(iter(metadata.partitions.values())).replicas) or 1,
            extra_config=dict(self.assumed_extra_config),
        )
        return fetched


class BenchApplication(Application):
    """Application that reports when it is really consuming.

    Quix has no public hook for partition assignment; `_on_assign` is its rebalance callback.
    With auto.offset.reset=latest a newly assigned partition without a committed offset gets its
    start position from a ListOffsets request sent *after* assignment, so records produced in that
    window (measured on tansu: the first 1-2 records of a partition) are skipped. To make
    "quix: ready" mean "every record produced from now on will be processed", such partitions are
    handed to Quix's own assign() with their current high watermark as an explicit start offset
    (what "latest" resolves to anyway). Partitions with a committed offset are left alone.
    """

    _ready_printed = False

    def _pin_latest(self, topic_partitions) -> None:
        committed = self._consumer.committed(topic_partitions, timeout=REQUEST_TIMEOUT_S)
        has_commit = {(c.topic, c.partition) for c in committed if c.offset >= 0}
        for tp in topic_partitions:
            if (tp.topic, tp.partition) not in has_commit and tp.offset < 0:
                _, high = self._consumer.get_watermark_offsets(tp, timeout=REQUEST_TIMEOUT_S)
                tp.offset = high

    def _on_assign(self, consumer, topic_partitions):  # noqa: D401 - Quix's private callback
        if topic_partitions and AUTO_OFFSET_RESET == "latest" and PIN_LATEST:
            self._pin_latest(topic_partitions)
        super()._on_assign(consumer, topic_partitions)
        if topic_partitions and not self._ready_printed:
            self._ready_printed = True
            parts = ",".join(f"{tp.topic}[{tp.partition}]" for tp in topic_partitions)
            print(f"quix: ready ({parts})", flush=True)


# ------------------------------------------------------------------------------------- decoding

RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


class InvalidEvent(ValueError):
    pass


def parse_timestamp(field: str, value: Any) -> datetime:
    if isinstance(value, str):
        m = RFC3339.match(value)
        if not m:
            raise InvalidEvent(f"field `{field}` is not an RFC 3339 time ({value!r})")
        date, clock, frac, offset = m.groups()
        frac = (frac or "")[:6].ljust(6, "0")
        offset = "+00:00" if offset in ("Z", "z") else offset
        try:
            return datetime.fromisoformat(f"{date}T{clock}.{frac}{offset}").astimezone(
                timezone.utc
            )
        except ValueError as e:
            raise InvalidEvent(f"field `{field}` is not an RFC 3339 time ({value!r}): {e}")
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return EPOCH + value * ONE_MS
        except OverflowError:
            raise InvalidEvent(f"field `{field}` is out of range: {value}")
    raise InvalidEvent(f"field `{field}` must be an RFC 3339 string or epoch milliseconds")


def required_string(obj: dict, field: str) -> str:
    v = obj.get(field)
    if v is None:
        raise InvalidEvent(f"required field `{field}` is missing")
    if not isinstance(v, str):
        raise InvalidEvent(f"field `{field}` must be a string")
    if not v:
        raise InvalidEvent(f"required field `{field}` is empty")
    return v


def optional_string(obj: dict, field: str) -> Optional[str]:
    v = obj.get(field)
    if v is None or isinstance(v, str):
        return v
    raise InvalidEvent(f"field `{field}` must be a string")


def decode(value: Any) -> Optional[dict]:
    """Validates one input value like clickpipe's decoder; None (logged) when it is invalid."""
    try:
        if not isinstance(value, dict):
            kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
            raise InvalidEvent(
                f"payload is a JSON {kind.get(type(value), 'null')}, expected an object"
            )
        raw_ts = value.get("timestamp")
        field = "timestamp"
        if raw_ts is None:
            raw_ts, field = value.get("@timestamp"), "@timestamp"
        if raw_ts is None:
            raise InvalidEvent("required field `timestamp` (or `@timestamp`) is missing")
        ts = parse_timestamp(field, raw_ts)
        zip_code = optional_string(value, "zip")
        if zip_code is not None and not (len(zip_code) == 5 and zip_code.isascii() and zip_code.isdigit()):
            raise InvalidEvent(f"field `zip` must be a 5-digit string, got {zip_code!r}")
        price = value.get("price")
        if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float))):
            raise InvalidEvent("field `price` must be a number")
        return {
            "event_id": required_string(value, "event_id"),
            "user_id": required_string(value, "user_id"),
            "session_id": required_string(value, "session_id"),
            "event_type": required_string(value, "event_type"),
            "device": optional_string(value, "device"),
            "zip": zip_code,
            "ts": ts,
            "ts_ms": (ts - EPOCH) // ONE_MS,
        }
    except InvalidEvent as e:
        ctx = message_context()
        log.warning("skipping invalid event %s[%s]@%s: %s", ctx.topic, ctx.partition, ctx.offset, e)
        return None


# ------------------------------------------------------------------------------ session features


def advance_session(event: dict, state: State) -> dict:
    """clickpipe's session rule on Quix's state store (state is scoped to the message key; the
    input is keyed by session id, the state key adds the session id so other keyings work too).

    A session restarts when an event comes more than SESSION_GAP_S after the latest event seen;
    out-of-order events count, keep the latest time, and get a gap of 0.
    """
    ts = event["ts_ms"]
    skey = "s:" + event["session_id"]
    s = state.get(skey)
    if s is not None and ts - s[2] <= SESSION_GAP_MS:
        count, first, last = s[0] + 1, min(s[1], ts), max(s[2], ts)
        prev = s[2]
    else:
        count, first, last, prev = 1, ts, ts, None
    state.set(skey, [count, first, last])
    event["session_event_count"] = count
    event["seconds_since_prev_event"] = None if prev is None else max(ts - prev, 0) / 1000.0
    event["session_duration_s"] = max(last - first, 0) / 1000.0
    return event


# ---------------------------------------------------------------------- Redis + model (per event)

# Module-level clients, created once and reused for every event (keep-alive connections).
REDIS = redis.Redis.from_url(REDIS_URL, socket_timeout=1.0, socket_connect_timeout=1.0)
HTTP = requests.Session()
HTTP.mount(
    "http://",
    HTTPAdapter(
        pool_connections=1,
        pool_maxsize=4,
        max_retries=Retry(
            total=3,
            backoff_factor=0.05,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # POST /invocations is idempotent
            raise_on_status=True,
        ),
    ),
)
INVOCATIONS = MODEL_URL + "/invocations"
_zones: dict[str, Optional[ZoneInfo]] = {}


def zone(name: Optional[bytes]) -> Optional[ZoneInfo]:
    if not name:
        return None
    key = name.decode("utf-8", "replace").strip()
    if key not in _zones:
        try:
            _zones[key] = ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError):
            _zones[key] = None
    return _zones[key]


def income(raw: Optional[bytes]) -> Optional[float]:
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        return None
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def features_of(event: dict) -> dict:
    """One Redis round trip (HMGET zip:{zip}) and the full feature vector."""
    median_income, tz = None, None
    if event["zip"] is not None:
        raw_income, raw_tz = REDIS.hmget(ZIP_PREFIX + event["zip"], "median_income", "timezone")
        median_income, tz = income(raw_income), zone(raw_tz)
    local = event["ts"].astimezone(tz) if tz is not None else event["ts"]
    weekday = local.weekday()
    et, dev = event["event_type"], event["device"] or ""
    f = {
        "hour_of_day": local.hour,
        "day_of_week": weekday,
        "is_weekend": weekday >= 5,
        "local_time_known": tz is not None,
        "zip_median_income": median_income if median_income is not None else DEFAULT_ZIP_MEDIAN_INCOME,
        "zip_known": median_income is not None,
        "session_event_count": event["session_event_count"],
        "seconds_since_prev_event": event["seconds_since_prev_event"],
        "session_duration_s": event["session_duration_s"],
    }
    for t in EVENT_TYPES:
        f["event_type_" + t] = int(et == t)
    f["event_type_other"] = int(et not in EVENT_TYPES)
    for d in DEVICES:
        f["device_" + d] = int(dev == d)
    f["device_other"] = int(dev not in DEVICES)
    return f


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def predict(event: dict) -> dict:
    """Features, one model call for this event, and the output value."""
    features = features_of(event)
    resp = HTTP.post(INVOCATIONS, json={"instances": [features]}, timeout=MODEL_TIMEOUT_S)
    resp.raise_for_status()
    body = resp.json()
    score = body["predictions"][0]["score"]
    return {
        "event_id": event["event_id"],
        "user_id": event["user_id"],
        "session_id": event["session_id"],
        "event_time": rfc3339(event["ts"]),
        "features": features,
        "prediction": {"score": score, "model_version": body["model_version"]},
        "processed_at": rfc3339(datetime.now(timezone.utc)),
    }


def lineage_headers(value, key, timestamp, headers):
    """clickpipe's output headers: source topic/partition/offset/timestamp (latency is measured
    from `clickpipe.source.timestamp`)."""
    ctx = message_context()
    return [
        ("clickpipe.source.topic", ctx.topic),
        ("clickpipe.source.partition", str(ctx.partition)),
        ("clickpipe.source.offset", str(ctx.offset)),
        ("clickpipe.source.timestamp", str(timestamp)),
    ]


# ---------------------------------------------------------------------------------- application


def on_consumer_error(exc, message, logger) -> bool:
    """Skip records whose value is not JSON (Quix's deserializer fails before the dataframe);
    any other consumer error stops the app, as Quix does by default."""
    if isinstance(exc, SerializationError):
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}" if message else "?"
        logger.warning("skipping undecodable record %s: %s", where, exc)
        return True
    logger.exception("consumer error")
    return False


def build_app() -> Application:
    app = BenchApplication(
        broker_address=BROKERS,
        consumer_group=GROUP_ID,
        auto_offset_reset=AUTO_OFFSET_RESET,
        state_dir=STATE_DIR,
        # No changelog topics (state is local RocksDB only) and no topic creation: both need
        # admin requests the test brokers do not serve (see MetadataOnlyTopicManager).
        use_changelog_topics=False,
        auto_create_topics=False,
        consumer_extra_config={"fetch.wait.max.ms": FETCH_WAIT_MAX_MS},
        producer_extra_config={"linger.ms": 1},
        on_consumer_error=on_consumer_error,
        request_timeout=REQUEST_TIMEOUT_S,
        loglevel=LOGLEVEL,
        topic_manager=MetadataOnlyTopicManager(
            topic_admin=TopicAdmin(broker_address=BROKERS),
            consumer_group=GROUP_ID,
            timeout=REQUEST_TIMEOUT_S,
            auto_create_topics=False,
        ),
    )
    clicks = app.topic(INPUT_TOPIC, value_deserializer="json", key_deserializer="bytes")
    predictions = app.topic(OUTPUT_TOPIC, value_serializer="json", key_serializer="bytes")

    sdf = app.dataframe(clicks)
    sdf = sdf.apply(decode)
    sdf = sdf.filter(lambda event: event is not None)
    sdf = sdf.apply(advance_session, stateful=True)
    sdf = sdf.apply(predict)
    sdf = sdf.set_headers(lineage_headers)
    sdf.to_topic(predictions)
    return app


def main() -> int:
    logging.basicConfig(
        level=LOGLEVEL, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    REDIS.ping()  # fail fast if Redis is not there
    app = build_app()
    log.info(
        "consuming %s from %s as group %s -> %s; redis %s; model %s",
        INPUT_TOPIC, BROKERS, GROUP_ID, OUTPUT_TOPIC, REDIS_URL, MODEL_URL,
    )
    app.run()
    print("quix: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
