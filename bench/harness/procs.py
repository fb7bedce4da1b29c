"""Processes: children with their output in a log file, and /proc sampling of CPU and RSS."""

import os
import signal
import subprocess
import threading
import time

from .common import CLK_TCK, ROOT, log


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
