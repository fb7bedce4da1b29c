"""Settings the harness's modules share: paths, ports, topics, systems, and `log`."""

import os
import sys


# The repository root: this file is bench/harness/common.py.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "bench")
QUIX_VENV = os.path.join(BENCH, ".venv-quix")

REDIS_PORT = 6479
MODEL_PORT = 8480
ADMIN_PORT = 9490
# Kafka brokers of the harness listen on the first free pair from here (broker port, controller
# port), away from 9092/9093 where the test suite's shared broker runs.
KAFKA_PORT_BASE = 9592
SERVICES = os.path.join(ROOT, "scripts", "services.sh")
PARTITIONS = 4
TOPICS = ("clicks", "predictions", "clicks-dlq")
# A fresh Kafka broker is warmed up through these before a measurement (Broker.warm).
WARMUP_TOPICS = ("warmup-in", "warmup-out")
KAFKA_WARMUP_EVENTS = 60_000
KAFKA_WARMUP_RATE = 6_000
# The shared broker of a run (SharedKafka) is warmed up longer, once.
KAFKA_SHARED_WARMUP_S = 40

ALL_SYSTEMS = ("clickpipe", "passthrough", "naive", "quix", "clickpipe-traced-1",
               "clickpipe-traced-100", "clickpipe-eos", "clickpipe-features")
# The default set; the traced variants are asked for by name (`--systems` or `--tracing`).
DEFAULT_SYSTEMS = ("clickpipe", "passthrough", "naive", "quix")
# clickpipe with OTLP trace export to the harness's sink, by sampling ratio.
TRACED = {"clickpipe-traced-1": "0.01", "clickpipe-traced-100": "1.0"}
OTLP_PORT = 4398
LABELS = {
    "clickpipe-traced-1": "clickpipe, traces 1 %",
    "clickpipe-traced-100": "clickpipe, traces 100 %",
    "clickpipe": "clickpipe",
    "clickpipe-eos": "clickpipe, exactly-once",
    "clickpipe-features": "clickpipe, example feature set",
    "passthrough": "passthrough (floor)",
    "naive": "naive sequential Rust",
    "quix": "Quix Streams",
}
# Events for the max-throughput mode, by system (the sequential peers are two orders slower).
MAX_COUNT = {"clickpipe": 200_000, "passthrough": 200_000, "naive": 15_000, "quix": 15_000,
             "clickpipe-traced-1": 200_000, "clickpipe-traced-100": 200_000,
             "clickpipe-eos": 200_000, "clickpipe-features": 200_000}

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)
