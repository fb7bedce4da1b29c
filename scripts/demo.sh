#!/usr/bin/env bash
# Runs the whole pipeline locally, end to end, on a fresh Debian machine:
#   services (Redis, Apache Kafka) → seeded Redis → model server → clickpipe run → 10 s warm-up →
#   load generator (~30 s)
# and ends with a summary: events in, predictions out, dead letters, p50/p99 latency.
#
#   scripts/demo.sh [RATE] [SECONDS]      defaults: 200 events/s for 30 s
#
# Every CLICKPIPE__* variable reaches clickpipe, e.g. the example feature set with three windows:
#   CLICKPIPE__FEATURES__SET=config/features/example.toml scripts/demo.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RATE="${1:-200}"
SECONDS_TO_RUN="${2:-30}"
COUNT=$((RATE * SECONDS_TO_RUN))
STATE="${CLICKPIPE_STATE:-$PWD/.services}"
mkdir -p "$STATE"

scripts/services.sh deps
# Redis and Kafka install and start while clickpipe builds (a fresh broker: the summary counts only
# this run's records).
echo "==> installing and starting Redis and Kafka in the background (log: $STATE/services.log)"
scripts/services.sh start --fresh >"$STATE/services.log" 2>&1 &
services_pid=$!

# Without the AWS SDK's service clients (`aws` feature: the S3 sink, the DynamoDB fallback), which
# the demo does not use and which cost about four minutes of a release build.
echo "==> building clickpipe (release, without the aws feature)"
cargo build --release --no-default-features --bin clickpipe
BIN="$PWD/target/release/clickpipe"

if ! wait "$services_pid"; then
    tail -n 30 "$STATE/services.log" >&2
    echo "demo: starting the services failed (log: $STATE/services.log)" >&2
    exit 1
fi
cat "$STATE/services.log"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "==> seeding Redis with config/zips.csv"
"$BIN" seed-redis --csv config/zips.csv

echo "==> starting the model server (log: $STATE/model-server.log)"
"$BIN" model-server >"$STATE/model-server.log" 2>&1 &
pids+=($!)

echo "==> starting clickpipe run (log: $STATE/clickpipe.log, admin: http://127.0.0.1:9090)"
"$BIN" run >"$STATE/clickpipe.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
    if curl -fsS http://127.0.0.1:9090/health/live >/dev/null 2>&1 && curl -fsS http://127.0.0.1:8080/ping >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done

# Wait for the group's first assignment too: events sent before it wait for it (seconds), and the
# summary would count that wait as latency.
for _ in $(seq 1 300); do
    curl -fsS http://127.0.0.1:9090/status 2>/dev/null | grep -q '"partition":' && break
    sleep 0.1
done

# A broker that just started runs interpreted code for its first tens of thousands of requests
# (measured: seconds on the first events' latency); warm it and clickpipe up first, not counted.
echo "==> warm-up: 10,000 events at 1,000/s (not in the summary)"
"$BIN" loadgen --rate 1000 --count 10000 --no-summary >/dev/null 2>&1

echo "==> producing $COUNT events at $RATE/s"
"$BIN" loadgen --rate "$RATE" --count "$COUNT"
echo
echo "==> clickpipe status"
curl -fsS http://127.0.0.1:9090/status || true
echo
