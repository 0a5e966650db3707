#!/usr/bin/env python3
"""Where strata's own instructions go: the per-function difference of two callgrind profiles.

bench/count-hit leaves, per server, a profile of N requests (NAME.out.1) and one of the same
length of idle time (NAME.out.2). This prints, for each function, (strata's requests - its
idle) - (ceiling's requests - its idle), self cost, per request: the functions strata runs
that the ceiling does not, costliest first.

    bench/count-diff.py DIR N [TOP]
"""
import re
import subprocess
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def self_costs(path):
    """Function -> self instructions, from callgrind_annotate."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    costs = defaultdict(int)
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            name = m.group(2).split(" [")[0]
            costs[name] += int(m.group(1).replace(",", ""))
    return costs


def busy(dir_, name):
    req, idle = self_costs(f"{dir_}/{name}.out.1"), self_costs(f"{dir_}/{name}.out.2")
    return {k: req.get(k, 0) - idle.get(k, 0) for k in set(req) | set(idle)}


def main():
    dir_, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    s, c = busy(dir_, "strata"), busy(dir_, "ceiling")
    diff = {k: (s.get(k, 0) - c.get(k, 0)) / n for k in set(s) | set(c)}
    total = diff.pop("PROGRAM TOTALS", 0)
    print(f"{'own':>8}  {'strata':>8}  {'ceiling':>8}  function (self instructions per request)")
    for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
        print(f"{v:8.0f}  {s.get(k, 0) / n:8.0f}  {c.get(k, 0) / n:8.0f}  {k[:120]}")
    print(f"{total:8.0f}  strata's own instructions per request in all")


main()
