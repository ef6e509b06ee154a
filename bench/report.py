#!/usr/bin/env python3
"""Turns the samples of a bench run into RESULTS.md and the cold-start chart's data.

Input (written by bench/run.sh) in RAW:
  rows.tsv      GROUP LABEL IMGFS_KEY ALT_LABEL ALT_KEY UNIT GOAL, one comparison a line
  data/KEY.txt  samples, one a line: seconds (UNIT time or tput:BYTES) or bytes (bytes)
  data/KEY.na   why KEY was not measured
  data/_failed_GROUP   last log line of a measurement group that broke
  machine.env   key=value: cores, memory, kernel, date, ...
Output: the Markdown report and a gnuplot data file (one bar per cold-start approach,
its three phases' medians).
"""
import argparse
import os
import re
import statistics
import sys

GROUP_TITLES = {
    "cold": "Cold start",
    "lazy": "Start over a throttled link: the lazy pull against pulling first",
    "warm": "Warm start",
    "mount": "Mount",
    "pull": "Pull",
    "read": "Read throughput",
    "walk": "Metadata walk",
    "rw": "Writable layer",
    "runner": "Runner",
    "rss": "Memory",
    "store": "Store size",
}

# The chart: approach label, total key, phase keys (fetch, prepare rootfs, run).
COLD_BARS = [
    ("imgfs: pull + mount + runner", "cold_imgfs", "imgfs pull\\n+ imgfs mount\\n+ runner"),
    ("skopeo + umoci unpack + runc", "cold_runc", "skopeo copy\\n+ umoci unpack\\n+ runc run"),
    ("skopeo + archivemount + bwrap", "cold_am", "skopeo copy\\n+ archivemount\\n+ bwrap"),
]


def read_samples(data, key):
    path = os.path.join(data, key + ".txt")
    if not key or not os.path.exists(path):
        return None
    with open(path) as f:
        vals = [float(x) for x in f.read().split()]
    return vals or None


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def to_figure(vals, unit):
    """Samples in the row's unit → displayed values (same order, 'higher is better' flag)."""
    if unit.startswith("tput:"):
        nbytes = float(unit.split(":", 1)[1])
        return [nbytes / v / 1e6 for v in vals if v > 0], True
    return vals, False


def fmt_value(v, unit):
    if unit == "time":
        if v < 1:
            return "%.3g ms" % (v * 1000) if v * 1000 < 100 else "%.0f ms" % (v * 1000)
        return "%.2f s" % v
    if unit.startswith("tput:"):
        return "%.0f MB/s" % v if v >= 100 else "%.3g MB/s" % v
    if unit == "bytes":
        if v < 1e6:
            return "%.0f kB" % (v / 1e3)
        return "%.1f MB" % (v / 1e6) if v < 1e8 else "%.0f MB" % (v / 1e6)
    return "%g" % v


GOAL_RE = re.compile(r"^(<|>|≤|≥) ([0-9.]+) ?(×|%|ms|MB)$")
GOAL_SCALE = {"×": 1.0, "%": 0.01, "ms": 1e-3, "MB": 1e6}


def goal_met(goal, ratio, med):
    """Whether the figure meets a goal written as "≤ 1.5×", "≥ 0.7×", "≤ 2 %" (against the
    ratio) or "< 20 ms", "< 32 MB" (against imgfs' own median); None when it cannot say."""
    m = GOAL_RE.match(goal or "")
    if not m:
        return None
    op, num, what = m.group(1), float(m.group(2)) * GOAL_SCALE[m.group(3)], m.group(3)
    v = ratio if what in ("×", "%") else med
    if v is None:
        return None
    return {"<": v < num, ">": v > num, "≤": v <= num, "≥": v >= num}[op]


def fmt_ratio(x):
    return "%.2f×" % x if x >= 0.095 else "%.2g×" % x


def summary(vals, unit):
    if vals is None:
        return None
    fig, _ = to_figure(vals, unit)
    med = statistics.median(fig)
    if len(fig) == 1:
        return med, fmt_value(med, unit)
    return med, "%s [%s–%s]" % (
        fmt_value(med, unit),
        fmt_value(min(fig), unit).split()[0],
        fmt_value(max(fig), unit),
    )


# Paths in error messages, replaced so that the report names no directory of the machine.
PATH_SUBST = []


def scrub(msg):
    for path, name in PATH_SUBST:
        msg = msg.replace(path, name)
    return msg


def why(data, key, group):
    r = read_text(os.path.join(data, key + ".na"))
    if r:
        return "n/a (%s)" % scrub(r)
    f = read_text(os.path.join(data, "_failed_" + group))
    if f is not None:
        return "n/a (measurement failed: %s; see logs/%s.log)" % (scrub(f), group)
    return "n/a (not measured)"


def md_escape(s):
    return s.replace("|", "\\|")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--chart-data", required=True)
    ap.add_argument("--top", help="source tree, removed from paths in messages")
    a = ap.parse_args()
    data = os.path.join(a.raw, "data")
    PATH_SUBST.append((os.path.join(os.path.abspath(a.raw), "work"), "WORKDIR"))
    if a.top:
        PATH_SUBST.append((os.path.abspath(a.top) + "/", ""))

    machine = {}
    for line in (read_text(os.path.join(a.raw, "machine.env")) or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            machine[k.strip()] = v.strip()

    rows = []
    with open(os.path.join(a.raw, "rows.tsv")) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 7:
                sys.exit("report: bad row: %r" % line)
            rows.append(parts)

    out = []
    w = out.append
    w("# imgfs benchmark results")
    w("")
    w(
        "Written by `make bench` (`bench/run.sh`%s) on %s: %s cores (%s), %s memory, %s, kernel %s. "
        "imgfs at `%s`. The run took %s s."
        % (
            ", quick mode" if machine.get("mode") == "quick" else "",
            machine.get("date", "?"),
            machine.get("cores", "?"),
            machine.get("cpu", "?"),
            machine.get("memory", "?"),
            machine.get("os", "?"),
            machine.get("kernel", "?"),
            machine.get("imgfs", "?"),
            machine.get("duration_s", "?"),
        )
    )
    w("")
    w(
        "Each figure is the median of %s repetitions (%s for the hyperfine rows: warm start, "
        "metadata walk, runner) with [min–max]; both sides of a row were measured in the same "
        "run, interleaved. The ratio is imgfs ÷ the alternative, of medians: for times and sizes "
        "below 1× favours imgfs, for throughputs (MB/s) above 1× does. Tools: %s"
        % (machine.get("reps", "?"), machine.get("hyperfine_runs", "?"),
           machine.get("versions", "?").rstrip("; ") + ".")
    )
    w("")
    w("![Cold start](cold-start.svg)")

    group = None
    for g, label, ikey, alabel, akey, unit, goal in rows:
        if g != group:
            group = g
            w("")
            w("## " + GROUP_TITLES.get(g, g))
            w("")
            w("| Measurement | imgfs | Alternative | Alternative's figure | imgfs ÷ alt. | Goal |")
            w("|---|---|---|---|---|---|")
        isum = summary(read_samples(data, ikey), unit)
        asum = summary(read_samples(data, akey), unit) if akey else None
        ifig = isum[1] if isum else why(data, ikey, g)
        rval = None
        if not akey:
            afig, ratio = "—", "—"
        else:
            afig = asum[1] if asum else why(data, akey, g)
            rval = isum[0] / asum[0] if isum and asum and asum[0] else None
            ratio = fmt_ratio(rval) if rval is not None else "—"
        met = goal_met(goal, rval, isum[0] if isum else None)
        if met is not None:
            goal = "%s %s" % (goal, "met" if met else "not met")
        w(
            "| %s | %s | %s | %s | %s | %s |"
            % tuple(md_escape(x) for x in (label, ifig, alabel or "—", afig, ratio, goal or ""))
        )

    # Cold-start phases: the chart's numbers.
    w("")
    w("### Cold start phases (medians)")
    w("")
    w("| Approach | fetch | prepare rootfs | run the command | total |")
    w("|---|---|---|---|---|")
    chart = ["# approach fetch prepare run total min max"]
    for name, key, label in COLD_BARS:
        phases = [read_samples(data, "%s_p%d" % (key, i)) for i in (1, 2, 3)]
        total = read_samples(data, key)
        if total is None or None in phases:
            w("| %s | | | | %s |" % (name, why(data, key, "cold")))
            chart.append('"%s" 0 0 0 0 0 0' % label)
            continue
        meds = [statistics.median(p) for p in phases]
        w(
            "| %s | %s | %s | %s | %s |"
            % ((name,) + tuple(fmt_value(m, "time") for m in meds)
               + (summary(total, "time")[1],))
        )
        chart.append(
            '"%s" %.4f %.4f %.4f %.4f %.4f %.4f'
            % ((label,) + tuple(meds)
               + (statistics.median(total), min(total), max(total)))
        )
    w("")
    w(
        "fetch = `imgfs pull` / `skopeo copy`; prepare rootfs = `imgfs mount` / "
        "`umoci unpack` / `archivemount`; run = `runner` / `runc run` / `bwrap`. Each "
        "repetition starts from an empty store and a dropped page cache."
    )
    w("")

    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out))
    os.replace(tmp, a.out)
    with open(a.chart_data, "w") as f:
        f.write("\n".join(chart) + "\n")


if __name__ == "__main__":
    main()
