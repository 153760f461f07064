#!/usr/bin/env python3
"""Result handling for bench/run.sh.

  results.py add JSONL TOOL OUTPUT_FILE [key=value ...]
      Parse one tool's output (TOOL: wrk | h2load | idle), merge the extra
      key=value fields, append one JSON record to JSONL and print a one-line
      summary to stderr. Load tools exit 0 even when every request failed,
      so failures are detected here from the counts and flagged in the
      record ("problems") rather than by exit status.

  results.py report JSONL [key=value ...]
      Print the Markdown report (medians over repetitions) to stdout;
      key=value pairs go into the header.
"""

import json
import re
import statistics
import sys

BASELINES = ("hyper", "nginx")


def parse_wrk(text):
    m = re.search(r"^WRK_JSON (\{.*\})$", text, re.M)
    if not m:
        return {"problems": ["no WRK_JSON line (wrk failed?)"]}
    d = json.loads(m.group(1))
    rec = {
        "requests": d["requests"],
        "rps": d["requests"] / (d["duration_us"] / 1e6) if d["duration_us"] else 0.0,
        # wrk 4.1 sometimes reports a 99th percentile of 0 with pipelining
        # (one latency sample per batch); treat it as missing.
        "p99_us": d["lat_p99_us"] or None,
        "mean_us": d["lat_mean_us"],
        "problems": [],
    }
    errs = {k[4:]: v for k, v in d.items() if k.startswith("err_") and v}
    if errs:
        rec["errors"] = errs
        # status = responses >= 400; the rest are socket-level failures.
        rec["problems"].append("errors " + ",".join(f"{k}={v}" for k, v in errs.items()))
    if d["requests"] == 0:
        rec["problems"].append("zero requests")
    return rec


def parse_h2load(text):
    rec = {"problems": []}
    m = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", text, re.M)
    if not m:
        return {"problems": ["no 'finished in' line (h2load failed?)"]}
    rec["rps"] = float(m.group(1))
    m = re.search(r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if m:
        total, done, ok, failed, errored, timeout = map(int, m.groups())
        rec["requests"] = ok
        bad = {k: v for k, v in (("failed", failed), ("errored", errored),
                                 ("timeout", timeout)) if v}
        if bad:
            rec["problems"].append("errors " + ",".join(f"{k}={v}" for k, v in bad.items()))
        if ok == 0:
            rec["problems"].append("zero successful requests")
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        non2xx = sum(map(int, m.groups()[1:]))
        if non2xx:
            rec["problems"].append(f"non-2xx={non2xx}")
    # h2load has no percentiles; keep the mean request time.
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        rec["mean_us"] = to_us(m.group(3))
    # Checked against the load in cmd_add: Debian's h2load silently falls back to HTTP/1.1.
    m = re.search(r"^Application protocol: (\S+)", text, re.M)
    rec["protocol"] = m.group(1) if m else None
    return rec


def parse_idle(text):
    try:
        d = json.loads(text.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"problems": ["idle_conns.py produced no result"]}
    d["problems"] = []
    if d["opened"] != d["requested"]:
        d["problems"].append(f"opened {d['opened']}/{d['requested']} ({d['first_error']})")
    if d["alive_after_settle"] != d["opened"]:
        d["problems"].append(f"server closed {d['opened'] - d['alive_after_settle']} idle conns")
    return d


def to_us(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def kv(pairs):
    out = {}
    for p in pairs:
        k, _, v = p.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def cmd_add(jsonl, tool, path, pairs):
    with open(path, errors="replace") as f:
        text = f.read()
    rec = {"wrk": parse_wrk, "h2load": parse_h2load, "idle": parse_idle}[tool](text)
    rec.update(kv(pairs))
    rec["kind"] = "idle" if tool == "idle" else "load"
    if tool == "h2load":
        # h2c on cleartext loads, h2 (ALPN) on the TLS load "h2".
        want = "h2" if rec.get("load") == "h2" else "h2c"
        if rec.get("protocol") != want:
            rec["problems"].append(f"protocol {rec.get('protocol')} (not {want})")
    # Warnings explain a figure; problems (errors) make run.sh fail.
    rec["warnings"] = []
    if rec["kind"] == "load" and rec.get("cli_cpu", 0) >= 95:
        # One client thread at full CPU: the figure may be the load
        # generator's ceiling rather than the server's.
        rec["warnings"].append("client CPU-bound" if rec.get("srv_cpu", 100) < 90
                               else "client saturated too")
    if rec.get("other_cpu", 0) > 10:
        rec["warnings"].append(f"other processes used {rec['other_cpu']}% of the pinned CPUs")
    with open(jsonl, "a") as f:
        f.write(json.dumps(rec) + "\n")

    who = f"{rec.get('server')}/{rec.get('load', 'idle')}"
    if tool == "idle":
        line = (f"{who}: {rec.get('opened')} conns, {rec.get('kib_per_conn')} KiB/conn "
                f"(RSS {rec.get('rss_before_kib')} -> {rec.get('rss_after_kib')} KiB)")
    else:
        line = (f"{who}: {rec.get('rps', 0):,.0f} req/s, p99 {fmt_us(rec.get('p99_us'))}, "
                f"RSS {rec.get('rss_kib')} KiB, srv CPU {rec.get('srv_cpu')}%, "
                f"cli CPU {rec.get('cli_cpu')}%")
    if rec["problems"] or rec["warnings"]:
        line += "  !! " + "; ".join(rec["problems"] + rec["warnings"])
    print(line, file=sys.stderr)


def fmt_us(us):
    if us is None:
        return "n/a"
    return f"{us:.0f}µs" if us < 1000 else f"{us / 1000:.2f}ms"


def fmt_kib(k):
    return "n/a" if k is None else f"{k / 1024:.1f} MiB"


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def cmd_report(jsonl, pairs):
    recs = [json.loads(l) for l in open(jsonl) if l.strip()]
    meta = kv(pairs)
    out = ["# kestrel benchmark", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += ["", "req/s and latency are medians over repetitions; RSS/HWM are the "
            "maximum after any run. p99 comes from wrk; h2load only reports a mean, "
            "shown as `mean …`. CPU is % of one core over the run.", ""]

    loads = [r for r in recs if r["kind"] == "load"]
    groups = {}
    for r in loads:
        groups.setdefault((r["load"], r["server"]), []).append(r)
    load_order = list(dict.fromkeys(r["load"] for r in loads))
    server_order = list(dict.fromkeys(r["server"] for r in loads))

    summary = {}
    for key, rs in groups.items():
        summary[key] = {
            "rps": median(r.get("rps") for r in rs),
            "p99": median(r.get("p99_us") for r in rs),
            "mean": median(r.get("mean_us") for r in rs),
            "rss": max((r.get("rss_kib") or 0) for r in rs) or None,
            "hwm": max((r.get("hwm_kib") or 0) for r in rs) or None,
            "srv_cpu": median(r.get("srv_cpu") for r in rs),
            "cli_cpu": median(r.get("cli_cpu") for r in rs),
            "n": len(rs),
            "problems": sorted({p for r in rs
                                for p in r.get("problems", []) + r.get("warnings", [])}),
        }

    out += ["## Throughput", "",
            "| load | server | req/s | p99 | RSS | HWM | srv CPU | cli CPU | req/s per srv core "
            "| vs hyper | vs nginx | per core vs nginx | notes |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for load in load_order:
        for server in server_order:
            s = summary.get((load, server))
            if not s:
                continue
            ratios = []
            for base in BASELINES:
                b = summary.get((load, base))
                ok = b and b["rps"] and s["rps"] is not None
                ratios.append(f"{s['rps'] / b['rps']:.2f}×" if ok else "–")
            lat = fmt_us(s["p99"]) if s["p99"] is not None else (
                f"mean {fmt_us(s['mean'])}" if s["mean"] is not None else "n/a")
            rps = f"{s['rps']:,.0f}" if s["rps"] is not None else "FAILED"
            cpu = lambda v: "–" if v is None else f"{v:.0f}%"  # noqa: E731
            # Throughput per core of server CPU: what a client-bound run still tells about
            # the server's cost per request.
            per_core = lambda x: (x["rps"] * 100 / x["srv_cpu"]  # noqa: E731
                                  if x and x["rps"] and x["srv_cpu"] else None)
            pc, pc_nginx = per_core(s), per_core(summary.get((load, "nginx")))
            pc_ratio = f"{pc / pc_nginx:.2f}×" if pc and pc_nginx else "–"
            out.append(
                f"| {load} | {server} | {rps} | {lat} | {fmt_kib(s['rss'])} "
                f"| {fmt_kib(s['hwm'])} | {cpu(s['srv_cpu'])} | {cpu(s['cli_cpu'])} "
                f"| {f'{pc:,.0f}' if pc else '–'} "
                f"| {ratios[0]} | {ratios[1]} | {pc_ratio} | {'; '.join(s['problems'])} |")

    idle = [r for r in recs if r["kind"] == "idle"]
    if idle:
        out += ["", "## Idle keep-alive connections (HTTP/1.1, one request each)", "",
                "KiB/conn = (RSS after - RSS before) / conns. RSS is user-space memory "
                "only (kernel socket buffers excluded). nginx allocates and touches all "
                "`worker_connections` slots at startup, so part of its per-connection "
                "cost sits in 'RSS before' (about 0.4 KiB per slot on nginx 1.22).", "",
                "| server | conns | RSS before | RSS after | KiB/conn | vs hyper | vs nginx | notes |",
                "|---|--:|--:|--:|--:|--:|--:|---|"]
        per = {r["server"]: r for r in idle}
        for r in idle:
            ratios = []
            for base in BASELINES:
                b = per.get(base)
                ok = b and b.get("kib_per_conn") and r.get("kib_per_conn") is not None
                ratios.append(f"{r['kib_per_conn'] / b['kib_per_conn']:.2f}×" if ok else "–")
            out.append(
                f"| {r['server']} | {r.get('opened', 0):,} | {fmt_kib(r.get('rss_before_kib'))} "
                f"| {fmt_kib(r.get('rss_after_kib'))} | {r.get('kib_per_conn', 'n/a')} "
                f"| {ratios[0]} | {ratios[1]} | {'; '.join(r.get('problems', []))} |")

    print("\n".join(out))


def main(argv):
    if len(argv) >= 4 and argv[0] == "add":
        cmd_add(argv[1], argv[2], argv[3], argv[4:])
    elif len(argv) >= 2 and argv[0] == "report":
        cmd_report(argv[1], argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
