"""One calibration run: compute benchmarks, communication benchmarks, fits, profile TOML.

:func:`calibrate` is what ``parsim calibrate`` runs on one machine (it starts its own
worker processes); :func:`calibrate_distributed` is what every rank runs under torchrun.
Both end in :func:`build_profile`, whose dict :mod:`.toml_write` writes atomically.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import compute, noise
from .comm import OPS, CommPlan, merge_launches
from .fit import fit_alpha_beta, fit_piecewise
from .profile import LARGE_MESSAGE_BYTES
from .progress import Progress
from .toml_write import write_atomic

KiB = 1024
SIZES = {"full": tuple(KiB * 4**e for e in range(9)),                   # 1 KiB .. 64 MiB
         "quick": (KiB, 16 * KiB, 256 * KiB, 4 * KiB**2, 16 * KiB**2),
         "tiny": (KiB, 16 * KiB, 256 * KiB)}
REPEATS = {"full": 15, "quick": 5, "tiny": 3}   # at least; full runs more (MIN_COMM_S)
TARGET_S = {"full": 0.02, "quick": 0.01, "tiny": 0.002}    # least seconds per comm sample
# least seconds the communication rounds span: on a shared VM the host's speed wanders over
# minutes (10-s medians of one 64 MiB all-reduce: 57-89 ms over 6 minutes; 100-s windows up
# to 20 % apart), and gloo's reduce-scatter, whose temporaries come from the allocator,
# wanders most (16 MiB: 2-minute medians 35 -> 25 ms over 10 quiet minutes). The median of
# 100 rounds still moves ~9 % by sampling alone (worst of the ten >= 16 MiB points, resampled
# from one 10-minute run), 6 % at 300 rounds. So a full run spreads its rounds over 6
# minutes, in LAUNCHES launches, and stops each at 1.25x its share (comm.SPAN_LIMIT), to
# stay well under 10 minutes.
MIN_COMM_S = {"full": 360.0, "quick": 0.0, "tiny": 0.0}
# fresh worker processes the rounds are split over: each launch keeps one state of the
# allocator and the transport for its whole life (comm.merge_launches)
LAUNCHES = {"full": 3, "quick": 1, "tiny": 1}
BUSY_START_CORES = 0.5     # others using more than this just before a run get a warning
COMPUTE_REPEATS = {"full": 7, "quick": 3, "tiny": 2}


@dataclass
class Options:
    """What one run measures; :func:`options_from_args` fills it from the command line."""

    output: str
    grid: str = "full"                 # "full", "quick" or "tiny" (tests)
    quiet: bool = False
    ranks: int = 2
    backend: str = "auto"              # "gloo", "nccl", "mpi" or "auto"
    repeats: int | None = None
    ops: tuple[str, ...] = OPS
    timeout_s: float = 900.0
    warnings: list = field(default_factory=list)


def say(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


def warn(opts: Options, text: str) -> None:
    opts.warnings.append(text)
    print(f"parsim calibrate: warning: {text}", file=sys.stderr, flush=True)


def calibrate(opts: Options) -> dict:
    """Measure this machine and write the profile to ``opts.output``; return its dict."""
    t_start = time.monotonic()
    cores = os.cpu_count() or 1
    load_start = noise.load_average()
    busy_start = noise.foreign_cores(1.0 if opts.grid == "full" else 0.2)
    if busy_start is not None and busy_start > BUSY_START_CORES:
        warn(opts, f"other programs used {busy_start:.2f} of {cores} cores just before the run: "
                   "rounds they disturb are redone, but figures may move")
    ref_before = noise.reference_s()
    torch = _try_torch()
    cuda = torch is not None and torch.cuda.is_available()
    comp, comp_info = _measure_compute(opts, torch if cuda else None)
    backend = _choose_backend(opts, torch, cuda)
    rows, comm_note = [], None
    if isinstance(backend, str) and backend.startswith("skip:"):
        comm_note = backend[5:]
        warn(opts, comm_note)
    else:
        if backend != "nccl" and opts.ranks > cores:
            warn(opts, f"--ranks {opts.ranks} exceeds the {cores} cores: beyond {cores} "
                       "processes the figures measure the OS scheduler, not the transport")
        plan = CommPlan(ops=opts.ops, sizes=SIZES[opts.grid],
                        group_sizes=tuple(range(2, opts.ranks + 1)),
                        repeats=opts.repeats or REPEATS[opts.grid], backend=backend,
                        target_s=TARGET_S[opts.grid], min_s=MIN_COMM_S[opts.grid])
        rows, comm_note = _measure_comm(opts, plan)
    ref_after = noise.reference_s()
    meta = host_meta(torch, cuda)
    meta.update(repeats=opts.repeats or REPEATS[opts.grid], grid=opts.grid,
                comm_backend=rows[0]["backend"] if rows else "none",
                run_s=round(time.monotonic() - t_start, 1))
    if comm_note:
        meta["comm_skipped"] = comm_note
    loads = {"loadavg_start": load_start, "loadavg_end": noise.load_average(),
             "foreign_cores_start": busy_start, "reference_s_before": ref_before, "reference_s_after": ref_after}
    profile = build_profile(meta, comp, comp_info, rows, loads, opts.warnings, cuda=cuda, torch=torch)
    write_atomic(opts.output, profile)
    return profile


def _try_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _choose_backend(opts: Options, torch, cuda: bool) -> str:
    if opts.ranks < 2:
        return "skip:--ranks below 2: communication not measured"
    if opts.backend == "mpi" or (opts.backend == "auto" and torch is None and _has_mpi4py()):
        return "mpi" if _has_mpi4py() else "skip:mpi4py is not installed: communication not measured (pip install mpi4py)"
    if torch is None:
        return ("skip:torch is not installed: communication not measured "
                "(pip install torch, or mpi4py for --backend mpi); compute figures only")
    if opts.backend in ("nccl", "auto") and cuda and torch.cuda.device_count() >= opts.ranks:
        return "nccl"
    return "gloo"


def _has_mpi4py() -> bool:
    import importlib.util
    return importlib.util.find_spec("mpi4py") is not None


def _measure_compute(opts: Options, torch):
    if torch is not None:
        benches = compute.gpu_benches(opts.grid, torch)
        sync = torch.cuda.synchronize
    else:
        benches, sync = compute.cpu_benches(opts.grid), None
    bar = Progress("compute", 1, enabled=not opts.quiet)
    info = compute.measure(benches, repeats=COMPUTE_REPEATS[opts.grid], sync=sync,
                           progress=bar, target_s=0.02 if opts.grid == "full" else 0.01)
    bar.close()
    summary = compute.summarize(benches)
    if torch is None and opts.grid != "tiny":
        summary["corun"] = compute.measure_corun(os.cpu_count() or 1)
    return summary, info


def _measure_comm(opts: Options, plan: CommPlan):
    """Run the plan in ``LAUNCHES[grid]`` launches of fresh worker processes, each with its
    share of ``min_s`` and its own round order, and pool their rounds (:func:`merge_launches`)."""
    from .launch import CommFailed, run_local
    n = LAUNCHES[opts.grid]
    bar = Progress(f"comm ({plan.backend})", 1, enabled=not opts.quiet)
    launches = []
    for i in range(n):
        part = replace(plan, min_s=plan.min_s / n, seed=plan.seed + 1000 * i)
        try:
            result = run_local(part, opts.ranks, timeout_s=opts.timeout_s,
                               progress=lambda d, t, i=i: bar.update(i * t + d, n * t))
        except CommFailed as err:
            bar.close()
            warn(opts, str(err))
            return [], f"communication measurement failed: {err}"
        launches.append(result["rows"])
    bar.close()
    return merge_launches(launches), None


def fit_row(row: dict) -> dict:
    """Add the alpha-beta fit (global + piecewise segments) to one measured curve."""
    sizes, times = row["size_bytes"], row["time_s"]
    if len(sizes) < 2:
        return row
    glob = fit_alpha_beta(sizes, times)
    row = dict(row, alpha_s=glob.alpha_s, bw_Bps=glob.bw_Bps, fit_rel_err=glob.rel_err,
               fit_rms_rel_err=glob.rms_rel_err, residual=list(glob.residuals))
    if glob.ci_alpha_s is not None:
        row["ci"] = {"level": 0.95, "alpha_s": list(glob.ci_alpha_s), "bw_Bps": list(glob.ci_bw_Bps)}
    row["segment"] = [{"min_bytes": s.min_bytes, "max_bytes": s.max_bytes, "alpha_s": s.alpha_s,
                       "bw_Bps": s.bw_Bps, "rel_err": s.rel_err}
                      for s in fit_piecewise(sizes, times)]
    return row


def _large_drift(collectives) -> float:
    """Largest first-half / second-half drift over the points of >= LARGE_MESSAGE_BYTES
    (16 MiB, the points ``--compare`` judges): about what to expect between two runs on this
    machine, a little more (each half has half the rounds, so more sampling noise)."""
    return max((d for r in collectives for s, d in zip(r["size_bytes"], r.get("drift", []))
                if s >= LARGE_MESSAGE_BYTES), default=0.0)


def _per_group_sum(rows, key: str) -> int:
    """Sum of a per-group count over the groups: every operation's row of one group size
    carries the same rounds, so count each (backend, group size) once."""
    per_group = {(r["backend"], r["ranks"]): r.get(key, 0) for r in rows}
    return int(sum(per_group.values()))


def build_profile(meta, comp, comp_info, rows, loads, warnings, *, cuda, torch) -> dict:
    """Assemble the profile dict: meta (with noise summary), device, gemm, memory, collective."""
    collectives = [fit_row(r) for r in rows]
    comm_spreads = [s for r in collectives for s in r["spread"]]
    gemm_spreads = [r["spread"] for r in comp["gemm"]]
    ref_ratio = loads["reference_s_after"] / loads["reference_s_before"]
    meta["noise"] = {
        "measure": "(p90 - p10) / median of repeated samples, per point",
        "gemm_spread_median": float(np.median(gemm_spreads)),
        "gemm_spread_max": float(np.max(gemm_spreads)),
        "comm_spread_median": float(np.median(comm_spreads)) if comm_spreads else 0.0,
        "comm_spread_max": float(np.max(comm_spreads)) if comm_spreads else 0.0,
        "comm_drift_max_large": _large_drift(collectives),
        "reference_ratio_after_before": ref_ratio,
        "compute_discarded_rounds": comp_info["discarded_rounds"],
        "comm_discarded_rounds": _per_group_sum(rows, "discarded_rounds"),
        "kept_contaminated_rounds": comp_info["kept_contaminated_rounds"]
        + _per_group_sum(rows, "kept_contaminated_rounds"),
        "foreign_cores_max": max([comp_info["foreign_cores_max"]]
                                 + [r.get("foreign_cores_max", 0.0) for r in rows]),
        **{k: v for k, v in loads.items() if v is not None},
    }
    if abs(ref_ratio - 1) > 0.25:
        warnings.append(f"reference workload moved {ref_ratio:.2f}x between start and end: "
                        "the machine's load changed during the run")
    if warnings:
        meta["warnings"] = list(warnings)
    if comp.get("corun"):
        meta["corun"] = comp["corun"]
    device = {"base": "gpu" if cuda else "cpu", **device_facts(torch, cuda), **comp["device"]}
    out = {"meta": meta, "device": device, "gemm": comp["gemm"], "memory": comp["memory"],
           "collective": collectives}
    if comp.get("attention"):
        out["attention"] = comp["attention"]
    return out


def device_facts(torch, cuda: bool) -> dict:
    """name, mem_bytes, sm_count of this machine (GPU 0 when CUDA is in use)."""
    if cuda:
        props = torch.cuda.get_device_properties(0)
        return {"name": props.name, "mem_bytes": int(props.total_memory),
                "sm_count": int(props.multi_processor_count)}
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    facts = {"name": processor_name(), "sm_count": os.cpu_count() or 1}
    if mem:
        facts["mem_bytes"] = int(mem)
    return facts


def processor_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def host_meta(torch, cuda: bool) -> dict:
    """Provenance: date, host, processor, GPU and driver, library versions."""
    meta = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(), "processor": processor_name(),
            "cores": os.cpu_count() or 1, "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}
    import scipy
    meta["scipy"] = scipy.__version__
    if torch is not None:
        meta["torch"] = torch.__version__
    if cuda:
        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["gpu_count"] = torch.cuda.device_count()
        meta["cuda"] = str(torch.version.cuda)
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            if out:
                meta["driver"] = out.splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return meta
