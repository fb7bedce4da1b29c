"""SVG plots of the report: latency percentiles vs rate, RSS and lag under overload."""

from .common import ALL_SYSTEMS, LABELS


COLORS = {"clickpipe": "#d62728", "passthrough": "#7f7f7f", "naive": "#1f77b4", "quix": "#2ca02c",
          "clickpipe-traced-1": "#ff7f0e", "clickpipe-traced-100": "#9467bd",
          "clickpipe-eos": "#8c564b", "clickpipe-features": "#17becf"}


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
