"""Calibration under torchrun or mpiexec: every rank measures communication; rank 0 writes
the profile.

``torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:PORT
-m parsim.calibrate -o cluster.toml`` sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR and MASTER_PORT; the process group comes from them (nccl with GPUs, else gloo).
Group sizes are the powers of two up to the world size, and the world size: the first
LOCAL_WORLD_SIZE ranks share a node, so small groups measure the intra-node fabric and
the larger ones cross nodes. Rank 0 then measures its own device's compute.

``mpiexec -n N [--hostfile H] python -m parsim.calibrate --backend mpi -o cluster.toml`` does
the same over mpi4py: the launcher is recognised by the rank variables Open MPI
(``OMPI_COMM_WORLD_SIZE``) and PMI (``PMI_SIZE``: MPICH, Intel MPI, Slurm) set.
"""
from __future__ import annotations

import os
import sys
import time

from . import noise
from .comm import CommPlan, MpiComm, TorchComm, merge_launches, run_benchmark
from .progress import Progress
from .toml_write import write_atomic


# world-size variables of MPI launchers: Open MPI, and PMI (MPICH Hydra, Intel MPI, Slurm)
_MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def mpi_world() -> int | None:
    """World size when an MPI launcher started this process with peers, else None."""
    for var in _MPI_SIZE_VARS:
        if int(os.environ.get(var, "1")) > 1:
            return int(os.environ[var])
    return None


def under_launcher() -> str | None:
    """"torchrun" when torchrun (or a compatible launcher) started this process with peers,
    "mpi" for an MPI launcher, else None."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "torchrun"
    return "mpi" if mpi_world() else None


def group_sizes(world: int) -> tuple[int, ...]:
    """Powers of two below ``world``, then ``world``.

    >>> group_sizes(12)
    (2, 4, 8, 12)
    """
    sizes, g = [], 2
    while g < world:
        sizes.append(g)
        g *= 2
    return tuple(sizes + [world])


def calibrate_distributed(opts) -> int:
    from . import session
    t_start = time.monotonic()
    launcher = under_launcher()
    try:
        import torch
    except ImportError:
        torch = None
    cuda = torch is not None and torch.cuda.is_available()
    if launcher == "torchrun" and opts.backend == "mpi":
        raise SystemExit("parsim calibrate: --backend mpi needs an MPI launcher (mpiexec), "
                         "not torchrun; under torchrun use gloo or nccl")
    if launcher == "mpi":
        if opts.backend in ("gloo", "nccl"):
            print(f"parsim calibrate: warning: started by mpiexec: measuring through MPI, "
                  f"not --backend {opts.backend}", file=sys.stderr, flush=True)
        backend, comm = "mpi", MpiComm()
        # ranks sharing this node's memory: the node-local group size
        local_world = comm.world.Split_type(comm.MPI.COMM_TYPE_SHARED).Get_size()
    else:
        backend = "nccl" if cuda and opts.backend in ("auto", "nccl") else "gloo"
        comm = TorchComm(backend)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", comm.size))
    rank0 = comm.rank == 0
    plan = CommPlan(ops=opts.ops, sizes=session.SIZES[opts.grid], group_sizes=group_sizes(comm.size),
                    repeats=opts.repeats or session.REPEATS[opts.grid], backend=backend,
                    target_s=session.TARGET_S[opts.grid], min_s=session.MIN_COMM_S[opts.grid])
    bar = Progress(f"comm ({backend}, {comm.size} ranks)", 1, enabled=rank0 and not opts.quiet)
    try:
        rows = run_benchmark(comm, plan, lambda d, t: bar.update(d, t))
    finally:
        comm.close()
    bar.close()
    if not rank0:
        return 0
    rows = merge_launches([rows])          # one launch under torchrun / mpiexec
    load_start = noise.load_average()
    ref_before = noise.reference_s()
    comp, comp_info = session._measure_compute(opts, torch if cuda else None)
    meta = session.host_meta(torch, cuda)
    meta.update(repeats=plan.repeats, grid=opts.grid, comm_backend=backend, world_size=comm.size,
                local_world_size=local_world, launcher=launcher, run_s=round(time.monotonic() - t_start, 1))
    loads = {"loadavg_start": load_start, "loadavg_end": noise.load_average(),
             "reference_s_before": ref_before, "reference_s_after": noise.reference_s()}
    profile = session.build_profile(meta, comp, comp_info, rows, loads, opts.warnings,
                                    cuda=cuda, torch=torch)
    write_atomic(opts.output, profile)
    from .cli import summary
    print(summary(profile, opts.output))
    return 0
