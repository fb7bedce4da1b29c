"""The benchmark harness behind bench/run.py (its entry point) and bench/chaos.py.

Modules, in dependency order:

  common      paths, ports, topics, systems, `log`
  formatting  numbers as reports show them
  procs       child processes with a log file; /proc sampling (CPU, RSS)
  services    the run's environment (Redis, model server, OTLP sink), brokers (Kafka, MockCluster)
  systems     the systems under test, the load generator, one measurement, `--ingest`'s
  segments    Kafka log segments read from a stopped broker's directory
  svg         the report's plots
  reporting   tables, ratios, targets, the markdown report and where it goes
  recovery    `--recovery`: kill -9 / restart, join and leave pauses per consumer group mode
  main        the command line

What bench/chaos.py uses is re-exported here (`import harness as h`).
"""

from .common import (ADMIN_PORT, BENCH, MODEL_PORT, PARTITIONS, REDIS_PORT, ROOT, SERVICES,
                     TOPICS)
from .procs import Proc, tail
from .reporting import commit, machine
from .segments import _zigzag, topic_segments
from .services import Env, kafka_ports, kafka_version, tcp_open, wait_http

__all__ = ["ADMIN_PORT", "BENCH", "MODEL_PORT", "PARTITIONS", "REDIS_PORT", "ROOT", "SERVICES",
           "TOPICS", "Proc", "tail", "commit", "machine", "_zigzag", "topic_segments", "Env",
           "kafka_ports", "kafka_version", "tcp_open", "wait_http"]
