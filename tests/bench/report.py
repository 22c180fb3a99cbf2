"""Turns a benchmark run (tests/bench/run.sh) into a table and a chart.

Reads OUT/raw.txt (scenario<TAB>key<TAB>value), OUT/commands.txt
(id<TAB>scenario<TAB>command), the latency histograms OUT/<scenario>.hist and the
per-second series OUT/<scenario>.csv that herald-load wrote. Writes
OUT/results.md and OUT/bench-latency.svg and prints the table. Standard library
only.
"""

import csv
import html
import math
import os
import platform
import sys


def load_raw(out):
    data = {}
    with open(os.path.join(out, "raw.txt")) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                data.setdefault(parts[0], {})[parts[1]] = parts[2]
    return data


def load_commands(out):
    cmds = []
    path = os.path.join(out, "commands.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    cmds.append(parts)
    return cmds


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return "%d CPUs (%s), %s RAM, Linux %s" % (os.cpu_count() or 0, model, mem, platform.release())


def fmt_int(v):
    v = num(v)
    return "n/a" if v is None else "{:,}".format(int(round(v)))


def fmt_ms(us):
    v = num(us)
    return "n/a" if v is None else "%.2f ms" % (v / 1000)


def verdict(ok):
    if ok is None:
        return "n/a"
    return "met" if ok else "**missed**"


def rows_for(data):
    """(scenario, figure, target, measured, verdict, command) rows."""
    rows = []

    def add(label, figure, target, measured, ok=None):
        rows.append((label, figure, target, measured, verdict(ok) if target != "" else "",
                     data.get(scen, {}).get("cmd", "")))

    for scen, label, rss_target in (("idle", "idle ws", 2048), ("idle_wss", "idle wss", 12288)):
        d = data.get(scen)
        if not d:
            continue
        est, want = num(d.get("subscribed")), num(d.get("connections"))
        add(label, "connections open and subscribed (%s workers)" % d.get("workers", "?"),
            fmt_int(want), fmt_int(est), est is not None and want is not None and est >= want)
        rss = num(d.get("rss_per_conn_bytes"))
        add(label, "gateway RSS per connection", "<= %d KiB" % (rss_target // 1024),
            "n/a" if rss is None else "%.2f KiB (%s B)" % (rss / 1024, fmt_int(rss)),
            None if rss is None else rss <= rss_target)
        cpu = num(d.get("idle_cpu_pct_per_10k"))
        add(label, "gateway CPU idle with pings, per 10k connections", "< 1% of a core",
            "n/a" if cpu is None else "%.3f%% (%.3f%% for all, %s s window; other processes "
            "%s CPU-s)" % (cpu, num(d.get("idle_cpu_pct")) or 0, d.get("idle_seconds", "?"),
                           d.get("other_cpu_s", "?")),
            None if cpu is None else cpu < 1.0)

    for scen, label in (("fanout", "fan-out"), ("many", "many channels")):
        d = data.get(scen)
        if not d:
            continue
        per_cpu = num(d.get("deliveries_per_cpu_s"))
        add(label, "deliveries per gateway CPU-second", ">= 1,000,000", fmt_int(per_cpu),
            None if per_cpu is None else per_cpu >= 1e6)
        add(label, "deliveries/s achieved (offered)", "",
            "%s (%s offered; in %s s: gateway %s CPU-s, load generator %s, redis %s, "
            "softirq %s, other processes %s)" % (
                fmt_int(d.get("achieved_per_s")), fmt_int(d.get("offered_per_s")),
                d.get("window_s", "?"), d.get("gateway_cpu_s", "?"), d.get("load_cpu_s", "?"),
                d.get("redis_cpu_s", "?"), d.get("softirq_cpu_s", "?"),
                d.get("other_cpu_s", "?")))
        p99 = num(d.get("p99_us"))
        add(label, "latency p50 / p99 / p99.9 / max", "p99 <= 5 ms",
            "%s / %s / %s / %s" % (fmt_ms(d.get("p50_us")), fmt_ms(d.get("p99_us")),
                                   fmt_ms(d.get("p999_us")), fmt_ms(d.get("max_us"))),
            None if p99 is None else p99 <= 5000)
        lost = sum(int(num(d.get(k)) or 0) for k in ("lost", "duplicates", "misrouted"))
        recv, exp = num(d.get("received")), num(d.get("expected"))
        missing = int(num(d.get("missing_end")) or 0)
        add(label, "loss (received / expected; lost, dup, misrouted, no end marker)", "0",
            "%s / %s; %s, %s, %s, %d" % (fmt_int(recv), fmt_int(exp), d.get("lost", "?"),
                                         d.get("duplicates", "?"), d.get("misrouted", "?"),
                                         missing),
            lost == 0 and missing == 0 and recv is not None and recv == exp)

    for scen, label, target in (("churn", "churn ws", 10000), ("churn_wss", "churn wss", None)):
        d = data.get(scen)
        if not d:
            continue
        rate = num(d.get("handshakes_per_s"))
        add(label, "connections/s: accept + upgrade + JWT + close" if target else
            "TLS connections/s: full handshake + upgrade + JWT + close",
            ">= 10,000/s" if target else "(none set)",
            "%s/s (%s handshakes, %s failed)" % (fmt_int(rate), fmt_int(d.get("handshakes")),
                                                 d.get("failed", "?")),
            None if rate is None or target is None else rate >= target)
        add(label, "handshakes per gateway CPU-second", "",
            "%s (gateway %s CPU-s, load generator %s, other processes %s; "
            "connect-to-connected p50 %s, p99 %s)" % (
                fmt_int(d.get("handshakes_per_cpu_s")), d.get("gateway_cpu_s", "?"),
                d.get("load_cpu_s", "?"), d.get("other_cpu_s", "?"),
                fmt_ms(d.get("p50_us")), fmt_ms(d.get("p99_us"))))
    return rows


def table(rows):
    head = ("scenario", "figure", "target", "measured", "verdict", "command")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


# ---- the chart -------------------------------------------------------------------

COLORS = {"fanout": "#1f77b4", "many": "#d62728"}
LABELS = {"fanout": "fan-out (1 ch x N subs)", "many": "many channels"}


def read_hist(path):
    pts = []
    if os.path.exists(path):
        with open(path) as f:
            next(f, None)
            for line in f:
                a = line.split()
                if len(a) == 2:
                    pts.append((int(a[0]), int(a[1])))
    return pts


def read_series(path):
    pts = []
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                pts.append((int(row["second"]), int(row["deliveries"]),
                            float(row["mean_latency_ms"]), float(row["max_latency_ms"])))
    return pts


def svg_chart(out, scenarios):
    W, H = 960, 450
    pw, ph = 400, 300  # plot areas
    left1, left2, top = 70, 550, 50
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="12">' % (W, H),
             '<rect width="100%" height="100%" fill="white"/>']

    def text(x, y, s, anchor="middle", size=12, rotate=None):
        rot = ' transform="rotate(%d %d %d)"' % (rotate, x, y) if rotate else ""
        parts.append('<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d"%s>%s</text>' % (
            x, y, anchor, size, rot, html.escape(s)))

    def frame(x0, title, xlabel, ylabel):
        parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>' % (
            x0, top, pw, ph))
        text(x0 + pw / 2, top - 15, title, size=14)
        text(x0 + pw / 2, top + ph + 38, xlabel)
        text(x0 - 58, top + ph / 2, ylabel, rotate=-90)

    # Left: latency CDF, x = latency (log ms), y = fraction of events at or below.
    hists = {s: read_hist(os.path.join(out, s + ".hist")) for s in scenarios}
    all_us = [u for h in hists.values() for u, _ in h]
    lo = max(0.01, min(all_us) / 1000) if all_us else 0.01
    hi = max(all_us) / 1000 if all_us else 10
    lx0, lx1 = math.floor(math.log10(lo)), math.ceil(math.log10(max(hi, lo * 10)))
    frame(left1, "Publish-to-receive latency (CDF)", "latency (ms, log scale)",
          "fraction of events <= x")

    def xmap(ms):
        v = math.log10(max(ms, 10 ** lx0))
        return left1 + (v - lx0) / (lx1 - lx0) * pw

    for e in range(lx0, lx1 + 1):
        x = xmap(10 ** e)
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (
            x, top, x, top + ph))
        text(x, top + ph + 16, ("%g" % (10 ** e)))
    for q in (0, 0.25, 0.5, 0.75, 0.9, 1.0):
        y = top + ph - q * ph
        parts.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (
            left1, y, left1 + pw, y))
        text(left1 - 6, y + 4, "%g" % q, anchor="end")
    x5 = xmap(5)
    parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" '
                 'stroke-dasharray="4 3"/>' % (x5, top, x5, top + ph))
    text(x5 + 3, top + 12, "5 ms (p99 target)", anchor="start", size=10)
    for s, h in hists.items():
        total = sum(c for _, c in h)
        if not total:
            continue
        seen, pts = 0, []
        for us, c in h:
            seen += c
            pts.append("%.1f,%.1f" % (xmap(us / 1000), top + ph - seen / total * ph))
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
            COLORS.get(s, "#000"), " ".join(pts)))

    # Right: deliveries per second over time, log scale (the scenarios differ 100x).
    series = {s: read_series(os.path.join(out, s + ".csv")) for s in scenarios}
    tmax = max([p[0] for v in series.values() for p in v] + [1])
    dmax = max([p[1] for v in series.values() for p in v] + [10])
    dmin = min([p[1] for v in series.values() for p in v if p[1] > 0] + [dmax])
    e0 = int(math.floor(math.log10(max(dmin, 1))))
    e1 = int(math.ceil(math.log10(dmax)))
    if e1 == e0:
        e1 += 1
    frame(left2, "Deliveries per second", "seconds since first delivery",
          "deliveries/s, all subscribers (log)")

    def ymap(d):
        v = math.log10(max(d, 10 ** e0))
        return top + ph - (v - e0) / (e1 - e0) * ph

    for e in range(e0, e1 + 1):
        y = ymap(10 ** e)
        parts.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (
            left2, y, left2 + pw, y))
        text(left2 - 6, y + 4, "{:,}".format(10 ** e), anchor="end", size=10)
    step = max(1, int(math.ceil(tmax / 10)))
    for t in range(0, tmax + 1, step):
        text(left2 + t / tmax * pw, top + ph + 16, str(t))
    for s, v in series.items():
        if not v:
            continue
        pts = " ".join("%.1f,%.1f" % (left2 + t / tmax * pw, ymap(d)) for t, d, _, _ in v)
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
            COLORS.get(s, "#000"), pts))

    # Legend
    y = H - 10
    x = left1
    for s in scenarios:
        parts.append('<rect x="%d" y="%d" width="14" height="4" fill="%s"/>' % (
            x, y - 4, COLORS.get(s, "#000")))
        text(x + 20, y, LABELS.get(s, s), anchor="start")
        x += 220
    parts.append("</svg>")
    path = os.path.join(out, "bench-latency.svg")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    return path


def main():
    out = sys.argv[1]
    data = load_raw(out)
    cmds = load_commands(out)
    rows = rows_for(data)
    run = data.get("run", {})
    chart_scen = [s for s in ("fanout", "many") if s in data]
    chart = svg_chart(out, chart_scen) if chart_scen else None
    md = ["# Herald benchmark results", "",
          "Machine: " + machine() + ".", "",
          "Run: %s s in all; load generator processes %s; CPU pinning %s; open files per "
          "process %s; load average at the end %s." % (
              run.get("seconds", "?"), run.get("load_procs", "?"),
              "on (gateway CPU 0, the rest CPU 1)" if run.get("pinned") == "1" else "off",
              run.get("nofile", "?"), run.get("loadavg_end", "?")), "",
          table(rows), "",
          "Latency quantiles are histogram bucket upper bounds (under 1.6% above the true "
          "value). CPU figures are utime+stime of the gateway's supervisor and workers "
          "from /proc/<pid>/stat over the measuring window; RSS is the workers' VmRSS "
          "before the connections and after them.", ""]
    if chart:
        md += ["Chart: [bench-latency.svg](bench-latency.svg)", ""]
    md += ["## Commands", "",
           "`$TOKEN` is an HS256 token from `herald-token --secret ... --user bench-user "
           "--ttl 7200`; the gateway's secret is elided.", ""]
    for cid, scen, text in cmds:
        md.append("- %s (%s): `%s`" % (cid, scen, text))
    md += ["", "## Raw figures", "", "```"]
    for scen in data:
        for k, v in data[scen].items():
            md.append("%s %s=%s" % (scen, k, v))
    md += ["```", ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    print()
    print(table(rows))
    print()
    for cid, scen, text in cmds:
        print("%s (%s): %s" % (cid, scen, text))
    print()
    print("results: %s" % os.path.join(out, "results.md"))
    if chart:
        print("chart:   %s" % chart)


if __name__ == "__main__":
    main()
