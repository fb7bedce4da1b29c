#!/usr/bin/env python3
"""clickpipe chaos soak.

Runs the pipeline for N minutes at a steady input rate with a share of poison records, while it
injects, at random: kill -9 of a clickpipe instance, model 5xx / 4xx / timeouts / outages, Redis
restarts, broker restarts, and operator pauses, seeks and replays. Then it heals everything,
waits for every partition to be finished and committed, stops cleanly, and reads the broker's
log files to check that every input record has its output or dead letter.

  bench/chaos.py                         # 10 minutes, 2,000 events/s, 1 % poison, 2 instances
  bench/chaos.py --minutes 2 --rate 500  # shorter
  bench/chaos.py ... --record            # append the figures to bench/RESULTS.md

Pass/fail (exit 1 on a failure): 0 lost records, 0 stuck partitions (every partition's lag is 0
within --settle-s of healing), duplicates within the bound the README's delivery guarantees
state, RSS bounded (the peak of the second half of the run at most 1.5× the first half's plus
64 MB). Needs the release build (built here unless --no-build), Redis, Java and the Kafka jars
(scripts/services.sh install redis kafka). Standard library only; reuses bench/run.py.
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402  (bench/harness/: processes, broker ports, segment decoding)

TOKEN = "chaos-token"
MODEL_BACKEND_PORT = h.MODEL_PORT + 1
MAX_IN_FLIGHT = 2000
COMMIT_INTERVAL_MS = 1000
MODEL_TIMEOUT_MS = 500


def log(msg):
    print(f"chaos [{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# The model, behind a proxy that injects faults
# ------------------------------------------------------------------------------------------------


class ModelProxy:
    """An HTTP proxy in front of the reference model server. `mode`: ok, 5xx (every call answers
    500, /ping answers), 4xx (a share of the calls answer 400), timeout (calls answer after the
    client's timeout), outage (connections are closed without an answer, /ping too)."""

    def __init__(self, port, backend_port):
        self.mode = "ok"
        self.calls = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (its timeout)

            def _forward(self, method, body=None):
                conn = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=10)
                try:
                    conn.request(method, self.path, body=body,
                                 headers={"content-type": "application/json"})
                    r = conn.getresponse()
                    self._answer(r.status, r.read(), r.getheader("content-type") or "text/plain")
                finally:
                    conn.close()

            def do_GET(self):
                if proxy.mode == "outage":
                    self.close_connection = True
                    return
                self._forward("GET")

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                proxy.calls += 1
                mode = proxy.mode
                if mode == "outage":
                    self.close_connection = True
                    return
                if mode == "5xx":
                    return self._answer(500, b"injected internal error", "text/plain")
                if mode == "4xx" and random.random() < 0.2:
                    return self._answer(400, b'{"error":"injected refusal"}')
                if mode == "timeout":
                    time.sleep(MODEL_TIMEOUT_MS / 1000 + 0.5)
                self._forward("POST", body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


# ------------------------------------------------------------------------------------------------
# Broker, instances
# ------------------------------------------------------------------------------------------------


class Kafka:
    """One Apache Kafka node (scripts/services.sh kafka-run) that keeps its data across restarts."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port, self.cport = h.kafka_ports()
        self.address = f"127.0.0.1:{self.port}"
        self.dir = os.path.join(workdir, "kafka")
        self.data = os.path.join(self.dir, "data")  # where kafka-run keeps the log
        self.proc = None
        self.starts = 0
        self.start()
        e = dict(os.environ, CLICKPIPE_KAFKA_PORT=str(self.port), PARTITIONS=str(h.PARTITIONS),
                 CLICKPIPE_START_TIMEOUT="60")
        subprocess.run([h.SERVICES, "topics", *h.TOPICS], cwd=h.ROOT, env=e, check=True,
                       capture_output=True)

    def start(self):
        self.starts += 1
        self.proc = h.Proc(f"kafka-{self.starts}",
                           [h.SERVICES, "kafka-run", self.dir, str(self.port), str(self.cport)],
                           dict(os.environ), self.workdir)
        deadline = time.time() + 90
        while not h.tcp_open(self.port):
            if not self.proc.alive() or time.time() > deadline:
                raise RuntimeError(f"kafka did not start: {h.tail(self.proc.log_path)}")
            time.sleep(0.1)

    def stop(self):
        self.proc.stop(timeout=30)


class Instance:
    """One `clickpipe run`, with its admin API on its own port."""

    def __init__(self, env, kafka, name, port):
        self.env, self.name, self.port = env, name, port
        self.vars = env.base_env(kafka.address)
        self.vars.update({
            "CLICKPIPE__ADMIN__LISTEN": f"127.0.0.1:{port}",
            "CLICKPIPE__ADMIN__TOKEN": TOKEN,
            "CLICKPIPE__MODEL__URL": f"http://127.0.0.1:{h.MODEL_PORT}",
            "CLICKPIPE__MODEL__TIMEOUT_MS": str(MODEL_TIMEOUT_MS),
            "CLICKPIPE__PIPELINE__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
            "CLICKPIPE__KAFKA__COMMIT_INTERVAL_MS": str(COMMIT_INTERVAL_MS),
            "CLICKPIPE__LOG__LEVEL": "warn",
        })
        self.proc = None
        self.starts = 0
        self.rss = []  # (time, MB)

    def start(self):
        self.starts += 1
        self.proc = h.Proc(f"{self.name}-{self.starts}", [self.env.exe("clickpipe"), "run"],
                           self.vars, self.env.workdir)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.p.wait()
        self.proc.log.close()

    def sample_rss(self):
        if not self.alive():
            return
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.rss.append((time.time(), int(line.split()[1]) / 1024))
        except OSError:
            pass

    def api(self, method, path, body=None, timeout=5):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (OSError, ValueError) as e:
            return None, str(e)

    def partitions(self):
        code, st = self.api("GET", "/status")
        return st["partitions"] if code == 200 else []


# ------------------------------------------------------------------------------------------------
# Reading the broker's log: records with offsets and headers
# ------------------------------------------------------------------------------------------------


def read_records(path):
    """Yields (offset, value, headers dict) of every data record of a Kafka log segment."""
    with open(path, "rb") as f:
        data = f.read()
    pos, n = 0, len(data)
    while pos + 61 <= n:
        base_offset = int.from_bytes(data[pos:pos + 8], "big", signed=True)
        length = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
        end = pos + 12 + length
        if length < 49 or end > n:
            break
        attrs = int.from_bytes(data[pos + 21:pos + 23], "big")
        count = int.from_bytes(data[pos + 57:pos + 61], "big", signed=True)
        if data[pos + 16] != 2 or attrs & 0x20:
            pos = end
            continue
        body = data[pos + 61:end]
        if attrs & 0x07 == 1:
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif attrs & 0x07:
            raise RuntimeError(f"{path}: compression codec {attrs & 7} not readable here")
        i = 0
        for _ in range(count):
            size, i = h._zigzag(body, i)
            rec_end = i + size
            i += 1
            _, i = h._zigzag(body, i)  # timestamp delta
            delta, i = h._zigzag(body, i)
            klen, i = h._zigzag(body, i)
            i += max(klen, 0)
            vlen, i = h._zigzag(body, i)
            value = body[i:i + vlen] if vlen > 0 else b""
            i += max(vlen, 0)
            nh, i = h._zigzag(body, i)
            headers = {}
            for _ in range(nh):
                hk, i = h._zigzag(body, i)
                key = body[i:i + hk].decode("utf-8", "replace")
                i += hk
                hv, i = h._zigzag(body, i)
                headers[key] = body[i:i + hv].decode("utf-8", "replace") if hv >= 0 else None
                i += max(hv, 0)
            yield base_offset + delta, value, headers
            i = rec_end
        pos = end


def read_topic(data_dir, topic):
    """{partition: [(offset, value, headers)]} of `topic` in a stopped broker's log directory."""
    out = {}
    for part, path in h.topic_segments(data_dir, topic):
        out.setdefault(part, []).extend(read_records(path))
    return out


def account(data_dir):
    """Every input record against the outputs and dead letters that name it as their source."""
    inputs = {(p, o) for p, rows in read_topic(data_dir, h.TOPICS[0]).items() for o, _, _ in rows}
    seen = {}
    kinds = {}
    for topic in h.TOPICS[1:]:
        for rows in read_topic(data_dir, topic).values():
            for _, _, hd in rows:
                try:
                    key = (int(hd["clickpipe.source.partition"]), int(hd["clickpipe.source.offset"]))
                except (KeyError, TypeError, ValueError):
                    continue
                seen[key] = seen.get(key, 0) + 1
                if topic == h.TOPICS[2]:
                    k = hd.get("clickpipe.error.kind", "?")
                    kinds[k] = kinds.get(k, 0) + 1
    lost = sorted(inputs - set(seen))
    results = sum(seen.values())
    return {
        "inputs": len(inputs),
        "results": results,
        "lost": len(lost),
        "lost_sample": lost[:10],
        "duplicates": results - len(set(seen) & inputs),
        "dead_letters": kinds,
    }


# ------------------------------------------------------------------------------------------------
# The soak
# ------------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, args, env, kafka, proxy, instances):
        self.args, self.env, self.kafka, self.proxy = args, env, kafka, proxy
        self.instances = instances
        self.events = []  # (time, action, detail)
        self.counts = {}
        self.rng = random.Random(args.seed)

    def note(self, action, detail=""):
        self.events.append((time.time(), action, detail))
        self.counts[action] = self.counts.get(action, 0) + 1
        log(f"{action} {detail}")

    def owned(self):
        """(instance, partition status) of every partition an instance reports."""
        return [(i, p) for i in self.instances if i.alive() for p in i.partitions()]

    def model_fault(self, mode, seconds):
        self.note(f"model_{mode}", f"{seconds:.1f} s")
        self.proxy.mode = mode
        time.sleep(seconds)
        self.proxy.mode = "ok"

    def act(self):
        r = self.rng
        action = r.choice(["kill", "kill", "model_5xx", "model_4xx", "model_timeout",
                           "model_outage", "redis", "broker", "pause", "seek", "replay"])
        if action == "kill":
            i = r.choice(self.instances)
            if i.alive():
                i.kill()
                self.note("kill -9", i.name)
                time.sleep(r.uniform(1, 4))
                i.start()
        elif action.startswith("model_"):
            self.model_fault(action[6:], r.uniform(3, 8))
        elif action == "redis":
            self.note("redis restart")
            restart_redis(self.env, r.uniform(1, 4))
        elif action == "broker":
            self.note("broker restart")
            self.kafka.stop()
            time.sleep(r.uniform(1, 3))
            self.kafka.start()
        elif action in ("pause", "seek"):
            owned = self.owned()
            if not owned:
                return
            i, p = r.choice(owned)
            if action == "pause":
                code, _ = i.api("POST", f"/partitions/{p['partition']}/pause")
                self.note("pause", f"{i.name} p{p['partition']} -> {code}")
                time.sleep(r.uniform(1, 5))
                code, _ = i.api("POST", f"/partitions/{p['partition']}/resume")
                self.note("resume", f"{i.name} p{p['partition']} -> {code}")
            else:
                to = max(0, (p.get("committed_offset") or 0) - r.randint(50, 500))
                code, _ = i.api("POST", f"/partitions/{p['partition']}/seek", {"offset": to})
                self.note("seek", f"{i.name} p{p['partition']} to {to} -> {code}")
        elif action == "replay":
            live = [i for i in self.instances if i.alive()]
            if live:
                code, body = r.choice(live).api(
                    "POST", "/replay", {"kinds": ["inference_failed", "lookup_failed"],
                                        "limit": 5000})
                self.note("replay", f"-> {code} {body}")

    def run(self, until):
        while time.time() < until:
            time.sleep(self.rng.uniform(self.args.min_gap_s, self.args.max_gap_s))
            if time.time() >= until:
                break
            try:
                self.act()
            except Exception as e:  # an injector failing must not end the soak
                self.note("injector error", repr(e))
            for i in self.instances:
                if not i.alive():
                    self.note("instance exited", f"{i.name}: {h.tail(i.proc.log_path, 5)}")
                    i.start()


def restart_redis(env, down_s):
    """Stops Redis, waits `down_s`, starts it again (empty: it keeps nothing) and loads the ZIPs."""
    env.redis.stop()
    time.sleep(down_s)
    env.redis_starts = getattr(env, "redis_starts", 1) + 1
    env.redis = h.Proc(f"redis-{env.redis_starts}",
                       ["redis-server", "--bind", "127.0.0.1", "--port", str(h.REDIS_PORT),
                        "--save", "", "--appendonly", "no"], dict(os.environ), env.workdir)
    env.redis.wait_for_line("Ready to accept connections", 10)
    subprocess.run([env.exe("clickpipe"), "seed-redis", "--csv", "config/zips.csv"], cwd=h.ROOT,
                   env=env.base_env("127.0.0.1:1"), check=True, capture_output=True)


def sampler(instances, stop):
    while not stop.is_set():
        for i in instances:
            i.sample_rss()
        stop.wait(1)


def settle(instances, timeout):
    """Waits until the instances together report every partition with lag 0; returns the seconds
    it took, or None (the partitions still behind are logged)."""
    t0 = time.time()
    last = None
    while time.time() - t0 < timeout:
        parts = {}
        for i in instances:
            for p in i.partitions():
                parts[p["partition"]] = p
        last = parts
        if len(parts) == h.PARTITIONS and all(p.get("lag") == 0 for p in parts.values()):
            return time.time() - t0
        time.sleep(1)
    log(f"not settled: {json.dumps(last)}")
    return None


def rss_figures(instances, start, end):
    mid = (start + end) / 2
    first = [mb for i in instances for t, mb in i.rss if t < mid]
    second = [mb for i in instances for t, mb in i.rss if t >= mid]
    return (max(first, default=0), max(second, default=0))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--poison", type=float, default=0.01)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--min-gap-s", type=float, default=5)
    ap.add_argument("--max-gap-s", type=float, default=15)
    ap.add_argument("--settle-s", type=float, default=180)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--debug", action="store_true", help="use the debug build")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    ap.add_argument("--out", help="directory for logs (default: a temp dir, kept)")
    args = ap.parse_args()

    if not args.no_build:
        cmd = ["cargo", "build", "--no-default-features", "--bin", "clickpipe"] + \
            ([] if args.debug else ["--release"])
        subprocess.run(cmd, cwd=h.ROOT, check=True)
    workdir = args.out or tempfile.mkdtemp(prefix="clickpipe-chaos-")
    os.makedirs(workdir, exist_ok=True)
    log(f"logs in {workdir}")
    cfg = os.path.join(workdir, "chaos.toml")
    with open(cfg, "w") as f:
        f.write("")
    # The load generator's records wait out a broker restart instead of timing out (clickpipe's
    # producers keep their default: they send a timed-out record again).
    loadgen_cfg = os.path.join(workdir, "loadgen.toml")
    with open(loadgen_cfg, "w") as f:
        f.write('[kafka.producer]\n"message.timeout.ms" = "600000"\n')
    args.config = cfg
    env = h.Env(args, workdir)
    kafka = proxy = model = loadgen = None
    instances = []
    stop_sampling = threading.Event()
    started = time.time()
    ok = False
    try:
        env.start_redis()
        kafka = Kafka(workdir)
        log(f"kafka on {kafka.address}")
        mvars = env.base_env("127.0.0.1:1")
        mvars["CLICKPIPE__MODEL_SERVER__LISTEN"] = f"127.0.0.1:{MODEL_BACKEND_PORT}"
        model = h.Proc("model-server", [env.exe("clickpipe"), "model-server"], mvars, workdir)
        h.wait_http(f"http://127.0.0.1:{MODEL_BACKEND_PORT}/ping", 20, model)
        proxy = ModelProxy(h.MODEL_PORT, MODEL_BACKEND_PORT)
        instances = [Instance(env, kafka, f"clickpipe-{n}", h.ADMIN_PORT + n)
                     for n in range(args.instances)]
        for i in instances:
            i.start()
        threading.Thread(target=sampler, args=(instances, stop_sampling), daemon=True).start()
        count = int(args.rate * args.minutes * 60)
        lvars = env.base_env(kafka.address)
        lvars["CLICKPIPE__LOADGEN__POISON_RATIO"] = str(args.poison)
        lvars["CLICKPIPE_CONFIG"] = loadgen_cfg
        loadgen = h.Proc("loadgen", [env.exe("clickpipe"), "loadgen", "--rate", str(args.rate),
                                     "--count", str(count), "--no-summary", "--seed", "14"],
                         lvars, workdir)
        load_started = time.time()
        soak = Soak(args, env, kafka, proxy, instances)
        soak.run(load_started + args.minutes * 60)
        log("load done; healing")
        proxy.mode = "ok"
        loadgen.p.wait(timeout=300)
        load_ended = time.time()
        for i in instances:
            if not i.alive():
                i.start()
        settled = settle(instances, args.settle_s)
        stop_sampling.set()
        first_half, second_half = rss_figures(instances, load_started, load_ended)
        for i in instances:
            i.proc.stop(timeout=60)
        kafka.stop()
        acc = account(kafka.data)
        dup_bound = (soak.counts.get("kill -9", 0) + soak.counts.get("broker restart", 0)
                     + soak.counts.get("seek", 0) + 1) * h.PARTITIONS * MAX_IN_FLIGHT
        rss_ok = second_half <= first_half * 1.5 + 64
        ok = (acc["lost"] == 0 and settled is not None and acc["duplicates"] <= dup_bound
              and rss_ok and loadgen.p.returncode == 0)
        result = {
            "minutes": args.minutes, "rate": args.rate, "poison": args.poison,
            "instances": args.instances, "faults": soak.counts, **acc,
            "duplicate_bound": dup_bound, "settled_s": settled,
            "rss_first_half_mb": first_half, "rss_second_half_mb": second_half,
            "loadgen_exit": loadgen.p.returncode, "passed": ok,
            "wall_s": time.time() - started,
        }
        with open(os.path.join(workdir, "chaos.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
        if args.record:
            record(result)
    finally:
        stop_sampling.set()
        for i in instances:
            if i.alive():
                i.proc.stop()
        if loadgen and loadgen.alive():
            loadgen.stop()
        if proxy:
            proxy.stop()
        if model:
            model.stop()
        if kafka and kafka.proc.alive():
            kafka.stop()
        if env.redis:
            env.redis.stop()
    return 0 if ok else 1


def record(r):
    faults = ", ".join(f"{k} {v}" for k, v in sorted(r["faults"].items()))
    dl = ", ".join(f"{k} {v:,}" for k, v in sorted(r["dead_letters"].items()))
    text = f"""
## Chaos soak — {datetime.date.today().isoformat()}

`bench/chaos.py --minutes {r['minutes']:g} --rate {r['rate']}` on {h.machine()}, Apache Kafka
{h.kafka_version()} (one node, restarted during the run), {r['instances']} clickpipe instances
(release build), {r['poison'] * 100:g} % poison inputs, commit {h.commit()}.

| figure | value |
|---|---|
| inputs (incl. replays) | {r['inputs']:,} |
| outputs + dead letters | {r['results']:,} ({dl}) |
| **lost** | **{r['lost']}** |
| duplicates (bound) | {r['duplicates']:,} ({r['duplicate_bound']:,}) |
| stuck partitions | {0 if r['settled_s'] is not None else 'some'} (all committed to the end {r['settled_s'] and round(r['settled_s'], 1)} s after healing) |
| RSS peak, first / second half | {r['rss_first_half_mb']:.0f} / {r['rss_second_half_mb']:.0f} MB |
| faults injected | {faults} |
| result | {'passed' if r['passed'] else 'FAILED'} |
"""
    with open(os.path.join(h.BENCH, "RESULTS.md"), "a") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
