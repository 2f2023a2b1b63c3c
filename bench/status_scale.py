#!/usr/bin/env python3
"""The control plane at scale: N simulated worker nodes writing their InterceptorStatus against the real
API server of the tests' one-node cluster (scripts/cluster.sh), the real operator reconciling them.

    bench/status_scale.py [--nodes 100,1000,5000] [--window 0] [--keep]

Needs root and the cluster's binaries (scripts/kubernetes.sh install); starts the Docker engine and the
cluster unless KUBECONFIG names a running one, and stops what it started. For each N (ascending; nodes are added, never
removed between steps), `status_load` (node-worker/examples/status_load.rs) creates the Node objects
and runs N copies of the worker's StatusWriter; between its "window start" and "window end" lines this
script reads the API server's, etcd's and the operator's own counters and /proc, and reports:
  - status writes per second (apiserver_request_total, interceptorstatuses, 2xx), and all writes;
  - bytes etcd received per second (etcd_network_client_grpc_received_bytes_total) and puts per second;
  - CPU of kube-apiserver, etcd and the operator (seconds of CPU per second), their RSS;
  - the operator's reconciles and mean reconcile duration in the window.
The window defaults to three heartbeats of the cadence the operator chose (at least 120 s). After it, the
time from one worker's change (Kafka lost, then back) to the InterceptorConfig's Degraded condition.
Results: a table on stdout and target/bench/status-scale.json (or $BENCH_OUT/status-scale.json).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "e2e"))
import k8s120  # noqa: E402  (the CRDs made acceptable to 1.20)

import yaml  # noqa: E402

NAMESPACE = "interceptor-load"
CONFIG = "load"
TICKS = os.sysconf("SC_CLK_TCK")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def kubectl(*args, stdin=None):
    return subprocess.run(("kubectl",) + args, check=True, text=True, input=stdin,
                          capture_output=True).stdout


def pid_of(name):
    out = subprocess.run(["pgrep", "-xo", name], text=True, capture_output=True).stdout.split()
    return int(out[0]) if out else None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def parse_metrics(text):
    samples = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        try:
            samples.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            pass
    return samples


def total(samples, name, **want):
    def ok(labels):
        for k, v in want.items():
            if callable(v):
                if not v(labels.get(k, "")):
                    return False
            elif labels.get(k) != v:
                return False
        return True
    return sum(v for n, l, v in samples if n == name and ok(l))


def etcd_url():
    pid = pid_of("kube-apiserver")
    with open(f"/proc/{pid}/cmdline") as f:
        args = f.read().split("\0")
    for i, a in enumerate(args):
        if a.startswith("--etcd-servers"):
            value = a.split("=", 1)[1] if "=" in a else args[i + 1]
            return value.split(",")[0]
    raise SystemExit("no --etcd-servers on kube-apiserver")


def reading(operator_metrics_url):
    """Every counter the report needs, at one moment."""
    api = parse_metrics(kubectl("get", "--raw", "/metrics"))
    with urllib.request.urlopen(etcd_url() + "/metrics", timeout=10) as r:
        etcd = parse_metrics(r.read().decode())
    with urllib.request.urlopen(operator_metrics_url, timeout=10) as r:
        op = parse_metrics(r.read().decode())
    writes = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION", "CREATE", "UPDATE")
    ok = lambda c: c.startswith("2")  # noqa: E731
    pids = {name: pid_of(name) for name in ("kube-apiserver", "etcd", "operator")}
    return {
        "t": time.monotonic(),
        "status_writes": total(api, "apiserver_request_total", resource="interceptorstatuses",
                               verb=lambda v: v in writes, code=ok),
        "status_subresource_writes": total(api, "apiserver_request_total",
                                           resource="interceptorstatuses", subresource="status",
                                           verb=lambda v: v in writes, code=ok),
        "all_writes": total(api, "apiserver_request_total", verb=lambda v: v in writes),
        "lease_writes": total(api, "apiserver_request_total", resource="leases",
                              verb=lambda v: v in writes),
        "etcd_received_bytes": total(etcd, "etcd_network_client_grpc_received_bytes_total"),
        "etcd_puts": total(etcd, "etcd_mvcc_put_total") + total(etcd, "etcd_debugging_mvcc_put_total"),
        "reconciles": total(op, "interceptor_operator_reconciles_total"),
        "reconcile_seconds": total(op, "interceptor_operator_reconcile_duration_seconds_sum"),
        "cpu": {n: cpu_seconds(p) for n, p in pids.items() if p},
        "rss_mib": {n: rss_mib(p) for n, p in pids.items() if p},
        "hwm_mib": {n: rss_mib(p, "VmHWM") for n, p in pids.items() if p},
    }


def window(before, after, nodes, cadence):
    dt = after["t"] - before["t"]
    rate = lambda k: (after[k] - before[k]) / dt  # noqa: E731
    reconciles = after["reconciles"] - before["reconciles"]
    kubelet_leases = nodes / 10.0
    return {
        "nodes": nodes,
        "heartbeat_seconds": cadence,
        "window_seconds": round(dt, 1),
        "status_writes_per_second": round(rate("status_writes"), 2),
        "status_writes_per_node_per_minute": round(rate("status_writes") * 60 / nodes, 3),
        "kubelet_lease_writes_per_second_at_this_size": kubelet_leases,
        "status_over_leases": round(rate("status_writes") / kubelet_leases, 3),
        "all_api_writes_per_second": round(rate("all_writes"), 2),
        "etcd_received_bytes_per_second": round(rate("etcd_received_bytes")),
        "etcd_puts_per_second": round(rate("etcd_puts"), 2),
        "cpu_per_second": {n: round((after["cpu"][n] - before["cpu"][n]) / dt, 3)
                           for n in after["cpu"] if n in before["cpu"]},
        "rss_mib": {n: round(v, 1) for n, v in after["rss_mib"].items()},
        "peak_rss_mib": {n: round(v, 1) for n, v in after["hwm_mib"].items()},
        "operator_reconciles": int(reconciles),
        "operator_mean_reconcile_ms": round(
            1000 * (after["reconcile_seconds"] - before["reconcile_seconds"]) / reconciles, 2)
        if reconciles else None,
    }


def export(lines):
    """Apply the `export NAME=VALUE` lines a script printed to this process's environment."""
    for line in lines.splitlines():
        m = re.match(r"export (\w+)=(.*)", line)
        if m:
            os.environ[m.group(1)] = m.group(2).strip("'\"")


def install(bin_dir):
    crds = list(yaml.safe_load_all(sh(os.path.join(bin_dir, "operator"), "crds")))
    crds, _ = k8s120.for_kubernetes_1_20(crds)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(crds))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/interceptorconfigs.interceptor.dev", "crd/interceptorstatuses.interceptor.dev")
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "interceptor.dev/v1alpha1", "kind": "InterceptorConfig",
        "metadata": {"name": CONFIG, "namespace": NAMESPACE},
        "spec": {"nodeSelector": {"interceptor.dev/load-node": "true"},
                 "kafka": {"brokers": ["127.0.0.1:9"], "topic": "load"}},
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="100,1000,5000")
    p.add_argument("--window", type=int, default=0, help="seconds; 0: three heartbeats, at least 120")
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--keep", action="store_true", help="leave the Node objects and the cluster")
    args = p.parse_args()
    steps = [int(n) for n in args.nodes.split(",")]
    out_dir = os.environ.get("BENCH_OUT", os.path.join(ROOT, "target", "bench"))
    os.makedirs(out_dir, exist_ok=True)

    started_cluster = started_docker = None
    if not os.environ.get("KUBECONFIG"):
        if not os.environ.get("DOCKER_HOST"):
            started_docker = True
            export(sh(os.path.join(ROOT, "scripts", "docker.sh"), "start"))
        started_cluster = tempfile.mkdtemp(prefix="interceptor-scale.")
        export(sh(os.path.join(ROOT, "scripts", "cluster.sh"), "up", started_cluster))
    load = os.path.join(args.bin_dir, "examples", "status_load")
    operator = None
    results = []
    try:
        install(args.bin_dir)
        metrics_addr = "127.0.0.1:18080"
        operator_log = open(os.path.join(out_dir, "status-scale-operator.log"), "w")
        operator = subprocess.Popen(
            [os.path.join(args.bin_dir, "operator"), "run", "--leader-elect=false",
             "--metrics-addr", metrics_addr, "--watch-namespace", NAMESPACE, "--log-format", "text"],
            stdout=operator_log, stderr=subprocess.STDOUT)
        for n in steps:
            cmd = [load, "--nodes", str(n), "--namespace", NAMESPACE, "--config", CONFIG]
            if args.window:
                cmd += ["--seconds", str(args.window)]
            print(f"== {n} nodes", flush=True)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
            before = after = None
            cadence = None
            latency = {}
            for line in proc.stdout:
                print("  " + line.rstrip(), flush=True)
                m = re.search(r"heartbeat (\d+) s", line)
                if m:
                    cadence = int(m.group(1))
                m = re.search(r"change (reached|cleared from) the InterceptorConfig's status in ([\d.]+) s", line)
                if m:
                    latency[m.group(1)] = float(m.group(2))
                if "window start" in line:
                    before = reading(f"http://{metrics_addr}/metrics")
                elif "window end" in line:
                    after = reading(f"http://{metrics_addr}/metrics")
            if proc.wait() != 0 or not before or not after:
                raise SystemExit(f"status_load failed for {n} nodes")
            result = window(before, after, n, cadence)
            result["change_to_config_status_seconds"] = latency.get("reached")
            result["recovery_to_config_status_seconds"] = latency.get("cleared from")
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
        with open(os.path.join(out_dir, "status-scale.json"), "w") as f:
            json.dump(results, f, indent=1)
    finally:
        if operator:
            operator.terminate()
            operator.wait()
        if not args.keep:
            subprocess.run([load, "--nodes", "0", "--cleanup-only", "--namespace", NAMESPACE,
                            "--config", CONFIG])
        if started_cluster and not args.keep:
            subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "down", started_cluster])
        if started_docker and not args.keep:
            subprocess.run([os.path.join(ROOT, "scripts", "docker.sh"), "stop"])
    print_table(results)


def print_table(results):
    print("| nodes | heartbeat | status writes/s | / kubelet Leases | all API writes/s | etcd bytes/s "
          "| apiserver CPU | etcd CPU | operator CPU | operator RSS | reconcile (mean) | change -> status |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cpu = r["cpu_per_second"]
        print(f"| {r['nodes']} | {r['heartbeat_seconds']} s | {r['status_writes_per_second']} "
              f"| {r['status_over_leases']} | {r['all_api_writes_per_second']} "
              f"| {r['etcd_received_bytes_per_second']} | {cpu.get('kube-apiserver')} "
              f"| {cpu.get('etcd')} | {cpu.get('operator')} | {r['peak_rss_mib'].get('operator')} MiB "
              f"| {r['operator_mean_reconcile_ms']} ms | {r.get('change_to_config_status_seconds')} s "
              f"/ {r.get('recovery_to_config_status_seconds')} s |")


if __name__ == "__main__":
    main()
