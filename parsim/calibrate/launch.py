"""Start the communication workers on this machine and collect rank 0's table.

torch.distributed: ``world`` copies of ``python -m parsim.calibrate.comm`` with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT (the variables torchrun
sets), gloo bound to the loopback interface. MPI: one ``mpiexec -n world`` of the same
module. Rank 0 prints ``PROGRESS done total`` lines that drive the progress bar, and writes
its rows as JSON; a worker that fails or outlives ``timeout_s`` stops the run with its
stderr in the message.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .comm import CommPlan


class CommFailed(RuntimeError):
    """The worker processes did not produce a result."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_env(world: int, **extra) -> dict:
    """Environment for ``world`` local torch.distributed workers (what torchrun sets), gloo
    bound to the loopback interface; add RANK and LOCAL_RANK per process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::FutureWarning",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
               LOCAL_WORLD_SIZE=str(world), **extra)
    if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def run_processes(commands, folder: str, *, timeout_s: float, follow=None, on_started=None):
    """Start ``(cmd, env)`` processes, wait until all end, one fails or ``timeout_s`` passes,
    kill what is left; return (exit codes, stderr logs). ``follow(stdout)`` reads the first
    process's output on a thread; ``on_started(procs)`` runs once all have started."""
    procs, logs = [], []
    try:
        for cmd, env in commands:
            log = tempfile.TemporaryFile(dir=folder)
            logs.append(log)
            out = subprocess.PIPE if follow and not procs else subprocess.DEVNULL
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=log, text=True))
        reader = None
        if follow:
            reader = threading.Thread(target=follow, args=(procs[0].stdout,), daemon=True)
            reader.start()
        if on_started:
            on_started(procs)
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if reader:
            reader.join(timeout=1.0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], logs


def mpi_local_env() -> dict:
    """Open MPI settings for a job parsim starts on this machine: more ranks than cores are
    allowed (the calibration measures group sizes up to the core count and beyond, and says
    so), and a root user (containers) is allowed, which Open MPI otherwise refuses
    ("We strongly suggest that you run prterun as a non-root user"). Both are Open MPI's
    documented environment switches (v4 ``OMPI_MCA_rmaps_base_oversubscribe``, v5 PRRTE
    ``PRTE_MCA_rmaps_default_mapping_policy``); other MPIs ignore them."""
    env = {"OMPI_MCA_rmaps_base_oversubscribe": "1",
           "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def run_local(plan: CommPlan, world: int, *, progress=None, timeout_s: float = 900.0) -> dict:
    """Run ``plan`` on ``world`` local worker processes; return ``{"rows": [...], ...}``."""
    with tempfile.TemporaryDirectory(prefix="parsim-calibrate-") as tmp:
        plan_path, result_path = os.path.join(tmp, "plan.json"), os.path.join(tmp, "result.json")
        with open(plan_path, "w") as f:
            f.write(plan.to_json())
        module = [sys.executable, "-m", "parsim.calibrate.comm", plan_path, result_path]
        if plan.backend == "mpi":
            mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
            if mpiexec is None:
                raise CommFailed("backend mpi: no mpiexec or mpirun on PATH")
            # Open MPI's switches first: a user's own settings of them win
            env = dict(mpi_local_env(), **os.environ)
            env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::FutureWarning")
            commands = [([mpiexec, "-n", str(world)] + module, env)]
        else:
            env = gloo_env(world)
            commands = [(module, dict(env, RANK=str(r), LOCAL_RANK=str(r))) for r in range(world)]
        codes, logs = run_processes(commands, tmp, timeout_s=timeout_s,
                                    follow=lambda stream: _follow(stream, progress))
        if any(codes) or not os.path.exists(result_path):
            why = "timed out" if all(c in (0, -9) for c in codes) and -9 in codes else f"exit codes {codes}"
            raise CommFailed(f"communication workers failed ({why}): {_tail(logs)}")
        with open(result_path) as f:
            return json.load(f)


def _follow(stream, progress) -> None:
    for line in stream:
        parts = line.split()
        if progress and len(parts) == 3 and parts[0] == "PROGRESS":
            progress(int(parts[1]), int(parts[2]))


def _tail(logs, chars: int = 1500) -> str:
    texts = []
    for rank, log in enumerate(logs):
        log.seek(0)
        text = log.read().decode(errors="replace").strip()
        lines = [ln for ln in text.splitlines() if "Warning" not in ln and "return func(" not in ln]
        if lines:
            texts.append(f"[rank {rank}] " + " | ".join(lines[-6:]))
    return (" ".join(texts) or "no output")[-chars:]
