"""Compute microbenchmarks: GEMM throughput by shape and dtype, memory bandwidth, launch cost.

CPU: numpy matmul in float32 and float64 (all BLAS threads), a large array copy and add
for memory bandwidth, a 1-element ``np.add`` for the fixed per-op cost. GPU (when
``torch.cuda.is_available()``): torch matmul in bf16, fp16, tf32 and fp32, a device copy,
and a 1-element kernel launch.

A GEMM of m×k by k×n does 2·m·n·k floating-point operations. A copy moves 2 bytes per byte
copied (read + write); c = a + b moves 3. Every benchmark runs in rounds: each round visits
all benchmarks in a fresh (seeded) order, so slow drift spreads over all of them; a round
during which other processes took more than ``noise.FOREIGN_CORES_MAX`` cores is redone.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import noise

CPU_SHAPES = {
    "full": [(n, n, n) for n in (64, 128, 256, 512, 1024, 2048)]
    + [(4096, 1024, 1024), (8192, 256, 1024), (2048, 2048, 256), (512, 4096, 1024)],
    "quick": [(128, 128, 128), (512, 512, 512), (1024, 1024, 1024)],
    "tiny": [(64, 64, 64), (128, 128, 128)],
}
GPU_SHAPES = {
    "full": [(n, n, n) for n in (256, 512, 1024, 2048, 4096, 8192)]
    + [(16384, 4096, 4096), (8192, 1024, 8192), (4096, 16384, 4096), (2048, 2048, 512)],
    "quick": [(1024, 1024, 1024), (4096, 4096, 4096), (8192, 8192, 8192)],
    "tiny": [(256, 256, 256), (1024, 1024, 1024)],
}
MEM_BYTES = {"full": 256 * 2**20, "quick": 64 * 2**20, "tiny": 4 * 2**20}
_NUMPY_DTYPES = {"fp32": np.float32, "fp64": np.float64}


@dataclass
class Bench:
    """One microbenchmark: ``call()`` runs the op once; ``work`` is FLOPs or bytes per call."""

    name: str
    kind: str                      # "gemm", "mem" or "launch"
    call: Callable[[], object]
    work: float
    info: dict = field(default_factory=dict)
    inner: int = 1                 # calls per timed sample
    samples: list = field(default_factory=list)


def cpu_benches(grid: str) -> list[Bench]:
    """numpy benchmarks for the shape grid ``grid`` ("full", "quick" or "tiny")."""
    rng = np.random.default_rng(0)
    benches = []
    for dtype, np_dtype in _NUMPY_DTYPES.items():
        for m, n, k in CPU_SHAPES[grid]:
            a = rng.standard_normal((m, k)).astype(np_dtype)
            b = rng.standard_normal((k, n)).astype(np_dtype)
            c = np.empty((m, n), np_dtype)
            benches.append(Bench(f"gemm {dtype} {m}x{n}x{k}", "gemm",
                                 lambda a=a, b=b, c=c: np.matmul(a, b, out=c), 2.0 * m * n * k,
                                 {"m": m, "n": n, "k": k, "dtype": dtype}))
    count = MEM_BYTES[grid] // 4
    x, y, z = (np.ones(count, np.float32) for _ in range(3))
    benches.append(Bench("copy", "mem", lambda: np.copyto(y, x), 2.0 * x.nbytes, {"bytes": x.nbytes}))
    benches.append(Bench("add", "mem", lambda: np.add(x, y, out=z), 3.0 * x.nbytes, {"bytes": x.nbytes}))
    one_a, one_b, one_c = np.ones(1), np.ones(1), np.empty(1)
    benches.append(Bench("launch", "launch", lambda: np.add(one_a, one_b, out=one_c), 1.0))
    return benches


def gpu_benches(grid: str, torch) -> list[Bench]:
    """torch CUDA benchmarks (bf16, fp16, tf32, fp32) for the shape grid ``grid``."""
    dev = torch.device("cuda")
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32, "fp32": torch.float32}
    benches = []
    for dtype, t_dtype in dtypes.items():
        tf32 = dtype == "tf32"
        for m, n, k in GPU_SHAPES[grid]:
            a = torch.randn(m, k, device=dev, dtype=t_dtype)
            b = torch.randn(k, n, device=dev, dtype=t_dtype)
            c = torch.empty(m, n, device=dev, dtype=t_dtype)

            def call(a=a, b=b, c=c, tf32=tf32):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                return torch.matmul(a, b, out=c)
            benches.append(Bench(f"gemm {dtype} {m}x{n}x{k}", "gemm", call, 2.0 * m * n * k,
                                 {"m": m, "n": n, "k": k, "dtype": dtype}))
    count = MEM_BYTES[grid]          # float32 elements: 4x the CPU bytes, past the GPU's L2
    x, y, z = (torch.ones(count, device=dev) for _ in range(3))
    benches.append(Bench("copy", "mem", lambda: y.copy_(x), 2.0 * count * 4, {"bytes": count * 4}))
    benches.append(Bench("add", "mem", lambda: torch.add(x, y, out=z), 3.0 * count * 4, {"bytes": count * 4}))
    one_a, one_b, one_c = (torch.ones(1, device=dev) for _ in range(3))
    benches.append(Bench("launch", "launch", lambda: torch.add(one_a, one_b, out=one_c), 1.0))
    return benches


def measure(benches: list[Bench], *, repeats: int, target_s: float = 0.02, sync=None,
            progress=None, seed: int = 0) -> dict:
    """Time every bench ``repeats`` times in interleaved rounds; fill ``bench.samples``.

    Each sample is the mean of ``bench.inner`` back-to-back calls, chosen so a sample lasts
    about ``target_s``. Contaminated rounds (foreign CPU use) are redone, up to ``2·repeats``
    rounds in all; past that the remaining rounds are kept and flagged. Returns round counts.
    """
    sync = sync or (lambda: None)
    for bench in benches:
        bench.call()
        sync()
        t0 = time.perf_counter()
        bench.call()
        sync()
        one_s = max(time.perf_counter() - t0, 1e-7)
        bench.inner = int(min(max(math.ceil(target_s / one_s), 1), 100_000))
    rng = np.random.default_rng(seed)
    monitor = noise.CpuMonitor()
    rounds, foreign = [], []
    if progress:
        progress.update(0, repeats * len(benches))
    while sum(_clean(c) for c in foreign) < repeats and len(rounds) < 2 * repeats:
        monitor.start()
        round_samples = {}
        for i in rng.permutation(len(benches)):
            bench = benches[i]
            sync()
            t0 = time.perf_counter()
            for _ in range(bench.inner):
                bench.call()
            sync()
            round_samples[i] = (time.perf_counter() - t0) / bench.inner
            if progress:
                progress.update(min(len(rounds), repeats - 1) * len(benches) + len(round_samples))
        rounds.append(round_samples)
        foreign.append(monitor.stop())
    keep = keep_rounds(foreign, repeats)
    for r in keep:
        for i, t in rounds[r].items():
            benches[i].samples.append(t)
    return {"rounds": len(rounds), "discarded_rounds": len(rounds) - len(keep),
            "kept_contaminated_rounds": sum(not _clean(foreign[r]) for r in keep),
            "foreign_cores_max": max((c for c in foreign if c is not None), default=0.0)}


def _clean(cores) -> bool:
    return cores is None or cores <= noise.FOREIGN_CORES_MAX


def keep_rounds(foreign: list, repeats: int) -> list[int]:
    """Indices of the ``repeats`` rounds with the least foreign CPU use, in run order.

    >>> keep_rounds([0.0, 1.2, 0.1, 0.9], 2)
    [0, 2]
    """
    order = sorted(range(len(foreign)), key=lambda r: (foreign[r] or 0.0, r))
    return sorted(order[:repeats])


def summarize(benches: list[Bench]) -> dict:
    """GEMM rows, memory rows, launch cost and the [device] overrides they imply."""
    gemm, mem = [], []
    launch_s = None
    for bench in benches:
        t = float(np.median(bench.samples))
        row_spread = noise.spread(bench.samples)
        if bench.kind == "gemm":
            gemm.append({**bench.info, "time_s": t, "flops_per_s": bench.work / t, "spread": row_spread})
        elif bench.kind == "mem":
            mem.append({"op": bench.name, **bench.info, "time_s": t, "bytes_per_s": bench.work / t,
                        "spread": row_spread})
        else:
            launch_s = t
    peak = {}
    for row in gemm:
        peak[row["dtype"]] = max(peak.get(row["dtype"], 0.0), row["flops_per_s"])
    device = {"peak_flops": peak, "mem_bw_Bps": max(r["bytes_per_s"] for r in mem),
              "launch_s": launch_s, "gemm_eff": 1.0, "mem_eff": 1.0}
    return {"gemm": gemm, "memory": mem, "device": device}
