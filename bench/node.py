#!/usr/bin/env python3
"""The in-cluster worker on the real node, for `make bench`'s node part (scripts/bench.sh, BENCH_NODE=1;
issue 19 item 5): the product installed on the tests' one-node Kubernetes 1.20 (scripts/cluster.sh) as a
user installs it, so that `node-worker run` (kube client, watches, status writer, metrics, Kafka) can be
measured under the same load as `node-worker capture`.

    bench/node.py up DIR          cluster up in DIR (needs DOCKER_HOST and the images: scripts/images.sh),
                                  config/default applied (1.20 variant), the operator running; the worker
                                  binary of the image copied to DIR/node-worker (the capture-mode runs use
                                  it, so that both modes run the same build). Prints `export ...` lines.
    bench/node.py apply --broker ADDR --topic T --skip IF[,IF] --tap IF
                                  an InterceptorConfig for the node (Kafka to ADDR/T, the interfaces IF not
                                  tapped); waits until its worker taps the interface --tap, prints
                                  `export NODE_WORKER_PID=...` (the worker's PID on the host)
    bench/node.py counters        the worker's counters now, from its /metrics, as JSON
    bench/node.py down DIR        everything stopped and removed

Needs root and Debian's python3-yaml.
"""

import json
import os
import re
import sys
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "e2e"))
import k8s120  # noqa: E402  (the CRDs made acceptable to 1.20)
from harness import kubectl, kubectl_json, sh, wait_for  # noqa: E402
from images import WORKER_IMAGE, docker  # noqa: E402

NS = "interceptor-system"
CONFIG = "bench"
METRICS = "http://127.0.0.1:9090/metrics"


def up(directory):
    out = sh([os.path.join(ROOT, "scripts/cluster.sh"), "up", directory], timeout=300)
    for line in out.splitlines():
        m = re.match(r"export (\w+)=(.*)", line)
        if m:
            os.environ[m.group(1)] = m.group(2)
    print(out, end="")
    rendered = kubectl("kustomize", os.path.join(ROOT, "config/default"))
    variant = os.path.join(directory, "config-1.20")
    k8s120.write_kustomization(rendered, variant)
    kubectl("apply", "--server-side", "-k", variant)
    for crd in ("interceptorconfigs.interceptor.dev", "interceptorstatuses.interceptor.dev"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    kubectl("-n", NS, "rollout", "status", "deployment/interceptor-operator", "--timeout=180s", timeout=200)
    # The image's own binary, for the capture-mode runs: the same build on both sides of the comparison.
    container = sh([docker(), "create", WORKER_IMAGE]).strip()
    try:
        sh([docker(), "cp", f"{container}:/usr/local/bin/node-worker", os.path.join(directory, "node-worker")])
    finally:
        sh([docker(), "rm", container], check=False)
    print(f"export NODE_IMAGE_WORKER={os.path.join(directory, 'node-worker')}")


def worker_pid():
    """The PID on the host of the worker pod's `node-worker run` (the pod shares the host's PID namespace)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"node-worker") and len(args) > 1 and args[1] == b"run":
            return int(entry)
    return None


def apply(broker, topic, skip, tap):
    spec = {
        "kafka": {"brokers": [broker], "topic": topic, "createTopic": True, "topicPartitions": 3},
        "capture": {"skipInterfaces": skip},
        "filters": {"excludeNamespaces": ["kube-system"]},
    }
    config = {"apiVersion": "interceptor.dev/v1alpha1", "kind": "InterceptorConfig",
              "metadata": {"name": CONFIG, "namespace": NS}, "spec": spec}
    kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-", input=json.dumps(config))
    wait_for(f"daemonset {CONFIG}", lambda: kubectl("get", "daemonset", CONFIG, "-n", NS, check=False)
             .returncode == 0, 60)
    kubectl("-n", NS, "rollout", "status", f"daemonset/{CONFIG}", "--timeout=180s", timeout=200)

    def tapping():
        items = kubectl_json("get", "icst", "-n", NS)["items"]
        for item in items:
            for i in (item.get("status") or {}).get("interfaces") or []:
                if i.get("interface") == tap and i.get("state") == "active":
                    return True
        return False

    # The status is written on change: the tap shows up within seconds of the worker's first scan.
    wait_for(f"the worker tapping {tap}", tapping, 120)
    pid = wait_for("the worker's process", worker_pid, 30)
    print(f"export NODE_WORKER_PID={pid}")


METRIC = re.compile(r'^interceptor_worker_(\w+?)(?:\{([^}]*)\})?\s+(\S+)$')


def counters():
    """The sums the benchmark needs, in the shape of `capture --stats-json`'s fields it reads."""
    with urllib.request.urlopen(METRICS, timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            name, value = m.group(1), float(m.group(3))
            values[name] = values.get(name, 0.0) + value
    get = lambda name: int(values.get(name, 0))  # noqa: E731
    print(json.dumps({
        "pairs_emitted": get("pairs_emitted_total"),
        "delivered": get("kafka_delivered_total"),
        "dropped_full": get("kafka_dropped_full_total"),
        "purged": get("kafka_purged_total"),
        "failed": get("kafka_failed_total"),
        "buffered_pairs": get("kafka_buffered_pairs"),
        "kernel_dropped": get("kernel_drops_total"),
    }))


def down(directory):
    sh([os.path.join(ROOT, "scripts/cluster.sh"), "down", directory], timeout=180, check=False)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command == "up" and len(argv) == 3:
        up(argv[2])
    elif command == "down" and len(argv) == 3:
        down(argv[2])
    elif command == "counters":
        counters()
    elif command == "apply":
        opts = dict(zip(argv[2::2], argv[3::2]))
        apply(opts["--broker"], opts["--topic"], [s for s in opts.get("--skip", "").split(",") if s],
              opts["--tap"])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
