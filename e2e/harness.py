"""The end-to-end runner's small toolkit: checks with timeouts, commands, and what to print on failure.

A check is a function registered with `@check(name, needs=...)`. The runner calls the checks in the order
they were registered; a check fails when it raises, and every check that needs a failed (or skipped) one is
counted as failed without running, with the reason. After a failure the runner prints what the check's
`diagnostics` callbacks produce (component logs, pod logs, events), so that a red CI run says why.
"""

import json
import os
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CheckFailed(Exception):
    """An expectation that did not hold (the message says what was expected and what was seen)."""


class Check:
    def __init__(self, name, func, needs, diagnostics):
        self.name = name
        self.func = func
        self.needs = needs
        self.diagnostics = diagnostics


class Suite:
    """Checks in registration order, each run once, with dependencies between them."""

    def __init__(self):
        self.checks = []
        self.results = {}  # name -> True/False

    def check(self, name, needs=(), diagnostics=()):
        def register(func):
            self.checks.append(Check(name, func, tuple(needs), tuple(diagnostics)))
            return func

        return register

    def run(self, selected=None):
        for c in self.checks:
            if selected and not any(c.name.startswith(s) for s in selected):
                continue
            # A needed check that failed (or could not run) stops this one; one left out by the selection
            # does not (`--only cluster` runs the cluster's checks on images built earlier).
            missing = [n for n in c.needs if self.results.get(n) is False]
            if missing:
                self.results[c.name] = False
                log(f"FAIL {c.name}: not run, it needs {', '.join(missing)}")
                continue
            log(f"---- {c.name}")
            start = time.monotonic()
            try:
                c.func()
                self.results[c.name] = True
                log(f"PASS {c.name} ({time.monotonic() - start:.1f}s)")
            except Exception as e:  # every failure is reported the same way, whatever raised it
                self.results[c.name] = False
                detail = str(e) if isinstance(e, CheckFailed) else traceback.format_exc()
                log(f"FAIL {c.name} ({time.monotonic() - start:.1f}s): {detail}")
                for diagnose in c.diagnostics:
                    try:
                        diagnose()
                    except Exception as d:
                        log(f"  (diagnostics failed: {d})")
        passed = sum(1 for ok in self.results.values() if ok)
        failed = len(self.results) - passed
        return passed, failed


def host_binary(name):
    """This machine's build of `name` (node-worker, operator), from INTERCEPTOR_BIN_DIR."""
    return os.path.join(os.environ.get("INTERCEPTOR_BIN_DIR", os.path.join(ROOT, "target/release")), name)


def log(text):
    print(text, file=sys.stderr, flush=True)


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def sh(args, timeout=120, check=True, env=None, input=None):
    """Run a command; return its stdout. On failure (when check), raise with its stderr."""
    merged = dict(os.environ, **(env or {}))
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=merged, input=input)
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"{' '.join(args)}: no answer after {timeout}s; stderr: {e.stderr}") from None
    if check and done.returncode != 0:
        raise CheckFailed(
            f"{' '.join(args)} exited with {done.returncode}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
        )
    return done.stdout if check else done


def wait_for(what, probe, timeout, interval=1.0):
    """Call `probe` until it returns something truthy (returned), or raise after `timeout` seconds with
    the last value or error seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except CheckFailed as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise CheckFailed(f"timed out after {timeout}s waiting for {what}; last seen: {last}")
        time.sleep(interval)


def kubectl(*args, timeout=60, check=True, input=None):
    return sh(["kubectl", *args], timeout=timeout, check=check, input=input)


def kubectl_json(*args, timeout=60):
    return json.loads(kubectl(*args, "-o", "json", timeout=timeout))


def kubectl_exists(*args):
    return kubectl("get", *args, "--ignore-not-found", "-o", "name").strip() != ""


_read_topic = None


def consume(brokers, topic, timeout=60):
    """Every message of `topic` from the beginning, each as parsed JSON (node-worker's example
    `read_topic`, built on first use: librdkafka, as the worker produces with)."""
    global _read_topic
    if _read_topic is None:
        # --workspace: the features `cargo test --workspace` built it with (no second build).
        sh(["cargo", "build", "-q", "--locked", "--workspace", "--example", "read_topic"], timeout=900)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        _read_topic = os.path.join(target, "debug/examples/read_topic")
    out = sh([_read_topic, brokers, topic], timeout=timeout)
    return [json.loads(line) for line in out.splitlines() if line.strip()]
