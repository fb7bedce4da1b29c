"""Services: the run's environment (Redis, model server, OTLP sink) and the brokers."""

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

from .common import (ADMIN_PORT, KAFKA_PORT_BASE, KAFKA_SHARED_WARMUP_S, KAFKA_WARMUP_EVENTS,
                     KAFKA_WARMUP_RATE, MODEL_PORT, OTLP_PORT, PARTITIONS, REDIS_PORT, ROOT,
                     SERVICES, TOPICS, WARMUP_TOPICS, log)
from .formatting import fmt_mb
from .procs import Proc, tail


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
