#!/usr/bin/env bash
# Runs the whole test suite against local Redis + Apache Kafka (started here if they are not running).
#
#   scripts/test.sh [TEST-BINARY ARGS...]   e.g. scripts/test.sh session   (filters by test name)
#
# With no arguments it ends with a smoke run of the benchmark harness (bench/run.py --smoke: a few
# seconds per system on a MockCluster broker; figures are printed, never asserted).
#
# Tests that stop, kill or restart a broker start their own (scripts/services.sh kafka-run on free
# ports, jars from $CLICKPIPE_TOOLS); the shared broker serves the others.
#
# CLICKPIPE_TEST_BROKERS (default 127.0.0.1:$CLICKPIPE_KAFKA_PORT, i.e. 127.0.0.1:9092) and
# CLICKPIPE_TEST_REDIS (default redis://127.0.0.1:$CLICKPIPE_REDIS_PORT/) are passed to the tests;
# values already set are kept. CLICKPIPE_SKIP_SERVICES=1 skips starting the local services (for
# tests against services you run yourself).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh deps
# The admin API tests drive headless Chromium and schemathesis; the ingest tests run osmem-server;
# the deployment tests resolve the compose file with docker-compose; the persistence tests run
# moto (S3, DynamoDB) and read Parquet back with duckdb.
scripts/services.sh install redis kafka chromium schemathesis osmem moto compose
if [[ "${CLICKPIPE_SKIP_SERVICES:-0}" != 1 ]]; then
    scripts/services.sh start
fi

export CLICKPIPE_TEST_BROKERS="${CLICKPIPE_TEST_BROKERS:-127.0.0.1:${CLICKPIPE_KAFKA_PORT:-9092}}"
export CLICKPIPE_TEST_REDIS="${CLICKPIPE_TEST_REDIS:-redis://127.0.0.1:${CLICKPIPE_REDIS_PORT:-6379}/}"
echo "==> cargo test (CLICKPIPE_TEST_BROKERS=$CLICKPIPE_TEST_BROKERS CLICKPIPE_TEST_REDIS=$CLICKPIPE_TEST_REDIS)"

cargo test --workspace -- --test-threads=2 "$@"

if [[ $# -eq 0 ]]; then
    echo "==> benchmark harness smoke (bench/run.py --smoke)"
    python3 bench/run.py --smoke
    echo "==> ingest benchmark smoke (bench/run.py --ingest --smoke)"
    python3 bench/run.py --ingest --smoke --no-build
fi
