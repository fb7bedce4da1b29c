#!/usr/bin/env python3
"""clickpipe benchmark harness.

Runs clickpipe and its peers (a bare consume→produce passthrough, a naive sequential Rust
consumer, a Quix Streams application) on the same broker, the same Redis, the same model server
and the same generated data, one after the other, and reports end-to-end latency (HdrHistogram
p50/p90/p99/p99.9/max), throughput, CPU and peak RSS per system and rate.

Every measurement sees only its own records: new topics on the run's one Apache Kafka broker
(started and warmed up once, see SharedKafka), or a new MockCluster process. Per measurement:

  start broker → start system → warm-up (200 events through, not counted) →
  `clickpipe loadgen` at the rate (it is also the latency consumer) while /proc is sampled →
  stop system → stop broker.

Latency of one event = when the load generator's consumer received the output record − when the
load generator handed the input record to its producer (one process, one monotonic clock).

Usage (from the repository root; see bench/README.md):

  bench/run.py                         # full run: Kafka and MockCluster, 500/2000/5000 ev/s
                                       # × 30 s, max and overload on each
  bench/run.py --broker mock --rates 2000 --duration 10 --systems clickpipe,passthrough
  bench/run.py --smoke                 # CI: a few seconds on the MockCluster, debug build, no Quix
  bench/run.py --recovery              # Kafka: kill -9 and restart, join and leave pauses,
                                       # per consumer group mode
  bench/run.py ... --record            # also append the tables to bench/RESULTS.md

Standard library only; Quix Streams runs in its own virtualenv (bench/.venv-quix), created on
first use from bench/quix/requirements.txt.
"""

# The code is in bench/harness/ (one module per part: see harness/__init__.py); this file stays
# the entry point.

import sys

from harness.main import main

if __name__ == "__main__":
    sys.exit(main(__doc__))
