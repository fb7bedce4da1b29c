"""The command line (`main`, called by bench/run.py) and the `--ingest` run."""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

from .common import ALL_SYSTEMS, DEFAULT_SYSTEMS, ROOT, SERVICES, log
from .recovery import RECOVERY_MODES, recovery_report, run_recovery
from .reporting import commit, machine, publish, report
from .services import Env
from .systems import (INGEST_MAX_COUNT, ensure_quix_venv, ingest_measure, ingest_table, measure,
                      overload)


def main(doc):
    """The harness's command line; `doc` (bench/run.py's docstring) is its --help text."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default="both", choices=["kafka", "mock", "both"],
                    help="Apache Kafka (scripts/services.sh kafka-run), librdkafka's MockCluster, "
                         "or both (default)")
    ap.add_argument("--rates", default="500,2000,5000",
                    help="comma-separated events/s, on each broker")
    ap.add_argument("--duration", type=int, default=30, help="seconds per fixed rate")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                    help=f"comma-separated, from {', '.join(ALL_SYSTEMS)}")
    ap.add_argument("--ingest", action="store_true",
                    help="`clickpipe ingest`: osmem-server → MockCluster lag at --rates documents/s "
                         "for --duration s, and catch-up throughput (100,000 documents)")
    ap.add_argument("--tracing", action="store_true",
                    help="trace export cost: clickpipe with tracing off, at 1 %% and at 100 %% "
                         "sampling (to an OTLP sink in the harness), MockCluster, no overload")
    ap.add_argument("--recovery", action="store_true",
                    help="clickpipe on Apache Kafka at --recovery-rate: restart after kill -9, and "
                         "the output pauses when a second instance joins and leaves, per consumer "
                         "group mode")
    ap.add_argument("--recovery-modes", default=",".join(RECOVERY_MODES),
                    help=f"comma-separated, from {', '.join(RECOVERY_MODES)}")
    ap.add_argument("--recovery-runs", type=int, default=1, help="runs of each recovery mode")
    ap.add_argument("--recovery-rate", type=int, default=2000,
                    help="input events/s during the recovery runs")
    ap.add_argument("--no-max", action="store_true", help="skip the max-throughput mode")
    ap.add_argument("--no-overload", action="store_true", help="skip the overload run")
    # 10× what clickpipe serves with the slowed model (4 partitions × 16 events per 200 ms); 15 s
    # keeps the backlog under the MockCluster's 5 MB per-partition log, which it trims beyond.
    ap.add_argument("--overload-rate", type=int, default=3200)
    ap.add_argument("--overload-duration", type=int, default=15)
    ap.add_argument("--fetch-wait-ms", default="1")
    ap.add_argument("--clickpipe-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for the clickpipe systems (repeatable), e.g. "
                         "CLICKPIPE__KAFKA__PRODUCER__LINGER_MS=0")
    ap.add_argument("--transaction-interval-ms", default=None,
                    help="clickpipe-eos: kafka.transaction_interval_ms (default: clickpipe's)")
    ap.add_argument("--smoke", action="store_true",
                    help="CI smoke: debug build, MockCluster, 200/s for 3 s, no Quix, no overload")
    ap.add_argument("--debug", action="store_true", help="use the debug build")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    ap.add_argument("--out", help="directory for logs and results (default: a temp dir)")
    ap.add_argument("--report-only", metavar="DIR",
                    help="rebuild the report (and with --record, append it) from DIR/results.json")
    args = ap.parse_args()
    if args.smoke:
        args.broker, args.rates, args.duration, args.debug, args.no_overload = "mock", "200", 3, True, True
        if args.systems == ",".join(DEFAULT_SYSTEMS):
            args.systems = "clickpipe,passthrough,naive"
    if args.tracing:
        args.broker, args.no_overload = "mock", True
        args.systems = "clickpipe,clickpipe-traced-1,clickpipe-traced-100"
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in ALL_SYSTEMS:
            ap.error(f"unknown system {s!r}; pick from {', '.join(ALL_SYSTEMS)}")
    rates = [int(r) for r in args.rates.split(",") if r]
    brokers = ["kafka", "mock"] if args.broker == "both" else [args.broker]
    modes = [m for m in args.recovery_modes.split(",") if m]
    for m in modes:
        if m not in RECOVERY_MODES:
            ap.error(f"unknown recovery mode {m!r}; pick from {', '.join(RECOVERY_MODES)}")
    if args.ingest:
        brokers = ["mock"]
    if args.recovery:
        brokers = ["kafka"]
        if args.recovery_runs < 1:
            ap.error("--recovery-runs must be at least 1")
    if args.report_only:
        with open(os.path.join(args.report_only, "results.json")) as f:
            saved = json.load(f)
        args.commit = saved.get("commit", "unknown")
        started = datetime.datetime.fromisoformat(saved["started"])
        ended = datetime.datetime.fromisoformat(saved["ended"])
        if "recovery" in saved:
            return recovery_report(args, saved["recovery"], started, ended, args.report_only)
        if "ingest" in saved:
            ap.error("--report-only of an --ingest run is not supported")
        return report(args, saved["results"], saved["overload"], started, ended, args.report_only)

    workdir = args.out or tempfile.mkdtemp(prefix="clickpipe-bench-")
    os.makedirs(workdir, exist_ok=True)
    cfg = os.path.join(workdir, "bench.toml")
    with open(cfg, "w") as f:
        f.write(f'[kafka.consumer]\n"fetch.wait.max.ms" = "{args.fetch_wait_ms}"\n')
    args.config = cfg
    log(f"logs and results in {workdir}")

    if not args.no_build:
        # Without the AWS SDK's service clients (the `aws` feature): the pipeline does not use
        # them, and they cost minutes of a release build.
        cmd = ["cargo", "build", "--locked", "--no-default-features",
               "-p", "clickpipe", "-p", "clickpipe-bench"]
        if not args.debug:
            cmd.append("--release")
        log(" ".join(cmd))
        subprocess.run(cmd, cwd=ROOT, check=True)
    if "kafka" in brokers:
        # A no-op when the jars are there; otherwise ~30 s once, not inside the first measurement.
        subprocess.run([SERVICES, "install", "kafka"], cwd=ROOT, check=True, stdout=sys.stderr)
    if "quix" in systems and not (args.recovery or args.ingest):
        ensure_quix_venv()

    env = Env(args, workdir)
    started = datetime.datetime.now(datetime.timezone.utc)
    args.commit = commit()  # of the binaries under test (taken before anything else changes)
    if args.ingest:
        return run_ingest(args, env, rates, started, workdir)
    if args.recovery:
        return run_recovery(args, env, modes, started, workdir)
    results, overloads = [], []
    n = 0

    def save(ended=None):
        """Results so far (a run cut short still leaves them for --report-only)."""
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"commit": args.commit, "started": started.isoformat(),
                       "ended": (ended or datetime.datetime.now(datetime.timezone.utc)).isoformat(),
                       "results": results, "overload": overloads}, f, indent=1)

    try:
        env.start_redis()
        env.start_model()
        for b in brokers:
            # Max throughput on both brokers: on the MockCluster each system's own cost shows; on
            # Kafka the broker's JVM shares the 2 cores, as it would not in production.
            plan = rates + ([] if args.no_max else [0])
            for s in systems:
                for rate in plan:
                    n += 1
                    measure(env, b, s, rate, args.duration, results, f"m{n:02d}-{b}-{s}-{rate or 'max'}")
                    save()
        if not args.no_overload:
            env.start_model(delay_ms=200)
            ocfg = os.path.join(workdir, "overload.toml")
            with open(ocfg, "w") as f:
                f.write(f'[kafka.consumer]\n"fetch.wait.max.ms" = "{args.fetch_wait_ms}"\n'
                        "[model]\nmax_batch_size = 16\n")
            args.config = ocfg
            for b in brokers:
                for s in systems:
                    n += 1
                    overloads.append(overload(env, b, s, args.overload_rate,
                                              args.overload_duration, f"o{n:02d}-{b}-{s}"))
                    save()
    finally:
        env.stop()
    ended = datetime.datetime.now(datetime.timezone.utc)
    save(ended)
    return report(args, results, overloads, started, ended, workdir)


def run_ingest(args, env, rates, started, workdir):
    """The `--ingest` run: lag at each rate, then catch-up throughput; its own report."""
    ingests = []
    try:
        env.start_redis()
        for i, rate in enumerate(rates + ([] if args.no_max else [0])):
            ingest_measure(env, rate, args.duration, ingests, f"i{i + 1:02d}-{rate or 'max'}")
    finally:
        env.stop()
    ended = datetime.datetime.now(datetime.timezone.utc)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"commit": args.commit, "started": started.isoformat(),
                   "ended": ended.isoformat(), "ingest": ingests}, f, indent=1)
    out = [f"## {started:%Y-%m-%d %H:%M} UTC — `clickpipe ingest` (`bench/run.py --ingest`)", "",
           f"- Commit {args.commit}; {'debug' if args.debug else 'release'} build; run took "
           f"{(ended - started).total_seconds() / 60:.1f} min.",
           f"- Machine: {machine()}. osmem-server (in-memory OpenSearch-compatible server, fresh "
           "per measurement) → `clickpipe ingest` (defaults: poll 250 ms, page 1,000, overlap "
           "2 s, point in time) → MockCluster (`clickpipe mock-broker`, 4 partitions); checkpoint "
           "in Redis; all on loopback.",
           "- Lag of a document = when `ingest_lag` (bench/peers) read its event from Kafka − when "
           "its bulk request (`refresh=true`, every 20 ms) was acknowledged; one process, one "
           f"monotonic clock. Fixed rates run {args.duration} s; `max` preloads "
           f"{INGEST_MAX_COUNT:,} documents, then measures the catch-up (first to last event read).",
           "", ingest_table(ingests), ""]
    publish(args, "\n".join(out), workdir)
    failed = [r for r in ingests if not r["ok"]]
    return 1 if failed else 0
