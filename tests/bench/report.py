"""Turns a benchmark run (tests/bench/run.sh) into a table and a chart.

Reads OUT/raw.txt (scenario<TAB>key<TAB>value), OUT/commands.txt
(id<TAB>scenario<TAB>command), the latency histograms OUT/<run>.hist and the
per-second series OUT/<run>.csv that herald-load wrote. A run is named
<server>_<scenario> (herald_many, nchan_many, ...). Writes OUT/results.md and
OUT/bench-latency.svg and prints the table: Herald and nchan side by side, the
Herald / nchan ratio, and the targets of issue 10. Standard library only.
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


SCENARIOS = (
    ("fanout", "1 channel x {subs} subs x {rate} ev/s"),
    ("fanout100", "1 channel x {subs} subs x {rate} ev/s"),
    ("many", "{channels} channels x 1 sub x {rate} ev/s"),
    ("many1k", "{channels} channels x 1 sub x {rate} ev/s"),
)

LIMIT = 0.9  # a process at 90% of a core or more is taken as a limit


def derived(d):
    """Per-delivery figures of one throughput run (a dict of raw figures)."""
    f = {}
    recv = num(d.get("received")) or 0
    exp = num(d.get("expected")) or 0
    pub_s = num(d.get("publish_seconds")) or 0
    window = num(d.get("window_s")) or 0
    srv = num(d.get("server_cpu_s"))
    load = num(d.get("load_cpu_s"))
    # A backlog: the last event reached its subscriber more than 1 s after the
    # publishing time; deliveries/s is then over the time to that last event.
    last = num(d.get("last_event_s"))
    if last is None:
        last = window
    f["backlog"] = last - pub_s > 1.0
    f["last"] = last
    span = max(last, pub_s)
    f["achieved"] = recv / span if span else None
    f["undelivered"] = max(0, exp - recv)
    f["loss"] = f["undelivered"] + sum(int(num(d.get(k)) or 0)
                                       for k in ("duplicates", "misrouted"))
    f["loss_pct"] = 100.0 * f["loss"] / exp if exp else None
    f["srv_per_m"] = srv / recv * 1e6 if recv and srv is not None else None
    f["all_per_m"] = (srv + load) / recv * 1e6 if recv and srv is not None and load is not None \
        else None
    f["srv_us"] = srv / recv * 1e6 if recv and srv is not None else None
    f["per_cpu_s"] = recv / srv if srv else None
    sc = num(d.get("syscalls"))
    f["syscalls"] = sc / recv if sc is not None and recv else None
    rp = [num(d.get(k)) for k in ("redis_cpu_s", "publisher_cpu_s")]
    f["redis_pub_per_m"] = sum(rp) / recv * 1e6 if recv and None not in rp else None
    f["load_pct"] = 100.0 * load / window if load is not None and window else None
    pc = num(d.get("publisher_cpu_s"))
    f["pub_pct"] = 100.0 * pc / pub_s if pc is not None and pub_s else None
    f["p50"], f["p99"] = num(d.get("p50_us")), num(d.get("p99_us"))
    return f


def ratio(h, n):
    if h is None or n is None or n == 0:
        return "n/a"
    return "%.2fx" % (h / n)


def f2(v, fmt="%.2f"):
    return "n/a" if v is None else fmt % v


def rows_for(data):
    """(scenario, figure, Herald, nchan, ratio, target, verdict) rows, and notes."""
    rows, notes = [], []
    floor, floor_end = data.get("floor", {}), data.get("floor_end", {})
    ends = [v for v in (num(floor.get("write_us")), num(floor_end.get("write_us")))
            if v is not None]
    floor_us = sum(ends) / len(ends) if ends else None
    for d, when in ((floor, "start"), (floor_end, "end")):
        if d:
            rows.append(("syscall floor (%s of run)" % when,
                         "CPU us per 150-byte write(), writer / reader (%s conns, %s writes)" % (
                             fmt_int(d.get("connections")), fmt_int(d.get("writes"))),
                         "%s / %s" % (f2(num(d.get("write_us"))),
                                      f2(num(d.get("read_us_per_write")))),
                         "", "", "", ""))

    paced = data.get("floor_paced", {})
    paced_us = num(paced.get("write_us"))
    if paced:
        rows.append(("syscall floor, paced",
                     "CPU us per 150-byte write(), writer / reader, at %s writes/s in 1 ms ticks "
                     "(%s conns, %s writes)" % (fmt_int(paced.get("rate")),
                                                fmt_int(paced.get("connections")),
                                                fmt_int(paced.get("writes"))),
                     "%s / %s" % (f2(paced_us), f2(num(paced.get("read_us_per_write")))),
                     "", "", "", ""))

    h, n = data.get("herald_idle", {}), data.get("nchan_idle", {})
    if h or n:
        label = "idle, %s subs" % fmt_int(h.get("connections") or n.get("connections"))
        rows.append((label, "open and subscribed", fmt_int(h.get("subscribed")),
                     fmt_int(n.get("subscribed")), "", "", ""))
        hk, nk = num(h.get("kib_per_conn")), num(n.get("kib_per_conn"))
        rows.append((label, "server KiB per WS connection (PSS)", f2(hk), f2(nk), ratio(hk, nk),
                     "<= 1.5 KiB", verdict(None if hk is None else hk <= 1.5)))
        rows.append((label, "nchan's KiB per connection / Herald's", "",
                     "n/a" if not hk or nk is None else "%.1fx" % (nk / hk), "",
                     ">= 5x", verdict(None if not hk or nk is None else nk >= 5 * hk)))
        hc, nc = num(h.get("idle_cpu_pct_per_10k")), num(n.get("idle_cpu_pct_per_10k"))
        secs = num(h.get("idle_seconds")) or 0
        rows.append((label, "server CPU, %% of a core per 10k conns, pings every 25 s (%g s)"
                     % secs, f2(hc, "%.3f"), f2(nc, "%.3f"), ratio(hc, nc), "< 1%",
                     verdict(None if hc is None or secs < 26 else hc < 1.0)))
    w = data.get("herald_idle_wss", {})
    if w:
        wk = num(w.get("kib_per_conn"))
        rows.append(("idle wss, %s subs" % fmt_int(w.get("connections")),
                     "server KiB per WSS connection (PSS), %s open" % fmt_int(w.get("subscribed")),
                     f2(wk), "(no TLS here)", "", "<= 10 KiB",
                     verdict(None if wk is None else wk <= 10)))

    for scen, fmt in SCENARIOS:
        hd, nd = data.get("herald_" + scen), data.get("nchan_" + scen)
        d0 = hd or nd
        if not d0:
            continue
        label = fmt.format(subs=fmt_int(d0.get("subscribers")),
                           channels=fmt_int(d0.get("channels")), rate=fmt_int(d0.get("rate")))
        H = derived(hd) if hd else {}
        N = derived(nd) if nd else {}

        def row(figure, key, fmtv="%.2f", target="", ok=None, show_ratio=True):
            rows.append((label, figure, f2(H.get(key), fmtv), f2(N.get(key), fmtv),
                         ratio(H.get(key), N.get(key)) if show_ratio else "", target,
                         verdict(ok) if target else ""))

        offered = fmt_int(d0.get("offered_per_s"))
        row("achieved deliveries/s (offered %s)" % offered, "achieved", "%.0f")
        lossf = lambda F, d: "n/a" if not F else "%s (%s%%)%s" % (
            fmt_int(F.get("loss")), f2(F.get("loss_pct"), "%.3f"),
            "; %s reordered%s" % (fmt_int(d.get("reordered")),
                                  " (%s too late to check for duplicates)" % fmt_int(
                                      d.get("late_unchecked"))
                                  if num(d.get("late_unchecked")) else "")
            if num(d.get("reordered")) else "")
        rows.append((label, "loss: undelivered + duplicates + misrouted (%)",
                     lossf(H, hd), lossf(N, nd), "", "0" if scen == "fanout" else "",
                     verdict(H.get("loss") == 0) if scen == "fanout" and H else ""))
        lat = lambda F: "n/a" if not F else "%s / %s%s" % (
            fmt_ms(F.get("p50")), fmt_ms(F.get("p99")), " (backlog)" if F.get("backlog") else "")
        ok = None
        if scen == "many" and H:
            ok = H["p99"] is not None and H["p99"] <= 5000 and not H["backlog"] and \
                H["loss"] == 0
        rows.append((label, "latency p50 / p99", lat(H), lat(N), ratio(H.get("p99"), N.get("p99")),
                     "p99 <= 5 ms, no backlog" if scen == "many" else "", verdict(ok)
                     if scen == "many" else ""))
        ok = None
        if scen == "fanout" and H.get("srv_per_m") is not None:
            ok = H["srv_per_m"] <= 1.3
        row("server CPU s per 1M deliveries", "srv_per_m", "%.2f",
            "<= 1.3 s" if scen == "fanout" else "", ok)
        ok = None
        if scen == "fanout100" and H.get("all_per_m") is not None and N.get("all_per_m"):
            ok = H["all_per_m"] <= 0.8 * N["all_per_m"]
        row("server + client CPU s per 1M deliveries", "all_per_m", "%.2f",
            "<= 0.8x nchan's" if scen == "fanout100" else "", ok)
        if scen == "fanout":
            ok = None
            if H.get("per_cpu_s") is not None and N.get("per_cpu_s"):
                ok = H["per_cpu_s"] >= 4 * N["per_cpu_s"]
            row("deliveries per server CPU second", "per_cpu_s", "%.0f", ">= 4x nchan's", ok)
        if scen == "many" and floor_us:
            us = H.get("srv_us")
            rows.append((label, "server CPU per delivery / syscall floor (%.2f us%s)" % (
                floor_us, ", the mean of start and end" if len(ends) == 2 else ""),
                         "n/a" if us is None else "%.2f (%.1f us)" % (us / floor_us, us),
                         "n/a" if N.get("srv_us") is None else "%.2f (%.1f us)" % (
                             N["srv_us"] / floor_us, N["srv_us"]),
                         ratio(us, N.get("srv_us")), "<= 1.6x the floor",
                         verdict(None if us is None else us <= 1.6 * floor_us)))
        if scen == "many" and paced_us:
            us = H.get("srv_us")
            rows.append((label, "server CPU per delivery / paced floor (%.2f us, wake-ups "
                         "included)" % paced_us,
                         "n/a" if us is None else "%.2f" % (us / paced_us),
                         "n/a" if N.get("srv_us") is None else "%.2f" % (N["srv_us"] / paced_us),
                         "", "", ""))
        ok = None
        if scen == "fanout100" and H.get("syscalls") is not None:
            ok = H["syscalls"] <= 1.1
        row("server syscalls per delivery", "syscalls", "%.2f",
            "<= 1.1" if scen == "fanout100" else "", ok)
        row("Redis + publisher CPU s per 1M deliveries", "redis_pub_per_m", "%.2f")
        lim = lambda F: "n/a" if not F else "%s / %s%%" % (f2(F.get("load_pct"), "%.0f"),
                                                            f2(F.get("pub_pct"), "%.0f"))
        rows.append((label, "subscribing clients / publisher CPU, % of a core", lim(H), lim(N),
                     "", "", ""))
        # Busy ticks of the machine less ours; interrupt time is charged to processes
        # unevenly, so this is rough (a few % either side of zero on a quiet machine).
        oth = lambda d: "n/a" if not d else "%s; softirq %s (%s s window)" % (
            f2(100.0 * ((num(d.get("other_cpu_s")) or 0) - (num(d.get("publisher_cpu_s")) or 0))
               / (num(d.get("window_s")) or 1), "%.0f%%"),
            f2(100.0 * (num(d.get("softirq_cpu_s")) or 0) / (num(d.get("window_s")) or 1),
               "%.0f%%"), d.get("window_s", "?"))
        rows.append((label, "other processes' CPU (rough), % of a core",
                     oth(hd), oth(nd), "", "", ""))
        for srv, F, d in (("Herald", H, hd), ("nchan", N, nd)):
            if not F:
                continue
            if (F.get("load_pct") or 0) >= LIMIT * 100:
                notes.append("%s, %s: the load generator's subscribers used %.0f%% of a core: "
                             "they are the limit here, so read the per-server-CPU-second "
                             "figures, not deliveries/s." % (label, srv, F["load_pct"]))
            if (F.get("pub_pct") or 0) >= LIMIT * 100:
                notes.append("%s, %s: the publisher used %.0f%% of a core: it is the limit "
                             "here; read the per-server-CPU-second figures." % (
                                 label, srv, F["pub_pct"]))
            lag = num(d.get("publisher_max_lag_ms")) or 0
            if lag > 100 and (F.get("pub_pct") or 0) < LIMIT * 100:
                notes.append("%s, %s: the publisher fell up to %.0f ms behind its schedule "
                             "while under %.0f%% of a core, waiting on the server's answers "
                             "(nchan: its POST replies; Herald: Redis's PUBLISH replies); "
                             "%s of %s events published." % (
                                 label, srv, lag, F.get("pub_pct") or 0,
                                 fmt_int(d.get("published")),
                                 fmt_int((num(d.get("rate")) or 0) *
                                         (num(d.get("publish_seconds")) or 0))))
            if F.get("backlog"):
                notes.append("%s, %s: the last event arrived %.1f s after the start of "
                             "%s s of publishing (a backlog); deliveries/s is over those "
                             "%.1f s%s." % (
                                 label, srv, F["last"], d.get("publish_seconds"), F["last"],
                                 "; some events were still undelivered when the bench stopped "
                                 "waiting" if F.get("undelivered") else ""))
    for name in ("herald_churn", "herald_churn_wss"):
        d = data.get(name)
        if d:
            rows.append((name.replace("herald_", ""), "connections/s (server CPU s)",
                         "%s (%s)" % (fmt_int(d.get("handshakes_per_s")), d.get("server_cpu_s")),
                         "", "", "", ""))
    return rows, notes


def table(rows):
    head = ("scenario", "figure", "Herald", "nchan", "Herald / nchan", "target (issue 10)",
            "verdict")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


# ---- the chart -------------------------------------------------------------------

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#17becf"]
COLORS, LABELS = {}, {}


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
    rows, notes = rows_for(data)
    run = data.get("run", {})
    chart_scen = [s for s in data if s.split("_", 1)[-1] in ("fanout", "many")
                  and s.split("_", 1)[0] in ("herald", "nchan")]
    for i, s in enumerate(chart_scen):
        COLORS[s] = PALETTE[i % len(PALETTE)]
        LABELS[s] = s
    chart = svg_chart(out, chart_scen) if chart_scen else None
    md = ["# Herald vs nchan: benchmark results", "",
          "Machine: " + machine() + ".", "",
          "Run: %s s in all (%s mode); %s Herald workers and %s nginx workers; nginx %s, "
          "nchan %s with Redis storage; %s-byte events; %s s of publishing per scenario; "
          "CPU pinning %s; open files per process %s; load average at the end %s." % (
              run.get("seconds", "?"), "quick" if run.get("quick") == "1" else "full",
              run.get("workers", "?"), run.get("workers", "?"), run.get("nginx_version", "?"),
              run.get("nchan_version", "?"), run.get("size", "?"),
              run.get("publish_seconds", "?"),
              "on (servers CPU 0, the rest CPU 1)" if run.get("pinned") == "1" else "off",
              run.get("nofile", "?"), run.get("loadavg_end", "?")), "",
          table(rows), ""]
    if notes:
        md += ["Limits seen in this run:", ""] + ["- " + n for n in notes] + [""]
    md += ["Server CPU is utime+stime of Herald's supervisor and workers, or of nginx's master "
           "and workers, from /proc/<pid>/stat, from the publisher's start to the last end "
           "marker; client CPU is the subscribing load generator's. Redis and the publisher "
           "are counted apart. Syscalls are perf stat's raw_syscalls:sys_enter on the server's "
           "processes over the same window. Memory is the PSS of the server's processes after "
           "the connections minus before. Latency quantiles are histogram bucket upper bounds. "
           "Compare ratios within one run: the machine is shared.", ""]
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
    for n in notes:
        print("limit: " + n)
    print()
    print("results: %s" % os.path.join(out, "results.md"))
    if chart:
        print("chart:   %s" % chart)


if __name__ == "__main__":
    main()
