#!/usr/bin/env python3
"""Runs a command and records what it cost, as JSON: wall seconds (monotonic clock), user and system CPU
seconds and peak RSS (getrusage of the child, via wait4), exit status. Used by scripts/bench.sh.

    measure.py RESULT.json [--stdout FILE] [--stderr FILE] -- COMMAND [ARGS...]

The child's stdout/stderr go to the given files (default: inherited). The exit status of measure.py is
the child's (128+N when killed by signal N).
"""
import json
import os
import sys
import time


def main(argv):
    if "--" not in argv:
        sys.exit("usage: measure.py RESULT.json [--stdout FILE] [--stderr FILE] -- COMMAND [ARGS...]")
    split = argv.index("--")
    opts, command = argv[1:split], argv[split + 1:]
    result, redirects = opts[0], {}
    i = 1
    while i < len(opts):
        redirects[opts[i]] = opts[i + 1]
        i += 2
    actions = []
    if "--stdout" in redirects:
        actions.append((os.POSIX_SPAWN_OPEN, 1, redirects["--stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    if "--stderr" in redirects:
        actions.append((os.POSIX_SPAWN_OPEN, 2, redirects["--stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    start = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code
    with open(result, "w") as f:
        json.dump({
            "command": command,
            "wall_s": round(wall, 6),
            "user_s": round(usage.ru_utime, 6),
            "sys_s": round(usage.ru_stime, 6),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 6),
            "max_rss_kib": usage.ru_maxrss,
            "exit": code,
        }, f)
        f.write("\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
