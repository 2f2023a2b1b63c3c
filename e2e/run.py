#!/usr/bin/env python3
"""`make e2e`: the product as a user meets it. The images built from this checkout and run as the DaemonSet
runs them (e2e/images.py), `make demo`'s capture, and the product deployed on a real one-node Kubernetes
cluster (e2e/cluster.py). Prints each check as it runs, then one line: `e2e: N passed, M failed`; exits
non-zero when M > 0.

Run through scripts/e2e.sh (`make e2e`), which starts what the checks need: the Docker engine
(DOCKER_HOST), the Kafka-protocol broker (INTERCEPTOR_TEST_KAFKA) and the Kubernetes binaries.

    e2e/run.py [--only PREFIX ...] [--bin-dir DIR]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cluster  # noqa: E402
import images  # noqa: E402
from harness import ROOT, Suite, log  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="run only the checks whose names start with these")
    parser.add_argument("--bin-dir", default=os.environ.get("INTERCEPTOR_BIN_DIR", os.path.join(ROOT, "target/release")),
                        help="where this machine's node-worker and operator are (default target/release)")
    args = parser.parse_args()
    os.environ["INTERCEPTOR_BIN_DIR"] = os.path.abspath(args.bin_dir)
    suite = Suite()
    images.register(suite)
    the_cluster = cluster.register(suite)
    try:
        passed, failed = suite.run(args.only)
    finally:
        the_cluster.down()
    log("")
    print(f"e2e: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
