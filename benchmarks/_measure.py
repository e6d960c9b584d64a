"""Measure a snippet's wall time and peak memory in a fresh process (so peaks do not mix), and how busy the
machine was (:func:`busy_seconds`: the benchmarks record other processes' load next to their timings).

Peak memory is the process's maximum resident set size (``ru_maxrss``) minus the baseline after the
setup code ran; it is what the OS saw, so it includes allocator slack but never misses a tensor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_TEMPLATE = """
import json, resource, time, torch
torch.set_num_threads({threads})
{setup}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
{body}  # warm-up, also the run that sets the peak
times = []
for _ in range({repeats}):
    t0 = time.perf_counter()
    {body}
    times.append(time.perf_counter() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": sorted(times)[len(times) // 2], "peak_mb": (peak - base) / 1024}}))
"""


def measure(setup: str, body: str, repeats: int = 3, threads: int = 1) -> dict:
    """Median wall time of ``body`` over ``repeats`` runs and its peak extra RSS in MiB."""
    code = _TEMPLATE.format(setup=textwrap.dedent(setup), body=body.strip(), repeats=repeats, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy_seconds() -> float:
    """CPU seconds spent by all processes so far (``/proc/stat``; NaN where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
