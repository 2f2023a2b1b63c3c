"""Checks of the container images (and of `make demo`): built from this checkout, run as the DaemonSet runs
them, each of the worker's capabilities shown to be needed.

The worker image captures the demo's topology (scripts/demo.sh: pods as network namespaces on a bridge,
one with a sidecar on loopback) from inside a container started exactly as the DaemonSet's pod is:
host network and PID namespace, every capability dropped but the three, read-only root filesystem, no new
privileges, Docker's default seccomp profile, a tmpfs /tmp.
"""

import json
import os
import re
import shutil
import tempfile

from harness import ROOT, expect, host_binary, log, sh

VERSION = re.search(r'^version = "(.*)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)
REGISTRY = os.environ.get("IMAGE_REGISTRY", "ghcr.io/interceptor-dev")
WORKER_IMAGE = f"{REGISTRY}/node-worker:{VERSION}"
OPERATOR_IMAGE = f"{REGISTRY}/operator:{VERSION}"
APP_IMAGE = "localhost/interceptor-test/app:1"

# The capabilities the DaemonSet gives the worker (crds render, SECURITY.md), and the size targets.
CAPABILITIES = ["NET_RAW", "SYS_ADMIN", "SYS_PTRACE"]
MAX_WORKER_MB = 60
MAX_OPERATOR_MB = 40

# What `make demo` captures (README "What `make demo` shows"): method, path, status, tap mode.
DEMO_PAIRS = sorted(
    [
        ("GET", "/api/users/42", 200, "external"),
        ("POST", "/api/users", 201, "external"),
        ("GET", "/api/report", 200, "external"),
        ("POST", "/checkout", 200, "external"),
        ("GET", "/api/export", 200, "external"),
        ("POST", "/orders", 201, "loopback"),
        ("POST", "/orders", 201, "loopback"),
        # The ambient pod calls api (captured on its lo), web calls the ambient pod (on web's eth0).
        ("POST", "/api/users", 201, "loopback"),
        ("POST", "/orders", 201, "external"),
    ]
)
DEMO_DROPS = {"message_too_large": 1, "content_type": 1, "user_agent": 1, "status_code": 1, "excluded_path": 1}
DEMO_TAPS = sorted([("eth0", "web", "external"), ("eth0", "api", "external"), ("eth0", "shop", "external"),
                    ("lo", "mesh", "loopback"), ("lo", "ambient", "loopback")])


def docker():
    return sh([os.path.join(ROOT, "scripts/docker.sh"), "client"]).strip()


def image_size_mb(image):
    return int(sh([docker(), "image", "inspect", "-f", "{{.Size}}", image]).strip()) / 1e6


class Demo:
    """One run of scripts/demo.sh with a given worker command, and what it left: pairs, stats, log."""

    def __init__(self, worker, env=None):
        self.tmp = tempfile.mkdtemp(prefix="icimg-")
        out = os.path.join(self.tmp, "interceptor-demo")
        self.done = sh([os.path.join(ROOT, "scripts/demo.sh")], timeout=180, check=False,
                       env={"TMPDIR": self.tmp, "NODE_WORKER": worker, **(env or {})})
        self.log = _read(os.path.join(out, "worker.log"))
        self.pairs = [json.loads(line) for line in _read(os.path.join(out, "pairs.jsonl")).splitlines() if line]
        stats = _read(os.path.join(out, "stats.json"))
        self.stats = json.loads(stats) if stats else None
        # The demo's pods by network namespace inode: pairs and taps of other namespaces on this machine
        # (a cluster's pods, say) are not the demo's.
        self.pods = {ino: name for name, _, ino in
                     (entry.split("=") for entry in _read(os.path.join(out, "pods.txt")).split())}
        shutil.rmtree(self.tmp, ignore_errors=True)

    def describe(self):
        return (f"demo exited {self.done.returncode}\nstdout:\n{self.done.stdout[-4000:]}\n"
                f"stderr:\n{self.done.stderr[-2000:]}\nworker log (end):\n{self.log[-3000:]}")

    def taps(self):
        """(interface, pod, mode) of each interface of the demo's pods the worker tapped."""
        tapped = ((self.stats or {}).get("capture") or {}).get("tapped") or []
        return sorted((t["name"], self.pods[t["netns"]], t["mode"]) for t in tapped if t["netns"] in self.pods)

    def pair_rows(self):
        return sorted((p["request"]["method"], p["request"]["path"], p["response"]["status"], p["interface"]["mode"])
                      for p in self.pairs if p["interface"]["netns"] in self.pods)

    def drops(self):
        return {k: v for k, v in ((self.stats or {}).get("drops") or {}).items() if v}

    def expect_complete(self):
        """Exactly the demo's pairs, drops and taps (README)."""
        expect(self.done.returncode == 0, "the demo failed:\n" + self.describe())
        expect(self.pair_rows() == DEMO_PAIRS,
               f"pairs: expected {DEMO_PAIRS}\nseen {self.pair_rows()}\n{self.describe()}")
        expect(self.drops() == DEMO_DROPS, f"drops: expected {DEMO_DROPS}, seen {self.drops()}\n{self.describe()}")
        expect(self.taps() == DEMO_TAPS, f"taps: expected {DEMO_TAPS}, seen {self.taps()}\n{self.describe()}")
        # The ambient pod's outbound call names its real destination (api), not ztunnel's 127.0.0.1:15001:
        # from conntrack with NET_ADMIN, else (the DaemonSet's capabilities) from the connection's answers.
        ambient = [p for p in self.pairs if self.pods.get(p["interface"]["netns"]) == "ambient"]
        ends = [(p["destination"]["ip"], p["destination"]["port"]) for p in ambient]
        expect(ends == [("10.88.0.20", 8080)], f"the ambient pod's call: {ends}\n{self.describe()}")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def worker_in_docker(capabilities=CAPABILITIES):
    """The NODE_WORKER command for demo.sh: the worker image, run as the DaemonSet runs it."""
    return os.path.join(ROOT, "e2e/worker-in-docker.sh"), {"WORKER_IMAGE": WORKER_IMAGE, "DOCKER": docker(),
                                                           "WORKER_CAPABILITIES": " ".join(capabilities)}


def register(suite):
    @suite.check("images: build both from this checkout (and the tests' app image)")
    def build():
        out = sh([os.path.join(ROOT, "scripts/images.sh"), "--app"], timeout=3600)
        log(out.rstrip())

    built = "images: build both from this checkout (and the tests' app image)"

    @suite.check("images: --version of both", needs=[built])
    def versions():
        for image, name in ((WORKER_IMAGE, "node-worker"), (OPERATOR_IMAGE, "operator")):
            out = sh([docker(), "run", "--rm", "--read-only", "--cap-drop", "ALL", image, "--version"])
            expect(out.startswith(f"{name} {VERSION}"), f"{image} --version printed {out!r}")

    @suite.check("images: sizes within target (worker < 60 MB, operator < 40 MB)", needs=[built])
    def sizes():
        worker, operator = image_size_mb(WORKER_IMAGE), image_size_mb(OPERATOR_IMAGE)
        log(f"worker image {worker:.1f} MB, operator image {operator:.1f} MB")
        expect(worker < MAX_WORKER_MB, f"the worker image is {worker:.1f} MB (target < {MAX_WORKER_MB})")
        expect(operator < MAX_OPERATOR_MB, f"the operator image is {operator:.1f} MB (target < {MAX_OPERATOR_MB})")

    @suite.check("images: no shell in either image", needs=[built])
    def no_shell():
        for image in (WORKER_IMAGE, OPERATOR_IMAGE):
            done = sh([docker(), "run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true"], check=False)
            expect(done.returncode != 0, f"{image} has a working /bin/sh")

    @suite.check("images: operator render on every sample, non-root, read-only root", needs=[built])
    def operator_render():
        user = sh([docker(), "image", "inspect", "-f", "{{.Config.User}}", OPERATOR_IMAGE]).strip()
        expect(user == "65532:65532", f"the operator image runs as {user!r}, not 65532:65532")
        samples = os.path.join(ROOT, "config/samples")
        for sample in sorted(f for f in os.listdir(samples) if f.startswith("interceptorconfig")):
            rendered = sh([docker(), "run", "--rm", "--read-only", "--cap-drop", "ALL",
                           "--security-opt", "no-new-privileges", "-v", f"{samples}:/samples:ro",
                           OPERATOR_IMAGE, "render", f"/samples/{sample}"])
            kinds = re.findall(r"^kind: (\w+)", rendered, re.M)
            expect(kinds == ["ConfigMap", "DaemonSet"], f"render {sample}: objects {kinds}")
            host = host_binary("operator")
            if os.path.exists(host):
                expect(rendered == sh([host, "render", os.path.join(samples, sample)]),
                       f"render {sample}: the image's output differs from the host build's")

    @suite.check("demo: make demo's capture with this machine's build")
    def demo_host():
        Demo(host_binary("node-worker")).expect_complete()

    captured = "images: the worker image captures the demo as the DaemonSet runs it"

    @suite.check(captured, needs=[built])
    def demo_in_image():
        command, env = worker_in_docker()
        Demo(command, env).expect_complete()

    # Least privilege, proven: the same run without one capability fails, in the way SECURITY.md says.
    for capability, expectation in LEAST_PRIVILEGE.items():
        suite.check(f"images: without {capability}, {expectation.__doc__}", needs=[captured])(
            _without(capability, expectation))


def _without(capability, expectation):
    def run():
        command, env = worker_in_docker([c for c in CAPABILITIES if c != capability])
        demo = Demo(command, env)
        expectation(demo)

    return run


def _no_capture_socket(demo):
    """no capture socket opens (AF_PACKET needs CAP_NET_RAW)"""
    expect(not demo.pairs, f"pairs were captured without NET_RAW:\n{demo.describe()}")
    expect("Operation not permitted" in demo.log, f"no EPERM in the worker's log:\n{demo.describe()}")


def _no_pod_namespace(demo):
    """no pod's interface opens: setns(2) into its network namespace is refused"""
    expect(not demo.pairs, f"pairs were captured without SYS_ADMIN:\n{demo.describe()}")
    expect(not demo.taps(), f"interfaces were tapped without SYS_ADMIN: {demo.taps()}\n{demo.describe()}")
    expect("cannot enter network namespace" in demo.log and "EPERM" in demo.log,
           f"no EPERM entering a namespace in the worker's log:\n{demo.describe()}")


def _no_namespace_of_others(demo):
    """the pods' network namespaces stay unseen (/proc/<pid>/ns/net of other processes), with a warning"""
    expect(not demo.pairs, f"pairs were captured without SYS_PTRACE:\n{demo.describe()}")
    expect(not demo.taps(), f"interfaces were tapped without SYS_PTRACE: {demo.taps()}\n{demo.describe()}")
    expect("CAP_SYS_PTRACE" in demo.log, f"the worker did not say it lacks CAP_SYS_PTRACE:\n{demo.describe()}")


LEAST_PRIVILEGE = {
    "NET_RAW": _no_capture_socket,
    "SYS_ADMIN": _no_pod_namespace,
    "SYS_PTRACE": _no_namespace_of_others,
}
