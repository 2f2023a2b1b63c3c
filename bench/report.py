#!/usr/bin/env python3
"""Checks and summaries for scripts/bench.sh.

    report.py verify-offline PAIRS.jsonl CAPTURE.json STATS.json  every line a pair; as many as expected
    report.py check-count STATS.json CAPTURE.json                  pairs_emitted == expected_pairs
    report.py tshark-count OUT.tsv                                 HTTP requests/responses tshark saw
    report.py check-live DIR                                       each live pair belongs together
    report.py node-stats BEFORE.json AFTER.json                    the node's worker's counters over a run
    report.py summary OUT_DIR                                      results.json and the tables (stdout)

The check commands print JSON and exit 1 when the output is wrong.
"""
import csv
import datetime
import glob
import gzip
import json
import os
import re
import sys

MIB = 1024 * 1024
TARGETS = {
    "tshark_ratio": 30.0,
    "tcpdump_ratio": 1 / 3,
    "peak_rss_mib": 64.0,
    "live_share_pct": 99.9,
    "live_cpu_share": 0.25,
    "kafka_peak_rss_mib": 96.0,  # issue 19: librdkafka's buffers included
    # issue 19: what `node-worker run` (kube client, watches, status, metrics) may add to capture mode.
    "node_extra_rss_mib": 16.0,
    "node_extra_cpu_pct": 5.0,
}

# The live runs are judged per kind: HTTP/1.1 into a pipe (issue 7), HTTP/2 (issue 17), Kafka (issue 19).
LIVE_KINDS = [
    ("HTTP/1.1, pipe", lambda r: r["client"] == "wrk" and r["sink"] != "kafka"),
    ("HTTP/2 (h2load), pipe", lambda r: r["client"] == "h2load" and r["sink"] != "kafka"),
    ("HTTP/1.1, Kafka", lambda r: r["client"] == "wrk" and r["sink"] == "kafka"
     and r["name"] not in ("kafka-outage", "kafka-verify") and not r["name"].startswith("node-")),
]


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def out(obj, ok):
    print(json.dumps(obj))
    sys.exit(0 if ok else 1)


# --- checks -------------------------------------------------------------------------------------

def verify_offline(pairs_path, capture_path, stats_path):
    expected = load(capture_path)["expected_pairs"]
    stats = load(stats_path)
    lines = bad = 0
    statuses = {}
    with open(pairs_path, "rb") as f:
        for line in f:
            lines += 1
            try:
                pair = json.loads(line)
                ok = (pair.get("schema") == "interceptor.pair/v1" and pair["request"]["method"]
                      and isinstance(pair["response"]["status"], int))
                status = pair["response"]["status"]
                statuses[status] = statuses.get(status, 0) + 1
                if not ok or status in (301, 308) or status >= 400:
                    bad += 1
            except (ValueError, KeyError, TypeError):
                bad += 1
    emitted = stats["counters"]["pairs_emitted"]
    ok = lines == expected and emitted == expected and bad == 0
    out({"ok": ok, "lines": lines, "pairs_emitted": emitted, "expected_pairs": expected,
         "invalid_lines": bad, "statuses": statuses}, ok)


def check_count(stats_path, capture_path):
    expected = load(capture_path)["expected_pairs"]
    stats = load(stats_path)
    emitted = stats["counters"]["pairs_emitted"]
    sink = stats.get("sink", {})
    ok = emitted == expected and sink.get("delivered") == expected and not sink.get("failed")
    out({"ok": ok, "pairs_emitted": emitted, "delivered": sink.get("delivered"),
         "expected_pairs": expected}, ok)


def tshark_count(tsv_path):
    requests = responses = linked = 0
    with open(tsv_path, errors="replace") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            cols += [""] * (6 - len(cols))
            if cols[1]:
                requests += 1
            if cols[3]:
                responses += 1
                if cols[5]:
                    linked += 1
    out({"http_requests": requests, "http_responses": responses,
         "responses_linked_to_a_request": linked}, True)


def wrk_summary(path):
    try:
        for line in open(path):
            if line.startswith("WRK_JSON "):
                return json.loads(line[len("WRK_JSON "):])
    except OSError:
        pass
    return None


H2LOAD_UNITS = {"us": 1, "ms": 1e3, "s": 1e6}


def h2load_summary(path):
    """The figures of an h2load run (its text output), in the shape of wrk_summary's."""
    try:
        text = open(path).read()
    except OSError:
        return None
    done = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", text, re.M)
    took = re.search(r"^finished in ([\d.]+)s", text, re.M)
    if not done or not took:
        return None
    summary = {
        "requests": int(done.group(4)),
        "duration_us": int(float(took.group(1)) * 1e6),
        "errors": {"started": int(done.group(2)), "done": int(done.group(3)), "failed": int(done.group(5)),
                   "errored": int(done.group(6)), "timeout": int(done.group(7))},
    }
    lat = re.search(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text, re.M)
    if lat:
        us = [float(lat.group(i)) * H2LOAD_UNITS[lat.group(i + 1)] for i in (1, 3, 5)]
        summary["latency_us"] = {"min": round(us[0]), "max": round(us[1]), "mean": round(us[2])}
    return summary


def client_summary(d):
    """What the load generator of a live run says it did: wrk's WRK_JSON line or h2load's report."""
    return wrk_summary(os.path.join(d, "wrk.out")) or h2load_summary(os.path.join(d, "h2load.out"))


def pair_key(pair, path):
    """What makes a captured exchange unique: wrk sends each path once; h2load reuses its paths on every
    connection, where (client port, stream) tells the exchanges apart."""
    if pair["request"].get("version") == "HTTP/2":
        return (pair["source"]["port"], pair["request"]["stream_id"], path)
    return path


def timestamp(text):
    """Seconds since the epoch of an RFC 3339 time (the pair's)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def outage_log(d):
    """What outage.log of an outage run says: {"killed": epoch s, "started": epoch s, "on_topic": pairs on
    the topic just before the kill}; {} for other runs."""
    found = {}
    try:
        for line in open(os.path.join(d, "outage.log")):
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("killed", "started", "on_topic"):
                found[parts[1]] = float(parts[0])
    except (OSError, ValueError):
        pass
    return found


def outage_restart(d):
    """When the broker of an outage run was started again (epoch seconds); None otherwise."""
    return outage_log(d).get("started")


def kafka_accounting(stats, read_back, killed=False):
    """Every pair the worker emitted was handed to the Kafka sink and ends delivered, dropped because the
    buffer was full, purged after an outage or failed; what was delivered is on the topic (the consumer counts it).
    A broker `killed` with produce requests in flight may have written some of them without acknowledging
    them: the worker purged those pairs (it could not know), yet they are on the topic (at least once), so
    the topic then holds between what was delivered and that plus what was purged."""
    emitted = stats.get("counters", {}).get("pairs_emitted")
    sink = stats.get("sink") or {}
    settled = sum(sink.get(k) or 0 for k in ("delivered", "dropped_full", "purged", "failed"))
    delivered, purged = sink.get("delivered") or 0, sink.get("purged") or 0
    if killed:
        on_topic_fits = read_back is not None and delivered <= read_back <= delivered + purged
    else:
        on_topic_fits = read_back == sink.get("delivered")
    return {
        "emitted": emitted,
        "accepted": sink.get("accepted"),
        "delivered": sink.get("delivered"),
        "dropped_full": sink.get("dropped_full"),
        "purged": sink.get("purged"),
        "failed": sink.get("failed"),
        "buffered_at_end": sink.get("buffered_pairs"),
        "on_topic": read_back,
        "on_topic_unacknowledged": None if read_back is None else read_back - delivered,
        "adds_up": emitted is not None and emitted == sink.get("accepted") == settled and on_topic_fits,
    }


def check_live(d):
    wrk = client_summary(d) or {}
    run = load(os.path.join(d, "run.json"), {})
    stats = load(os.path.join(d, "worker.stats.json"), {})
    total = ok_pairs = wrong = dup = 0
    seen = set()
    examples = []
    compressed = os.path.join(d, "pairs.jsonl.gz")
    try:
        if os.path.exists(compressed):
            f = gzip.open(compressed, "rb")
        else:
            f = open(os.path.join(d, "pairs.jsonl"), "rb")
    except OSError:
        f = []
    restarted = outage_restart(d)
    after_restart = 0
    for line in f:
        total += 1
        try:
            pair = json.loads(line)
            if restarted and timestamp(pair["request"]["timestamp"]) > restarted:
                after_restart += 1
            path = pair["request"]["path"]
            body = json.loads(pair["response"]["body"])
            good = pair["response"]["status"] == 200 and body.get("path") == path
            key = pair_key(pair, path)
        except (ValueError, KeyError, TypeError, AttributeError):
            path, good = None, False
        if not good:
            wrong += 1
            if len(examples) < 5:
                examples.append(line[:300].decode(errors="replace"))
            continue
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        ok_pairs += 1
    capture = stats.get("capture", {})
    kafka = run.get("sink") == "kafka"
    on_topic = run.get("kafka_messages")
    if kafka and not run.get("kafka_read_back") and on_topic is not None:
        # Counted on the topic, not read back (the verification run reads its pairs back and checks them).
        ok_pairs = on_topic
    accounting = kafka_accounting(stats, on_topic, killed=bool(restarted)) if kafka else None
    if accounting and restarted:
        # Delivery resumed by itself: the topic holds more than when the broker went (and, when the pairs
        # are read back, pairs of requests made after it came back).
        before = outage_log(d).get("on_topic")
        accounting["on_topic_at_kill"] = None if before is None else int(before)
        known = before is not None and on_topic is not None
        accounting["delivered_after_restart"] = on_topic - int(before) if known else None
        resumed = known and on_topic > before
        if run.get("kafka_read_back"):
            accounting["read_back_after_restart"] = after_restart
            resumed = resumed and after_restart > 0
        accounting["adds_up"] = accounting["adds_up"] and resumed
    result = {
        "ok": wrong == 0 and dup == 0 and (accounting is None or accounting["adds_up"]),
        "kafka_accounting": accounting,
        "wrk_requests": wrk.get("requests"),
        "wrk_errors": wrk.get("errors"),
        "server_requests": run.get("server_requests"),
        "pairs_lines": total,
        "pairs_on_topic": on_topic,
        "pairs_checked": total,
        "pairs_ok": ok_pairs,
        "pairs_wrong": wrong,
        "pairs_duplicate": dup,
        "pairs_emitted": stats.get("counters", {}).get("pairs_emitted"),
        "kernel_received": capture.get("kernel_received"),
        "kernel_dropped": capture.get("kernel_dropped"),
        "interface_dropped": capture.get("interface_dropped"),
        "drops": stats.get("drops"),
        "sink": stats.get("sink"),
        "wrong_examples": examples,
    }
    out(result, result["ok"])


# --- summary ------------------------------------------------------------------------------------

def best(runs, key):
    vals = [r[key] for r in runs if r.get("exit") == 0]
    return min(vals) if vals else None


def tool_figures(runs, size_bytes, pairs):
    if not runs:
        return None
    wall, cpu = best(runs, "wall_s"), best(runs, "cpu_s")
    if wall is None:
        return None
    rss = max(r["max_rss_kib"] for r in runs)
    return {
        "runs": len(runs),
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "user_s": round(min(r["user_s"] for r in runs), 4),
        "sys_s": round(min(r["sys_s"] for r in runs), 4),
        "mb_per_s": round(size_bytes / 1e6 / wall, 1),
        "mb_per_cpu_s": round(size_bytes / 1e6 / max(cpu, 1e-6), 1),
        "pairs_per_s": round(pairs / wall, 1),
        "pairs_per_cpu_s": round(pairs / max(cpu, 1e-6), 1),
        "peak_rss_kib": rss,
        "peak_rss_mib": round(rss / 1024, 1),
        "all_wall_s": [r["wall_s"] for r in runs],
        "all_cpu_s": [r["cpu_s"] for r in runs],
    }


def ratio(a, b, key):
    if not a or not b or not b.get(key):
        return None
    return round(a[key] / b[key], 3)


def offline_summary(root):
    sizes = []
    for d in glob.glob(os.path.join(root, "offline", "*")):
        if not os.path.basename(d).isdigit():
            continue
        cap = load(os.path.join(d, "capture.json"))
        if not cap:
            continue
        runs = {}
        for tool in ("worker", "tcpdump", "tshark"):
            files = sorted(f for f in glob.glob(os.path.join(d, f"{tool}-*.json"))
                           if re.search(rf"{tool}-\d+\.json$", f))
            runs[tool] = [load(f) for f in files]
        pairs = cap["expected_pairs"]
        size_bytes = cap["bytes"]
        pcap_bytes = os.path.getsize(glob.glob(os.path.join(root, "captures", f"mix-{os.path.basename(d)}MB-*.pcap"))[0]) \
            if glob.glob(os.path.join(root, "captures", f"mix-{os.path.basename(d)}MB-*.pcap")) else size_bytes
        figures = {t: tool_figures(r, pcap_bytes, pairs) for t, r in runs.items()}
        verify = load(os.path.join(d, "verify.json"), {})
        stats = load(os.path.join(d, "verify.stats.json"), {})
        tshark_count = None
        counts = sorted(glob.glob(os.path.join(d, "tshark-*.count.json")))
        if counts:
            tshark_count = load(counts[0])
        w, tc, ts = figures["worker"], figures["tcpdump"], figures["tshark"]
        sizes.append({
            "size_mb": int(os.path.basename(d)),
            "file_bytes": pcap_bytes,
            "frames": cap.get("frames"),
            "connections": cap.get("connections"),
            "expected_pairs": pairs,
            "worker_pairs": verify.get("lines"),
            "pairs_match": verify.get("ok"),
            "worker_drops": stats.get("drops"),
            "worker": w,
            "tcpdump": tc,
            "tshark": ts,
            "tshark_skipped": (load(os.path.join(d, "tshark-skipped.json")) or {}).get("skipped"),
            "tshark_http": tshark_count,
            "ratios": {
                "worker_vs_tshark_wall": ratio(w, ts, "mb_per_s"),
                "worker_vs_tshark_cpu": ratio(w, ts, "mb_per_cpu_s"),
                "worker_vs_tcpdump_wall": ratio(w, tc, "mb_per_s"),
                "worker_vs_tcpdump_cpu": ratio(w, tc, "mb_per_cpu_s"),
                "tshark_rss_vs_worker": ratio(ts, w, "peak_rss_kib"),
            },
            "worker_cpu_s_per_gb": round(w["cpu_s"] / (pcap_bytes / 1e9), 3) if w else None,
        })
    sizes.sort(key=lambda s: s["size_mb"])
    return sizes


def callgrind_summary(root, name="callgrind"):
    d = os.path.join(root, name)
    path = os.path.join(d, "callgrind.out")
    if not os.path.exists(path):
        return None
    total = callgrind_total(path)
    baseline = callgrind_total(os.path.join(d, "baseline.out"))
    cap = load(os.path.join(d, "capture.json"), {})
    top = []
    try:
        text = open(os.path.join(d, "flat.txt")).read()
        for m in re.finditer(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.+?)\s*$", text, re.M):
            name = m.group(3)
            if name.startswith("PROGRAM TOTALS") or "file:function" in name:
                continue
            top.append({"ir": int(m.group(1).replace(",", "")), "pct": float(m.group(2)),
                        "function": shorten(name)})
            if len(top) >= 15:
                break
    except OSError:
        pass
    bytes_ = cap.get("bytes") or 0
    pairs = cap.get("expected_pairs") or 0
    net = total - baseline if total and baseline else total
    return {
        "capture_mb": round(bytes_ / 1e6, 1),
        "expected_pairs": pairs,
        "instructions": total,
        "startup_instructions": baseline,
        "traffic_instructions": net,
        "instructions_per_byte": round(net / bytes_, 2) if net and bytes_ else None,
        "instructions_per_pair": round(net / pairs) if net and pairs else None,
        "top_functions": top,
    }


def callgrind_total(path):
    total = None
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("totals:") or (total is None and line.startswith("summary:")):
                    total = int(line.split()[1])
    except OSError:
        pass
    return total


def shorten(name):
    name = re.sub(r"\s*\[[^\]]*\]$", "", name)  # the object file
    name = re.sub(r"^\?\?\?:", "", name)
    name = re.sub(r"^/[^:]*/([^/:]+):", r"\1:", name)  # the directory of the source file
    return name[:140]


def perf_summary(root, path=None):
    path = path or os.path.join(root, "perf", "flat.txt")
    if not os.path.exists(path):
        return None
    top = []
    for line in open(path, errors="replace"):
        m = re.match(r"^\s+([\d.]+)%\s+\[([.k])\]\s+(.+?)\s*$", line)
        if m:
            symbol = re.sub(r"(\s+-)+$", "", m.group(3))  # empty IPC columns
            top.append({"pct": float(m.group(1)), "kernel": m.group(2) == "k", "symbol": symbol[:140]})
        if len(top) >= 25:
            break
    dsos = []
    dso_path = os.path.join(root, "perf", "dso.txt")
    if os.path.exists(dso_path):
        for line in open(dso_path, errors="replace"):
            m = re.match(r"^\s+([\d.]+)%\s+(\S+)", line)
            if m:
                dsos.append({"pct": float(m.group(1)), "dso": m.group(2)})
    return {"top_symbols": top, "by_object": dsos[:10]}


def live_summary(root):
    runs = []
    for d in glob.glob(os.path.join(root, "live", "*")):
        run = load(os.path.join(d, "run.json"))
        if not run:
            continue
        check = load(os.path.join(d, "check.json"), {})
        client = load(os.path.join(d, "client.json"), {})
        summary = client_summary(d) or {}
        tck = run["clk_tck"]
        sent = summary.get("requests") or 0
        server = run.get("server_requests") or 0
        denominator = max(sent, server)
        pairs = check.get("pairs_ok") or 0
        worker_cpu = run["worker_ticks"] / tck
        client_cpu = client.get("cpu_s") or 0
        server_cpu = run["nginx_ticks"] / tck
        duration = (summary.get("duration_us") or 0) / 1e6
        entry = {
            "name": run["name"],
            "worker": run.get("worker", "capture"),
            "client": run.get("client", "wrk"),
            "sink": run.get("sink", "local"),
            "target_rate": run["rate"],
            "connections": run["connections"],
            "delay_ms": run["delay_ms"],
            "seconds": round(duration, 2),
            "requests_sent": sent,
            "requests_at_server": server,
            "rate_achieved": round(sent / duration) if duration else None,
            "pairs_captured": pairs,
            "pairs_wrong": check.get("pairs_wrong"),
            "pairs_checked": check.get("pairs_checked"),
            "pairs_duplicate": check.get("pairs_duplicate"),
            "captured_pct": round(100.0 * min(pairs, denominator) / denominator, 3) if denominator else None,
            "missing": max(0, denominator - pairs),
            "kernel_received": check.get("kernel_received"),
            "kernel_dropped": check.get("kernel_dropped"),
            "worker_drops": check.get("drops"),
            "wrk_errors": summary.get("errors"),
            "latency_us": summary.get("latency_us"),
            "worker_cpu_s": round(worker_cpu, 2),
            "client_cpu_s": round(client_cpu, 2),
            "server_cpu_s": round(server_cpu, 2),
            "broker_cpu_s": round(run.get("broker_ticks", 0) / tck, 2) if run.get("sink") == "kafka" else None,
            "sink_stats": check.get("sink"),
            "kafka_accounting": check.get("kafka_accounting"),
            "worker_cpu_vs_client_server": round(worker_cpu / (client_cpu + server_cpu), 3)
            if client_cpu + server_cpu else None,
            "worker_cpu_s_per_100k_pairs": round(worker_cpu * 1e5 / pairs, 3) if pairs else None,
            "worker_core_share_pct": round(100 * worker_cpu / duration, 1) if duration else None,
            "machine_busy_cpu_s": round(run["machine_busy_ticks"] / tck, 2),
            "machine_softirq_cpu_s": round(run["machine_softirq_ticks"] / tck, 2),
            "worker_peak_rss_mib": round(run["worker_vm_hwm_kib"] / 1024, 1),
            "worker_rss_at_end_mib": round(run["worker_vm_rss_kib"] / 1024, 1),
        }
        profile = perf_summary(d, os.path.join(d, "perf-flat.txt"))
        if profile:
            entry["worker_perf"] = profile["top_symbols"]
        rss_path = os.path.join(d, "rss.csv")
        if os.path.exists(rss_path):
            entry["memory"] = memory_trend(rss_path)
        runs.append(entry)
    def order(r):
        return (r["name"] == "long", r["client"] != "wrk", r["sink"] == "kafka", r["name"].startswith("node-"),
                r["worker"], float("inf") if r["target_rate"] == "max" else float(r["target_rate"]))
    runs.sort(key=order)
    return runs


def node_comparison(live):
    """Per rate, `node-worker run` on the node against `capture` under the same load (issue 19 item 5): what
    the cluster machinery adds, in MiB of peak RSS, in percent of a core (top's %CPU: the target), and per
    pair in percent of capture mode's CPU (shown too; at these rates a tick or two of CPU, and a run whose
    client got a few percent fewer requests through, move it by several percent)."""
    by = {(r["worker"], r["target_rate"]): r for r in live if r["name"].startswith("node-")}
    rows = []
    for (worker, rate), run in sorted(by.items()):
        base = by.get(("capture", rate))
        if worker != "node" or not base or not base["worker_cpu_s"]:
            continue
        # CPU per pair, so that a run that captured a few more pairs is not charged for them.
        per_pair = lambda r: r["worker_cpu_s"] / r["pairs_captured"] if r["pairs_captured"] else None  # noqa: E731
        cpu_pct = None
        if per_pair(run) and per_pair(base):
            cpu_pct = round(100 * (per_pair(run) / per_pair(base) - 1), 1)
        core = lambda r: 100 * r["worker_cpu_s"] / r["seconds"] if r["seconds"] else None  # noqa: E731
        extra_core = round(core(run) - core(base), 2) if core(run) is not None and core(base) is not None else None
        rows.append({
            "rate": rate,
            "capture_core_pct": core(base), "run_core_pct": core(run), "extra_core_pct": extra_core,
            "capture_cpu_s": base["worker_cpu_s"], "run_cpu_s": run["worker_cpu_s"],
            "capture_pairs": base["pairs_captured"], "run_pairs": run["pairs_captured"],
            "extra_cpu_pct_per_pair": cpu_pct,
            "capture_peak_rss_mib": base["worker_peak_rss_mib"], "run_peak_rss_mib": run["worker_peak_rss_mib"],
            "extra_rss_mib": round(run["worker_peak_rss_mib"] - base["worker_peak_rss_mib"], 1),
        })
    return rows


def signed(value):
    return "n/a" if value is None else f"{value:+}"


def node_stats(before_path, after_path):
    """The in-cluster worker's counters over one run (two readings of its /metrics, bench/node.py counters)
    in the fields of `capture --stats-json` that check_live reads."""
    before, after = load(before_path, {}), load(after_path, {})
    delta = lambda k: (after.get(k) or 0) - (before.get(k) or 0)  # noqa: E731
    print(json.dumps({
        "counters": {"pairs_emitted": delta("pairs_emitted")},
        # Every pair the pipeline emits is handed to the Kafka sink (accepted or dropped there, counted).
        "sink": {"accepted": delta("pairs_emitted"), "delivered": delta("delivered"),
                 "dropped_full": delta("dropped_full"), "purged": delta("purged"), "failed": delta("failed"),
                 "buffered_pairs": after.get("buffered_pairs")},
        "capture": {"kernel_dropped": delta("kernel_dropped")},
    }))


def memory_trend(path):
    rows = []
    with open(path) as f:
        for row in csv.DictReader(f):
            try:
                rows.append((float(row["epoch_s"]), int(row["rss_kib"]), int(row["hwm_kib"])))
            except (ValueError, KeyError, TypeError):
                pass
    if len(rows) < 4:
        return {"samples": len(rows)}
    t0 = rows[0][0]
    pts = [(t - t0, rss) for t, rss, _ in rows]
    # After the first minute (buffers and tables reach their working size), growth per 10 minutes.
    tail = [p for p in pts if p[0] >= 60] or pts[len(pts) // 2:]
    n = len(tail)
    mx = sum(p[0] for p in tail) / n
    my = sum(p[1] for p in tail) / n
    var = sum((p[0] - mx) ** 2 for p in tail)
    slope = sum((p[0] - mx) * (p[1] - my) for p in tail) / var if var else 0.0
    half = len(pts) // 2
    return {
        "samples": len(pts),
        "seconds": round(pts[-1][0], 1),
        "rss_first_mib": round(pts[0][1] / 1024, 1),
        "rss_at_60s_mib": round(tail[0][1] / 1024, 1),
        "rss_last_mib": round(pts[-1][1] / 1024, 1),
        "rss_max_first_half_mib": round(max(p[1] for p in pts[:half]) / 1024, 1),
        "rss_max_second_half_mib": round(max(p[1] for p in pts[half:]) / 1024, 1),
        "rss_max_mib": round(max(p[1] for p in pts) / 1024, 1),
        "slope_after_60s_mib_per_10min": round(slope * 600 / 1024, 2),
        "series": [[round(t, 1), round(r / 1024, 1)] for t, r in pts],
    }


def targets(offline, live):
    t = []
    with_tshark = [s for s in offline if s["ratios"]["worker_vs_tshark_wall"]]
    if with_tshark:
        lo_w = min(s["ratios"]["worker_vs_tshark_wall"] for s in with_tshark)
        lo_c = min(s["ratios"]["worker_vs_tshark_cpu"] for s in with_tshark)
        t.append({"target": "throughput >= 30x tshark", "value": f"{lo_w}x wall, {lo_c}x CPU (lowest over sizes)",
                  "met": lo_w >= TARGETS["tshark_ratio"] and lo_c >= TARGETS["tshark_ratio"]})
    with_tcpdump = [s for s in offline if s["ratios"]["worker_vs_tcpdump_wall"]]
    if with_tcpdump:
        lo_w = min(s["ratios"]["worker_vs_tcpdump_wall"] for s in with_tcpdump)
        lo_c = min(s["ratios"]["worker_vs_tcpdump_cpu"] for s in with_tcpdump)
        t.append({"target": "throughput >= 1/3 of tcpdump's", "value": f"{lo_w} wall, {lo_c} CPU (lowest over sizes)",
                  "met": lo_w >= TARGETS["tcpdump_ratio"] and lo_c >= TARGETS["tcpdump_ratio"]})
    rss = [s["worker"]["peak_rss_mib"] for s in offline if s["worker"]]
    rss += [r["worker_peak_rss_mib"] for r in live if r["sink"] != "kafka"]
    if rss:
        t.append({"target": "peak RSS < 64 MiB (offline and live)", "value": f"{max(rss)} MiB at most",
                  "met": max(rss) < TARGETS["peak_rss_mib"]})
    kafka_rss = [r["worker_peak_rss_mib"] for r in live if r["sink"] == "kafka"]
    if kafka_rss:
        t.append({"target": "peak RSS <= 96 MiB into Kafka (librdkafka included)",
                  "value": f"{max(kafka_rss)} MiB at most", "met": max(kafka_rss) <= TARGETS["kafka_peak_rss_mib"]})
    for kind, belongs in LIVE_KINDS:
        rated = [r for r in live if r["name"] != "long" and belongs(r)]
        if not rated:
            continue
        top = max(rated, key=lambda r: r["rate_achieved"] or 0)
        t.append({"target": f"{kind}: >= 99.9% of pairs captured at the highest rate",
                  "value": f"{top['captured_pct']}% at {top['rate_achieved']}/s ({top['name']}), "
                           f"{top['kernel_dropped']} kernel drops",
                  "met": (top["captured_pct"] or 0) >= TARGETS["live_share_pct"] and not top["pairs_wrong"]})
        worst = max((r["worker_cpu_vs_client_server"] or 0) for r in rated)
        t.append({"target": f"{kind}: worker CPU < 1/4 of client + server", "value": f"{worst} at most",
                  "met": worst < TARGETS["live_cpu_share"]})
    for row in node_comparison(live):
        t.append({"target": f"node-worker run adds <= {TARGETS['node_extra_rss_mib']:.0f} MiB and "
                            f"<= {TARGETS['node_extra_cpu_pct']:.0f} % CPU (of a core) to capture mode, {row['rate']}/s into Kafka",
                  "value": f"{row['extra_rss_mib']:+} MiB ({row['capture_peak_rss_mib']} -> {row['run_peak_rss_mib']}), "
                           f"{signed(row['extra_core_pct'])} % of a core; per pair {signed(row['extra_cpu_pct_per_pair'])} % "
                           f"({row['capture_cpu_s']} s for {row['capture_pairs']} -> {row['run_cpu_s']} s for {row['run_pairs']})",
                  "met": row["extra_rss_mib"] <= TARGETS["node_extra_rss_mib"]
                  and row["extra_core_pct"] is not None
                  and row["extra_core_pct"] <= TARGETS["node_extra_cpu_pct"]})
    outage = [r for r in live if r["name"] == "kafka-outage"]
    if outage:
        r, a = outage[0], outage[0].get("kafka_accounting") or {}
        t.append({"target": "Kafka outage: every pair delivered or counted, delivery resumes, memory bounded",
                  "value": f"emitted {a.get('emitted')} = delivered {a.get('delivered')} + full {a.get('dropped_full')}"
                           f" + purged {a.get('purged')} + failed {a.get('failed')}; "
                           f"{a.get('delivered_after_restart')} delivered after the restart; "
                           f"peak RSS {r['worker_peak_rss_mib']} MiB",
                  "met": bool(a.get("adds_up")) and r["worker_peak_rss_mib"] <= TARGETS["kafka_peak_rss_mib"]})
    longs = [r for r in live if r["name"] == "long" and "memory" in r]
    if longs and longs[0]["memory"].get("samples", 0) >= 4:
        m = longs[0]["memory"]
        flat = m["rss_max_second_half_mib"] <= m["rss_max_first_half_mib"] * 1.05 + 1
        if m["seconds"] < 540:
            flat = None  # too short to tell
        t.append({"target": "flat memory over a 10-minute run",
                  "value": f"{m['seconds']} s of {longs[0]['client']} at {longs[0]['rate_achieved']}/s: RSS {m['rss_first_mib']} -> {m['rss_last_mib']} MiB, max "
                           f"{m['rss_max_first_half_mib']} (1st half) / {m['rss_max_second_half_mib']} (2nd half), "
                           f"slope {m['slope_after_60s_mib_per_10min']} MiB/10 min",
                  "met": flat})
    else:
        t.append({"target": "flat memory over a 10-minute run", "value": "not run (BENCH_LONG=1)", "met": None})
    return t


# --- floods (issue 15): memory per tracked connection ---------------------------------------------------
FLOOD_TARGETS = {"bytes_per_idle_flow": 512, "peak_rss_mib": 96}
# Kinds whose connections hold no payload (the bytes-per-connection target is on them).
IDLE_FLOODS = ("syn", "handshake")


def floods_summary(root):
    """Per kind and size: peak RSS, and what a connection cost over the flood of a few (the baseline):
    per connection of the flood, and per connection the table tracked (at most maxFlows)."""
    d = os.path.join(root, "floods")
    if not os.path.isdir(d):
        return []
    runs = {}
    for name in sorted(os.listdir(d)):
        flood = load(os.path.join(d, name, "flood.json"))
        m = load(os.path.join(d, name, "measure.json"))
        if not flood or not m:
            continue
        stats = load(os.path.join(d, name, "stats.json"), {})
        counters = stats.get("counters", {})
        runs[(flood["kind"], flood["connections"])] = {
            "kind": flood["kind"], "connections": flood["connections"],
            "peak_rss_kib": m["max_rss_kib"], "wall_s": m["wall_s"],
            "flows_tracked": counters.get("flows"),
            "flow_table_full": stats.get("drops", {}).get("flow_table_full", 0),
            "peak_buffered_bytes": stats.get("peak_buffered_bytes"),
        }
    out = []
    for kind in sorted({k for k, _ in runs}):
        sizes = sorted(n for k, n in runs if k == kind)
        base = runs[(kind, sizes[0])]
        for n in sizes[1:]:
            r = dict(runs[(kind, n)])
            grew = (r["peak_rss_kib"] - base["peak_rss_kib"]) * 1024
            tracked = (r["flows_tracked"] or 0) - (base["flows_tracked"] or 0)
            r["baseline_connections"] = base["connections"]
            r["baseline_peak_rss_kib"] = base["peak_rss_kib"]
            r["peak_rss_mib"] = round(r["peak_rss_kib"] / 1024, 1)
            r["bytes_per_connection"] = round(grew / (n - base["connections"]))
            r["bytes_per_tracked_connection"] = round(grew / tracked) if tracked > 0 else None
            out.append(r)
    return out


def flood_targets(floods):
    if not floods:
        return []
    idle = [f["bytes_per_tracked_connection"] for f in floods
            if f["kind"] in IDLE_FLOODS and f["bytes_per_tracked_connection"] is not None]
    t = []
    if idle:
        t.append({"target": f"<= {FLOOD_TARGETS['bytes_per_idle_flow']} bytes per idle tracked connection (issue 15)",
                  "value": f"{max(idle)} bytes at most ({', '.join(IDLE_FLOODS)} floods)",
                  "met": max(idle) <= FLOOD_TARGETS["bytes_per_idle_flow"]})
    top = max(floods, key=lambda f: f["peak_rss_kib"])
    t.append({"target": f"peak RSS <= {FLOOD_TARGETS['peak_rss_mib']} MiB on every flood, default limits (issue 15)",
              "value": f"{top['peak_rss_mib']} MiB at most ({top['kind']}, {top['connections']} connections)",
              "met": top["peak_rss_kib"] <= FLOOD_TARGETS["peak_rss_mib"] * 1024})
    return t


def print_floods(floods):
    if not floods:
        return
    print("\nfloods (connections that stay open, default config; cost = peak RSS over a flood of "
          f"{floods[0]['baseline_connections']}):")
    rows = [[f["kind"], f"{f['connections']:,}", f["flows_tracked"], f["flow_table_full"], fmt(f["peak_rss_mib"]),
             f["bytes_per_connection"], fmt(f["bytes_per_tracked_connection"], "{:,}"),
             fmt(f["peak_buffered_bytes"], "{:,}")] for f in floods]
    table(["flood", "connections", "tracked", "table full", "peak RSS MiB", "bytes/conn", "bytes/tracked",
           "peak buffered"], rows)


def fmt(v, spec="{:,.1f}"):
    if v is None:
        return "-"
    return spec.format(v)


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, w) in enumerate(zip(headers, widths)))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(f"{str(c):>{w}}" if i else f"{str(c):<{w}}" for i, (c, w) in enumerate(zip(r, widths))))


def summary(root):
    machine = load(os.path.join(root, "machine.json"), {})
    offline = offline_summary(root)
    live = live_summary(root)
    result = {
        "machine": machine,
        "offline": offline,
        "callgrind": callgrind_summary(root),
        "callgrind_h2": callgrind_summary(root, "callgrind-h2"),
        "perf": perf_summary(root),
        "live": live,
    }
    result["targets"] = targets(offline, live)
    result["floods"] = floods_summary(root)
    result["targets"] += flood_targets(result["floods"])
    failures = os.path.join(root, "failures.txt")
    result["wrong_output"] = open(failures).read().splitlines() if os.path.exists(failures) else []
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")

    print(f"machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('ram_gib')} GiB, "
          f"kernel {machine.get('kernel')}; commit {machine.get('commit')}; "
          f"load average at start {' '.join(machine.get('load_average_at_start', []))}")
    if machine.get("worker_build") == "debug":
        print("NOTE: a debug build of the worker: its figures say nothing about its speed (make build; release)")
    if offline:
        print("\noffline (best of the runs; MB = 10^6 bytes of pcap; pairs/s = the file's expected pairs over time):")
        rows = []
        for s in offline:
            for tool in ("worker", "tshark", "tcpdump"):
                f = s[tool]
                if not f:
                    if tool == "tshark" and s.get("tshark_skipped"):
                        rows.append([f"{s['size_mb']} MB", tool, "skipped", "", "", "", "", "", ""])
                    continue
                rows.append([f"{s['size_mb']} MB", tool, f"{f['wall_s']:.3f}", f"{f['cpu_s']:.3f}",
                             fmt(f["mb_per_s"]), fmt(f["mb_per_cpu_s"]), fmt(f["pairs_per_s"], "{:,.0f}"),
                             fmt(f["peak_rss_mib"]), f["runs"]])
        table(["size", "tool", "wall s", "CPU s", "MB/s", "MB/CPU-s", "pairs/s", "peak RSS MiB", "runs"], rows)
        print("\nratios (worker / peer, throughput) and output check:")
        rows = []
        for s in offline:
            r = s["ratios"]
            rows.append([f"{s['size_mb']} MB", fmt(r["worker_vs_tshark_wall"]), fmt(r["worker_vs_tshark_cpu"]),
                         fmt(r["worker_vs_tcpdump_wall"], "{:.2f}"), fmt(r["worker_vs_tcpdump_cpu"], "{:.2f}"),
                         fmt(s["worker_cpu_s_per_gb"], "{:.2f}"),
                         f"{s['worker_pairs']}/{s['expected_pairs']}" + (" ok" if s["pairs_match"] else " WRONG")])
        table(["size", "vs tshark (wall)", "vs tshark (CPU)", "vs tcpdump (wall)", "vs tcpdump (CPU)",
               "worker CPU s/GB", "pairs/expected"], rows)
    for key, what in (("callgrind", ""), ("callgrind_h2", "HTTP/2, capture-gen --h2, ")):
        cg = result.get(key)
        if not cg:
            continue
        print(f"\ncallgrind ({what}{cg['capture_mb']} MB, {cg['expected_pairs']} pairs): {fmt(cg['instructions'], '{:,}')} "
              f"instructions, {fmt(cg['startup_instructions'], '{:,}')} of them start and exit (empty capture); "
              f"traffic: {cg['instructions_per_byte']} per byte, {fmt(cg['instructions_per_pair'], '{:,}')} per pair "
              f"(the figure to compare across commits)")
        for t in cg["top_functions"][:10]:
            print(f"  {t['pct']:5.1f}%  {t['function']}")
    pf = result["perf"]
    if pf and pf["top_symbols"]:
        print("\nperf (self time, top symbols):")
        for t in pf["top_symbols"][:12]:
            print(f"  {t['pct']:5.1f}%  {'[kernel] ' if t['kernel'] else ''}{t['symbol']}")
    if live:
        print("\nlive (wrk (HTTP/1.1) or h2load (HTTP/2) -> nginx through a veth; the worker taps the server's side;"
              " sink: a pipe, or Kafka (pairs read back from the topic)):")
        rows = []
        for r in live:
            rows.append([r["name"], r["client"], r["sink"] if r["worker"] == "capture" else f"{r['sink']} (run)", fmt(r["rate_achieved"], "{:,}"), r["connections"],
                         r["requests_sent"],
                         r["requests_at_server"], r["pairs_captured"], fmt(r["captured_pct"], "{:.2f}"),
                         r["kernel_dropped"], r["pairs_wrong"], fmt(r["worker_cpu_s"], "{:.2f}"),
                         fmt(r["client_cpu_s"], "{:.2f}"), fmt(r["server_cpu_s"], "{:.2f}"),
                         fmt(r["worker_cpu_vs_client_server"], "{:.3f}"),
                         fmt(r["worker_cpu_s_per_100k_pairs"], "{:.2f}"), fmt(r["worker_peak_rss_mib"]),
                         fmt(r["broker_cpu_s"], "{:.2f}")])
        table(["run", "client", "sink", "req/s", "conns", "sent", "at server", "pairs ok", "captured %", "kernel drops",
               "wrong", "worker CPU s", "wrk CPU s", "nginx CPU s", "worker/(c+s)", "CPU s/100k pairs",
               "peak RSS MiB", "broker CPU s"], rows)
        for r in live:
            if r.get("worker_perf"):
                print(f"  the worker during {r['name']} (perf, self time):")
                for t in r["worker_perf"][:12]:
                    print(f"    {t['pct']:5.1f}%  {'[kernel] ' if t['kernel'] else ''}{t['symbol']}")
        for r in live:
            a = r.get("kafka_accounting")
            if a:
                print(f"  {r['name']}: emitted {a['emitted']} = delivered {a['delivered']} + full {a['dropped_full']}"
                      f" + purged {a['purged']} + failed {a['failed']} ({'adds up' if a['adds_up'] else 'DOES NOT ADD UP'});"
                      f" on the topic {a['on_topic']}" + (f", all read back and checked ({r['pairs_checked']})"
                                                         if r["pairs_checked"] else ", counted")
                      + (f" ({a['on_topic_unacknowledged']} written by the broker as it died, never"
                         " acknowledged: counted purged)" if a.get("on_topic_unacknowledged") else ""))
        idle = load(os.path.join(root, "live", "node-idle.json"))
        if idle:
            print(f"  node, no traffic: node-worker run used {idle['worker_ticks'] / idle['clk_tck']:.2f} CPU s in"
                  f" {idle['seconds']:.0f} s ({100 * idle['worker_ticks'] / idle['clk_tck'] / idle['seconds']:.2f} % of a"
                  f" core), RSS {idle['rss_kib'] / 1024:.1f} MiB")
        for row in node_comparison(live):
            print(f"  node, {row['rate']}/s into Kafka: node-worker run {row['run_cpu_s']} CPU s for {row['run_pairs']} pairs,"
                  f" peak RSS {row['run_peak_rss_mib']} MiB; capture {row['capture_cpu_s']} CPU s for"
                  f" {row['capture_pairs']} pairs, {row['capture_peak_rss_mib']} MiB: the cluster machinery adds"
                  f" {row['extra_rss_mib']:+} MiB and {signed(row['extra_core_pct'])} % of a core"
                  f" ({signed(row['extra_cpu_pct_per_pair'])} % CPU per pair)")
        for r in live:
            if "memory" in r and r["memory"].get("samples", 0) >= 4:
                m = r["memory"]
                print(f"  memory over {m['seconds']} s ({m['samples']} samples): RSS {m['rss_first_mib']} -> "
                      f"{m['rss_last_mib']} MiB, max {m['rss_max_mib']} MiB, slope after 60 s "
                      f"{m['slope_after_60s_mib_per_10min']} MiB per 10 min")
    print_floods(result["floods"])
    print("\ntargets (issues 7, 17 and 19):")
    for t in result["targets"]:
        status = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        print(f"  {status:<12} {t['target']}: {t['value']}")
    if result["wrong_output"]:
        print("\nWRONG OUTPUT:")
        for line in result["wrong_output"]:
            print(f"  {line}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "verify-offline":
        verify_offline(*argv[2:5])
    elif cmd == "check-count":
        check_count(*argv[2:4])
    elif cmd == "tshark-count":
        tshark_count(argv[2])
    elif cmd == "check-live":
        check_live(argv[2])
    elif cmd == "node-stats":
        node_stats(argv[2], argv[3])
    elif cmd == "summary":
        summary(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
