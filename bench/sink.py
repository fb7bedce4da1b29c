#!/usr/bin/env python3
"""Benchmark of `clickpipe sink s3`: records/s into S3 at max, object sizes, and the lag from an
output record to its object at a steady rate. Against the local services (scripts/services.sh:
Apache Kafka, Redis) and moto's S3 (scripts/services.sh install moto); a release build.

  bench/sink.py [--count 200000] [--rate 2000] [--duration 30] [--format parquet|jsonl] [--no-build]

1. Fills a fresh output topic with real predictions: seed-redis, the reference model server,
   `clickpipe run` and `clickpipe loadgen --rate 0 --count N`.
2. Catch-up: starts the sink on that topic (s3.max_records 100,000) and times it until its log
   has committed every record: records/s, objects, bytes per object and per record.
3. Steady: a second topic and the sink running while loadgen sends --rate events/s through the
   pipeline (s3.max_interval_ms 1,000): lag = when the flush holding a record was committed
   (the sink's log line) − the record's processed_at (Parquet only).
The sink's CPU time and peak RSS come from /proc; its own lag histogram from GET /status.
Prints the figures as JSON.
"""
import argparse, datetime, json, os, re, signal, subprocess, sys, tempfile, time, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("CLICKPIPE_TOOLS", os.path.expanduser("~/.cache/clickpipe"))
MOTO = os.path.join(TOOLS, "moto")
EXE = os.path.join(ROOT, "target", "release", "clickpipe")
BROKERS = "127.0.0.1:9092"
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def log(msg):
    print(f"sink-bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def python(script, *args, moto_url):
    out = subprocess.run([os.path.join(MOTO, "bin", "python"), "-c", script, *args], check=True,
                         capture_output=True, text=True, env={**os.environ, **AWS, "MOTO_URL": moto_url})
    return out.stdout


def env_for(tag, output, moto_url, admin_port, model_port, extra=None):
    e = {**os.environ, **AWS,
         "CLICKPIPE__KAFKA__BROKERS": BROKERS,
         "CLICKPIPE__KAFKA__INPUT_TOPIC": f"{tag}-in",
         "CLICKPIPE__KAFKA__OUTPUT_TOPIC": output,
         "CLICKPIPE__KAFKA__DLQ_TOPIC": f"{tag}-dlq",
         "CLICKPIPE__KAFKA__GROUP_ID": f"{tag}-group",
         "CLICKPIPE__MODEL__URL": f"http://127.0.0.1:{model_port}",
         "CLICKPIPE__MODEL_SERVER__LISTEN": f"127.0.0.1:{model_port}",
         "CLICKPIPE__ADMIN__LISTEN": f"127.0.0.1:{admin_port}",
         "CLICKPIPE__S3__BUCKET": "bench",
         "CLICKPIPE__S3__ENDPOINT_URL": moto_url,
         "CLICKPIPE__S3__FORCE_PATH_STYLE": "true",
         "CLICKPIPE__S3__GROUP_ID": f"{tag}-sink",
         "CLICKPIPE__LOG__LEVEL": "info",
         "CLICKPIPE__LOG__FORMAT": "json"}
    e.update(extra or {})
    return e


def topics(*names):
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), "topics", *names], check=True,
                   capture_output=True)


def flushes(path):
    """The sink's flush log lines: (time, partition, commit offset, records)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            fields = j.get("fields", {})
            if "flushed and committed" not in str(fields.get("message", "")):
                continue
            t = datetime.datetime.fromisoformat(j["timestamp"].replace("Z", "+00:00"))
            out.append((t, int(fields.get("partition", -1)), int(fields.get("offset", 0)),
                        int(fields.get("records", 0))))
    return out


def records(moto_url, prefix):
    """(partition, offset, processed_at epoch ms) of every record under a prefix (Parquet)."""
    return json.loads(python(r"""
import boto3, duckdb, json, os, sys, tempfile
s3 = boto3.client('s3', endpoint_url=os.environ['MOTO_URL'])
root = tempfile.mkdtemp()
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='bench', Prefix=sys.argv[1] + '/'):
    for o in page.get('Contents', []):
        path = os.path.join(root, o['Key'])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file('bench', o['Key'], path)
rows = duckdb.sql(f"SELECT kafka_partition, kafka_offset, epoch_ms(processed_at) FROM read_parquet('{root}/**/*.parquet')").fetchall()
print(json.dumps(rows))
""", prefix, moto_url=moto_url))


def usage(pid):
    """(CPU seconds used, peak RSS in MB) of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    return cpu, peak / 1024


def sink_status(port):
    """The sink's GET /status."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as r:
        return json.loads(r.read())


def percentile(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def objects(moto_url, prefix):
    return json.loads(python(r"""
import boto3, json, os, sys
s3 = boto3.client('s3', endpoint_url=os.environ['MOTO_URL'])
out = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='bench', Prefix=sys.argv[1] + '/'):
    out += [[o['Key'], o['Size']] for o in page.get('Contents', [])]
print(json.dumps(out))
""", prefix, moto_url=moto_url))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--format", default="parquet", choices=["parquet", "jsonl"])
    ap.add_argument("--no-build", action="store_true", help="use target/release/clickpipe as it is")
    args = ap.parse_args()
    if not args.no_build:
        # With the default features: the sink needs the `aws` feature.
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "clickpipe"], cwd=ROOT,
                       check=True)
    work = tempfile.mkdtemp(prefix="clickpipe-sink-bench-")
    procs = []

    def start(name, argv, env):
        f = open(os.path.join(work, f"{name}.log"), "w")
        p = subprocess.Popen(argv, env=env, stdout=f, stderr=f, cwd=ROOT)
        procs.append(p)
        return p

    try:
        moto_port, admin_port, model_port = free_port(), free_port(), free_port()
        moto_url = f"http://127.0.0.1:{moto_port}"
        start("moto", [os.path.join(MOTO, "bin", "moto_server"), "-H", "127.0.0.1", "-p",
                       str(moto_port)], os.environ)
        time.sleep(2)
        python("import boto3, os\nboto3.client('s3', endpoint_url=os.environ['MOTO_URL'])"
               ".create_bucket(Bucket='bench')", moto_url=moto_url)
        tag = f"sinkbench-{uuid.uuid4().hex[:8]}"
        fmt = {"CLICKPIPE__S3__FORMAT": args.format}

        # 1. Fill the output topic.
        full = f"{tag}-full"
        topics(f"{tag}-in", full, f"{tag}-dlq", f"{tag}-steady", f"{tag}-in2")
        e = env_for(tag, full, moto_url, admin_port, model_port)
        subprocess.run([EXE, "seed-redis", "--csv", "config/zips.csv"], env=e, check=True,
                       capture_output=True, cwd=ROOT)
        start("model", [EXE, "model-server"], e)
        run = start("run", [EXE, "run"], e)
        time.sleep(3)
        t = time.monotonic()
        subprocess.run([EXE, "loadgen", "--rate", "0", "--count", str(args.count)], env=e,
                       check=True, capture_output=True, cwd=ROOT)
        log(f"{args.count:,} predictions in {full} after {time.monotonic() - t:.1f} s")
        run.send_signal(signal.SIGTERM)
        run.wait(60)

        # 2. Catch-up at max.
        sink_log = os.path.join(work, "sink-max.log")
        sink_port = free_port()
        fmt["CLICKPIPE__S3__LISTEN"] = f"127.0.0.1:{sink_port}"
        e2 = env_for(tag, full, moto_url, admin_port, model_port,
                     {**fmt, "CLICKPIPE__S3__PREFIX": "max", "CLICKPIPE__S3__MAX_INTERVAL_MS": "2000"})
        f = open(sink_log, "w")
        t0 = time.monotonic()
        sink = subprocess.Popen([EXE, "sink", "s3"], env=e2, stdout=f, stderr=f, cwd=ROOT)
        procs.append(sink)
        while sum(f[3] for f in flushes(sink_log)) < args.count:
            if time.monotonic() - t0 > 600:
                raise RuntimeError("the sink did not catch up within 10 minutes")
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        max_cpu_s, max_rss_mb = usage(sink.pid)
        sink.send_signal(signal.SIGTERM)
        sink.wait(60)
        objs = objects(moto_url, "max")
        sizes = [s for _, s in objs]
        total = sum(sizes)
        log(f"catch-up: {args.count:,} records in {elapsed:.1f} s, {len(objs)} objects, {total:,} bytes")

        # 3. Steady rate: lag from processed_at to the flush that wrote the record.
        steady = f"{tag}-steady"
        e3 = env_for(tag, steady, moto_url, admin_port, model_port,
                     {**fmt, "CLICKPIPE__S3__PREFIX": "steady", "CLICKPIPE__S3__MAX_INTERVAL_MS": "1000",
                      "CLICKPIPE__KAFKA__GROUP_ID": f"{tag}-group2",
                      "CLICKPIPE__KAFKA__INPUT_TOPIC": f"{tag}-in2"})
        run = start("run2", [EXE, "run"], e3)
        steady_log = os.path.join(work, "sink-steady.log")
        f = open(steady_log, "w")
        sink = subprocess.Popen([EXE, "sink", "s3"], env=e3, stdout=f, stderr=f, cwd=ROOT)
        procs.append(sink)
        time.sleep(3)
        n = args.rate * args.duration
        subprocess.run([EXE, "loadgen", "--rate", str(args.rate), "--count", str(n)], env=e3,
                       check=True, capture_output=True, cwd=ROOT)
        deadline = time.monotonic() + 60
        while sum(f[3] for f in flushes(steady_log)) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        steady_cpu_s, steady_rss_mb = usage(sink.pid)
        endpoint = sink_status(sink_port)
        # Lag of a record = when the flush that wrote it was committed − its processed_at.
        fl = sorted(flushes(steady_log), key=lambda f: (f[1], f[2]))
        lags = []
        if args.format == "parquet":
            ends = {}
            for t, p, off, _ in fl:
                ends.setdefault(p, []).append((off, t.timestamp() * 1000))
            for p, o, processed_ms in records(moto_url, "steady"):
                flush_ms = next((ms for end, ms in ends.get(p, []) if o < end), None)
                if flush_ms is not None and processed_ms is not None:
                    lags.append(flush_ms - processed_ms)
            lags.sort()
        steady_objs = objects(moto_url, "steady")
        result = {
            "count": args.count, "format": args.format, "elapsed_s": elapsed,
            "records_per_s": args.count / elapsed, "objects": len(objs),
            "bytes": total, "bytes_per_record": total / args.count,
            "object_bytes_median": sorted(sizes)[len(sizes) // 2] if sizes else None,
            "steady_rate": args.rate, "steady_records": sum(f[3] for f in fl),
            "steady_flushes": len(fl), "steady_objects": len(steady_objs),
            "lag_ms_p50": percentile(lags, 0.5), "lag_ms_p99": percentile(lags, 0.99),
            "lag_ms_max": lags[-1] if lags else None,
            "catch_up_cpu_s": max_cpu_s, "catch_up_peak_rss_mb": max_rss_mb,
            "steady_cpu_s": steady_cpu_s, "steady_peak_rss_mb": steady_rss_mb,
            "endpoint_lag_p50_s": endpoint.get("lag_p50_seconds"),
            "endpoint_lag_p99_s": endpoint.get("lag_p99_seconds"),
        }
        print(json.dumps(result, indent=1))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        log(f"logs in {work}")


if __name__ == "__main__":
    main()
