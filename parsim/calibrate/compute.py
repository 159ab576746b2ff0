"""Compute microbenchmarks: GEMM throughput by shape and dtype, memory bandwidth, launch cost.

CPU: numpy matmul in float32 and float64 (all BLAS threads), the same again with one BLAS
thread (rows with ``threads = 1``: what a single-threaded process gets — e.g. the workers of
``parsim validate --local``; :data:`CPU_SHAPES_1T`, square shapes plus the skinny
batch-by-layer shapes of MLP training), a large array copy and add for memory bandwidth, a
1-element ``np.add`` for the fixed per-op cost. The single-thread GEMMs cycle through copies
of their operands spanning 4x the L2 cache (``cold_copies``), so they are timed with operands
out of the core's private cache, as in a training step. ``ufunc_alloc``: an allocating
elementwise op (``np.maximum(x, 0)``) on an activation-sized array (1 MiB), the rate of
numpy's elementwise work in a training step (fresh output arrays, small operands). Multi-threaded rows carry ``threads`` = the
BLAS threads in use. The thread count is switched through OpenBLAS's
``openblas_set_num_threads`` (:func:`blas_threads`); without a reachable OpenBLAS the
single-thread rows are left out. GPU (when
``torch.cuda.is_available()``): torch matmul in bf16, fp16, tf32 and fp32, a device copy,
and a 1-element kernel launch.

A GEMM of m×k by k×n does 2·m·n·k floating-point operations. A copy moves 2 bytes per byte
copied (read + write); c = a + b moves 3. Every benchmark runs in rounds: each round visits
all benchmarks in a fresh (seeded) order, so slow drift spreads over all of them; a round
during which other processes took more than ``noise.FOREIGN_CORES_MAX`` cores is redone.
"""
from __future__ import annotations

import glob
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..cost.compute import attention_flops
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
# one BLAS thread: squares up to 1024 and the batch×layer shapes of MLP training steps (b rows
# through a d×d layer: x·W (b, d, d), dW = xᵀ·dy (d, d, b), and a 16-wide output layer)
_SKINNY = [(256, 512, 512), (512, 512, 256), (256, 1024, 1024), (1024, 1024, 256),
           (64, 1024, 1024), (1024, 1024, 64), (256, 16, 1024), (256, 1024, 16), (1024, 16, 256)]
CPU_SHAPES_1T = {
    "full": [(n, n, n) for n in (64, 128, 256, 512, 1024)] + _SKINNY,
    "quick": [(128, 128, 128), (512, 512, 512)] + _SKINNY[:4],
    "tiny": [(64, 64, 64), (128, 128, 128)],
}
# fused causal attention (torch scaled_dot_product_attention, bf16): (batch, heads, seq, head_dim)
ATTN_SHAPES = {
    "full": [(4, 32, 2048, 128), (1, 32, 8192, 128), (8, 16, 2048, 64), (2, 64, 4096, 128)],
    "quick": [(4, 32, 2048, 128), (1, 32, 8192, 128)],
    "tiny": [(1, 8, 1024, 64)],
}
MEM_BYTES = {"full": 256 * 2**20, "quick": 64 * 2**20, "tiny": 4 * 2**20}
_NUMPY_DTYPES = {"fp32": np.float32, "fp64": np.float64}


@dataclass
class Bench:
    """One microbenchmark: ``call()`` runs the op once; ``work`` is FLOPs or bytes per call."""

    name: str
    kind: str                      # "gemm", "mem", "attention" or "launch"
    call: Callable[[], object]
    work: float
    info: dict = field(default_factory=dict)
    inner: int = 1                 # calls per timed sample
    samples: list = field(default_factory=list)
    threads: int | None = None     # BLAS threads to run it with (None: the default)


_BLAS = {}


def _openblas():
    """ctypes handle on the OpenBLAS numpy loaded, with (get, set) of its thread count; None
    when none is found (another BLAS, or symbols not exported)."""
    if "lib" in _BLAS:
        return _BLAS["lib"]
    import ctypes
    found = None
    paths = set()
    try:
        with open("/proc/self/maps") as f:           # the libraries numpy loaded (Linux)
            for line in f:
                name = line.split()[-1] if len(line.split()) >= 6 else ""
                if "openblas" in os.path.basename(name).lower() and ".so" in name:
                    paths.add(name)
    except OSError:
        pass
    libs_dir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    paths.update(glob.glob(os.path.join(libs_dir, "*openblas*")))
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", ""):
            for prefix in ("scipy_openblas", "openblas"):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    found = (get, set_)
                    break
            if found:
                break
        if found:
            break
    _BLAS["lib"] = found
    return found


def blas_threads(n: int | None = None) -> int | None:
    """Set numpy's BLAS threads to ``n`` (None: leave them) and return the count now in use;
    None if the BLAS cannot be reached."""
    lib = _openblas()
    if lib is None:
        return None
    get, set_ = lib
    if n is not None:
        set_(int(n))
    return int(get())


COLD_COPIES_MAX = 64


def cache_bytes(level: int, default: int = 2**20) -> int:
    """Size of cpu0's level-``level`` data/unified cache (Linux sysfs), ``default`` if unknown."""
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(os.path.join(d, "level")) as f:
                if int(f.read()) != level:
                    continue
            with open(os.path.join(d, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * scale
        except (OSError, ValueError):
            continue
    return default


def _cycling_matmul(As, Bs, Cs):
    """A call that runs the next (a, b, c) of the lists in turn: c = a @ b."""
    state = [0]

    def call():
        i = state[0]
        state[0] = (i + 1) % len(As)
        return np.matmul(As[i], Bs[i], out=Cs[i])
    return call


def cold_gemm_call(a, b, c, l2: int):
    """(call, copies): c = a @ b with operands out of the core's private cache (as a training
    step's GEMMs find their inputs, written by other ops since), still within the shared
    one: the call cycles through ``copies`` copies of (a, b, c) spanning 4x the L2. The
    one-thread GEMM table and the validation's machine-speed probe both time it."""
    copies = int(min(COLD_COPIES_MAX, max(2, math.ceil(4 * l2 / (a.nbytes + b.nbytes + c.nbytes)))))
    return _cycling_matmul([a] + [a.copy() for _ in range(copies - 1)],
                           [b] + [b.copy() for _ in range(copies - 1)],
                           [c] + [np.empty_like(c) for _ in range(copies - 1)]), copies


def cpu_benches(grid: str, *, single_thread: bool = True) -> list[Bench]:
    """numpy benchmarks for the shape grid ``grid`` ("full", "quick" or "tiny"); with
    ``single_thread`` (and a reachable OpenBLAS) also the one-thread GEMMs."""
    rng = np.random.default_rng(0)
    benches = []
    full = blas_threads()
    plans = [(CPU_SHAPES[grid], full)]
    if single_thread and full is not None:
        plans.append((CPU_SHAPES_1T[grid], 1))
    l2 = cache_bytes(2)
    for shapes, threads in plans:
        for dtype, np_dtype in _NUMPY_DTYPES.items():
            for m, n, k in shapes:
                a = rng.standard_normal((m, k)).astype(np_dtype)
                b = rng.standard_normal((k, n)).astype(np_dtype)
                c = np.empty((m, n), np_dtype)
                info = {"m": m, "n": n, "k": k, "dtype": dtype}
                if threads is not None:
                    info["threads"] = threads
                if threads == 1:
                    call, info["cold_copies"] = cold_gemm_call(a, b, c, l2)
                else:
                    call = (lambda a=a, b=b, c=c: np.matmul(a, b, out=c))
                benches.append(Bench(f"gemm {dtype} {m}x{n}x{k} t{threads}", "gemm",
                                     call, 2.0 * m * n * k,
                                     info, threads=threads if threads == 1 else None))
    count = MEM_BYTES[grid] // 4
    x, y, z = (np.ones(count, np.float32) for _ in range(3))
    benches.append(Bench("copy", "mem", lambda: np.copyto(y, x), 2.0 * x.nbytes, {"bytes": x.nbytes}))
    benches.append(Bench("add", "mem", lambda: np.add(x, y, out=z), 3.0 * x.nbytes, {"bytes": x.nbytes}))
    act = np.ones(2**18, np.float32)                  # 1 MiB: e.g. 256 rows x 1024 features
    benches.append(Bench("ufunc_alloc", "mem", lambda: np.maximum(act, np.float32(0)),
                         2.0 * act.nbytes, {"bytes": act.nbytes}))
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
    benches += attention_benches(grid, torch, dev)
    count = MEM_BYTES[grid]          # float32 elements: 4x the CPU bytes, past the GPU's L2
    x, y, z = (torch.ones(count, device=dev) for _ in range(3))
    benches.append(Bench("copy", "mem", lambda: y.copy_(x), 2.0 * count * 4, {"bytes": count * 4}))
    benches.append(Bench("add", "mem", lambda: torch.add(x, y, out=z), 3.0 * count * 4, {"bytes": count * 4}))
    one_a, one_b, one_c = (torch.ones(1, device=dev) for _ in range(3))
    benches.append(Bench("launch", "launch", lambda: torch.add(one_a, one_b, out=one_c), 1.0))
    return benches


def attention_benches(grid: str, torch, dev) -> list[Bench]:
    """Causal fused attention forward in bf16 (``scaled_dot_product_attention``, which runs a
    FlashAttention kernel on Ampere and Hopper), FLOPs as parsim counts them:
    4·b·heads·s²·d / 2 (:func:`parsim.cost.compute.attention_flops`, causal)."""
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if sdpa is None:
        return []
    out = []
    for b, h, s, d in ATTN_SHAPES[grid]:
        q, k, v = (torch.randn(b, h, s, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
        out.append(Bench(f"attention bf16 {b}x{h}x{s}x{d}", "attention",
                         lambda q=q, k=k, v=v: sdpa(q, k, v, is_causal=True),
                         attention_flops(b, h, s, d, causal=True),
                         {"batch": b, "heads": h, "seq": s, "head_dim": d, "dtype": "bf16",
                          "causal": True}))
    return out


def measure(benches: list[Bench], *, repeats: int, target_s: float = 0.02, sync=None,
            progress=None, seed: int = 0) -> dict:
    """Time every bench ``repeats`` times in interleaved rounds; fill ``bench.samples``.

    Each sample is the mean of ``bench.inner`` back-to-back calls, chosen so a sample lasts
    about ``target_s``. Contaminated rounds (foreign CPU use) are redone, up to ``2·repeats``
    rounds in all; past that the remaining rounds are kept and flagged. Returns round counts.
    """
    sync = sync or (lambda: None)
    default_threads = blas_threads() if any(b.threads for b in benches) else None

    def threads_for(bench):
        if default_threads is not None:
            blas_threads(bench.threads or default_threads)
    try:
        return _measure(benches, repeats, target_s, sync, progress, seed, threads_for)
    finally:
        if default_threads is not None:
            blas_threads(default_threads)


def _measure(benches, repeats, target_s, sync, progress, seed, threads_for) -> dict:
    for bench in benches:
        threads_for(bench)
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
    while sum(noise.clean(c) for c in foreign) < repeats and len(rounds) < 2 * repeats:
        monitor.start()
        round_samples = {}
        for i in rng.permutation(len(benches)):
            bench = benches[i]
            threads_for(bench)
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
            "kept_contaminated_rounds": sum(not noise.clean(foreign[r]) for r in keep),
            "foreign_cores_max": max((c for c in foreign if c is not None), default=0.0)}


def keep_rounds(foreign: list, repeats: int) -> list[int]:
    """Indices of the ``repeats`` rounds with the least foreign CPU use, in run order.

    >>> keep_rounds([0.0, 1.2, 0.1, 0.9], 2)
    [0, 2]
    """
    order = sorted(range(len(foreign)), key=lambda r: (foreign[r] or 0.0, r))
    return sorted(order[:repeats])


def summarize(benches: list[Bench]) -> dict:
    """GEMM rows, memory rows, attention rows, launch cost and the [device] overrides they
    imply (``attn_eff``: the median forward-attention rate over the shapes, as a fraction of
    the measured bf16 GEMM peak)."""
    gemm, mem, attn = [], [], []
    launch_s = None
    for bench in benches:
        t = float(np.median(bench.samples))
        row_spread = noise.spread(bench.samples)
        if bench.kind == "gemm":
            gemm.append({**bench.info, "time_s": t, "flops_per_s": bench.work / t, "spread": row_spread})
        elif bench.kind == "attention":
            attn.append({**bench.info, "time_s": t, "flops_per_s": bench.work / t,
                         "spread": row_spread})
        elif bench.kind == "mem":
            mem.append({"op": bench.name, **bench.info, "time_s": t, "bytes_per_s": bench.work / t,
                        "spread": row_spread})
        else:
            launch_s = t
    peak = {}
    for row in gemm:
        if row.get("threads") == 1 and any(r.get("threads") != 1 for r in gemm):
            continue                                   # the peak is the all-threads rate
        peak[row["dtype"]] = max(peak.get(row["dtype"], 0.0), row["flops_per_s"])
    device = {"peak_flops": peak, "mem_bw_Bps": max(r["bytes_per_s"] for r in mem
                                                      if r["op"] in ("copy", "add")),
              "launch_s": launch_s, "gemm_eff": 1.0, "mem_eff": 1.0}
    if attn and peak.get("bf16"):
        # forward kernels over the shapes' median; torch's flash backend is FlashAttention-2
        # (PyTorch 2.2 release notes), so the figure is also the "fa2" kernel's
        eff = min(1.0, float(np.median([r["flops_per_s"] for r in attn])) / peak["bf16"])
        device["attn_eff"] = eff
        device["attn_kernels"] = {"fa2": eff}
    return {"gemm": gemm, "memory": mem, "attention": attn, "device": device}


_CORUN_HELPER = r"""
import sys, time
import numpy as np
from parsim.calibrate.compute import _mlp_step
step = _mlp_step(int(sys.argv[1]))
step()
print("ready", flush=True)
end = time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < end:
    step()
"""

CORUN_WIDTHS = (512, 1024)     # reference MLP: width x width x width x 10, 256 rows


def _mlp_step(width: int, rows: int = 256):
    """A call that runs one forward + backward of the numpy MLP (:mod:`parsim.numerics.mlp`,
    float32, ``rows`` rows, layers width-width-width-10): GEMMs, elementwise ops and the
    fresh arrays they allocate — the compute of a CPU training step."""
    from ..numerics import mlp
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in
              mlp.init_mlp((width, width, width, 10), rng, dtype=np.float32).items()}
    x = rng.standard_normal((rows, width)).astype(np.float32)
    y = rng.integers(0, 10, rows)
    return lambda: mlp.loss_and_grads(params, x, y)


def measure_corun(cores: int, *, samples: int = 15) -> dict | None:
    """Compute of a training step beside other busy processes: slowdown and spread.

    Processes that compute at once share the memory system, the last-level cache and the
    kernel (page faults of fresh arrays): a single-threaded numpy training step (forward +
    backward of an MLP, :func:`_mlp_step`, widths :data:`CORUN_WIDTHS`) runs slower, and
    less evenly, with ``cores - 1`` other processes doing the same than alone — the state
    of the workers of ``parsim validate --local``. Per width: ``samples`` steps alone, with
    the helpers running, alone again. ``slowdown``: geometric mean over widths of
    median(beside) / median(alone); ``spread``: the same mean of (p90 - p10) / median of
    the steps beside the helpers. None on one core, without a reachable OpenBLAS, or if
    the helpers fail to start."""
    import subprocess
    import sys
    if cores < 2 or blas_threads() is None:
        return None
    full = blas_threads()
    rows = []
    try:
        blas_threads(1)
        for width in CORUN_WIDTHS:
            step = _mlp_step(width)
            step()

            def timed():
                out = []
                for _ in range(samples):
                    t0 = time.perf_counter()
                    step()
                    out.append(time.perf_counter() - t0)
                return out
            alone = timed()
            secs = 2.0 + 3 * sum(alone)
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                       MKL_NUM_THREADS="1")
            helpers = [subprocess.Popen([sys.executable, "-c", _CORUN_HELPER, str(width), str(secs)],
                                        stdout=subprocess.PIPE, env=env, text=True)
                       for _ in range(cores - 1)]
            try:
                if not all(h.stdout.readline().startswith("ready") for h in helpers):
                    return None
                beside = timed()
            finally:
                for h in helpers:
                    h.kill()
                    h.wait()
            alone += timed()
            rows.append({"width": width, "alone_s": float(np.median(alone)),
                         "beside_s": float(np.median(beside)),
                         "alone_spread": noise.spread(alone), "beside_spread": noise.spread(beside)})
    finally:
        blas_threads(full)

    def gmean(xs):
        return float(np.exp(np.mean(np.log(np.maximum(xs, 1e-9)))))
    return {"measure": "one-thread numpy MLP training step beside (cores - 1) processes doing "
                       "the same: median time / median alone, and (p90 - p10) / median of the "
                       "steps beside them; geometric means over widths",
            "helpers": cores - 1, "widths": rows,
            "slowdown": gmean([r["beside_s"] / r["alone_s"] for r in rows]),
            "spread": gmean([r["beside_spread"] for r in rows])}
