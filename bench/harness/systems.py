"""Systems under test: starting them, the load generator, one measurement (fixed rate, max,
overload) and the `--ingest` measurement."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

from .common import (ADMIN_PORT, BENCH, MAX_COUNT, MODEL_PORT, OTLP_PORT, QUIX_VENV, REDIS_PORT,
                     ROOT, TRACED, log)
from .formatting import fmt_mb, fmt_ms, fmt_pct, fmt_rate
from .procs import Proc, Sampler
from .services import Broker, SharedKafka, wait_http


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
    elif system in ("clickpipe", "clickpipe-eos", "clickpipe-features"):
        e.update(kv.split("=", 1) for kv in env.args.clickpipe_env)
        if system == "clickpipe-eos":
            # The load generator's consumer reads committed records (librdkafka's default
            # isolation.level), so its latencies include the wait for the transaction's commit.
            e["CLICKPIPE__KAFKA__DELIVERY"] = "exactly_once"
            if env.args.transaction_interval_ms:
                e["CLICKPIPE__KAFKA__TRANSACTION_INTERVAL_MS"] = env.args.transaction_interval_ms
        if system == "clickpipe-features":
            # The declared example set (unless --clickpipe-env names another): the built-in
            # features, a clock part, three windows, a session sum and the online store.
            e.setdefault("CLICKPIPE__FEATURES__SET",
                         os.path.join(ROOT, "config", "features", "example.toml"))
        p = Proc(f"{tag}-{system}", [env.exe("clickpipe"), "run"], e, env.workdir)
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
