"""Noise and load: spread of repeated samples, foreign CPU use, a reference measurement.

Timings on a shared machine move 1.5-40x when another process is busy. Three guards:

- :func:`spread` reports the noise of one point, (p90 - p10) / median of its samples.
- :class:`CpuMonitor` measures, over an interval, how many cores *other* processes used:
  busy ticks of the whole machine from ``/proc/stat`` (steal included: another VM) minus the
  ticks of our own processes from ``/proc/<pid>/stat``. A round of measurements during
  which others used more than ``FOREIGN_CORES_MAX`` is contaminated and is repeated.
- :func:`reference_s` times a fixed workload; run before and after a phase, a ratio
  far from 1 says the machine changed under us.

>>> spread([1.0, 1.0, 1.0])
0.0
>>> round(spread([1.0, 2.0, 3.0, 4.0, 5.0]), 3)
1.067
"""
from __future__ import annotations

import os
import time

import numpy as np

FOREIGN_CORES_MAX = 0.25       # cores used by other processes before a round counts as contaminated


def clean(cores) -> bool:
    """True if a round during which other processes used ``cores`` (None: unknown) counts
    as undisturbed."""
    return cores is None or cores <= FOREIGN_CORES_MAX


def spread(samples) -> float:
    """(p90 - p10) / median of ``samples``; 0 for fewer than two."""
    x = np.asarray(samples, dtype=float)
    if x.size < 2:
        return 0.0
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return float((p90 - p10) / p50) if p50 > 0 else 0.0


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, or None without /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _process_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()      # the name may hold spaces
    return int(fields[11]) + int(fields[12])


class CpuMonitor:
    """Cores used by processes other than ``pids`` between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids=None):
        self.pids = list(pids) if pids is not None else [os.getpid()]
        self._start = None

    def start(self) -> None:
        self._start = (time.monotonic(), _machine_ticks(), self._ours())

    def stop(self) -> float | None:
        """Foreign cores averaged over the interval; None where /proc is missing."""
        t0, machine0, ours0 = self._start
        machine1, ours1 = _machine_ticks(), self._ours()
        wall_s = time.monotonic() - t0
        if machine0 is None or machine1 is None or wall_s <= 0:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        foreign_ticks = (machine1[0] - machine0[0]) - (ours1 - ours0)
        return max(foreign_ticks / hz / wall_s, 0.0)

    def _ours(self) -> int:
        return sum(_process_ticks(p) for p in self.pids)


def foreign_cores(seconds: float = 1.0) -> float | None:
    """Cores other programs used over ``seconds`` of this process sleeping; None without
    /proc. Unlike the load average it leaves out our own processes and does not remember
    the minutes before (a previous run leaves the load average near 2 for minutes)."""
    monitor = CpuMonitor([os.getpid()])
    monitor.start()
    time.sleep(seconds)
    return monitor.stop()


def load_average() -> float | None:
    """One-minute load average, None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def reference_s(repeats: int = 5) -> float:
    """Fastest of ``repeats`` runs of a fixed workload (a 384² float64 GEMM and a 8 MiB sum)."""
    a = np.full((384, 384), 0.5)
    out = np.empty_like(a)
    v = np.ones(1 << 20)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(4):
            np.matmul(a, a, out=out)
            v.sum()
        best = min(best, time.perf_counter() - t0)
    return best
