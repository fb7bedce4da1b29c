"""Kafka log segments read from a stopped broker's log directory (record batch format v2)."""

import os
import re
import struct
import zlib


EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]*)"')


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
