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

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
               "clickpipe-traced-100")
# The default set; the traced variants are asked for by name (`--systems` or `--tracing`).
DEFAULT_SYSTEMS = ("clickpipe", "passthrough", "naive", "quix")
# clickpipe with OTLP trace export to the harness's sink, by sampling ratio.
TRACED = {"clickpipe-traced-1": "0.01", "clickpipe-traced-100": "1.0"}
OTLP_PORT = 4398
LABELS = {
    "clickpipe-traced-1": "clickpipe, traces 1 %",
    "clickpipe-traced-100": "clickpipe, traces 100 %",
    "clickpipe": "clickpipe",
    "passthrough": "passthrough (floor)",
    "naive": "naive sequential Rust",
    "quix": "Quix Streams",
}
# Events for the max-throughput mode, by system (the sequential peers are two orders slower).
MAX_COUNT = {"clickpipe": 200_000, "passthrough": 200_000, "naive": 15_000, "quix": 15_000,
             "clickpipe-traced-1": 200_000, "clickpipe-traced-100": 200_000}

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name, argv, env, logdir, cwd=ROOT):
        self.name = name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def wait_for_line(self, needle, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if needle in line:
                    return line
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: see {self.log_path}\n{tail(self.log_path)}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no `{needle}` within {timeout}s: see {self.log_path}")

    def stop(self, timeout=20):
        if self.alive():
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {timeout}s; killing it")
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()


def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return ""


class Sampler(threading.Thread):
    """Samples a process's CPU time and RSS from /proc every `period` seconds."""

    def __init__(self, pid, period=0.5):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples = []  # (monotonic, unix_ms, cpu_seconds, rss_bytes)
        self.stopped = threading.Event()

    def read(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            rss = 0
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
            return (time.monotonic(), int(time.time() * 1000), cpu, rss)
        except (OSError, IndexError, ValueError):
            return None

    def run(self):
        while not self.stopped.is_set():
            s = self.read()
            if s:
                self.samples.append(s)
            self.stopped.wait(self.period)

    def window(self, t0, t1):
        """CPU % (of one core) and peak RSS between monotonic times t0 and t1."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None, (max((s[3] for s in inside), default=None))
        cpu = (inside[-1][2] - inside[0][2]) / (inside[-1][0] - inside[0][0]) * 100
        return cpu, max(s[3] for s in inside)


# ------------------------------------------------------------------------------------------------
# Services
# ------------------------------------------------------------------------------------------------


class Env:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
        self.bin = os.path.join(target, "debug" if args.debug else "release")
        self.redis = None
        self.model = None
        self.otlp = None
        self.otlp_counts = {"requests": 0, "bytes": 0}
        # The topics of the current measurement (input, output, dead letters).
        self.topics = TOPICS
        # One Kafka broker for the whole run (SharedKafka), started on first use.
        self.kafka = None

    def exe(self, name):
        return os.path.join(self.bin, name)

    def base_env(self, brokers):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("CLICKPIPE__") or k == "CLICKPIPE_CONFIG":
                del env[k]
        env.update({
            "CLICKPIPE_CONFIG": self.args.config,
            "CLICKPIPE__KAFKA__BROKERS": brokers,
            "CLICKPIPE__KAFKA__INPUT_TOPIC": self.topics[0],
            "CLICKPIPE__KAFKA__OUTPUT_TOPIC": self.topics[1],
            "CLICKPIPE__KAFKA__DLQ_TOPIC": self.topics[2],
            "CLICKPIPE__REDIS__URL": f"redis://127.0.0.1:{REDIS_PORT}/",
            "CLICKPIPE__MODEL__URL": f"http://127.0.0.1:{MODEL_PORT}",
            "CLICKPIPE__ADMIN__LISTEN": f"127.0.0.1:{ADMIN_PORT}",
            "CLICKPIPE__MODEL_SERVER__LISTEN": f"127.0.0.1:{MODEL_PORT}",
            "CLICKPIPE__LOG__LEVEL": "warn",
        })
        return env

    def start_redis(self):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run scripts/services.sh install redis")
        subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "shutdown", "nosave"],
                       capture_output=True)
        self.redis = Proc("redis", ["redis-server", "--bind", "127.0.0.1", "--port",
                                    str(REDIS_PORT), "--save", "", "--appendonly", "no"],
                          dict(os.environ), self.workdir)
        self.redis.wait_for_line("Ready to accept connections", 10)
        subprocess.run([self.exe("clickpipe"), "seed-redis", "--csv", "config/zips.csv"],
                       cwd=ROOT, env=self.base_env("127.0.0.1:1"), check=True,
                       capture_output=True)

    def start_model(self, delay_ms=0):
        if self.model:
            self.model.stop()
        self.model = Proc(f"model-server-{delay_ms}ms",
                          [self.exe("clickpipe"), "model-server", "--delay-ms", str(delay_ms)],
                          self.base_env("127.0.0.1:1"), self.workdir)
        wait_http(f"http://127.0.0.1:{MODEL_PORT}/ping", 20, self.model)

    def start_otlp_sink(self):
        """An OTLP/HTTP endpoint that accepts every export (the ADOT collector's place); counts
        requests and bytes. In this process, on its own thread; started once."""
        if self.otlp:
            return
        import http.server

        counts = self.otlp_counts

        class Sink(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                counts["requests"] += 1
                counts["bytes"] += n
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.otlp = http.server.ThreadingHTTPServer(("127.0.0.1", OTLP_PORT), Sink)
        threading.Thread(target=self.otlp.serve_forever, daemon=True).start()

    def stop(self):
        if self.kafka:
            self.kafka.broker.stop()
            log(f"shared kafka broker: peak RSS {fmt_mb(self.kafka.broker.peak_rss_mb)}")
        for p in (self.model, self.redis):
            if p:
                p.stop()
        if self.otlp:
            self.otlp.shutdown()


def wait_http(url, timeout, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc and not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {tail(proc.log_path)}")
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout}s")


def kafka_version():
    """The Apache Kafka version `scripts/services.sh` installs (pinned in scripts/kafka/pom.xml)."""
    try:
        with open(os.path.join(ROOT, "scripts", "kafka", "pom.xml")) as f:
            m = re.search(r"<kafka.version>([^<]+)</kafka.version>", f.read())
        return m.group(1) if m else "?"
    except OSError:
        return "?"


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def kafka_ports():
    """A free (broker, controller) port pair from KAFKA_PORT_BASE up (never 9092/9093)."""
    for port in range(KAFKA_PORT_BASE, KAFKA_PORT_BASE + 200, 2):
        if port_free(port) and port_free(port + 1):
            return port, port + 1
    raise RuntimeError(f"no free port pair in {KAFKA_PORT_BASE}-{KAFKA_PORT_BASE + 200}")


def tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def peak_rss_mb(pid):
    """VmHWM (peak resident set) of a live process, MB; None when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class Broker:
    """A fresh broker for one measurement.

    `kafka`: Apache Kafka (KRaft, one node as broker and controller) run by
    `scripts/services.sh kafka-run` on a free port pair with its data in a new directory under the
    work directory, topics made by `scripts/services.sh topics`; stopped with SIGTERM (SIGKILL
    after 30 s) and its directory deleted. `mock`: `clickpipe mock-broker` (librdkafka's
    MockCluster). The broker's peak RSS goes to the log when it stops (`peak_rss_mb`)."""

    def __init__(self, kind, env, name, warmup_s=None):
        self.kind = kind
        self.warmup_s = warmup_s
        self.name = name
        self.peak_rss_mb = None
        self.dir = os.path.join(env.workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        try:
            if kind == "mock":
                self.proc = Proc(f"{name}-broker", [env.exe("clickpipe"), "mock-broker",
                                                    "--partitions", str(PARTITIONS)],
                                 env.base_env("127.0.0.1:1"), env.workdir)
                line = self.proc.wait_for_line("mock broker on", 20)
                self.address = line.split("mock broker on ", 1)[1].split()[0]
            elif kind == "kafka":
                self.start_kafka(env, name)
            else:
                raise ValueError(kind)
        except BaseException:
            self.stop()
            raise

    def start_kafka(self, env, name):
        port, cport = kafka_ports()
        self.address = f"127.0.0.1:{port}"
        self.data = os.path.join(self.dir, "kafka")
        t0 = time.monotonic()
        # kafka-run execs into the JVM: the child is the broker, and its process group all of it.
        self.proc = Proc(f"{name}-broker",
                         [SERVICES, "kafka-run", self.data, str(port), str(cport)],
                         dict(os.environ), env.workdir)
        deadline = time.monotonic() + 90
        while not tcp_open(port):
            if not self.proc.alive():
                raise RuntimeError(f"kafka exited during startup: see {self.proc.log_path}\n"
                                   f"{tail(self.proc.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kafka did not listen on {self.address} within 90 s: see "
                                   f"{self.proc.log_path}")
            time.sleep(0.1)
        t1 = time.monotonic()
        # One JVM: waits until the broker answers metadata requests, creates the topics, waits
        # for their leaders.
        e = dict(os.environ, CLICKPIPE_KAFKA_PORT=str(port), PARTITIONS=str(PARTITIONS),
                 CLICKPIPE_START_TIMEOUT="60")
        r = subprocess.run([SERVICES, "topics", *TOPICS, *WARMUP_TOPICS], cwd=ROOT, env=e,
                           capture_output=True, text=True)
        with open(self.proc.log_path, "a") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"kafka on {self.address}: creating the topics failed: "
                               f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        log(f"[{name}] kafka on {self.address}: listening after {t1 - t0:.1f} s, topics ready "
            f"after {time.monotonic() - t0:.1f} s")
        self.warm(env, name)

    def warm(self, env, name):
        """A fresh JVM serves its first thousands of requests slowly (interpreted code, JIT at
        work): measured here, a cold broker acknowledged 421 of the first 2,000 records in the
        first second and put a second on the floor's p99. Before any system is measured, the
        passthrough moves KAFKA_WARMUP_EVENTS records through side topics at KAFKA_WARMUP_RATE
        per second (produce, fetch, produce, fetch: the paths a measurement uses)."""
        t0 = time.monotonic()
        e = env.base_env(self.address)
        e.update({"CLICKPIPE__KAFKA__INPUT_TOPIC": WARMUP_TOPICS[0],
                  "CLICKPIPE__KAFKA__OUTPUT_TOPIC": WARMUP_TOPICS[1],
                  "CLICKPIPE__KAFKA__GROUP_ID": "bench-warmup"})
        p = Proc(f"{name}-warmup", [env.exe("passthrough")], e, env.workdir)
        try:
            p.wait_for_line("passthrough: ready", 30)
            # At a steady rate, not as fast as possible: small batches, many requests, as in a
            # measurement (a burst makes a few big requests and leaves the JIT cold).
            count = KAFKA_WARMUP_RATE * (self.warmup_s or KAFKA_WARMUP_EVENTS // KAFKA_WARMUP_RATE)
            r = subprocess.run([env.exe("clickpipe"), "loadgen", "--rate",
                                str(KAFKA_WARMUP_RATE), "--count", str(count),
                                "--summary-timeout-s", "30"],
                               cwd=ROOT, env=e, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"kafka warm-up failed: {r.stderr.strip().splitlines()[-1:]}")
        finally:
            p.stop()
        log(f"[{name}] kafka warmed up with {count:,} records through the "
            f"passthrough in {time.monotonic() - t0:.1f} s")

    def stop(self, keep_data=False):
        """Stops the broker (a controlled shutdown for Kafka: SIGTERM, SIGKILL after 30 s) and
        deletes its directory unless `keep_data` (then `remove()` does)."""
        if self.proc and self.proc.alive():
            self.peak_rss_mb = peak_rss_mb(self.proc.pid)
            t0 = time.monotonic()
            self.proc.stop(timeout=30)
            log(f"[{self.name}] {self.kind} broker stopped in {time.monotonic() - t0:.1f} s; "
                f"peak RSS {fmt_mb(self.peak_rss_mb)}")
        elif self.proc:
            self.proc.stop()
        if not keep_data:
            self.remove()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class SharedKafka:
    """The Kafka broker of a benchmark run: started once and warmed up (a fresh JVM is slow for
    its first tens of thousands of requests: measured, a fresh broker put ~300 ms on the
    passthrough's p99 at 2,000/s even after a 60,000-record warm-up), with new topics for every
    measurement, so no measurement sees another's records — as a production cluster is
    long-running. (`--recovery` still starts a broker per mode: it kills and restarts members.)"""

    def __init__(self, env):
        self.broker = Broker("kafka", env, "kafka-shared", warmup_s=KAFKA_SHARED_WARMUP_S)
        self.address = self.broker.address

    @staticmethod
    def lease(env, tag):
        """The run's broker with fresh topics named after the measurement, made the current
        ones (env.topics)."""
        if env.kafka is None:
            env.kafka = SharedKafka(env)
        topics = tuple(f"{t}-{tag}" for t in TOPICS)
        e = dict(os.environ, CLICKPIPE_KAFKA_PORT=env.kafka.address.rsplit(":", 1)[1],
                 PARTITIONS=str(PARTITIONS), CLICKPIPE_START_TIMEOUT="60")
        r = subprocess.run([SERVICES, "topics", *topics], cwd=ROOT, env=e, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"kafka: creating {topics} failed: "
                               f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        env.topics = topics
        return _Lease(env)


class _Lease:
    """A measurement's use of the shared broker: stopping it only forgets the topics."""

    kind = "kafka"

    def __init__(self, env):
        self.env = env
        self.address = env.kafka.address
        self.peak_rss_mb = None

    def stop(self, keep_data=False):
        self.peak_rss_mb = peak_rss_mb(self.env.kafka.broker.proc.pid)
        self.env.topics = TOPICS


# ------------------------------------------------------------------------------------------------
# Systems under test
# ------------------------------------------------------------------------------------------------


def ensure_quix_venv():
    py = os.path.join(QUIX_VENV, "bin", "python")
    stamp = os.path.join(QUIX_VENV, ".installed")
    req = os.path.join(BENCH, "quix", "requirements.txt")
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(req):
        return py
    log("creating the Quix Streams virtualenv (bench/.venv-quix)")
    subprocess.run([sys.executable, "-m", "venv", QUIX_VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "-r", req], check=True)
    open(stamp, "w").close()
    return py


def start_system(system, env, broker, tag):
    e = env.base_env(broker.address)
    if system in TRACED:
        env.start_otlp_sink()
        e.update({
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{OTLP_PORT}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": TRACED[system],
        })
        p = Proc(f"{tag}-{system}", [env.exe("clickpipe"), "run"], e, env.workdir)
        wait_http(f"http://127.0.0.1:{ADMIN_PORT}/health/live", 30, p)
    elif system == "clickpipe":
        p = Proc(f"{tag}-clickpipe", [env.exe("clickpipe"), "run"], e, env.workdir)
        wait_http(f"http://127.0.0.1:{ADMIN_PORT}/health/live", 30, p)
    elif system in ("passthrough", "naive"):
        p = Proc(f"{tag}-{system}", [env.exe(system)], e, env.workdir)
        p.wait_for_line(f"{system}: ready", 30)
    elif system == "quix":
        py = ensure_quix_venv()
        state = os.path.join(env.workdir, f"{tag}-quix-state")
        e.update({
            "BROKERS": broker.address,
            "INPUT_TOPIC": env.topics[0],
            "OUTPUT_TOPIC": env.topics[1],
            "GROUP_ID": "bench-quix",
            "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
            "MODEL_URL": f"http://127.0.0.1:{MODEL_PORT}",
            "STATE_DIR": state,
            "FETCH_WAIT_MAX_MS": env.args.fetch_wait_ms,
        })
        p = Proc(f"{tag}-quix", [py, os.path.join(BENCH, "quix", "app.py")], e, env.workdir)
        p.wait_for_line("quix: ready", 90)
    else:
        raise ValueError(system)
    return p


SEARCH_PORT = 9499
INGEST_MAX_COUNT = 100_000


def osmem_binary():
    cache = os.environ.get("CLICKPIPE_TOOLS", os.path.expanduser("~/.cache/clickpipe"))
    for cand in (os.environ.get("CLICKPIPE_OSMEM"), os.path.join(cache, "bin", "osmem-server"),
                 shutil.which("osmem-server")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("osmem-server is not installed: run scripts/services.sh install osmem")


def http_json(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def ingest_measure(env, rate, duration, results, tag):
    """`clickpipe ingest` from a fresh osmem-server index to a fresh MockCluster: lag at `rate`
    documents/s for `duration` s (bench/peers ingest_lag), or catch-up throughput (rate 0)."""
    label = "max" if rate == 0 else f"{rate}/s"
    log(f"[{tag}] clickpipe ingest at {label}")
    search = broker = proc = sampler = None
    search_url = f"http://127.0.0.1:{SEARCH_PORT}"
    try:
        search = Proc(f"{tag}-osmem", [osmem_binary(), "-addr", f"127.0.0.1:{SEARCH_PORT}",
                                       "-no-stdin-watch"], dict(os.environ), env.workdir)
        wait_http(search_url + "/", 10, search)
        http_json("PUT", f"{search_url}/clicks", {"mappings": {"properties": {
            "@timestamp": {"type": "date"}, "session_id": {"type": "keyword"}}}})
        broker = Broker("mock", env, tag)
        e = env.base_env(broker.address)
        e.update({"CLICKPIPE__INGEST__URL": search_url,
                  "CLICKPIPE__INGEST__LISTEN": f"127.0.0.1:{ADMIN_PORT}",
                  "CLICKPIPE__INGEST__CHECKPOINT_KEY": f"bench:ingest:{tag}"})
        count = INGEST_MAX_COUNT if rate == 0 else rate * duration
        if env.args.smoke:
            count = min(count, 2000)
        meter = [env.exe("ingest_lag"), "--search", search_url, "--rate", str(rate),
                 "--count", str(count)]
        if rate == 0:
            subprocess.run([env.exe("ingest_lag"), "--search", search_url, "--preload",
                            str(count)], cwd=ROOT, env=e, check=True, capture_output=True)
        proc = Proc(f"{tag}-ingest", [env.exe("clickpipe"), "ingest"], e, env.workdir)
        wait_http(f"http://127.0.0.1:{ADMIN_PORT}/health/live", 30, proc)
        sampler = Sampler(proc.pid)
        sampler.start()
        out_json = os.path.join(env.workdir, f"{tag}.json")
        t0 = time.monotonic()
        p = subprocess.run(meter + ["--json", out_json, "--timeout-s", "60"], cwd=ROOT, env=e,
                           capture_output=True, text=True)
        t1 = time.monotonic()
        if not os.path.exists(out_json):
            raise RuntimeError(f"ingest_lag failed (exit {p.returncode}): {p.stderr[-500:]}")
        with open(out_json) as f:
            report = json.load(f)
        cpu, rss = sampler.window(t0, t1)
        r = {"system": "ingest", "broker": "mock", "rate": rate, "count": count,
             "report": report, "cpu_pct": cpu, "peak_rss_mb": rss / 2**20 if rss else None,
             "ok": p.returncode == 0}
        l = report.get("lag") or {}
        log(f"[{tag}] ingest: read {report['received']} of {count}, duplicates "
            f"{report['duplicates']}, lag p50 {fmt_ms(l.get('p50_ms'))} p99 "
            f"{fmt_ms(l.get('p99_ms'))}, {fmt_rate(report.get('throughput'))}, cpu {fmt_pct(cpu)}")
        results.append(r)
    except Exception as ex:  # one failed measurement does not end the run
        log(f"[{tag}] ingest failed: {ex}")
        results.append({"system": "ingest", "broker": "mock", "rate": rate,
                        "error": str(ex).splitlines()[0], "ok": False})
    finally:
        if sampler:
            sampler.stopped.set()
        for x in (proc, broker, search):
            if x:
                x.stop()


def ingest_table(results):
    rows = ["| rate | documents | read | duplicates | lag p50 | p90 | p99 | max | throughput | CPU | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rate = "max (catch-up)" if r["rate"] == 0 else f"{r['rate']:,}/s"
        if "error" in r:
            rows.append(f"| {rate} | failed: {r['error'][:80]} |||||||||")
            continue
        rep = r["report"]
        l = rep.get("lag") or {}
        rows.append(f"| {rate} | {r['count']:,} | {rep['received']:,} | {rep['duplicates']:,} "
                    f"| {fmt_ms(l.get('p50_ms'))} | {fmt_ms(l.get('p90_ms'))} "
                    f"| {fmt_ms(l.get('p99_ms'))} | {fmt_ms(l.get('max_ms'))} "
                    f"| {fmt_rate(rep.get('throughput'))} | {fmt_pct(r['cpu_pct'])} "
                    f"| {fmt_mb(r['peak_rss_mb'])} |")
    return "\n".join(rows)


def loadgen(env, broker, rate, count, out_json=None, timeline=None, deadline=None,
            timeout=60, quiet=False):
    argv = [env.exe("clickpipe"), "loadgen", "--rate", str(rate), "--count", str(count),
            "--summary-timeout-s", str(timeout), "--seed", "7"]
    if out_json:
        argv += ["--json", out_json]
    if timeline:
        argv += ["--timeline", timeline]
    if deadline:
        argv += ["--summary-deadline-s", str(deadline)]
    p = subprocess.Popen(argv, cwd=ROOT, env=env.base_env(broker.address),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Pass the progress lines through (one per second), prefixed.
    for line in p.stderr:
        if not quiet:
            print(f"    {line.rstrip()}", file=sys.stderr, flush=True)
    out = p.stdout.read()
    p.wait()
    return p.returncode, out


@contextlib.contextmanager
def system_under_test(env, broker_kind, system, tag, warmup):
    """A fresh broker and `system` on it, sampled from /proc, after `warmup` events went through;
    everything stopped on exit. Yields (broker, process, sampler)."""
    broker = SharedKafka.lease(env, tag) if broker_kind == "kafka" else Broker(broker_kind, env, tag)
    proc = None
    sampler = None
    try:
        proc = start_system(system, env, broker, tag)
        sampler = Sampler(proc.pid)
        sampler.start()
        code, _ = loadgen(env, broker, warmup, warmup, timeout=60, quiet=True)
        if code != 0:
            raise RuntimeError(f"warm-up failed (exit {code}); see {proc.log_path}")
        yield broker, proc, sampler
    finally:
        if sampler:
            sampler.stopped.set()
        if proc:
            proc.stop()
        broker.stop()


def measure(env, broker_kind, system, rate, duration, results, tag):
    """One measurement; appends a result dict."""
    label = "max" if rate == 0 else f"{rate}/s"
    log(f"[{tag}] {system} on {broker_kind} at {label}")
    try:
        before = dict(env.otlp_counts)
        with system_under_test(env, broker_kind, system, tag, 200) as (broker, _, sampler):
            result = run_rate(env, broker, broker_kind, system, rate, duration, sampler, tag)
        result["broker_peak_rss_mb"] = broker.peak_rss_mb  # set when it stopped
        if system in TRACED:
            # Stopping the system flushed its exporter: the export requests of the whole run.
            result["otlp"] = {k: env.otlp_counts[k] - before[k] for k in before}
        results.append(result)
    except Exception as e:  # one failed measurement does not end the run
        log(f"[{tag}] {system} failed: {e}")
        results.append({"system": system, "broker": broker_kind, "rate": rate,
                         "error": str(e).splitlines()[0], "ok": False})


def run_rate(env, broker, broker_kind, system, rate, duration, sampler, tag):
    """The measured load run of [`measure`]; returns its result dict."""
    count = MAX_COUNT[system] if rate == 0 else rate * duration
    if env.args.smoke and rate == 0:
        count = min(count, 3000)
    out_json = os.path.join(env.workdir, f"{tag}.json")
    timeline = os.path.join(env.workdir, f"{tag}.timeline.jsonl")
    # A system that cannot keep up is given `duration` + 30 s (max mode: 120 s) to answer;
    # what is still unanswered then is reported as `missing` and the rate as not sustained.
    deadline = 120 if rate == 0 else duration + 30
    t0 = time.monotonic()
    code, _ = loadgen(env, broker, rate, count, out_json, timeline, deadline=deadline,
                      timeout=30)
    t1 = time.monotonic()
    if not os.path.exists(out_json):
        raise RuntimeError(f"the load generator failed (exit {code}) before writing its report "
                           "(delivery errors: the broker did not acknowledge the input)")
    with open(out_json) as f:
        report = json.load(f)
    cpu, rss = sampler.window(t0, t1)
    r = {
        "system": system, "broker": broker_kind, "rate": rate, "count": count,
        "report": report, "cpu_pct": cpu, "peak_rss_mb": rss / 2**20 if rss else None,
        "ok": code == 0 and report["missing"] == 0 and report["dead_letters"] == 0,
        "sustained": report["missing"] == 0
        and (rate == 0 or (report.get("output_rate") or 0) >= 0.95 * rate),
    }
    l = report.get("latency") or {}
    log(f"[{tag}] {system}: out {report['predictions']} dlq {report['dead_letters']} "
        f"missing {report['missing']} p50 {fmt_ms(l.get('p50_ms'))} "
        f"p99 {fmt_ms(l.get('p99_ms'))} rate {fmt_rate(report.get('output_rate'))} "
        f"cpu {fmt_pct(cpu)} rss {fmt_mb(r['peak_rss_mb'])}")
    return r


def overload(env, broker_kind, system, rate, duration, tag):
    """Input at `rate` against a model slowed by 200 ms per call; returns RSS and lag over time."""
    log(f"[{tag}] overload: {system} on {broker_kind}, {rate}/s for {duration}s, model +200 ms")
    try:
        with system_under_test(env, broker_kind, system, tag, 50) as (broker, proc, sampler):
            return overload_run(env, broker, broker_kind, system, rate, duration, proc, sampler, tag)
    except Exception as e:
        log(f"[{tag}] overload of {system} failed: {e}")
        return {"system": system, "broker": broker_kind, "error": str(e).splitlines()[0]}


def overload_run(env, broker, broker_kind, system, rate, duration, proc, sampler, tag):
    """The measured part of [`overload`]."""
    out_json = os.path.join(env.workdir, f"{tag}.json")
    timeline = os.path.join(env.workdir, f"{tag}.timeline.jsonl")
    unix0 = int(time.time() * 1000)
    loadgen(env, broker, rate, rate * duration, out_json, timeline,
            deadline=duration + 15, timeout=30)
    with open(timeline) as f:
        lag = [(s["unix_ms"], s["lag"]) for s in map(json.loads, f)]
    rss = [(s[1], s[3]) for s in sampler.samples if s[1] >= unix0]
    survived = proc.alive()
    return {"system": system, "broker": broker_kind, "rate": rate, "duration": duration,
            "unix0": unix0, "lag": lag, "rss": rss, "survived": survived,
            "peak_rss_mb": max((b for _, b in rss), default=0) / 2**20,
            "final_lag": lag[-1][1] if lag else None}


# ------------------------------------------------------------------------------------------------
# Recovery and rebalancing (--recovery)
# ------------------------------------------------------------------------------------------------

# Consumer group modes: (kafka.group_protocol, consumer properties and pipeline settings over the
# defaults, static membership (kafka.group_instance_id)). `classic` is clickpipe's default
# (cooperative-sticky, session.timeout.ms 8 s, heartbeat.interval.ms 1 s); `classic-45s` is
# librdkafka's own session (45 s, heartbeat 3 s), clickpipe's default before. Under the consumer
# protocol (KIP-848) the broker owns the session (group.consumer.session.timeout.ms, 45 s).
CLASSIC_45S = {"CLICKPIPE__KAFKA__CONSUMER__SESSION_TIMEOUT_MS": "45000",
               "CLICKPIPE__KAFKA__CONSUMER__HEARTBEAT_INTERVAL_MS": "3000"}
CONSUMER = {}
RECOVERY_MODES = {
    "classic": ("classic", {}, False),
    "classic-45s": ("classic", CLASSIC_45S, False),
    "classic-static": ("classic", CLASSIC_45S, True),
    "consumer": ("consumer", CONSUMER, False),
    "consumer-static": ("consumer", CONSUMER, True),
}
RECOVERY_LABELS = {
    "classic": "classic (cooperative-sticky), session 8 s, heartbeat 1 s — the default",
    "classic-45s": "classic, session 45 s, heartbeat 3 s (librdkafka's defaults)",
    "classic-static": "classic + static membership, session 45 s",
    "consumer": "consumer (KIP-848), session 45 s (broker)",
    "consumer-static": "consumer (KIP-848) + static membership",
}
# Steady running between the steps of the scenario, seconds.
RECOVERY_STEADY_S = 5
# Allowance for a step that may wait for a session to expire (45 s) and the rebalance after it.
RECOVERY_WAIT_S = 100
# The second instance's admin port (the first has ADMIN_PORT).
ADMIN_PORT_B = ADMIN_PORT + 1
EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]*)"')


class Instance:
    """One `clickpipe run` of the recovery scenario, on its own admin port
    (CLICKPIPE__ADMIN__LISTEN) and, in the static modes, with its own stable `group.instance.id`
    (`bench-a`, `bench-b`)."""

    def __init__(self, env, broker, mode, name, port, tag):
        protocol, overrides, static = RECOVERY_MODES[mode]
        self.env, self.name, self.port, self.tag = env, name, port, tag
        self.vars = env.base_env(broker.address)
        self.vars.update({
            "CLICKPIPE__ADMIN__LISTEN": f"127.0.0.1:{port}",
            "CLICKPIPE__KAFKA__GROUP_PROTOCOL": protocol,
            # Group membership changes are logged at info.
            "CLICKPIPE__LOG__LEVEL": "info",
        })
        if static:
            self.vars["CLICKPIPE__KAFKA__GROUP_INSTANCE_ID"] = f"bench-{name}"
        self.vars.update(overrides)
        self.proc = None
        self.starts = 0

    def start(self):
        """Starts the process (each start logs to its own file) and returns the time just
        before."""
        self.starts += 1
        suffix = "" if self.starts == 1 else f"-start{self.starts}"
        t = time.time()
        self.proc = Proc(f"{self.tag}-{self.name}{suffix}", [self.env.exe("clickpipe"), "run"],
                         self.vars, self.env.workdir)
        return t

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def status(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def owned(self):
        """Partitions assigned to it (0 when it does not answer)."""
        st = self.status()
        return len(st["partitions"]) if st else 0

    def outputs(self):
        st = self.status()
        if not st:
            return 0
        c = st["counters"]
        return c["processed"] + sum(c["dead_letters"].values())

    def kill(self):
        """kill -9; returns the time just before."""
        t = time.time()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.p.wait()
        self.proc.log.close()
        return t

    def stop(self, timeout=60):
        if self.proc:
            self.proc.stop(timeout)


def last_error(path):
    """The last ERROR line of a clickpipe log, without colours and timestamp; None if none."""
    found = None
    try:
        with open(path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if "ERROR" in line:
                    found = line
    except OSError:
        return None
    if found:
        found = re.sub(r"\x1b\[[0-9;]*m", "", found)
        found = found.split("ERROR", 1)[1].strip()
    return found


def wait_until(what, cond, timeout, instances):
    """Polls `cond` every 0.1 s; fails when it is not true within `timeout` s or an instance
    exited. Returns the time it became true."""
    deadline = time.time() + timeout
    while True:
        for i in instances:
            if not i.alive():
                raise RuntimeError(f"{what}: {i.proc.name} exited: {tail(i.proc.log_path, 5)}")
        if cond():
            return time.time()
        if time.time() > deadline:
            errors = [f"{i.name}: {e}" for i in instances if (e := last_error(i.proc.log_path))]
            raise RuntimeError(f"{what}: not within {timeout} s"
                               + (f" (last errors: {'; '.join(errors)})" if errors else ""))
        time.sleep(0.1)


def _zigzag(buf, i):
    """A zigzag varint of a Kafka record at `buf[i:]`: (value, next index)."""
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), i
        shift += 7


def read_segment(path):
    """Yields (timestamp ms, value) of every data record in a Kafka log segment file (record batch
    format v2, uncompressed or gzip: what clickpipe and the load generator write by default)."""
    with open(path, "rb") as f:
        data = f.read()
    pos, n = 0, len(data)
    while pos + 61 <= n:
        length = struct.unpack_from(">i", data, pos + 8)[0]
        end = pos + 12 + length
        if length < 49 or end > n:
            break
        if data[pos + 16] != 2:  # magic: older formats are not written by Kafka 4
            pos = end
            continue
        attrs, _, base_ts, max_ts = struct.unpack_from(">hiqq", data, pos + 21)
        count = struct.unpack_from(">i", data, pos + 57)[0]
        if attrs & 0x20:  # control batch (transaction markers)
            pos = end
            continue
        body = data[pos + 61:end]
        codec = attrs & 0x07
        if codec == 1:
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif codec:
            raise RuntimeError(f"{path}: compression codec {codec} cannot be read by the harness")
        log_append_time = attrs & 0x08
        i = 0
        for _ in range(count):
            size, i = _zigzag(body, i)
            rec_end = i + size
            i += 1  # attributes
            ts_delta, i = _zigzag(body, i)
            _, i = _zigzag(body, i)  # offset delta
            klen, i = _zigzag(body, i)
            if klen > 0:
                i += klen
            vlen, i = _zigzag(body, i)
            value = body[i:i + vlen] if vlen > 0 else b""
            yield (max_ts if log_append_time else base_ts + ts_delta), value
            i = rec_end
        pos = end


def topic_segments(data_dir, topic):
    """(partition, segment file) of every log segment of `topic` in a stopped Kafka broker's log
    directory, in offset order within a partition."""
    for d in os.listdir(data_dir):
        name, _, part = d.rpartition("-")
        if name != topic or not part.isdigit():
            continue
        pdir = os.path.join(data_dir, d)
        for f in sorted(os.listdir(pdir)):
            if f.endswith(".log"):
                yield int(part), os.path.join(pdir, f)


def read_topic(data_dir, topic):
    """{partition: [(timestamp ms, event_id)]} of `topic` from a stopped Kafka broker's log
    directory (records without an `event_id` are left out)."""
    out = {}
    for part, path in topic_segments(data_dir, topic):
        rows = out.setdefault(part, [])
        for ts, value in read_segment(path):
            m = EVENT_ID.search(value)
            if m:
                rows.append((ts, m.group(1).decode()))
    return out


def longest_pause(times, lo, hi):
    """Longest gap between consecutive times (ms, sorted) that ended in [lo, hi): the pause whose
    end (the first output after it) falls in the window; None when no output falls in it."""
    import bisect
    j = max(bisect.bisect_left(times, lo), 1)
    best = None
    while j < len(times) and times[j] < hi:
        g = times[j] - times[j - 1]
        best = g if best is None else max(best, g)
        j += 1
    return best


def analyse_recovery(data_dir, marks):
    """The figures of one recovery run from the broker's log: outputs (and dead letters) by their
    create time, attributed to the input partition of their event."""
    inputs = read_topic(data_dir, TOPICS[0])
    partition_of = {eid: p for p, rows in inputs.items() for _, eid in rows}
    outputs = [row for topic in (TOPICS[1], TOPICS[2])
               for rows in read_topic(data_dir, topic).values() for row in rows]
    outputs.sort()
    ms = {k: v * 1000 for k, v in marks.items()}
    restart = ms["restart"]
    before = {eid for t, eid in outputs if t < restart}
    last_before = max((t for t, _ in outputs if t < restart), default=None)
    first_new = {}  # input partition → first output after the restart of an event new since
    first_any = None
    for t, eid in outputs:
        if t < restart:
            continue
        if first_any is None:
            first_any = t
        if eid not in before:
            first_new.setdefault(partition_of.get(eid), t)
    first = min(first_new.values(), default=None)
    repeated = len({eid for t, eid in outputs if t >= restart and eid in before})
    stream = [t for t, _ in outputs]
    by_partition = {}
    for t, eid in outputs:
        p = partition_of.get(eid)
        if p is not None:
            by_partition.setdefault(p, []).append(t)

    def pauses(lo, hi):
        per = [longest_pause(ts, lo, hi) for ts in by_partition.values()]
        per = [g for g in per if g is not None]
        return (max(per) if per else None), longest_pause(stream, lo, hi)

    steady, steady_stream = pauses(ms["load"] + 2000, ms["kill"])
    join, join_stream = pauses(ms["join"], ms["leave"])
    leave, leave_stream = pauses(ms["leave"], ms["end"])
    input_ids = set(partition_of)
    output_ids = {eid for _, eid in outputs}
    return {
        "inputs": len(input_ids),
        "outputs": len(outputs),
        "lost": len(input_ids - output_ids),
        "repeated": repeated,
        "restart_to_first_any_s": None if first_any is None else (first_any - restart) / 1000,
        "restart_to_first_output_s": None if first is None else (first - restart) / 1000,
        "restart_to_all_partitions_s": (max(first_new.values()) - restart) / 1000
        if len(first_new) >= PARTITIONS else None,
        "output_gap_s": None if first is None or last_before is None
        else (first - last_before) / 1000,
        "join_pause_ms": join, "join_stream_gap_ms": join_stream,
        "leave_pause_ms": leave, "leave_stream_gap_ms": leave_stream,
        "steady_pause_ms": steady, "steady_stream_gap_ms": steady_stream,
    }


def recovery_measure(env, mode, run, tag):
    """One run of the recovery scenario for `mode` on a fresh Kafka broker; returns its result."""
    rate = env.args.recovery_rate
    log(f"[{tag}] recovery: {mode} ({RECOVERY_LABELS[mode]}), input {rate}/s")
    result = {"mode": mode, "run": run, "rate": rate}
    broker = a = b = lg = None
    marks = {}
    try:
        broker = Broker("kafka", env, tag)
        a = Instance(env, broker, mode, "a", ADMIN_PORT, tag)
        b = Instance(env, broker, mode, "b", ADMIN_PORT_B, tag)
        a.start()
        wait_until("a owns every partition", lambda: a.owned() == PARTITIONS, 60, [a])
        code, _ = loadgen(env, broker, 200, 200, timeout=60, quiet=True)
        if code != 0:
            raise RuntimeError(f"warm-up failed (exit {code}); see {a.proc.log_path}")
        # The input runs through every step; the load generator is stopped at the end (its count
        # is only an upper bound). Its progress lines (outputs per second) are in its log.
        lg = Proc(f"{tag}-loadgen", [env.exe("clickpipe"), "loadgen", "--rate", str(rate),
                                     "--count", str(rate * 900), "--seed", "7",
                                     "--summary-timeout-s", "10"],
                  env.base_env(broker.address), env.workdir)
        marks["load"] = time.time()
        time.sleep(RECOVERY_STEADY_S + 1)

        # a. kill -9 of the only instance, restarted at once with the same configuration. Should it
        # exit by itself before it recovers, it is started again (as an orchestrator would).
        marks["kill"] = a.kill()
        marks["restart"] = a.start()
        exits = 0
        deadline = time.time() + RECOVERY_WAIT_S
        while not (a.alive() and a.owned() == PARTITIONS and a.outputs() > 0):
            if time.time() > deadline:
                err = last_error(a.proc.log_path)
                log(f"[{tag}] no recovery; see {a.proc.log_path}")
                raise RuntimeError(f"not recovered {RECOVERY_WAIT_S} s after the restart (owns "
                                   f"{a.owned()} partitions, {exits} exits)"
                                   + (f"; last error: {err}" if err else ""))
            if not a.alive():
                exits += 1
                log(f"[{tag}] the restarted instance exited: {tail(a.proc.log_path, 3)}")
                time.sleep(1)
                a.start()
                continue
            time.sleep(0.1)
        marks["recovered"] = time.time()
        result["restart_exits"] = exits
        log(f"[{tag}] restarted instance owns every partition and outputs after "
            f"{marks['recovered'] - marks['restart']:.1f} s")
        time.sleep(RECOVERY_STEADY_S)

        # b. a second instance joins, then leaves with SIGTERM (clean stop).
        marks["join"] = b.start()
        marks["joined"] = wait_until(
            "b joins and gets partitions",
            lambda: (nb := b.owned()) > 0 and a.owned() + nb == PARTITIONS,
            RECOVERY_WAIT_S, [a, b])
        log(f"[{tag}] second instance owns partitions after "
            f"{marks['joined'] - marks['join']:.1f} s")
        time.sleep(RECOVERY_STEADY_S)
        marks["leave"] = time.time()
        b.stop()
        marks["left"] = time.time()
        result["leave_exit_code"] = b.proc.p.returncode
        marks["rebalanced"] = wait_until("a owns every partition again",
                                         lambda: a.owned() == PARTITIONS, RECOVERY_WAIT_S, [a])
        log(f"[{tag}] second instance stopped in {marks['left'] - marks['leave']:.1f} s; the first "
            f"owns every partition again after {marks['rebalanced'] - marks['leave']:.1f} s")
        time.sleep(RECOVERY_STEADY_S)
        marks["end"] = time.time()
        lg.stop()
        # Let the instance finish what was sent, so that `lost` counts only real losses.
        deadline = time.time() + 30
        while time.time() < deadline:
            st = a.status()
            if st and all(p.get("lag") == 0 and not p.get("in_flight") for p in st["partitions"]):
                break
            time.sleep(0.5)
        a.stop()
        result["marks"] = marks
        result["durations_s"] = {
            "recovered_after_restart": marks["recovered"] - marks["restart"],
            "partitions_split_after_join": marks["joined"] - marks["join"],
            "second_stopped_after_sigterm": marks["left"] - marks["leave"],
            "partitions_back_after_leave": marks["rebalanced"] - marks["leave"],
        }
        broker.stop(keep_data=True)
        result.update(analyse_recovery(os.path.join(broker.data, "data"), marks))
        result["broker_peak_rss_mb"] = broker.peak_rss_mb
        result["ok"] = result["lost"] == 0 and result["restart_to_first_output_s"] is not None
        log(f"[{tag}] {mode}: restart → first new output {fmt_s(result['restart_to_first_output_s'])}"
            f" (every partition {fmt_s(result['restart_to_all_partitions_s'])}), output gap "
            f"{fmt_s(result['output_gap_s'])}, repeated {result['repeated']:,}; join pause "
            f"{fmt_ms(result['join_pause_ms'])}, leave pause {fmt_ms(result['leave_pause_ms'])}, "
            f"steady {fmt_ms(result['steady_pause_ms'])}; lost {result['lost']:,} of "
            f"{result['inputs']:,}")
    except Exception as e:  # one failed run does not end the others
        log(f"[{tag}] recovery run of {mode} failed: {e}")
        result.update({"error": str(e).splitlines()[0], "ok": False, "marks": marks})
    finally:
        for x in (lg, b, a):
            if x:
                x.stop()
        if broker:
            broker.stop()
    return result


def run_recovery(args, env, modes, started, workdir):
    """The `--recovery` run: every mode, `--recovery-runs` times; its own report."""
    results = []

    def save(ended=None):
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"commit": args.commit, "started": started.isoformat(),
                       "ended": (ended or datetime.datetime.now(datetime.timezone.utc)).isoformat(),
                       "recovery": results}, f, indent=1)

    try:
        env.start_redis()
        env.start_model()
        n = 0
        for run in range(1, args.recovery_runs + 1):
            for mode in modes:
                n += 1
                results.append(recovery_measure(env, mode, run, f"r{n:02d}-{mode}-{run}"))
                save()
    finally:
        env.stop()
    ended = datetime.datetime.now(datetime.timezone.utc)
    save(ended)
    return recovery_report(args, results, started, ended, workdir)


def recovery_table(results):
    runs = len({r["run"] for r in results}) > 1
    head = ["mode"] + (["run"] if runs else []) + [
        "restart → first new output", "restart → every partition", "output gap", "repeated",
        "join pause", "leave pause", "steady pause", "lost"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"`{r['mode']}`"] + ([str(r["run"])] if runs else [])
        if "error" in r:
            rows.append("| " + " | ".join(cells) + f" | failed: {r['error'][:300].replace('|', '/')} |"
                        + "|" * (len(head) - len(cells) - 1))
            continue
        cells += [fmt_s(r["restart_to_first_output_s"]), fmt_s(r["restart_to_all_partitions_s"]),
                  fmt_s(r["output_gap_s"]), f"{r['repeated']:,}",
                  f"{fmt_pause(r['join_pause_ms'])} ({fmt_pause(r['join_stream_gap_ms'])})",
                  f"{fmt_pause(r['leave_pause_ms'])} ({fmt_pause(r['leave_stream_gap_ms'])})",
                  f"{fmt_pause(r['steady_pause_ms'])} ({fmt_pause(r['steady_stream_gap_ms'])})",
                  f"{r['lost']:,} of {r['inputs']:,}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def recovery_report(args, results, started, ended, workdir):
    rate = next((r["rate"] for r in results), args.recovery_rate)
    rss = [r["broker_peak_rss_mb"] for r in results if r.get("broker_peak_rss_mb")]
    exits = [f"`{r['mode']}` {r['restart_exits']}" for r in results if r.get("restart_exits")]
    out = [f"## {started:%Y-%m-%d %H:%M} UTC — recovery and rebalancing (`bench/run.py --recovery`)",
           "",
           f"- Commit {args.commit}; {'debug' if args.debug else 'release'} build; run took "
           f"{(ended - started).total_seconds() / 60:.1f} min.",
           f"- Machine: {machine()}. Everything on loopback on this one machine.",
           f"- Broker: Apache Kafka {kafka_version()} (KRaft, one node as broker and controller), "
           f"fresh per mode and run; {PARTITIONS} partitions per topic"
           + (f"; broker peak RSS {mb_range(rss)}" if rss else "") + ".",
           f"- `clickpipe run` with its defaults (offsets committed every second) and the mode's "
           "group settings; `clickpipe loadgen` sends "
           f"{rate:,} events/s through every step. Modes: "
           + "; ".join(f"`{m}`: {RECOVERY_LABELS[m]}" for m in RECOVERY_MODES) + ".",
           f"- Steps: one instance; {RECOVERY_STEADY_S} s steady; `kill -9`, restarted at once with "
           "the same configuration (same `group.instance.id` in the static modes); "
           f"{RECOVERY_STEADY_S} s after it owns every partition and outputs again, a second "
           "instance joins (own admin port and instance id); "
           f"{RECOVERY_STEADY_S} s after the partitions are split it stops with SIGTERM (clean stop: "
           f"drain, commit, close); {RECOVERY_STEADY_S} s after the first owns every partition "
           f"again the input stops. A step waits up to {RECOVERY_WAIT_S} s (session expiries).",
           "- Times are the outputs' Kafka timestamps (create time: when clickpipe produced them, "
           "read from the broker's log after the run), against the harness's clock at each step. "
           "*restart → first new output*: from starting the new process to the first output of an "
           "event that had none before the kill (*every partition*: until each input partition "
           "has one); *output gap*: from the last output before the kill to that first new one; "
           "*repeated*: events output again after the restart (at-least-once). *join* / *leave "
           "pause*: the longest time any input partition went without an output, among the "
           "pauses that ended between the step and the next one (in brackets: the longest gap in "
           "the whole output stream); *steady pause*: the same before the kill, for comparison. "
           "*lost*: input events never output.",
           ]
    if exits:
        out.append("- The restarted instance exited by itself before it recovered (restarted "
                   "again after 1 s): " + ", ".join(exits) + ".")
    out += ["", recovery_table(results), ""]
    publish(args, "\n".join(out), workdir)
    failed = [r for r in results if not r.get("ok")]
    if failed:
        log(f"{len(failed)} recovery run(s) failed or lost events: "
            + ", ".join(f"{r['mode']}#{r['run']}" for r in failed))
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 1000 else f"{v:,.0f} ms"


def fmt_s(v):
    return "-" if v is None else f"{v:.2f} s" if v < 10 else f"{v:.1f} s"


def fmt_pause(v):
    """A pause between outputs, whole milliseconds (record timestamps have no finer grain)."""
    return "-" if v is None else f"{v:,.0f} ms"


def mb_range(values):
    lo, hi = min(values), max(values)
    return f"{lo:.0f} MB" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f} MB"


def fmt_rate(v):
    return "-" if v is None else f"{v:,.0f}/s"


def fmt_pct(v):
    return "-" if v is None else f"{v:.0f} %"


def fmt_mb(v):
    return "-" if v is None else f"{v:.0f} MB"


def summary_table(results):
    rows = ["| broker | system | rate | events | out | dlq | missing | p50 | p90 | p99 | p99.9 "
            "| max | throughput | CPU | peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rate = "max" if r["rate"] == 0 else f"{r['rate']:,}/s"
        if "error" in r:
            rows.append(f"| {r['broker']} | {LABELS[r['system']]} | {rate} | failed: "
                        f"{r['error'][:80]} |||||||||||||")
            continue
        rep = r["report"]
        l = rep.get("latency") or {}
        if not r.get("sustained", True):
            rate += " (not sustained)"
        rows.append(
            f"| {r['broker']} | {LABELS[r['system']]} | {rate} | {rep['produced']:,} "
            f"| {rep['predictions']:,} | {rep['dead_letters']:,} | {rep['missing']:,} "
            f"| {fmt_ms(l.get('p50_ms'))} | {fmt_ms(l.get('p90_ms'))} | {fmt_ms(l.get('p99_ms'))} "
            f"| {fmt_ms(l.get('p999_ms'))} | {fmt_ms(l.get('max_ms'))} "
            f"| {fmt_rate(rep.get('output_rate'))} | {fmt_pct(r['cpu_pct'])} "
            f"| {fmt_mb(r['peak_rss_mb'])} |")
    return "\n".join(rows)


def ratios(results):
    """clickpipe against each peer: throughput (max mode) and p99 per rate."""
    by = {(r["broker"], r["system"], r["rate"]): r for r in results if "report" in r}
    lines = []
    brokers = sorted({r["broker"] for r in results})
    for b in brokers:
        cp_max = by.get((b, "clickpipe", 0))
        for peer in ("quix", "naive", "passthrough"):
            parts = []
            pm = by.get((b, peer, 0))
            if cp_max and pm and cp_max["report"].get("output_rate") and pm["report"].get("output_rate"):
                parts.append(f"throughput ×{cp_max['report']['output_rate'] / pm['report']['output_rate']:.1f}")
            for rate in sorted({r["rate"] for r in results if r["rate"]}):
                c, p = by.get((b, "clickpipe", rate)), by.get((b, peer, rate))
                if c and p and (c["report"].get("latency") and p["report"].get("latency")):
                    cp99 = c["report"]["latency"]["p99_ms"]
                    pp99 = p["report"]["latency"]["p99_ms"]
                    if peer == "passthrough":
                        parts.append(f"{rate}/s p99 {cp99 - pp99:+.1f} ms over the floor")
                    else:
                        parts.append(f"{rate}/s p99 {cp99:.1f} vs {pp99:.1f} ms")
            if parts:
                lines.append(f"- {b}, clickpipe vs {LABELS[peer]}: " + "; ".join(parts))
        for traced in TRACED:
            parts = []
            tm = by.get((b, traced, 0))
            if cp_max and tm and cp_max["report"].get("output_rate") and tm["report"].get("output_rate"):
                parts.append(f"max throughput {tm['report']['output_rate']:,.0f}/s vs "
                             f"{cp_max['report']['output_rate']:,.0f}/s untraced "
                             f"({tm['report']['output_rate'] / cp_max['report']['output_rate'] - 1:+.0%})")
            for rate in sorted({r["rate"] for r in results if r["rate"]}):
                c, t = by.get((b, "clickpipe", rate)), by.get((b, traced, rate))
                if c and t and c["report"].get("latency") and t["report"].get("latency"):
                    parts.append(f"{rate}/s p99 {t['report']['latency']['p99_ms']:.1f} vs "
                                 f"{c['report']['latency']['p99_ms']:.1f} ms untraced, CPU "
                                 f"{fmt_pct(t['cpu_pct'])} vs {fmt_pct(c['cpu_pct'])}")
            exported = [r["otlp"] for r in results if r["system"] == traced and r.get("otlp")]
            if exported:
                parts.append(f"{sum(o['requests'] for o in exported):,} OTLP export requests, "
                             f"{sum(o['bytes'] for o in exported) / 1e6:.1f} MB")
            if parts:
                lines.append(f"- {b}, {LABELS[traced]}: " + "; ".join(parts))
    return "\n".join(lines)


COLORS = {"clickpipe": "#d62728", "passthrough": "#7f7f7f", "naive": "#1f77b4", "quix": "#2ca02c",
          "clickpipe-traced-1": "#ff7f0e", "clickpipe-traced-100": "#9467bd"}


def svg_latency(results, path, title):
    """p50 (dashed) and p99 (solid) latency vs rate, log scale, one panel per broker."""
    import math
    brokers = sorted({r["broker"] for r in results if "report" in r and r["rate"]})
    W, H, M = 520, 360, 60
    parts = []
    for bi, b in enumerate(brokers):
        rs = [r for r in results if r["broker"] == b and "report" in r and r["rate"]
              and r["report"].get("latency") and r.get("sustained", True)]
        rates = sorted({r["rate"] for r in rs})
        vals = [v for r in rs for v in (r["report"]["latency"]["p50_ms"], r["report"]["latency"]["p99_ms"])]
        if not rates or not vals:
            continue
        lo = 10 ** math.floor(math.log10(max(min(vals), 0.1)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        ox = bi * W

        def x(rate):
            i = rates.index(rate)
            return ox + M + (i + 0.5) * (W - 2 * M) / len(rates)

        def y(v):
            v = max(v, lo)
            return H - M + (M * 1.2 - H) * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

        parts.append(f'<text x="{ox + W / 2}" y="22" text-anchor="middle" font-weight="bold">{b}</text>')
        parts.append(f'<line x1="{ox + M}" y1="{H - M}" x2="{ox + W - M}" y2="{H - M}" stroke="#000"/>')
        parts.append(f'<line x1="{ox + M}" y1="{H - M}" x2="{ox + M}" y2="{M * 0.6}" stroke="#000"/>')
        d = lo
        while d <= hi * 1.0001:
            parts.append(f'<line x1="{ox + M}" y1="{y(d):.1f}" x2="{ox + W - M}" y2="{y(d):.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{ox + M - 6}" y="{y(d) + 4:.1f}" text-anchor="end" font-size="11">{d:g} ms</text>')
            d *= 10
        for rate in rates:
            parts.append(f'<text x="{x(rate):.1f}" y="{H - M + 18}" text-anchor="middle" font-size="11">{rate:,}/s</text>')
        for s in ALL_SYSTEMS:
            pts = sorted((r["rate"], r["report"]["latency"]) for r in rs if r["system"] == s)
            if not pts:
                continue
            for key, dash in (("p99_ms", ""), ("p50_ms", ' stroke-dasharray="4 3"')):
                xy = " ".join(f"{x(rate):.1f},{y(l[key]):.1f}" for rate, l in pts)
                parts.append(f'<polyline points="{xy}" fill="none" stroke="{COLORS[s]}" stroke-width="2"{dash}/>')
                for rate, l in pts:
                    parts.append(f'<circle cx="{x(rate):.1f}" cy="{y(l[key]):.1f}" r="3" fill="{COLORS[s]}"/>')
        parts.append(f'<text x="{ox + W / 2}" y="{H - 14}" text-anchor="middle" font-size="12">input rate (events/s)</text>')
    legend = []
    present = [s for s in ALL_SYSTEMS if any(r["system"] == s for r in results)]
    for i, s in enumerate(present):
        legend.append(f'<rect x="{20 + i * 170}" y="{H + 4}" width="12" height="12" fill="{COLORS[s]}"/>'
                      f'<text x="{36 + i * 170}" y="{H + 14}" font-size="12">{LABELS[s]}</text>')
    legend.append(f'<text x="20" y="{H + 34}" font-size="12">solid: p99, dashed: p50 (end-to-end, log scale; rates a system did not sustain are left out). {title}</text>')
    width = max(1, len(brokers)) * W
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H + 44}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="#fff"/>'
           + "".join(parts) + "".join(legend) + "</svg>\n")
    with open(path, "w") as f:
        f.write(svg)


def svg_overload(runs, path, title):
    """RSS (MB) and lag (events) over time, one line per system."""
    runs = [r for r in runs if "lag" in r]
    if not runs:
        return False
    W, H, M = 520, 300, 64
    panels = [("RSS (MB)", "rss", lambda v: v / 2**20), ("lag (events)", "lag", lambda v: v)]
    parts = []
    for pi, (name, key, conv) in enumerate(panels):
        ox = pi * W
        series = []
        for r in runs:
            pts = [((t - r["unix0"]) / 1000, conv(v)) for t, v in r[key]]
            series.append((r["system"], pts))
        tmax = max((p[0] for _, pts in series for p in pts), default=1) or 1
        vmax = max((p[1] for _, pts in series for p in pts), default=1) or 1
        vmax *= 1.1

        def x(t):
            return ox + M + t / tmax * (W - 2 * M)

        def y(v):
            return H - M - v / vmax * (H - 1.6 * M)

        parts.append(f'<text x="{ox + W / 2}" y="22" text-anchor="middle" font-weight="bold">{name}</text>')
        parts.append(f'<line x1="{ox + M}" y1="{H - M}" x2="{ox + W - M}" y2="{H - M}" stroke="#000"/>')
        parts.append(f'<line x1="{ox + M}" y1="{H - M}" x2="{ox + M}" y2="{M * 0.6}" stroke="#000"/>')
        for i in range(5):
            v = vmax / 1.1 * i / 4
            parts.append(f'<text x="{ox + M - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{v:,.0f}</text>')
            parts.append(f'<line x1="{ox + M}" y1="{y(v):.1f}" x2="{ox + W - M}" y2="{y(v):.1f}" stroke="#eee"/>')
        for i in range(5):
            t = tmax * i / 4
            parts.append(f'<text x="{x(t):.1f}" y="{H - M + 16}" text-anchor="middle" font-size="11">{t:.0f} s</text>')
        for system, pts in series:
            if pts:
                xy = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
                parts.append(f'<polyline points="{xy}" fill="none" stroke="{COLORS[system]}" stroke-width="2"/>')
    legend = []
    for i, r in enumerate(runs):
        legend.append(f'<rect x="{20 + i * 170}" y="{H + 4}" width="12" height="12" fill="{COLORS[r["system"]]}"/>'
                      f'<text x="{36 + i * 170}" y="{H + 14}" font-size="12">{LABELS[r["system"]]}</text>')
    legend.append(f'<text x="20" y="{H + 34}" font-size="12">{title}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 44}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="#fff"/>'
           + "".join(parts) + "".join(legend) + "</svg>\n")
    with open(path, "w") as f:
        f.write(svg)
    return True


def machine():
    cores = os.cpu_count()
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 2**20
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    distro = ""
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    return f"{cores} cores ({model}), {mem:.0f} GiB, {distro}, {platform.release()}"


def commit():
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def targets(results, overloads):
    """The benchmark issue's targets, met or not, with the distance."""
    by = {(r["broker"], r["system"], r["rate"]): r for r in results if "report" in r}
    lines = []

    def p99(b, s, rate):
        r = by.get((b, s, rate))
        return r and r["report"].get("latency") and r["report"]["latency"]["p99_ms"]

    def mark(ok):
        return "met" if ok else "**not met**"

    rates = sorted({r["rate"] for r in results if r["rate"]})
    for rate in rates:
        c, f = p99("mock", "clickpipe", rate), p99("mock", "passthrough", rate)
        if c and f:
            lines.append(f"- pipeline-added p99 ≤ 2 ms over the passthrough (mock, {rate:,}/s): "
                         f"{c - f:+.2f} ms — {mark(c - f <= 2)}")
    c = p99("mock", "clickpipe", 2000)
    if c:
        lines.append(f"- end-to-end p99 ≤ 10 ms at 2,000/s (mock): {c:.2f} ms — {mark(c <= 10)}")
    # Apache Kafka: the seed architecture's latency budget, end-to-end p99 50-90 ms for the whole
    # path and 5-20 ms for the stream-processing step (clickpipe's p99 over the passthrough floor).
    for rate in rates:
        r = by.get(("kafka", "clickpipe", rate))
        c, f = p99("kafka", "clickpipe", rate), p99("kafka", "passthrough", rate)
        if not (r and c):
            continue
        sustained = r.get("sustained", True)
        note = "" if sustained else " (rate not sustained)"
        lines.append(f"- end-to-end p99 within the 50–90 ms budget of the whole path (Kafka, "
                     f"{rate:,}/s): {c:.1f} ms{note} — {mark(c <= 90) if sustained else 'n/a'}")
        if f:
            lines.append(f"- stream-processing step within its 5–20 ms p99 budget (Kafka, {rate:,}/s, "
                         f"clickpipe p99 over the passthrough floor): {c - f:+.1f} ms "
                         f"({c:.1f} vs {f:.1f} ms){note} — {mark(c - f <= 20) if sustained else 'n/a'}")
    m = by.get(("mock", "clickpipe", 0))
    if m and m["report"].get("output_rate"):
        t = m["report"]["output_rate"]
        lines.append(f"- ≥ 20,000 events/s per instance (mock, max mode): {t:,.0f}/s — {mark(t >= 20000)}")
        q = by.get(("mock", "quix", 0))
        if q and q["report"].get("output_rate"):
            ratio = t / q["report"]["output_rate"]
            worse = [rate for rate in rates
                     if p99("mock", "clickpipe", rate) and p99("mock", "quix", rate)
                     and p99("mock", "clickpipe", rate) > p99("mock", "quix", rate)]
            lines.append(f"- ≥ 10× Quix Streams throughput at equal or better p99 (mock): ×{ratio:.1f}"
                         + (f", p99 worse at {', '.join(f'{w:,}/s' for w in worse)}" if worse else
                            ", p99 equal or better at every rate")
                         + f" — {mark(ratio >= 10 and not worse)}")
    for o in overloads:
        if o["system"] == "clickpipe" and "peak_rss_mb" in o:
            lines.append(f"- RSS < 150 MB under overload: peak {o['peak_rss_mb']:.0f} MB — "
                         f"{mark(o['peak_rss_mb'] < 150)}")
    return "\n".join(lines)


def report_md(args, results, overloads, svgs, started, ended):
    brokers = sorted({r["broker"] for r in results} | {o["broker"] for o in overloads})
    binfo = {"mock": "librdkafka 2.12.1 MockCluster (`clickpipe mock-broker`, one broker, in memory)",
             "kafka": f"Apache Kafka {kafka_version()} (KRaft, one node as broker and controller, "
                      "`scripts/services.sh kafka-run`, JVM heap "
                      f"`{os.environ.get('CLICKPIPE_KAFKA_HEAP', '-Xms512m -Xmx1g')}`), one broker "
                      f"for the run, warmed up {KAFKA_SHARED_WARMUP_S} s at "
                      f"{KAFKA_WARMUP_RATE:,} records/s first, new topics per measurement",
             # Runs recorded before the move to Apache Kafka (--report-only of an old results.json).
             "tansu": "tansu 0.6.0, sqlite storage, fresh database per measurement"}
    out = [f"## {started:%Y-%m-%d %H:%M} UTC — benchmark harness (`bench/run.py{' --smoke' if args.smoke else ''}`)", ""]
    out.append(f"- Commit {args.commit}; {'debug' if args.debug else 'release'} build; run took "
               f"{(ended - started).total_seconds() / 60:.1f} min.")
    out.append(f"- Machine: {machine()}. Everything on loopback on this one machine (broker, Redis, "
               "model server, load generator and the system under test share the cores).")
    for b in brokers:
        rss = [r["broker_peak_rss_mb"] for r in results
               if r["broker"] == b and r.get("broker_peak_rss_mb")]
        peak = f"; broker peak RSS {mb_range(rss)}" if rss else ""
        out.append(f"- Broker `{b}`: {binfo.get(b, b)}; {PARTITIONS} partitions per topic{peak}.")
    out.append(f"- Every consumer: `fetch.wait.max.ms` {args.fetch_wait_ms}; every producer `linger.ms` 1 "
               "(clickpipe, passthrough, naive: idempotent). Same generated stream (seed 7, "
               "200 concurrent sessions, 5 % unknown and 5 % missing ZIPs) for every system; "
               "Redis 7 and `clickpipe model-server` on loopback.")
    mc = {k: min(v, 3000) if args.smoke else v for k, v in MAX_COUNT.items()}
    out.append(f"- Fixed rates run {args.duration} s each after a 200-event warm-up; `max` sends "
               f"{mc['clickpipe']:,} events (sequential peers {mc['naive']:,}) as fast as the "
               "system answers (at most 20,000 outstanding); throughput = events answered per "
               "second. CPU is % of one core, averaged over the measured run; RSS is the peak of "
               "0.5 s samples.")
    out.append("")
    out.append(summary_table(results))
    rt = ratios(results)
    if rt:
        out += ["", "Ratios:", "", rt]
    tg = targets(results, overloads)
    if tg:
        out += ["", "Targets of the benchmark issue:", "", tg]
    for o in overloads:
        if "error" in o:
            out.append(f"\nOverload, {LABELS[o['system']]} on {o['broker']}: failed: {o['error']}")
    ol = [o for o in overloads if "lag" in o]
    if ol:
        out += ["", f"Overload (model +200 ms per call, `model.max_batch_size` 16, input "
                f"{ol[0]['rate']:,}/s for {ol[0]['duration']} s):", "",
                "| broker | system | peak RSS | lag at end | survived |", "|---|---|---|---|---|"]
        for o in ol:
            out.append(f"| {o['broker']} | {LABELS[o['system']]} | {o['peak_rss_mb']:.0f} MB "
                       f"| {o['final_lag']:,} | {'yes' if o['survived'] else 'no'} |")
    for name, path in svgs:
        out += ["", f"![{name}]({path})"]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        cmd = ["cargo", "build", "--locked", "-p", "clickpipe", "-p", "clickpipe-bench"]
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


def publish(args, md, workdir):
    """Prints the report, keeps it in the work directory and, with --record, appends it to
    bench/RESULTS.md."""
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(md)
    print(md)
    if args.record:
        with open(os.path.join(BENCH, "RESULTS.md"), "a") as f:
            f.write("\n" + md)
        log("appended to bench/RESULTS.md")


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


def report(args, results, overloads, started, ended, workdir):
    """Plots, the markdown summary (and with --record, RESULTS.md); the exit code."""
    stamp = started.strftime("%Y%m%d-%H%M")
    svgs = []
    plot_dir = os.path.join(BENCH, "plots") if args.record else workdir
    os.makedirs(plot_dir, exist_ok=True)
    lat_svg = os.path.join(plot_dir, f"latency-{stamp}.svg")
    if any(r["rate"] and "report" in r for r in results):
        svg_latency(results, lat_svg, f"{started:%Y-%m-%d}, commit {args.commit}")
        svgs.append(("latency percentiles vs rate",
                     os.path.relpath(lat_svg, BENCH) if args.record else lat_svg))
    for b in sorted({o["broker"] for o in overloads}):
        ov_svg = os.path.join(plot_dir, f"overload-{b}-{stamp}.svg")
        name = "Apache Kafka" if b == "kafka" else "MockCluster"
        if svg_overload([o for o in overloads if o["broker"] == b], ov_svg,
                        f"model +200 ms per call; input {args.overload_rate:,}/s "
                        f"for {args.overload_duration} s; {name}"):
            svgs.append((f"RSS and lag under overload, {name}",
                         os.path.relpath(ov_svg, BENCH) if args.record else ov_svg))
    publish(args, report_md(args, results, overloads, svgs, started, ended), workdir)
    # The sequential peers may fall behind at high rates (reported, not a failure); clickpipe and
    # the passthrough must answer every event, and in a smoke run every system must.
    failed = [r for r in results if not r["ok"]
              and (args.smoke or r["system"] in ("clickpipe", "passthrough") or "error" in r)]
    if failed:
        log(f"{len(failed)} measurement(s) lost events or failed: "
            + ", ".join(f"{r['system']}@{r['rate'] or 'max'}/{r['broker']}" for r in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
