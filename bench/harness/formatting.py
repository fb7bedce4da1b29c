"""Numbers as the reports and the progress lines show them."""


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
