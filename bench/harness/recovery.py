"""Recovery and rebalancing (`--recovery`): kill -9 and restart, a second instance joining and
leaving, per consumer group mode; figures from the broker's log afterwards."""

import datetime
import json
import os
import re
import signal
import time
import urllib.request

from .common import ADMIN_PORT, PARTITIONS, TOPICS, log
from .formatting import fmt_ms, fmt_pause, fmt_s, mb_range
from .procs import Proc, tail
from .reporting import machine, publish
from .segments import read_topic
from .services import Broker, kafka_version
from .systems import loadgen


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
